"""Combiner: the factorised attention equals the dense attention the paper defines, with full support.

The reference below rebuilds, position by position, the partition of each factorization (direct set and
regions) from the paper's definitions and the implied dense matrix
``p(j|i) = softmax over {direct keys, region summaries}``, times ``q(j|Omega)`` inside a region; the model's
vectorised path must produce ``P @ V`` with it, and ``P`` must cover every attended position.
"""

import math

import pytest
import torch

from panconv_sequence.models.combiner import Combiner, CombinerAttention


def partition(factorization: str, length: int, b: int, causal: bool, i: int):
    """(direct set, list of regions) of query ``i``, real positions only, from the definitions."""
    allowed = [j for j in range(length) if j <= i or not causal]
    direct = [j for j in allowed if j // b == i // b]                      # the block / row / leaf of i
    regions = []
    if factorization == "fixed":
        for block in range(math.ceil(length / b)):
            if block != i // b and (block < i // b or not causal):
                regions.append([j for j in range(length) if j // b == block])
    elif factorization == "axial":
        for column in range(b):
            regions.append([j for j in range(length) if j % b == column and j // b < i // b])
            if not causal:
                regions.append([j for j in range(length) if j % b == column and j // b > i // b])
    else:
        leaves = 2 ** math.ceil(math.log2(math.ceil(length / b)))
        beta = i // b
        for level in range(int(math.log2(leaves))):
            if causal and not (beta >> level) & 1:
                continue
            sibling = (beta >> level) ^ 1
            regions.append([j for j in range(length) if (j // b) >> level == sibling])
    return direct, [r for r in regions if r]


def dense_reference(module: CombinerAttention, q, k, v, b: int):
    """The implied attention matrix ``P (N, H, L, L)`` of the module's factorization, and ``P @ v``."""
    n, heads, length, h = q.shape
    within = module.within_logits(k)                                       # (N, H, L)
    p = torch.zeros(n, heads, length, length, dtype=q.dtype)
    for i in range(length):
        direct, regions = partition(module.factorization, length, b, module.causal, i)
        scale = 1.0 / math.sqrt(h)
        logits = [(q[:, :, i] * k[:, :, j]).sum(-1) * scale for j in direct]
        logits += [(q[:, :, i] * k[:, :, region].mean(2)).sum(-1) * scale + math.log(len(region))
                   for region in regions]
        weights = torch.softmax(torch.stack(logits, -1), -1)                   # (N, H, |direct| + |regions|)
        for d, j in enumerate(direct):
            p[:, :, i, j] = weights[..., d]
        for r, region in enumerate(regions):
            inner = torch.softmax(within[:, :, region], -1)
            p[:, :, i, region] = weights[..., len(direct) + r, None] * inner
    return p, p @ v


@pytest.mark.parametrize("factorization", ["fixed", "axial", "logsparse"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [16, 21])
def test_factorised_attention_equals_its_dense_matrix_with_full_support(factorization, causal, length):
    torch.manual_seed(0)
    b = 4
    module = CombinerAttention(8, n_heads=2, factorization=factorization, block_size=b, causal=causal).double()
    q, k, v = (torch.randn(2, 2, length, 4, dtype=torch.float64) for _ in range(3))
    out = module.attend(q, k, v)
    p, expected = dense_reference(module, q, k, v, b)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(p.sum(-1), torch.ones_like(p[..., 0]))
    allowed = torch.ones(length, length, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    assert (p[..., allowed] > 0).all(), "full attention support: every attended position gets probability"
    assert (p[..., ~allowed] == 0).all()


@pytest.mark.parametrize("factorization", ["fixed", "axial", "logsparse"])
def test_regions_partition_the_attended_positions(factorization):
    for causal in (True, False):
        for i in range(23):
            direct, regions = partition(factorization, 23, 4, causal, i)
            covered = direct + [j for r in regions for j in r]
            assert sorted(covered) == [j for j in range(23) if j <= i or not causal]


def test_logsparse_has_logarithmically_many_summaries_and_fixed_sqrt():
    # per query: logsparse log2(L / b) regions, fixed L / b - 1 (bidirectional)
    _, regions = partition("logsparse", 1024, 4, False, 500)
    assert len(regions) == 8
    _, regions = partition("fixed", 1024, 32, False, 500)
    assert len(regions) == 31


@pytest.mark.parametrize("factorization", ["fixed", "axial", "logsparse"])
def test_causal_backbone_ignores_the_future(factorization):
    torch.manual_seed(0)
    model = Combiner(d_model=16, n_layers=2, n_heads=2, factorization=factorization, block_size=4, causal=True,
                     vocab_size=11).eval()
    x = torch.randint(11, (2, 30))
    y = x.clone()
    y[:, 17:] = (y[:, 17:] + 1) % 11
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    torch.testing.assert_close(a[..., :17], b[..., :17])
    assert not torch.allclose(a[..., 17:], b[..., 17:])


@pytest.mark.parametrize("factorization", ["fixed", "axial", "logsparse"])
def test_bidirectional_backbone_sees_far_positions(factorization):
    torch.manual_seed(0)
    model = Combiner(d_model=16, n_layers=1, n_heads=2, factorization=factorization, block_size=4,
                     vocab_size=11).eval()
    x = torch.randint(11, (1, 64))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 11
    with torch.no_grad():
        assert not torch.allclose(model(x)[0][..., 0], model(y)[0][..., 0])


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="factorization"):
        Combiner(factorization="strided")
    with pytest.raises(ValueError, match="divisible"):
        Combiner(d_model=10, n_heads=4)
