"""`panconv new-plugin` writes a package that installs and passes the kit; broken variants fail it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("newplugin")
    out = _run([sys.executable, "-m", "panconv.cli", "new-plugin", "demo", "-o", str(tmp)])
    assert out.returncode == 0, out.stderr
    return tmp / "panconv-demo"


def _install_and_test(package: Path, site: Path):
    install = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(package)])
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "PANCONV_PLUGINS": "demo"}
    return _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                 "-o", "addopts=", str(package / "tests")], env=env, cwd=package)


def test_generated_plugin_installs_and_passes_the_kit(demo, tmp_path):
    result = _install_and_test(demo, tmp_path / "site")
    assert result.returncode == 0, result.stdout[-3000:]
    from panconv.testing.conformance import CHECKS

    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    expected = sum(len(CHECKS[kind]) for kind in ("backbone", "head", "dataset", "evaluator")) + 1
    assert passed == expected  # every check of its 4 components + its own example test
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
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_variants_fail_the_kit_naming_component_and_check(demo, tmp_path, breakage):
    import shutil

    path, old, new, messages = BREAKAGES[breakage]
    broken = tmp_path / "panconv-demo"
    shutil.copytree(demo, broken)
    source = broken / path
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))
    result = _run([sys.executable, "-m", "pip", "--version"])  # noqa: F841 - keep pip warm
    result = _install_and_test(broken, tmp_path / "site")
    assert result.returncode == 1, result.stdout[-3000:]
    for message in messages:
        assert message in result.stdout, result.stdout[-3000:]
