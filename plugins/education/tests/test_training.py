"""Real training runs through ``core-run`` (slow: ``pytest -m slow``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dkt"])  # SAKT and CAKT need more than this budget (README)
def test_example_config_learns_on_assist2009(shared_data, tmp_path, model):
    """The example config (a small budget) beats chance clearly on the real test students."""
    if not (shared_data / "knowledge-tracing" / "assist2009_updated").is_dir():
        pytest.skip("no knowledge-tracing/assist2009_updated")
    config = ROOT / "examples" / f"education_{model}_assist2009.yaml"
    command = [sys.executable, "-m", "panconv.cli", "run", str(config), "--work-dir", str(tmp_path), "--quiet",
               "--data-root", str(shared_data), "--set", "data.max_sequences={train: 200, test: 100}",
               "--set", "train.epochs=1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    test = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert test["auc"] > 0.65, test
