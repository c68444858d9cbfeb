"""DiffPALM pieces: Sinkhorn, hard assignment, the Potts generator's couplings, soft one-hot inputs, and (slow)
the whole pipeline recovering planted pairs well above chance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from panconv_genomics.models.diffpalm import (
    MSATransformer,
    PottsPairs,
    diffpalm_pairing,
    greedy_assignment,
    pairing_precision,
    sinkhorn,
    train_msa_lm,
)


def test_sinkhorn_is_doubly_stochastic_and_sharpens_with_temperature():
    torch.manual_seed(0)
    x = torch.randn(5, 5)
    p = sinkhorn(x, tau=1.0, iterations=50)
    torch.testing.assert_close(p.sum(-1), torch.ones(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.sum(-2), torch.ones(5), atol=1e-4, rtol=0)
    assert sinkhorn(x, tau=0.05, iterations=200).max(-1).values.min() > p.max(-1).values.min()


def test_greedy_assignment_reads_a_noisy_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    scores = F.one_hot(perm, 4).float() + 0.3 * torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy_assignment(scores), perm)
    assert pairing_precision([perm], [torch.tensor([2, 0, 1, 3])]) == 0.5


def _mutual_information(x: torch.Tensor, y: torch.Tensor, q: int) -> float:
    joint = torch.bincount(x * q + y, minlength=q * q).double().view(q, q) / len(x)
    px, py = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (px @ py)[nz]).log()).sum())


def test_potts_links_couple_the_two_families():
    potts = PottsPairs(la=6, lb=6, q=4, n_links=3, coupling=2.0, n_intra=0, seed=1)
    x = potts.sample(3000, sweeps=20, seed=0)
    i, j = potts.links[0]
    assert i < 6 <= j                                       # an A position coupled to a B position
    coupled = _mutual_information(x[:, i], x[:, j], 4)
    linked = {p for link in potts.links for p in link}
    a, b = next((a, b) for a in range(6) for b in range(6, 12) if a not in linked and b not in linked)
    assert coupled > 0.1 > 5 * _mutual_information(x[:, a], x[:, b], 4)


def test_soft_one_hot_inputs_equal_ids():
    torch.manual_seed(0)
    model = MSATransformer(q=4, length=6, d=16, layers=1, heads=2).eval()
    ids = torch.randint(5, (1, 3, 6))
    torch.testing.assert_close(model(ids), model(F.one_hot(ids, 5).float()))
    # rows are exchangeable: permuting the rows permutes the outputs
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model(ids[:, perm]), model(ids)[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_diffpalm_recovers_planted_pairs_well_above_chance():
    torch.manual_seed(0)
    potts = PottsPairs(la=8, lb=8, q=4, n_links=8, coupling=1.5, seed=0)
    model = MSATransformer(4, 16)
    train_msa_lm(model, potts, steps=300, pool=5000)
    g = torch.Generator().manual_seed(1)
    pairs = potts.sample(24, seed=99)
    a_rows, b_rows, truths = [], [], []
    for s in range(4):
        block, shuffle = pairs[6 * s:6 * s + 6], torch.randperm(6, generator=g)
        a_rows.append(block[:, :8])
        b_rows.append(block[shuffle, 8:])
        truths.append(torch.argsort(shuffle))
    precision = pairing_precision(diffpalm_pairing(model, a_rows, b_rows, 8), truths)
    assert precision > 3 / 6  # chance is 1/6
