"""docs/plugin-authoring.md, followed literally: every ``sh`` block of the guide runs, in order, as one
shell script in an empty folder outside the repository, in a fresh venv that has the pinned stack
but no panconv. pip works offline: ``--no-index`` with the wheels built from this checkout as its
"registry" (``PIP_FIND_LINKS``) and the stack's setuptools as build backend."""

import json
import re
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "plugin-authoring.md"


def guide_commands() -> list[str]:
    """The command lines of the guide's ```sh blocks, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_guide_has_the_steps_it_promises():
    commands = guide_commands()
    for step in ("pip install panconv-core", "panconv new-plugin demo -o .", 'pip install -e "./panconv-demo[test]"',
                 "pytest panconv-demo/tests", "core-run src/panconv_demo/configs/example.yaml",
                 "pytest --panconv-plugin demo", "pip wheel --no-deps -w dist ."):
        assert any(line.startswith(step) for line in commands), step
    assert not any("constraints.txt" in line or "python -m build" in line for line in commands)


@pytest.mark.slow
def test_the_authoring_guide_works_as_written_outside_the_repository(fresh_venv, wheels, tmp_path):
    bin_dir = fresh_venv.path / "bin"
    for tool in ("pip", "pytest"):  # what `python -m venv` + `pip install pytest` would put there
        shim = bin_dir / tool
        shim.write_text(f'#!/bin/sh\nexec "{fresh_venv.python}" -m {tool} "$@"\n')
        shim.chmod(0o755)
    folder = tmp_path / "outside"
    folder.mkdir()
    script = tmp_path / "guide.sh"
    commands = guide_commands()
    script.write_text("set -euo pipefail\nexec 2>&1\n" + "".join(f"echo '+ {c}'\n{c}\n" for c in commands))
    env = {**fresh_venv.env, "PATH": f"{bin_dir}:{fresh_venv.env.get('PATH', '/usr/bin:/bin')}",
           "VIRTUAL_ENV": str(fresh_venv.path), "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(next(iter(wheels.values())).parent),
           "PIP_NO_BUILD_ISOLATION": "0",  # (sic: pip reads this as build_isolation = false)
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PANCONV_DATA", None)
    import subprocess

    proc = subprocess.run(["bash", str(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-5000:]
    output = dict(zip(commands, re.split(r"^\+ .*$", proc.stdout, flags=re.M)[1:]))

    listed = output["panconv list demo"]
    for name in ("demo.ExampleNet", "demo.ExampleHead", "demo.CSVVectors", "demo.ErrorRate"):
        assert name in listed, listed
    own = re.search(r"(\d+) passed", output["pytest panconv-demo/tests"])
    kit = re.search(r"(\d+) passed", output["pytest --panconv-plugin demo"])
    assert own and kit and int(own.group(1)) > int(kit.group(1)) > 20, (own, kit)  # its own tests + the kit
    assert "failed" not in output["pytest panconv-demo/tests"] + output["pytest --panconv-plugin demo"]
    # the example config trained to far below chance on the generated data
    metrics = json.loads((folder / "panconv-demo" / "work_dirs" / "example" / "metrics.json").read_text())
    assert metrics["test"]["error_rate"] < 0.2, metrics["test"]
    # the wheel carries the config
    wheel = next((folder / "panconv-demo" / "dist").glob("panconv_demo-*.whl"))
    assert "panconv_demo/configs/example.yaml" in zipfile.ZipFile(wheel).namelist()
