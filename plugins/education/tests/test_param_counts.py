"""Parameter counts of the four models at the sizes of their example configs, on ASSIST2009 and STATICS.

The sizes are read from ``examples/education_<model>_assist2009.yaml`` (so the README's counts and the
configs cannot drift apart) and built on the meta device with each data set's skill count. None of the
four papers' tables could be checked offline here (see the README's "Parameter counts"); these are our
counts, with the arithmetic of the two simplest written out so that a structural change shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import panconv

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SKILLS = {"assist2009_updated": 110, "STATICS": 1223}
OURS = {
    ("cakt", "assist2009_updated"): 1_095_937, ("cakt", "STATICS"): 1_848_325,
    ("dkt", "assist2009_updated"): 387_910, ("dkt", "STATICS"): 1_056_823,
    ("dkvmn", "assist2009_updated"): 147_751, ("dkvmn", "STATICS"): 648_601,
    ("sakt", "assist2009_updated"): 59_329, ("sakt", "STATICS"): 273_025,
}


def build(model: str, data: str) -> torch.nn.Module:
    cfg = yaml.safe_load((EXAMPLES / f"education_{model}_assist2009.yaml").read_text())["model"]
    args = {k: v for k, v in cfg.items() if k != "type"}
    with torch.device("meta"):
        return panconv.get_component("model", cfg["type"])(num_skills=SKILLS[data], **args,
                                                           **({"max_len": 200} if model == "sakt" else {}))


@pytest.mark.parametrize("model, data", sorted(OURS))
def test_parameter_count_at_the_example_sizes(model, data):
    assert sum(p.numel() for p in build(model, data).parameters()) == OURS[model, data]


@pytest.mark.parametrize("data", sorted(SKILLS))
def test_dkt_and_dkvmn_counts_by_hand(data):
    n = SKILLS[data]
    # DKT: embedding (2n+1) x 200, LSTM 4 x 200 x (200 + 200) + 2 x 4 x 200 biases, output 200 x n + n
    dkt = (2 * n + 1) * 200 + 4 * 200 * 400 + 8 * 200 + 200 * n + n
    # DKVMN (N 20, d_k 50, d_v 200, summary 50): key/value embeddings, M^k, M^v_0, erase, add, W_1, W_2
    dkvmn = (n + 1) * 50 + (2 * n + 1) * 200 + 20 * 50 + 20 * 200 + 2 * (200 * 200 + 200) + 250 * 50 + 50 + 51
    assert (dkt, dkvmn) == (OURS["dkt", data], OURS["dkvmn", data])
