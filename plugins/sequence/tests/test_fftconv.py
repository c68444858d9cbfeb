"""sequence.fftconv: the torch.fft reference against direct convolution, its gradients, the lean-backward CPU path
and the Triton kernel."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from panconv_sequence.kernels.fftconv import fft_size, fftconv, fftconv_recompute, fftconv_reference


def direct(u, k, bidirectional):
    """Depthwise convolution by conv1d (cross-correlation, so the kernel is flipped)."""
    taps, channels = k.shape[-1], k.shape[0]
    if bidirectional:
        return F.conv1d(u, k.flip(-1)[:, None], padding=(taps - 1) // 2, groups=channels)
    return F.conv1d(F.pad(u, (taps - 1, 0)), k.flip(-1)[:, None], groups=channels)[..., :u.shape[-1]]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("length,taps", [(64, 64), (100, 9), (5, 11), (257, 129), (1, 1)])
def test_reference_is_the_linear_convolution(length, taps, bidirectional):
    if bidirectional and taps % 2 == 0:
        taps += 1
    g = torch.Generator().manual_seed(length + taps)
    u = torch.randn(2, 3, length, generator=g, dtype=torch.float64)
    k = torch.randn(3, taps, generator=g, dtype=torch.float64)
    got = fftconv_reference(u, k, bidirectional=bidirectional)
    torch.testing.assert_close(got, direct(u, k, bidirectional), atol=1e-10, rtol=1e-10)


def test_padding_prevents_wraparound():
    """A full-length causal filter needs n >= 2L - 1: an impulse at the end must not leak to the start."""
    length = 16
    u = torch.zeros(1, 1, length, dtype=torch.float64)
    u[..., -1] = 1.0
    k = torch.ones(1, length, dtype=torch.float64)
    y = fftconv_reference(u, k)
    assert fft_size(length, length) >= 2 * length - 1
    assert torch.allclose(y[..., :-1], torch.zeros(length - 1, dtype=torch.float64), atol=1e-12)
    assert y[..., -1].item() == pytest.approx(1.0)


def test_skip_term_and_leading_dims():
    u = torch.randn(2, 5, 3, 20, dtype=torch.float64)
    k = torch.randn(3, 20, dtype=torch.float64)
    d = torch.randn(3, dtype=torch.float64)
    y = fftconv_reference(u, k, d)
    want = direct(u.reshape(10, 3, 20), k, False).reshape(2, 5, 3, 20) + u * d[:, None]
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_reference_gradcheck(bidirectional):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 2, 12, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 7, generator=g, dtype=torch.float64, requires_grad=True)
    d = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, k, d: fftconv_reference(u, k, d, bidirectional), (u, k, d))


def test_half_precision_is_computed_in_float32():
    u, k = torch.randn(1, 2, 30), torch.randn(2, 30)
    y = fftconv_reference(u.bfloat16(), k.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), fftconv_reference(u.bfloat16().float(), k.bfloat16().float()),
                               atol=0.05, rtol=0.02)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="u must be"):
        fftconv_reference(torch.randn(2, 3, 10), torch.randn(4, 10))
    with pytest.raises(ValueError, match="odd length"):
        fftconv_reference(torch.randn(2, 3, 10), torch.randn(3, 10), bidirectional=True)
    with pytest.raises(ValueError, match="D must be"):
        fftconv_reference(torch.randn(2, 3, 10), torch.randn(3, 10), torch.randn(4))


def test_the_lean_backward_runs_on_cpu_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    u, k = torch.randn(1, 2, 8), torch.randn(2, 8)
    assert fftconv.select(u, k).name == "fft_recompute"
    monkeypatch.setenv("PANCONV_KERNELS", "reference")
    assert fftconv.select(u, k) is None


def _inputs(batch, channels, length, taps, with_d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(*batch, channels, length, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(channels, taps, generator=g, dtype=dtype, requires_grad=True)
    d = torch.randn(channels, generator=g, dtype=dtype, requires_grad=True) if with_d else None
    return u, k, d


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch,length,taps", [((2,), 37, 37), ((2, 2), 100, 9), ((1,), 5, 11), ((2,), 70, 141),
                                               ((), 16, 15)])
@pytest.mark.parametrize("with_d", [True, False])
def test_lean_backward_gradcheck(batch, length, taps, with_d, bidirectional):
    """The hand-written backward (correlations by FFT) against finite differences, in float64."""
    if bidirectional and taps % 2 == 0:
        taps += 1
    u, k, d = _inputs(batch, 3, length, taps, with_d)
    extra = (d,) if with_d else ()
    assert torch.autograd.gradcheck(lambda u, k, *d: fftconv_recompute(u, k, d[0] if d else None, bidirectional),
                                    (u, k, *extra))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lean_backward_equals_autograd_through_the_reference(dtype, bidirectional):
    u, k, d = _inputs((2,), 4, 300, 301 if bidirectional else 300, True, dtype=dtype, seed=3)
    y = fftconv_recompute(u, k, d, bidirectional)
    y_ref = fftconv_reference(u, k, d, bidirectional)
    assert torch.equal(y, y_ref)                          # the forward is the reference's
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    got = torch.autograd.grad(y, (u, k, d), grad)
    want = torch.autograd.grad(y_ref, (u, k, d), grad)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(a.float(), b.float(), atol=tol * b.float().abs().max().item(), rtol=tol)


def test_lean_backward_keeps_only_the_inputs():
    """What autograd keeps for the backward: u, k and D, where the reference keeps the spectra as well."""
    def saved_bytes(fn):
        u, k, d = _inputs((1,), 8, 512, 512, True, dtype=torch.float32)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            fn(u, k, d)
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}
        return sum(storages.values()), (u, k, d)

    lean, (u, k, d) = saved_bytes(fftconv_recompute)
    assert lean == sum(t.numel() * t.element_size() for t in (u, k, d))
    reference, _ = saved_bytes(fftconv_reference)
    assert reference >= lean + 2 * 8 * (fft_size(512, 512) // 2 + 1) * 8   # + both complex64 spectra


TRITON_CHECK = textwrap.dedent("""
    import json, torch
    from panconv_sequence.kernels.fftconv import fftconv, fftconv_reference, fftconv_triton
    out = []
    for bidirectional in (False, True):
        for length, taps in ((37, 37), (100, 9), (5, 11), (70, 140)):
            if bidirectional and taps % 2 == 0:
                taps += 1
            g = torch.Generator().manual_seed(length * taps)
            u = torch.randn(2, 3, length, generator=g, requires_grad=True)
            k = torch.randn(3, taps, generator=g, requires_grad=True)
            d = torch.randn(3, generator=g, requires_grad=True)
            selected = fftconv.select(u, k, d, bidirectional=bidirectional)
            y = fftconv_triton(u, k, d, bidirectional=bidirectional)
            grad = torch.randn(y.shape, generator=g)
            gu, gk, gd = torch.autograd.grad(y, (u, k, d), grad)
            yr = fftconv_reference(u, k, d, bidirectional)
            ru, rk, rd = torch.autograd.grad(yr, (u, k, d), grad)
            out.append({"case": [bidirectional, length, taps], "selected": selected.name if selected else None,
                        "y": (y - yr).abs().max().item(), "du": (gu - ru).abs().max().item(),
                        "dk": (gk - rk).abs().max().item(), "dd": (gd - rd).abs().max().item()})
    print(json.dumps(out))
""")


def test_triton_kernel_and_its_gradients_match_the_reference_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 8
    for r in results:
        assert r["selected"] == "triton", r
        assert max(r["y"], r["du"], r["dk"], r["dd"]) < 1e-4, r
