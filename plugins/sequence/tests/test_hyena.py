"""The Hyena operator: causality, the implicit filter, the recurrence, parity with the official standalone."""

import gzip
import math
import sys
from pathlib import Path

import pytest
import torch

from panconv_sequence.models.hyena import Hyena, HyenaFilter, HyenaOperator, positional_features

FIXTURE = Path(__file__).parent / "fixtures" / "parity_s4_hyena.pt.gz"


@pytest.mark.parametrize("order", [2, 3])
def test_causal_operator_does_not_see_the_future(order):
    torch.manual_seed(0)
    op = HyenaOperator(8, l_max=64, order=order, filter_order=16)
    x = torch.randn(2, 40, 8, requires_grad=True)
    grad = torch.autograd.grad(op(x)[:, 10].sum(), x)[0]
    assert grad[:, 11:].abs().max().item() < 1e-6
    assert grad[:, :10].abs().max().item() > 1e-4


def test_two_sided_operator_sees_the_future():
    torch.manual_seed(0)
    op = HyenaOperator(8, l_max=64, causal=False, filter_order=16)
    x = torch.randn(2, 40, 8, requires_grad=True)
    grad = torch.autograd.grad(op(x)[:, 10].sum(), x)[0]
    assert grad[:, 12:].abs().max().item() > 1e-4


def test_order_two_operator_is_the_hyena_recurrence():
    """y = out_proj(x0 · (h ⊛ (v · x1) + b · v · x1)) with the projections after the short filter, explicitly."""
    torch.manual_seed(0)
    op = HyenaOperator(4, l_max=16, order=2, filter_order=8).double()
    u = torch.randn(1, 16, 4, dtype=torch.float64)
    z = op.short_filter(op.in_proj(u).transpose(1, 2))[..., :16]
    x0, x1, v = z.split(4, dim=1)
    h = op.filter_fn.filter(16).t()                       # (4, 16)
    s = v * x1
    conv = torch.stack([sum(h[:, j] * s[..., t - j] for j in range(t + 1)) for t in range(16)], dim=-1)
    want = op.out_proj((x0 * (conv + op.filter_fn.bias[:, None] * s)).transpose(1, 2))
    torch.testing.assert_close(op(u), want)


def test_implicit_filter_is_an_ffn_of_positions_times_a_decay_window():
    torch.manual_seed(0)
    filt = HyenaFilter(6, l_max=100, emb_dim=5, filter_order=8, fast_decay_pct=0.3, slow_decay_pct=1.5, target=1e-2)
    z, t = positional_features(100, 5)
    assert z.shape == (1, 100, 5) and torch.equal(z[..., 0], t[..., 0])
    torch.testing.assert_close(z[0, 7, 1:3], torch.cos(torch.tensor([1e-4, 1.0]) * 2 * math.pi * 7 / 100))
    # the fastest channel's window reaches `target` at 30 % of the length, the slowest at 150 %
    window = torch.exp(-filt.t[0, :, 0, None] * filt.deltas.abs()[0])
    assert window[30, -1].item() == pytest.approx(1e-2, rel=0.05)
    assert window[99, 0].item() == pytest.approx(1e-2 ** (0.99 / 1.5), rel=0.05)
    filt.modulate = False
    raw = filt.filter(100)
    filt.modulate = True
    torch.testing.assert_close(filt.filter(100), raw * window)


def test_backbone_and_errors():
    model = Hyena(d_model=8, n_layers=2, l_max=32, in_channels=1)
    assert model(torch.randn(2, 32, 1))[0].shape == (2, 8, 32)
    with pytest.raises(ValueError, match="l_max"):
        model(torch.randn(1, 33, 1))
    with pytest.raises(ValueError):
        HyenaOperator(8, 32, order=1)
    with pytest.raises(ValueError):
        Hyena(emb_dim=4)


def test_forward_parity_with_the_official_standalone():
    """Our HyenaOperator on the recorded weights == safari's standalone_hyena.HyenaOperator (order 3)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from make_parity_fixtures import CASES

    with gzip.open(FIXTURE, "rb") as fh:
        record = torch.load(fh, weights_only=True)["cases"]["hyena"]
    op = CASES["hyena"][0]().eval()
    op.load_state_dict(record["state_dict"])
    with torch.no_grad():
        y32 = op(record["input"])
        y64 = op.double()(record["input"].double())
    assert (y32 - record["outputs"]["float32"]).abs().max().item() <= 1e-5
    assert (y64 - record["outputs"]["float64"]).abs().max().item() <= 1e-8
