"""`panconv new-plugin` writes a lint-clean package from real template files that installs (configs
included) and passes its own tests and the kit; broken variants fail the kit naming component and check."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "core" / "src" / "panconv" / "templates" / "plugin"


def _run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("newplugin")
    out = _run([sys.executable, "-m", "panconv.cli", "new-plugin", "demo", "-o", str(tmp)])
    assert out.returncode == 0, out.stderr
    return tmp / "panconv-demo"


def _pristine_copy(package: Path, target: Path) -> Path:
    """A copy without build leftovers (pip builds in place: a stale build/ would hide packaging mistakes)."""
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return target


def _install_and_test(package: Path, tmp: Path):
    package = _pristine_copy(package, tmp / "pristine" / package.name)
    site = tmp / "site"
    install = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(package)])
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "PANCONV_PLUGINS": "demo"}
    return _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                 "-o", "addopts=", str(package / "tests")], env=env, cwd=package)


def test_every_generated_file_comes_from_a_template_file(demo):
    from panconv.scaffold import templates

    written = sorted(str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file() and "data" not in p.parts)
    expected = sorted(path.replace("__package__", "panconv_demo") for path in templates())
    assert written == expected
    on_disk = sorted(str(p.relative_to(TEMPLATES)).removesuffix(".tmpl") for p in TEMPLATES.rglob("*.tmpl"))
    assert sorted(templates()) == on_disk
    assert sorted(p.name for p in (demo / "data" / "demo").iterdir()) == ["test.csv", "train.csv", "val.csv"]


def test_generated_plugin_is_ruff_clean(demo):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    result = _run([ruff, "check", "--no-cache", "."], cwd=demo)  # with the generated pyproject's settings
    assert result.returncode == 0, result.stdout


def test_generated_wheel_ships_the_configs(demo, tmp_path):
    package = _pristine_copy(demo, tmp_path / "pristine")
    build = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", str(tmp_path), str(package)])
    assert build.returncode == 0, build.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("panconv_demo-*.whl"))).namelist()
    assert "panconv_demo/configs/example.yaml" in names
    assert "panconv_demo/plugin.py" in names and "panconv_demo/models/layers.py" in names


def test_generated_plugin_installs_and_passes_its_tests_and_the_kit(demo, tmp_path):
    result = _install_and_test(demo, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    from panconv.testing import CHECKS

    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    kit = sum(1 for kind in ("backbone", "head", "dataset", "evaluator") for c in CHECKS[kind].values()
              if c.capability is None)  # its components declare no capability
    own = len(re.findall(r"^def test_", (demo / "tests" / "test_plugin.py").read_text(), re.M))
    assert own == 2 and passed == kit + own
    assert "failed" not in result.stdout


BREAKAGES = {
    "wrong feature_info": ("src/panconv_demo/models/example.py",
                           'FeatureInfo(2 * width, 4, "stage2")', 'FeatureInfo(3 * width, 4, "stage2")',
                           ["demo.ExampleNet: feature_info: output 1 has shape"]),
    "NaN loss": ("src/panconv_demo/models/example.py",
                 'return {"loss": F.cross_entropy(outputs, batch["labels"])}',
                 'return {"loss": F.cross_entropy(outputs, batch["labels"]) * float("nan")}',
                 ["demo.ExampleHead: forward_backward: loss 'loss' is not finite"]),
    "collate drops a field": ("src/panconv_demo/datasets/csv_vectors.py",
                              "    @property\n    def metadata(self):",
                              "    def collate(self, samples):\n"
                              "        return {'inputs': torch.stack([s['inputs'] for s in samples])}\n\n"
                              "    @property\n    def metadata(self):",
                              ["demo.CSVVectors: collate: collate drops field(s) labels"]),
    "config not shipped": ("pyproject.toml", 'panconv_demo = ["configs/*.yaml"]', "",
                           ["configs/ is package data"]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_variants_fail_naming_component_and_check(demo, tmp_path, breakage):
    path, old, new, messages = BREAKAGES[breakage]
    broken = _pristine_copy(demo, tmp_path / "panconv-demo")
    source = broken / path
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))
    result = _install_and_test(broken, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    for message in messages:
        assert message in result.stdout, result.stdout[-3000:]
