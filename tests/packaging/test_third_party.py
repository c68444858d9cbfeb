"""The example third-party plugin, installed as a regular wheel outside the core tree:
discovered, trained through core-run, and checked by the conformance kit."""

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_third_party_plugin_is_discovered_trained_and_conformant(fresh_venv, wheels, tmp_path):
    fresh_venv.install(wheels["panconv-core"], wheels["panconv-lenet"])
    listed = fresh_venv.panconv("list", "lenet")
    assert "lenet.LeNet5" in listed.stdout and "lenet.SmallMNIST" in listed.stdout, listed.stderr

    work = tmp_path / "work"
    run = fresh_venv.panconv("run", REPO / "examples" / "third_party_plugin" / "lenet.yaml", "--work-dir", work,
                             "--set", "data.limit=3000", "--set", "train.epochs=1", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = json.loads((work / "metrics.json").read_text())["test"]["accuracy"]
    assert accuracy > 0.6, accuracy  # 10 classes: chance is 0.1

    tests = tmp_path / "lenet_tests"
    shutil.copytree(REPO / "examples" / "third_party_plugin" / "tests", tests)
    shutil.copy(REPO / "examples" / "third_party_plugin" / "lenet.yaml", tmp_path / "lenet.yaml")  # the tests' config
    kit = fresh_venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-o", "addopts=",
                         tests, cwd=tmp_path)
    assert kit.returncode == 0, kit.stdout[-3000:]
    assert "lenet.LeNet5::feature_info" not in kit.stdout  # (quiet mode: no failure lines at all)
