"""Forward parity of ``education.CAKT`` with the official code (github.com/Badstu/CAKT, ``model/CAKT.py``,
checked at commit bb3cc39f28db9b79c19611d3715b1a1e11960147) on shared weights.

The official code is not part of this repository. To run the test, put a checkout (or just its
``model/CAKT.py``) at ``$PANCONV_CAKT_OFFICIAL`` (default ``/tmp/CAKT``)::

    git clone https://github.com/Badstu/CAKT /tmp/CAKT

The official LSTMs draw random initial states at every call; the test fixes them to zeros (what
``education.CAKT`` uses). Its unused tables (``pc_embedding``, ``rg_embedding``: the forward pass never
reads them) are dropped; every other weight is copied by name.

Without the official code, ``test_forward_matches_the_recorded_official_outputs`` compares with the
official outputs recorded in ``fixtures/cakt_official_outputs.pt`` (a few hundred numbers) for a
seeded instance of ours whose weights were copied into the official model. Regenerate it with the
official code in place: ``PANCONV_RECORD_CAKT=1 pytest plugins/education/tests/test_cakt_parity.py``.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from panconv_education.models.cakt import CAKT
from panconv_education.models.layers import interaction_tokens

OFFICIAL = Path(os.environ.get("PANCONV_CAKT_OFFICIAL", "/tmp/CAKT")) / "model" / "CAKT.py"
RECORDED = Path(__file__).parent / "fixtures" / "cakt_official_outputs.pt"

#: official name prefix -> ours
RENAMES = [("LSTM_FRONT.LSTM.", "lstm_front."), ("LSTM_REAR.LSTM.", "lstm_rear."), ("fc_c3d_gate.", "gate_conv."),
           ("fc_lstm_gate.", "gate_lstm."), ("fc_final.", "out."), ("embedding.", "embedding."), ("S", "decay"),
           *[(f"layer{i + 1}.0.", f"resnet.{i}.") for i in range(4)]]
BLOCK_RENAMES = [("conv3d_1.", "conv1."), ("conv3d_2.", "conv2."), ("se_layer.", "se.")]


def _official_module():
    if not OFFICIAL.is_file():
        pytest.skip(f"the official CAKT code is not at {OFFICIAL} (git clone https://github.com/Badstu/CAKT "
                    f"/tmp/CAKT, or set PANCONV_CAKT_OFFICIAL)")
    spec = importlib.util.spec_from_file_location("official_cakt", OFFICIAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _map_state(official_state: dict) -> dict:
    out = {}
    for name, value in official_state.items():
        if name.startswith(("pc_embedding.", "rg_embedding.")):
            continue
        for old, new in RENAMES:
            if name == old or (old.endswith(".") and name.startswith(old)):
                name = new + name[len(old):]
                break
        else:
            raise AssertionError(f"unmapped official parameter {name}")
        for old, new in BLOCK_RENAMES:
            name = name.replace(old, new)
        out[name] = value
    return out


@pytest.mark.parametrize("train", [False, True])
def test_forward_matches_the_official_code(monkeypatch, train):
    official_cakt = _official_module()

    def zero_state_forward(self, x):  # the official RNN.forward with h0 = c0 = 0 instead of torch.randn
        zeros = torch.zeros(self.num_layers, x.shape[0], self.hidden_dim)
        return self.LSTM(x, (zeros, zeros.clone()))

    monkeypatch.setattr(official_cakt.RNN, "forward", zero_state_forward)
    num_skills, batch, steps = 110, 3, 24
    torch.manual_seed(0)
    official = official_cakt.CAKT(4, 2 * num_skills, 15, 225, 225, 1, num_skills, batch, torch.device("cpu"))
    with torch.no_grad():  # non-trivial batch-norm statistics and decay
        for module in official.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
        official.S.fill_(0.7)
    ours = CAKT(num_skills=num_skills)
    ours.load_state_dict(_map_state(official.state_dict()), strict=True)
    official.train(train)
    ours.train(train)

    g = torch.Generator().manual_seed(1)
    skills = torch.randint(1, 8, (batch, steps + 1), generator=g)  # few skills: long same-skill histories
    responses = torch.randint(0, 2, (batch, steps + 1), generator=g)
    mask = torch.ones_like(skills, dtype=torch.bool)
    tokens = interaction_tokens(skills, responses, num_skills)[:, :steps]  # the official input: x_1 .. x_{T-1}
    with torch.no_grad():
        out_official, _, _ = official(tokens, None, None)
        expected = out_official.view(batch, steps, num_skills).gather(-1, (skills[:, 1:] - 1).unsqueeze(-1))[..., 0]
        got = ours({"skills": skills, "responses": responses, "mask": mask})
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# ---- recorded official outputs (runs in CI, where the official code is absent) ----------------------

NUM_SKILLS, BATCH, STEPS = 110, 3, 24


def _seeded_ours() -> CAKT:
    torch.manual_seed(0)
    ours = CAKT(num_skills=NUM_SKILLS)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # non-trivial batch-norm statistics and decay
        for module in ours.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=g) * 0.4 - 0.2)
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=g) * 0.6 - 0.3)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) * 1.5 + 0.5)
    return ours


def _seeded_inputs():
    g = torch.Generator().manual_seed(1)
    skills = torch.randint(1, 8, (BATCH, STEPS + 1), generator=g)
    responses = torch.randint(0, 2, (BATCH, STEPS + 1), generator=g)
    return skills, responses


def _official_outputs(monkeypatch, ours: CAKT, train: bool) -> torch.Tensor:
    official_cakt = _official_module()

    def zero_state_forward(self, x):
        zeros = torch.zeros(self.num_layers, x.shape[0], self.hidden_dim)
        return self.LSTM(x, (zeros, zeros.clone()))

    monkeypatch.setattr(official_cakt.RNN, "forward", zero_state_forward)
    official = official_cakt.CAKT(4, 2 * NUM_SKILLS, 15, 225, 225, 1, NUM_SKILLS, BATCH, torch.device("cpu"))
    ours_state = ours.state_dict()
    copied = {}
    for name, value in official.state_dict().items():
        mapped = _map_state({name: value})  # {} for the unused tables
        for new in mapped:
            copied[name] = ours_state[new]
    official.load_state_dict({**official.state_dict(), **copied})
    assert len(copied) == len(ours_state)
    official.train(train)
    skills, responses = _seeded_inputs()
    tokens = interaction_tokens(skills, responses, NUM_SKILLS)[:, :STEPS]
    with torch.no_grad():
        out, _, _ = official(tokens, None, None)
    return out.view(BATCH, STEPS, NUM_SKILLS).gather(-1, (skills[:, 1:] - 1).unsqueeze(-1))[..., 0]


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_CAKT"), reason="records the fixture (PANCONV_RECORD_CAKT=1)")
def test_record_official_outputs(monkeypatch):
    recorded = {}
    for train in (False, True):
        recorded[train] = _official_outputs(monkeypatch, _seeded_ours(), train)
    RECORDED.parent.mkdir(exist_ok=True)
    torch.save({"eval": recorded[False], "train": recorded[True]}, RECORDED)


@pytest.mark.parametrize("train", [False, True])
def test_forward_matches_the_recorded_official_outputs(train):
    expected = torch.load(RECORDED, weights_only=True)["train" if train else "eval"]
    ours = _seeded_ours().train(train)
    skills, responses = _seeded_inputs()
    with torch.no_grad():
        got = ours({"skills": skills, "responses": responses, "mask": torch.ones_like(skills, dtype=torch.bool)})
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
