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
    import panconv_vision.kernels.selective_scan as ss
    from panconv_vision.kernels.selective_scan import selective_scan, selective_scan_reference
    ss.TRITON_BACKWARD_CHUNK = 4          # several chunks even at these lengths
    calls = {"bwd": 0, "parallel": 0}
    triton_bwd, parallel = ss._selective_scan_triton_bwd, ss.selective_scan_parallel
    def counted_bwd(*a, **k):
        calls["bwd"] += 1
        return triton_bwd(*a, **k)
    def counted_parallel(*a, **k):
        calls["parallel"] += 1
        return parallel(*a, **k)
    ss._selective_scan_triton_bwd, ss.selective_scan_parallel = counted_bwd, counted_parallel
    out = []
    # (layout, batch, D, N, L, options, which outputs carry a gradient)
    cases = [("shared", 2, 6, 4, 9, True, "both"), ("grouped", 1, 4, 3, 7, False, "out"),
             ("fixed", 1, 3, 5, 5, True, "both"), ("grouped", 2, 6, 3, 8, True, "last"),
             ("shared", 1, 40, 2, 6, True, "out"), ("fixed", 2, 3, 2, 1, False, "both")]
    for layout, batch, dim, n_state, length, opts, which in cases:
        g = torch.Generator().manual_seed(dim + length)
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
        go, gl = torch.randn(y.shape, generator=g), torch.randn(last.shape, generator=g)
        pick = {"both": [0, 1], "out": [0], "last": [1]}[which]
        got = torch.autograd.grad([(y, last)[i] for i in pick], ins, [(go, gl)[i] for i in pick], allow_unused=True)
        want = torch.autograd.grad([(yr, lastr)[i] for i in pick], ins, [(go, gl)[i] for i in pick],
                                   allow_unused=True)      # the last state does not depend on C, D, z
        want = [torch.zeros_like(t) if r is None else r for t, r in zip(ins, want)]
        got = [torch.full_like(t, float("nan")) if a is None else a for t, a in zip(ins, got)]
        out.append({"case": layout, "selected": sel.name if sel else None, "y": (y - yr).abs().max().item(),
                    "last": (last - lastr).abs().max().item(),
                    "grads": [((a - r).abs().max() / (1 + r.abs().max())).item() for a, r in zip(got, want)]})
    # only some inputs need a gradient: the others get none
    u, delta, B, C = (torch.randn(1, 4, 6) for _ in range(4))
    A = -torch.rand(4, 2).requires_grad_(True)
    u.requires_grad_(True)
    yp = selective_scan(u, delta.abs(), A, B[:, :2], C[:, :2])
    gu, gA = torch.autograd.grad(yp.sum(), (u, A))
    gur, gAr = torch.autograd.grad(selective_scan_reference(u, delta.abs(), A, B[:, :2], C[:, :2]).sum(), (u, A))
    out.append({"case": "subset", "grads": [(gu - gur).abs().max().item(), (gA - gAr).abs().max().item()]})
    # half precision: float32 arithmetic inside; the gradients come back in float16
    args = [t.half().requires_grad_(True) for t in (torch.randn(1, 4, 6), torch.rand(1, 4, 6), -torch.rand(4, 2),
                                                     torch.randn(1, 2, 6), torch.randn(1, 2, 6))]
    sel = selective_scan.select(*args)
    yh = selective_scan(*args)
    gh = torch.autograd.grad(yh.sum(), args)
    ref = [a.detach().float().requires_grad_(True) for a in args]
    yr = selective_scan_reference(*ref)
    gr = torch.autograd.grad(yr.sum(), ref)
    out.append({"case": "fp16", "selected": sel.name if sel else None, "dtype": str(yh.dtype),
                "grad_dtypes": sorted({str(g.dtype) for g in gh}),
                "y": (yh.float() - yr.float()).abs().max().item(),
                "grads": [((a.float() - r).abs().max() / (1 + r.abs().max())).item() for a, r in zip(gh, gr)]})
    # a training step of the SS2D layer (four-direction scan) through the Triton forward and backward
    import os
    from panconv_vision.models.vmamba_blocks import SS2D
    torch.manual_seed(0)
    layer = SS2D(8, d_state=4)
    x = torch.randn(2, 3, 4, 8)
    grads = []
    for kernels in (None, "reference"):
        if kernels:
            os.environ["PANCONV_KERNELS"] = kernels
        layer.zero_grad()
        (layer(x) ** 2).mean().backward()
        grads.append({name: p.grad.clone() for name, p in layer.named_parameters()})
    out.append({"case": "ss2d", "grads": [((grads[0][k] - grads[1][k]).abs().max() / (1 + grads[1][k].abs().max()))
                                          .item() for k in grads[1]]})
    out.append({"case": "calls", **calls})
    print(json.dumps(out))
""")


def test_triton_kernel_and_its_triton_backward_match_the_reference_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("PANCONV_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r["case"] + str(i): r for i, r in enumerate(json.loads(proc.stdout.strip().splitlines()[-1]))}
    assert list(results) == ["shared0", "grouped1", "fixed2", "grouped3", "shared4", "fixed5", "subset6", "fp167",
                             "ss2d8", "calls9"]
    for key in list(results)[:6]:
        r = results[key]
        assert r["selected"] == "triton", r
        assert r["y"] < 1e-4 and r["last"] < 1e-4 and max(r["grads"]) < 1e-4, r
    assert max(results["subset6"]["grads"]) < 1e-4, results["subset6"]
    fp16 = results["fp167"]
    assert fp16["selected"] == "triton_half" and fp16["dtype"] == "torch.float16", fp16
    assert fp16["grad_dtypes"] == ["torch.float16"] and fp16["y"] < 2e-2 and max(fp16["grads"]) < 2e-2, fp16
    assert len(results["ss2d8"]["grads"]) == 11 and max(results["ss2d8"]["grads"]) < 1e-4, results["ss2d8"]
    # every backward ran the Triton kernel (the SS2D step once); the parallel PyTorch scan was never called
    assert results["calls9"]["bwd"] == 9 and results["calls9"]["parallel"] == 0, results["calls9"]


def test_triton_backward_block_never_straddles_a_group():
    triton = pytest.importorskip("triton")
    del triton
    from panconv_vision.kernels.selective_scan import _block_sizes

    assert _block_sizes(6, 4) == (8, 4)                 # one group (shared B/C): the tail rows are masked
    assert _block_sizes(6, 4, 3) == (1, 4)              # 2 groups of 3 channels
    assert _block_sizes(96, 16, 24) == (8, 16)          # groups of 24: blocks of 8
    assert _block_sizes(4096, 256) == (16, 256)         # the (BLOCK_D, BLOCK_N) tile stays <= 4096


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["shared", "grouped", "fixed"])
def test_triton_on_cuda_matches_the_reference(layout):
    pytest.importorskip("triton")
    u, delta, A, B, C, D, z, bias = (t.float().cuda() for t in _inputs(layout, batch=2, dim=64, n_state=16,
                                                                         length=300))
    ins = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, z, bias)]
    assert selective_scan.select(u, delta, A, B, C, D).name == "triton"
    kw = dict(z=z, delta_bias=bias, delta_softplus=True)
    y, last = selective_scan(u, delta, A, B, C, D, return_last_state=True, **kw)   # L = 300: 5 backward chunks
    yr, lastr = selective_scan_reference(u, delta, A, B, C, D, return_last_state=True, **kw)
    torch.testing.assert_close(y, yr, atol=1e-4, rtol=1e-4)
    go, gl = torch.randn_like(y), torch.randn_like(last)
    for a, r in zip(torch.autograd.grad((y, last), ins, (go, gl)), torch.autograd.grad((yr, lastr), ins, (go, gl))):
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
