"""Fresh virtual environments that have the pinned stack but no panconv package.

Installing torch into every test venv would take minutes, so the stack is shared: a session
fixture hard-links the development venv's site-packages into a temp folder *without* any
panconv distribution, and each fresh venv points at it with a ``.pth`` line. panconv wheels
are then installed into the fresh venv itself, as a user would.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())


def _is_panconv(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return "panconv" in lowered


@pytest.fixture(scope="session")
def stack_site(tmp_path_factory) -> Path:
    source = Path(sysconfig.get_paths()["purelib"])
    target = tmp_path_factory.mktemp("stack") / "site-packages"
    target.mkdir()
    for entry in source.iterdir():
        if _is_panconv(entry.name) or entry.suffix == ".pth":
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, copy_function=os.link, symlinks=True)
        else:
            os.link(entry, target / entry.name)
    return target


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    packages = [REPO / "core", *(REPO / "plugins" / p for p in PLUGINS), REPO / "examples" / "third_party_plugin"]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), *map(str, packages)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {}
    for wheel in out.glob("*.whl"):
        found[wheel.name.split("-")[0].replace("_", "-")] = wheel
    return found


class FreshVenv:
    def __init__(self, path: Path, stack: Path):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
        self.path = path
        self.python = path / "bin" / "python"
        purelib = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        Path(purelib, "_stack.pth").write_text(f"{stack}\n")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PANCONV_PLUGINS",
                                                                      "PANCONV_DISABLE_PLUGINS", "VIRTUAL_ENV")}

    def install(self, *targets) -> None:
        proc = self.run("-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, targets))
        assert proc.returncode == 0, proc.stderr[-3000:]

    def run(self, *args, timeout=600, cwd=None):
        return subprocess.run([str(self.python), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env=self.env, cwd=cwd)

    def panconv(self, *args, **kwargs):
        return self.run("-m", "panconv.cli", *args, **kwargs)


@pytest.fixture
def fresh_venv(tmp_path, stack_site):
    return FreshVenv(tmp_path / "venv", stack_site)
