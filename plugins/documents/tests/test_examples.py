"""The example configs: they validate (fast), and the table-detection example trains and tests end to end
through core-run on a few rendered pages (slow: ``pytest -m slow``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import panconv

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ["documents_cascadetabnet_tables.yaml", "documents_cascadetabnet_cells.yaml"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_configs_load(name):
    # the cells config starts from the tables run's checkpoint, absent until that run: validated without it
    overrides = ["model.init_from=null"] if "cells" in name else []
    cfg = panconv.load_config(ROOT / "examples" / name, overrides)
    assert cfg["model"]["type"] == "documents.cascadetabnet_small"
    assert cfg["data"]["classes"] == ("tables" if "tables" in name else "cascadetabnet")


def test_a_missing_init_checkpoint_is_named_at_validation(tmp_path):
    missing = tmp_path / "epoch_2.pth"
    with pytest.raises(panconv.CheckpointError) as caught:
        panconv.load_config(ROOT / "examples" / EXAMPLES[1], [f"model.init_from={missing}"])
    # one line naming the config file, the section and the missing checkpoint
    assert str(caught.value) == (f"{ROOT / 'examples' / EXAMPLES[1]}: model: {missing}: the init_from checkpoint "
                                 f"does not exist")


@pytest.mark.slow
def test_table_detection_example_runs_end_to_end(tmp_path):
    pytest.importorskip("reportlab")
    command = [sys.executable, "-m", "panconv.cli", "run", str(ROOT / "examples" / EXAMPLES[0]), "--work-dir",
               str(tmp_path / "run"), "--quiet", "--data-root", str(tmp_path / "data"), "--set", "data.n_pages=6",
               "--set", "data.eval_pages=2", "--set", "train.epochs=1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert 0.0 <= test["mAP"] <= test["AP50"] <= 1.0
