"""Every committed example config validates (every key against its constructor, ``_base_`` chains resolved) from a
directory with no earlier runs, so a config cannot drift from the code or from the config it inherits unnoticed.

The configs whose model loads an earlier run at build time (``old_model:``, ``pretrained:``, a model's
``init_from:``) cannot validate before that run exists; they are listed here, and each must then stop at validation
with a one-line error naming the missing run. (``run.init_from`` is loaded by the engine when training starts, so
those configs validate.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import panconv
from panconv.errors import PanconvError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
STAGED = {  # the model builds from an earlier run's work dir
    "documents_cascadetabnet_cells.yaml", "documents_cascadetabnet_tables_long.yaml",
    "genomics_hyenadna_species.yaml", "genomics_hyenadna_species_probe.yaml",
    "genomics_hyenadna_species_softprompt.yaml", "genomics_hyenadna_splice.yaml",
    "vision_bt2_step1_bct.yaml", "vision_bt2_step1_bt2.yaml", "vision_bt2_step1_independent.yaml",
    "vision_bt2_step2_bct.yaml", "vision_bt2_step2_bt2.yaml", "vision_bt2_step2_independent.yaml",
}


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name not in STAGED], ids=lambda p: p.name)
def test_example_config_validates(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no work_dirs/ here
    cfg = panconv.load_config(path)
    assert cfg["model"] and cfg["data"]["type"] and cfg["train"]["epochs"] >= 1


@pytest.mark.parametrize("name", sorted(STAGED))
def test_an_example_whose_earlier_run_is_missing_stops_with_one_line_naming_it(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = EXAMPLES / name
    with pytest.raises(PanconvError) as info:
        panconv.load_config(path)
    message = str(info.value)
    earlier = set(re.findall(r"work_dirs/[\w.-]+", path.read_text())) - {f"work_dirs/{path.stem}"}
    assert "\n" not in message and any(run in message for run in earlier), message


def test_the_examples_are_all_seen():
    prefixes = {p.name.split("_")[0] for p in CONFIGS}
    assert {"vision", "graph", "sequence", "genomics", "documents", "audio", "pointcloud", "education"} <= prefixes
    assert STAGED <= {p.name for p in CONFIGS}
