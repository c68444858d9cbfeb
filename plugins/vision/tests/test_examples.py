"""Vision example configs beyond their validation (every example validates in ``tests/test_examples.py``): a
config whose earlier stage has not run (the BT^2 chain's ``old_model: work_dirs/...``) stops at validation with a
one-line ConfigError naming the file, the key and the missing run; a longer-budget config changes the budget, not
the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import panconv
from panconv.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIGS = sorted(EXAMPLES.glob("vision_*.yaml"))
EARLIER_STAGE = re.compile(r"old_model: (work_dirs/[\w.-]+)")
STAGED = [p for p in CONFIGS if EARLIER_STAGE.search(p.read_text())]


@pytest.mark.parametrize("path", STAGED, ids=lambda p: p.name)
def test_a_missing_earlier_stage_is_one_line_naming_file_key_and_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage = EARLIER_STAGE.search(path.read_text()).group(1)
    with pytest.raises(ConfigError) as info:
        panconv.load_config(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    assert f"old_model: {stage} does not exist" in message
    (tmp_path / stage).mkdir(parents=True)  # a run dir without a checkpoint is named as such
    with pytest.raises(ConfigError, match=re.escape(f"old_model: {stage}: no checkpoint in this work dir")):
        panconv.load_config(path)


def test_the_staged_configs_are_found():
    assert {p.name for p in STAGED} >= {"vision_bt2_step1_bct.yaml", "vision_bt2_step2_bt2.yaml"}


@pytest.mark.parametrize(("longer", "base"), [
    ("vision_convit_mnist_long.yaml", "vision_convit_mnist.yaml"),
    ("vision_crossvit_mnist_long.yaml", "vision_crossvit_mnist.yaml"),
    ("vision_hrvmamba_mnist_long.yaml", "vision_hrvmamba_mnist.yaml"),
    ("vision_vfimamba_opencv_long24.yaml", "vision_vfimamba_opencv.yaml"),
    ("vision_poincare_mnist_long.yaml", "vision_poincare_mnist.yaml"),
    ("vision_vfimamba_opencv_curriculum24.yaml", "vision_vfimamba_opencv_curriculum.yaml"),
    ("vision_vfimamba_opencv_long48.yaml", "vision_vfimamba_opencv.yaml"),
    ("vision_vfimamba_opencv_cosine48.yaml", "vision_vfimamba_opencv.yaml"),
])
def test_a_longer_budget_config_changes_the_budget_not_the_model(longer, base):
    a, b = panconv.load_config(EXAMPLES / longer), panconv.load_config(EXAMPLES / base)
    assert a["model"] == b["model"] and a["data"]["type"] == b["data"]["type"]
    assert a["train"]["optimizer"]["type"] == b["train"]["optimizer"]["type"]
    assert a["run"]["work_dir"] != b["run"]["work_dir"]  # never overwrites the shorter run
