"""The genomics example configs validate (every key against its constructor); a fine-tuning config whose
pre-training run is missing is a one-line ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

import panconv
from panconv.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIGS = sorted(EXAMPLES.glob("genomics_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path, tmp_path, monkeypatch):
    text = path.read_text()
    if "pretrained: work_dirs/" in text:  # point it at a stand-in run dir: the real one exists after the pre-training
        (tmp_path / "work_dirs" / "genomics_hyenadna_pretrain").mkdir(parents=True)
        monkeypatch.chdir(tmp_path)
    panconv.load_config(path)


def test_missing_pretraining_run_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.backbone.*pretrained: work_dirs/genomics_hyenadna_pretrain does "
                                          r"not exist"):
        panconv.load_config(EXAMPLES / "genomics_hyenadna_species.yaml")


def test_examples_exist():
    assert {p.name for p in CONFIGS} >= {"genomics_hyenadna_species.yaml", "genomics_hyenadna_pretrain.yaml"}
