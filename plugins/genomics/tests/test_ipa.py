"""DCA-IPA (Bitbol et al. 2016): mean-field Potts coupling inference against known answers, the IPA driven by it.

The known answer: for a small Potts model enumerated exactly (every sequence's probability), the mean-field
couplings ``-C^-1`` inferred from its exact one- and two-site frequencies equal the true couplings to first order
in the coupling strength (both in the zero-sum gauge): the relative error shrinks linearly with the couplings,
and is exactly zero for independent sites.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from panconv_genomics.models.diffpalm import (
    PottsPairs,
    dca_ipa,
    dca_tables,
    mean_field_couplings,
    pairing_precision,
    pmi_pair_scores,
    potts_frequencies,
    zero_sum_gauge,
)


def _exact_frequencies(fields: torch.Tensor, couplings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f_i``, ``f_ij`` of ``P(x) ~ exp(sum_i h_i(x_i) + sum_{i<j} J_ij(x_i, x_j))`` by enumerating all q^L states."""
    length, q = fields.shape
    states = torch.tensor(list(itertools.product(range(q), repeat=length)))
    onehot = F.one_hot(states, q).double()
    log_w = torch.einsum("nia,ia->n", onehot, fields) + 0.5 * torch.einsum("nia,ijab,njb->n", onehot, couplings,
                                                                             onehot)
    p = (log_w - log_w.logsumexp(0)).exp()
    return torch.einsum("n,nia->ia", p, onehot), torch.einsum("n,nia,njb->ijab", p, onehot, onehot)


def _random_potts(length: int, q: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fields = 0.5 * torch.randn(length, q, generator=g, dtype=torch.double)
    j = torch.randn(length, length, q, q, generator=g, dtype=torch.double)
    j = (j + j.permute(1, 0, 3, 2)) / 2                           # J_ij(a, b) = J_ji(b, a)
    j[torch.arange(length), torch.arange(length)] = 0.0
    return fields, zero_sum_gauge(j)


def test_mean_field_couplings_recover_weak_couplings_of_an_enumerated_potts_model():
    fields, unit = _random_potts(length=4, q=3, seed=0)
    errors = []
    for strength in (0.2, 0.1, 0.05):
        truth = strength * unit
        e = mean_field_couplings(*_exact_frequencies(fields, truth))
        errors.append(float((e - truth).norm() / truth.norm()))
        # symmetric, zero-sum gauge, no self-couplings
        torch.testing.assert_close(e, e.permute(1, 0, 3, 2))
        torch.testing.assert_close(e.sum(-1), torch.zeros(4, 4, 3, dtype=torch.double))
        torch.testing.assert_close(e.sum(-2), torch.zeros(4, 4, 3, dtype=torch.double))
        assert e[torch.arange(4), torch.arange(4)].abs().max() == 0
    assert errors[0] < 0.06                                        # measured 0.034, 0.019, 0.010
    assert errors[1] < 0.6 * errors[0] and errors[2] < 0.6 * errors[1]   # first order: halves with the couplings
    # the sign matters: a coupling favouring (a, b) must come out positive
    assert float((mean_field_couplings(*_exact_frequencies(fields, 0.1 * unit)) * unit).sum()) > 0


def test_mean_field_couplings_of_independent_sites_are_zero():
    fields, _ = _random_potts(length=3, q=4, seed=1)
    e = mean_field_couplings(*_exact_frequencies(fields, torch.zeros(3, 3, 4, 4, dtype=torch.double)))
    assert e.abs().max() < 1e-10


def test_potts_frequencies_follow_their_definition_with_the_pseudocount():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, (30, 4), generator=g)
    f_i, f_ij = potts_frequencies(x, q=3, pseudocount=0.5)
    count = ((x[:, 1] == 2) & (x[:, 3] == 0)).double().mean()
    assert f_ij[1, 3, 2, 0].item() == pytest.approx(0.5 * count + 0.5 / 9)
    assert f_i[2, 1].item() == pytest.approx(0.5 * (x[:, 2] == 1).double().mean() + 0.5 / 3)
    torch.testing.assert_close(f_ij[2, 2], torch.diag(f_i[2]))   # consistent self-pairs
    torch.testing.assert_close(f_ij.sum(-1), f_i[:, None].expand(4, 4, 3))   # sum over b: f_i(a)


def test_dca_tables_are_the_inter_family_block_and_score_pairs_by_their_sum():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(4, (60, 3), generator=g), torch.randint(4, (60, 2), generator=g)
    table = dca_tables(a, b, q=4)
    whole = mean_field_couplings(*potts_frequencies(torch.cat([a, b], 1), 4, 0.5))
    torch.testing.assert_close(table, whole[:3, 3:])
    scores = pmi_pair_scores(table, a[:3], b[:3])
    direct = sum(table[i, j, a[1, i], b[2, j]] for i in range(3) for j in range(2))
    torch.testing.assert_close(scores[1, 2], direct)


def test_dca_ipa_recovers_pairs_on_a_large_msa():
    """DCA-IPA from a random start on 50 species x 6 paralogs of the Potts model: far above chance (1/6)."""
    potts = PottsPairs(la=8, lb=8, q=4, n_links=8, coupling=1.5, seed=0)
    a_rows, b_rows, truths = potts.pairing_task(50, 6, seed=3, sweeps=20)
    assert pairing_precision(dca_ipa(a_rows, b_rows, q=4), truths) > 0.65          # measured 0.82
    flat = PottsPairs(la=8, lb=8, q=4, n_links=1, coupling=0.0, n_intra=0, seed=0)
    a_rows, b_rows, truths = flat.pairing_task(50, 6, seed=3, sweeps=20)
    assert pairing_precision(dca_ipa(a_rows, b_rows, q=4), truths) < 0.3

