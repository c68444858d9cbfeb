"""S4 and S4D: convolution mode == recurrent mode, the generating-function kernel == the power series,
the HiPPO-LegS DPLR form, the optimiser rule, and forward parity with the official modules."""

import gzip
import sys
from pathlib import Path

import pytest
import torch

from panconv_sequence.models.s4 import S4, S4D, S4DKernel, S4Kernel, S4Mixer, hippo_legs, nplr_legs

FIXTURE = Path(__file__).parent / "fixtures" / "parity_s4_hyena.pt.gz"


def stepped(model, x):
    state = model.initial_state(x.shape[0])
    outs = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outs.append(y[0])
    return torch.stack(outs, dim=-1)


@pytest.mark.parametrize("init,disc", [("lin", "zoh"), ("inv", "bilinear"), ("legs", "zoh")])
def test_s4d_convolution_equals_recurrence_over_1024_steps(init, disc):
    torch.manual_seed(0)
    model = S4D(d_model=4, n_layers=2, d_state=16, init=init, disc=disc, in_channels=1).double().eval()
    x = torch.randn(2, 1024, dtype=torch.float64)
    with torch.no_grad():
        conv = model(x)[0]
        rec = stepped(model, x)
    assert conv.shape == rec.shape == (2, 4, 1024)
    assert (conv - rec).abs().max().item() < 1e-5


def test_s4_convolution_equals_recurrence_over_1024_steps():
    torch.manual_seed(0)
    model = S4(d_model=3, n_layers=1, d_state=8, l_max=1024, in_channels=1).double().eval()
    x = torch.randn(2, 1024, dtype=torch.float64)
    with torch.no_grad():
        conv = model(x)[0]
        rec = stepped(model, x)
    assert (conv - rec).abs().max().item() < 1e-5


@pytest.mark.parametrize("length", [16, 33])
def test_s4_kernel_equals_the_naive_power_series(length):
    """K[l] = C̄ Ā^l B̄ with the dense bilinear Ā, B̄ and C̄ = C̃ (I - Ā^L)^{-1}, on a small state."""
    torch.manual_seed(1)
    kernel = S4Kernel(3, d_state=6, l_max=length, dt_min=0.01, dt_max=0.5).double()
    with torch.no_grad():
        kernel.C.normal_()
        kernel.P.mul_(1.3)  # off the HiPPO init: a general DPLR matrix
        got = kernel(length)[0]
        da, db, dc = kernel.dense()
        powers = [torch.linalg.matrix_power(da, step) for step in range(length)]
        want = torch.stack([torch.einsum("hn,hnm,hm->h", dc[0], p, db).real for p in powers], dim=-1)
    assert got.shape == (3, length)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_s4d_kernel_equals_the_naive_power_series():
    torch.manual_seed(2)
    for disc in ("zoh", "bilinear"):
        kernel = S4DKernel(2, d_state=8, init="inv", disc=disc).double()
        with torch.no_grad():
            da, db, c = kernel.discrete()
            want = torch.stack([2 * (c[0] * db * da ** step).sum(-1).real for step in range(20)], dim=-1)
            torch.testing.assert_close(kernel(20)[0], want)


def test_hippo_legs_dplr_form_has_the_hippo_spectrum():
    """diag(Λ) - P̃P̃^* over the conjugate pairs is unitarily equivalent to HiPPO-LegS's A (same eigenvalues)."""
    n = 8
    a, b = hippo_legs(n)
    assert a[2, 1].item() == pytest.approx(-(5 * 3) ** 0.5) and a[1, 2].item() == 0 and a[3, 3].item() == -4
    assert b[3].item() == pytest.approx(7 ** 0.5)
    lam, p, _ = nplr_legs(n)
    assert torch.allclose(lam.real, torch.full((n // 2,), -0.5, dtype=torch.float64))
    assert (lam.imag < 0).all()
    full_lam, full_p = torch.cat([lam, lam.conj()]), torch.cat([p, p.conj()])
    dplr = torch.diag(full_lam) - full_p[:, None] * full_p.conj()[None, :]
    got = torch.linalg.eigvals(dplr)
    want = torch.linalg.eigvals(a.to(torch.complex128))
    key = lambda z: (round(z.real.item(), 6), round(z.imag.item(), 6))  # noqa: E731
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert max(abs(g - w) for g, w in zip(got, want)) < 1e-6


def test_param_groups_follow_the_papers_rule():
    model = S4(d_model=4, n_layers=2, d_state=4, l_max=16, in_channels=1, ssm_lr_mult=0.1)
    rules = {}
    for module in model.modules():
        if hasattr(type(module), "param_groups"):
            rules.update(module.param_groups())
    assert set(rules) == {f"kernel.{n}" for n in ("log_dt", "A_real", "A_imag", "B", "P")}
    assert all(r == {"lr_mult": 0.1, "decay_mult": 0.0} for r in rules.values())
    names = [n for n, _ in model.named_parameters()]
    ssm = {n for n in names if any(pattern in n for pattern in rules)}
    assert ssm and all(n.rsplit(".", 1)[-1] in {"log_dt", "A_real", "A_imag", "B", "P"} for n in ssm)
    assert not any(n.endswith(("kernel.C", ".D")) for n in ssm)  # C and D train as ordinary weights


def test_bidirectional_layer_sees_the_future_and_has_no_recurrent_mode():
    torch.manual_seed(0)
    layer = S4Mixer(S4DKernel(4, 8, channels=2), bidirectional=True)
    x = torch.randn(1, 20, 4, requires_grad=True)
    grad = torch.autograd.grad(layer(x)[:, 5].sum(), x)[0]
    assert grad[:, 6:].abs().max() > 1e-4
    causal = S4Mixer(S4DKernel(4, 8))
    grad = torch.autograd.grad(causal(x)[:, 5].sum(), x)[0]
    assert grad[:, 6:].abs().max() < 1e-6
    with pytest.raises(ValueError):
        layer.initial_state(1)


def test_longer_input_than_l_max_uses_the_l_max_kernel():
    layer = S4Mixer(S4Kernel(2, 4, l_max=8))
    assert layer.convolution_kernel(20).shape == (2, 8)
    assert layer(torch.randn(1, 20, 2)).shape == (1, 20, 2)


@pytest.mark.parametrize("kwargs", [{"d_state": 7}, {"dt_min": 0.5, "dt_max": 0.1}])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        S4D(d_model=4, n_layers=1, **kwargs)


@pytest.mark.parametrize("case", ["s4d_minimal", "s4d_block", "s4d_block_bidirectional", "s4d_block_bilinear",
                                  "s4_block", "s4_block_bidirectional"])
def test_forward_parity_with_the_official_modules(case):
    """Our S4/S4D layers on the weights recorded in the fixture == state-spaces/s4's standalone modules."""
    sys.path.insert(0, str(Path(__file__).parent))
    from make_parity_fixtures import CASES

    with gzip.open(FIXTURE, "rb") as fh:
        record = torch.load(fh, weights_only=True)["cases"][case]
    layer = CASES[case][0]().eval()
    layer.load_state_dict(record["state_dict"])
    with torch.no_grad():
        y32 = layer(record["input"])
        y64 = layer.double()(record["input"].double())
    assert (y32 - record["outputs"]["float32"]).abs().max().item() <= 1e-5
    assert (y64 - record["outputs"]["float64"]).abs().max().item() <= 1e-10
