"""vision.selective_scan: the sequential reference is the S6 recurrence (checked element by element and
against mambapy's pure-PyTorch Mamba scan), the parallel scan and the Triton kernel (under
TRITON_INTERPRET=1) equal it with their gradients, and the 2-D / multi-frame scans are scans of the
flipped, transposed or interleaved sequences."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.kernels.selective_scan import (
    cross_merge,
    cross_scan,
    cross_selective_scan,
    interleave_frames,
    interleaved_selective_scan,
    linear_scan_parallel,
    scan_orders,
    selective_scan,
    selective_scan_parallel,
    selective_scan_reference,
)


def _inputs(layout, batch=2, dim=4, n_state=3, length=11, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    delta = 0.5 * torch.randn(batch, dim, length, generator=g, dtype=dtype)
    A = -torch.exp(0.5 * torch.randn(dim, n_state, generator=g, dtype=dtype))
    shape = {"shared": (batch, n_state, length), "grouped": (batch, 2, n_state, length),
             "fixed": (dim, n_state)}[layout]
    B, C = torch.randn(*shape, generator=g, dtype=dtype), torch.randn(*shape, generator=g, dtype=dtype)
    D, z, bias = (torch.randn(dim, generator=g, dtype=dtype), torch.randn(batch, dim, length, generator=g, dtype=dtype),
                  torch.randn(dim, generator=g, dtype=dtype))
    return u, delta, A, B, C, D, z, bias


def _scalar_loops(u, delta, A, B, C, D, z, bias):
    """The S6 definition written out one scalar at a time (softplus(Δ + bias), grouped B/C, gate)."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    out = torch.zeros_like(u)
    for b in range(batch):
        for d in range(dim):
            h = [0.0] * n_state
            for t in range(length):
                dt = math.log1p(math.exp(float(delta[b, d, t] + bias[d])))
                y = 0.0
                for n in range(n_state):
                    g = d // (dim // B.shape[1])
                    h[n] = math.exp(dt * float(A[d, n])) * h[n] + dt * float(B[b, g, n, t]) * float(u[b, d, t])
                    y += float(C[b, g, n, t]) * h[n]
                y += float(D[d] * u[b, d, t])
                out[b, d, t] = y * float(F.silu(z[b, d, t]))
    return out


def test_reference_is_the_s6_recurrence_written_out():
    u, delta, A, B, C, D, z, bias = _inputs("grouped", batch=1, dim=4, n_state=2, length=6)
    got = selective_scan_reference(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    torch.testing.assert_close(got, _scalar_loops(u, delta, A, B, C, D, z, bias), atol=1e-6, rtol=1e-6)


def test_linear_scan_parallel_is_the_first_order_recurrence():
    g = torch.Generator().manual_seed(1)
    for length in (1, 2, 3, 7, 8, 33):
        a, b = torch.rand(3, length, 2, generator=g, dtype=torch.float64), torch.randn(3, length, 2, generator=g,
                                                                                        dtype=torch.float64)
        h, want = torch.zeros(3, 2, dtype=torch.float64), []
        for t in range(length):
            h = a[:, t] * h + b[:, t]
            want.append(h)
        torch.testing.assert_close(linear_scan_parallel(a, b, dim=1), torch.stack(want, 1))
    # its hand-written backward (the reverse scan) is the derivative
    a, b = torch.rand(2, 9, 3, dtype=torch.float64), torch.randn(2, 9, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan_parallel(a, b, dim=1),
                                    (a.requires_grad_(True), b.requires_grad_(True)))


@pytest.mark.parametrize("layout", ["shared", "grouped", "fixed"])
@pytest.mark.parametrize("length", [1, 11, 16])
def test_parallel_scan_and_its_gradients_equal_the_reference(layout, length):
    u, delta, A, B, C, D, z, bias = _inputs(layout, length=length)
    ins = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, z, bias)]
    kwargs = dict(D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
    out, last = selective_scan_parallel(u, delta, A, B, C, **kwargs)
    out_r, last_r = selective_scan_reference(u, delta, A, B, C, **kwargs)
    torch.testing.assert_close(out, out_r)
    torch.testing.assert_close(last, last_r.to(last.dtype))
    g = torch.Generator().manual_seed(2)
    go, gl = torch.randn(out.shape, generator=g, dtype=out.dtype), torch.randn(last.shape, generator=g,
                                                                                dtype=last.dtype)
    got = torch.autograd.grad((out, last), ins, (go, gl), allow_unused=True)   # L = 1: exp(Δ A) is never used
    want = torch.autograd.grad((out_r, last_r), ins, (go, gl))
    for a, r in zip(got, want):
        torch.testing.assert_close(torch.zeros_like(r) if a is None else a, r)


def test_without_options_and_in_float32_the_output_keeps_the_input_dtype():
    u, delta, A, B, C, *_ = (t.float() for t in _inputs("shared"))
    out = selective_scan_parallel(u, delta.abs(), A, B, C)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, selective_scan_reference(u, delta.abs(), A, B, C), atol=1e-5, rtol=1e-5)


def test_dispatch_on_cpu_runs_the_parallel_scan_and_can_be_forced_to_the_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("PANCONV_KERNELS", raising=False)
    args = _inputs("shared", dtype=torch.float32)[:5]
    assert selective_scan.select(*args).name == "parallel"
    monkeypatch.setenv("PANCONV_KERNELS", "reference")
    assert selective_scan.select(*args) is None


def test_bad_shapes_raise_value_error():
    u, delta, A, B, C, D, z, bias = _inputs("shared")
    with pytest.raises(ValueError, match="u and delta"):
        selective_scan_reference(u, delta[..., :-1], A, B, C)
    with pytest.raises(ValueError, match=r"A must be \(D, N\)"):
        selective_scan_reference(u, delta, A[:-1], B, C)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_reference(u, delta, A, B[:, :-1], C)
    with pytest.raises(ValueError, match="G dividing D"):
        selective_scan_reference(u, delta, A, torch.randn(2, 3, 3, 11, dtype=u.dtype), C)
    with pytest.raises(ValueError, match="delta_bias"):
        selective_scan_parallel(u, delta, A, B, C, delta_bias=bias[:-1])


def test_matches_mambapy_pure_pytorch_pscan_on_fixed_inputs():
    """mambapy 1.2.0's MambaBlock.selective_scan (Blelloch pscan, (batch, L, D) layout, delta already softplus'd)."""
    mamba = pytest.importorskip("mambapy.mamba", reason="mambapy is not installed (the vision [test] extra has it)")
    g = torch.Generator().manual_seed(1234)
    batch, dim, n_state, length = 2, 5, 4, 13           # not a power of two: mambapy pads
    x = torch.randn(batch, length, dim, generator=g)
    delta = F.softplus(torch.randn(batch, length, dim, generator=g))
    A = -torch.exp(torch.randn(dim, n_state, generator=g))
    B, C = torch.randn(batch, length, n_state, generator=g), torch.randn(batch, length, n_state, generator=g)
    D = torch.randn(dim, generator=g)
    want = mamba.MambaBlock.selective_scan(None, x, delta, A, B, C, D)          # (batch, L, D)
    args = (x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D)
    for fn in (selective_scan_reference, selective_scan_parallel):
        torch.testing.assert_close(fn(*args).transpose(1, 2), want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the 2-D and multi-frame scans
def _direction_inputs(batch, channels, n_state, tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    delta = 0.3 * torch.randn(batch, 4, channels, tokens, generator=g, dtype=torch.float64)
    A = -torch.exp(0.5 * torch.randn(4 * channels, n_state, generator=g, dtype=torch.float64))
    B = torch.randn(batch, 4, n_state, tokens, generator=g, dtype=torch.float64)
    C = torch.randn(batch, 4, n_state, tokens, generator=g, dtype=torch.float64)
    D, bias = torch.randn(4 * channels, generator=g, dtype=torch.float64), torch.randn(4 * channels, generator=g,
                                                                                        dtype=torch.float64)
    return delta, A, B, C, D, bias


def _one_direction(seq, k, delta, A, B, C, D, bias, channels):
    """A plain 1-D scan of ``seq`` (batch, C, L) with direction k's parameters."""
    sl = slice(k * channels, (k + 1) * channels)
    return selective_scan_reference(seq, delta[:, k], A[sl], B[:, k], C[:, k], D[sl], delta_bias=bias[sl],
                                    delta_softplus=True)


def test_cross_scan_sequences_are_the_flattened_transposed_and_flipped_image():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    xs = cross_scan(x)
    assert torch.equal(xs[:, 0], x.flatten(2))
    assert torch.equal(xs[:, 1], x.transpose(2, 3).flatten(2))
    assert torch.equal(xs[:, 2], x.flatten(2).flip(-1))
    assert torch.equal(xs[:, 3], x.transpose(2, 3).flatten(2).flip(-1))
    assert torch.equal(cross_merge(xs, 4, 5), 4 * x.flatten(2))


def test_each_cross_scan_direction_is_a_scan_of_the_flipped_or_transposed_sequence():
    batch, channels, height, width, n_state = 1, 2, 3, 4, 3
    x = torch.randn(batch, channels, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    delta, A, B, C, D, bias = _direction_inputs(batch, channels, n_state, height * width)
    per = cross_selective_scan(x, delta, A, B, C, D, delta_bias=bias, reduce=False)      # (batch, 4, C, H, W)
    t = x.transpose(2, 3)
    row, col = x.flatten(2), t.flatten(2)
    torch.testing.assert_close(per[:, 0], _one_direction(row, 0, delta, A, B, C, D, bias, channels).view_as(x))
    torch.testing.assert_close(per[:, 1], _one_direction(col, 1, delta, A, B, C, D, bias, channels)
                               .view_as(t).transpose(2, 3))
    torch.testing.assert_close(per[:, 2], _one_direction(row.flip(-1), 2, delta, A, B, C, D, bias, channels)
                               .flip(-1).view_as(x))
    torch.testing.assert_close(per[:, 3], _one_direction(col.flip(-1), 3, delta, A, B, C, D, bias, channels)
                               .flip(-1).view_as(t).transpose(2, 3))
    torch.testing.assert_close(cross_selective_scan(x, delta, A, B, C, D, delta_bias=bias), per.sum(1))


def test_interleaved_scan_alternates_the_frames_at_each_pixel():
    batch, frames, channels, height, width, n_state = 1, 2, 2, 2, 3, 2
    f = torch.randn(batch, frames, channels, height, width, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))
    tokens = frames * height * width
    seq = interleave_frames(f)
    assert torch.equal(seq[..., :4], torch.stack([f[:, 0, :, 0, 0], f[:, 1, :, 0, 0], f[:, 0, :, 0, 1],
                                                  f[:, 1, :, 0, 1]], -1))
    delta, A, B, C, D, bias = _direction_inputs(batch, channels, n_state, tokens, seed=5)
    per = interleaved_selective_scan(f, delta, A, B, C, D, delta_bias=bias, reduce=False)   # (batch, 4, T, C, H, W)
    y0 = _one_direction(seq, 0, delta, A, B, C, D, bias, channels)                          # (batch, C, H*W*T)
    torch.testing.assert_close(per[:, 0], y0.view(batch, channels, height, width, frames).permute(0, 4, 1, 2, 3))
    y2 = _one_direction(seq.flip(-1), 2, delta, A, B, C, D, bias, channels).flip(-1)
    torch.testing.assert_close(per[:, 2], y2.view(batch, channels, height, width, frames).permute(0, 4, 1, 2, 3))
    col = f.permute(0, 2, 4, 3, 1).flatten(2)                                               # column-major, interleaved
    y1 = _one_direction(col, 1, delta, A, B, C, D, bias, channels)
    torch.testing.assert_close(per[:, 1], y1.view(batch, channels, width, height, frames).permute(0, 4, 1, 3, 2))
    torch.testing.assert_close(interleaved_selective_scan(f, delta, A, B, C, D, delta_bias=bias), per.sum(1))
    # one frame: the interleaved scan is the cross-scan
    one = interleaved_selective_scan(f[:, :1], delta[..., :6], A, B[..., :6], C[..., :6], D, delta_bias=bias)
    torch.testing.assert_close(one[:, 0], cross_selective_scan(f[:, 0], delta[..., :6], A, B[..., :6], C[..., :6], D,
                                                                delta_bias=bias))


def test_scan_orders_are_permutations_with_their_inverses():
    orders, inverses = scan_orders(2, 3, 4)
    for k in range(4):
        assert torch.equal(orders[k][inverses[k]], torch.arange(24))
    with pytest.raises(ValueError, match="delta must be"):
        cross_selective_scan(torch.randn(1, 2, 3, 4), torch.randn(1, 4, 2, 11), torch.randn(8, 2),
                             torch.randn(1, 4, 2, 12), torch.randn(1, 4, 2, 12))


# ---------------------------------------------------------------- Triton (interpreter on CPU, CUDA when present)
TRITON_CHECK = textwrap.dedent("""
    import json, torch
    from panconv_vision.kernels.selective_scan import selective_scan, selective_scan_reference
    out = []
    cases = [("shared", 2, 6, 4, 9, True), ("grouped", 1, 4, 3, 7, False), ("fixed", 1, 3, 5, 5, True)]
    for layout, batch, dim, n_state, length, opts in cases:
        g = torch.Generator().manual_seed(dim)
        u = torch.randn(batch, dim, length, generator=g)
        delta = 0.5 * torch.randn(batch, dim, length, generator=g)
        if not opts:
            delta = delta.abs()
        A = -torch.exp(0.5 * torch.randn(dim, n_state, generator=g))
        shape = {"shared": (batch, n_state, length), "grouped": (batch, 2, n_state, length),
                 "fixed": (dim, n_state)}[layout]
        B, C = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        D = torch.randn(dim, generator=g)
        kw = dict(z=torch.randn(batch, dim, length, generator=g), delta_bias=torch.randn(dim, generator=g),
                  delta_softplus=True) if opts else {}
        ins = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, *[v for v in kw.values() if torch.is_tensor(v)])]
        sel = selective_scan.select(u, delta, A, B, C, D, **kw)
        y, last = selective_scan(u, delta, A, B, C, D, return_last_state=True, **kw)
        yr, lastr = selective_scan_reference(u, delta, A, B, C, D, return_last_state=True, **kw)
        go = torch.randn(y.shape, generator=g)
        got = torch.autograd.grad(y, ins, go)
        want = torch.autograd.grad(yr, ins, go)
        out.append({"case": layout, "selected": sel.name if sel else None, "y": (y - yr).abs().max().item(),
                    "last": (last - lastr).abs().max().item(),
                    "grads": [(a - r).abs().max().item() for a, r in zip(got, want)]})
    u = torch.randn(1, 4, 6).half()
    args = (u, torch.rand(1, 4, 6).half(), -torch.rand(4, 2).half(), torch.randn(1, 2, 6).half(),
            torch.randn(1, 2, 6).half())
    sel = selective_scan.select(*args)
    out.append({"case": "fp16", "selected": sel.name if sel else None, "dtype": str(selective_scan(*args).dtype),
                "y": (selective_scan(*args).float() - selective_scan_reference(*args).float()).abs().max().item()})
    print(json.dumps(out))
""")


def test_triton_kernel_and_its_gradients_match_the_reference_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("PANCONV_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["case"] for r in results] == ["shared", "grouped", "fixed", "fp16"]
    for r in results[:3]:
        assert r["selected"] == "triton", r
        assert r["y"] < 1e-4 and r["last"] < 1e-4 and max(r["grads"]) < 1e-4, r
    assert results[3]["selected"] == "triton_half" and results[3]["dtype"] == "torch.float16" and results[3]["y"] < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["shared", "grouped", "fixed"])
def test_triton_on_cuda_matches_the_reference(layout):
    pytest.importorskip("triton")
    u, delta, A, B, C, D, z, bias = (t.float().cuda() for t in _inputs(layout, batch=2, dim=64, n_state=16,
                                                                         length=300))
    ins = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, z, bias)]
    assert selective_scan.select(u, delta, A, B, C, D).name == "triton"
    kw = dict(z=z, delta_bias=bias, delta_softplus=True)
    y, yr = selective_scan(u, delta, A, B, C, D, **kw), selective_scan_reference(u, delta, A, B, C, D, **kw)
    torch.testing.assert_close(y, yr, atol=1e-4, rtol=1e-4)
    go = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, ins, go), torch.autograd.grad(yr, ins, go)):
        scale = r.abs().max().item() + 1
        torch.testing.assert_close(a / scale, r / scale, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- the SS2D layer built on the kernel
def test_ss2d_layer_mixes_the_whole_image_and_routes_through_the_kernel(monkeypatch):
    from panconv_vision.models.vmamba_blocks import SS2D

    torch.manual_seed(0)
    layer = SS2D(8, d_state=4, ssm_ratio=1.5)
    dt = F.softplus(layer.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001           # Mamba's dt initialisation range
    x = torch.randn(2, 5, 6, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    (gx,) = torch.autograd.grad(y[0, 0, 0].sum(), x)
    assert (gx[0].abs().sum(-1) > 0).all() and gx[1].abs().sum() == 0     # one token sees every pixel, one image
    monkeypatch.setenv("PANCONV_KERNELS", "reference")
    torch.testing.assert_close(layer(x), y, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(N, H, W, C\) with C = 8"):
        layer(torch.randn(2, 5, 6, 7))


def test_multi_frame_ss2d_mixes_the_two_frames():
    from panconv_vision.models.vmamba_blocks import SS2D

    torch.manual_seed(0)
    layer = SS2D(8, d_state=4, frames=2)
    x = torch.randn(1, 2, 4, 5, 8)
    y = layer(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 1, 3, 4] += 1.0                                                   # one token of the second frame
    changed = (layer(x2) - y).abs().sum(-1)[0]
    assert changed[0].gt(0).all()                                          # every token of the first frame sees it
