"""TiC: the MSA-Conv kernel against brute-force per-window attention (reference and Triton under
TRITON_INTERPRET=1), its Triton backward against the reference's autograd (every input gradient; standard,
dilated and depthwise variants; through the TiC modules and a training step), the MSA-Conv variants and the
two capacity strategies."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from panconv_vision.kernels import msa_conv as mc
from panconv_vision.models import tic


def brute_force(q, k, v, kernel_size, dilation):
    """Attention of every pixel over the taps of its window, one pixel at a time (zero taps off the map)."""
    b, d, h, w = q.shape
    half = (kernel_size - 1) // 2
    out = torch.zeros_like(q)
    for y in range(h):
        for x in range(w):
            keys, vals = [], []
            for i in range(kernel_size):
                for j in range(kernel_size):
                    yy, xx = y + (i - half) * dilation, x + (j - half) * dilation
                    inside = 0 <= yy < h and 0 <= xx < w
                    keys.append(k[:, :, yy, xx] if inside else torch.zeros(b, d))
                    vals.append(v[:, :, yy, xx] if inside else torch.zeros(b, d))
            keys, vals = torch.stack(keys, -1), torch.stack(vals, -1)  # (b, d, K^2)
            a = ((q[:, :, y, x, None] * keys).sum(1) * d ** -0.5).softmax(-1)  # (b, K^2)
            out[:, :, y, x] = (vals * a[:, None]).sum(-1)
    return out


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2), (1, 1)])
def test_reference_matches_brute_force(kernel_size, dilation):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 7, generator=g) for _ in range(3))
    got = mc.msa_conv_reference(q, k, v, kernel_size, dilation)
    assert torch.allclose(got, brute_force(q, k, v, kernel_size, dilation), atol=1e-5)


def test_triton_matches_brute_force_under_the_interpreter():
    pytest.importorskip("triton")
    script = (
        "import torch, sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_tic import brute_force\n"
        "from panconv_vision.kernels import msa_conv as mc\n"
        "g = torch.Generator().manual_seed(1)\n"
        "for ks, dil, shape in ((3, 1, (1, 3, 5, 4)), (5, 2, (1, 2, 6, 5))):\n"
        "    q, k, v = (torch.randn(*shape, generator=g, requires_grad=True) for _ in range(3))\n"
        "    assert mc.msa_conv.select(q, k, v, kernel_size=ks, dilation=dil).name == 'triton'\n"
        "    out = mc.msa_conv(q, k, v, kernel_size=ks, dilation=dil)\n"
        "    want = brute_force(q.detach(), k.detach(), v.detach(), ks, dil)\n"
        "    assert (out - want).abs().max() < 1e-5, (out - want).abs().max()\n"
        "    out.sum().backward()\n"
        "    assert q.grad is not None and torch.isfinite(q.grad).all()\n"
        "print('ok')\n")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


TRITON_BACKWARD = textwrap.dedent("""
    import json, os, torch
    from panconv_vision.kernels import msa_conv as mc
    from panconv_vision.models import tic
    g = torch.Generator().manual_seed(3)
    out = []
    # (name, shape (B*heads, d, H, W), kernel_size, dilation, scale, which inputs need a gradient)
    cases = (("standard", (2, 4, 5, 6), 3, 1, None, "qkv"),
             ("dilated, several programs", (1, 3, 12, 9), 5, 2, None, "qkv"),
             ("dilated 3, wide head", (1, 40, 9, 8), 3, 3, None, "qkv"),
             ("depthwise (d=1)", (6, 1, 6, 5), 3, 1, None, "qkv"),
             ("window wider than the map, scale", (2, 2, 3, 3), 5, 1, 0.3, "qkv"),
             ("only v", (1, 4, 5, 5), 3, 2, None, "v"))
    for name, shape, ks, dil, scale, needs in cases:
        ins = [torch.randn(*shape, generator=g).requires_grad_(n in needs) for n in "qkv"]
        sel = mc.msa_conv.select(*ins, kernel_size=ks, dilation=dil, scale=scale)
        y = mc.msa_conv(*ins, kernel_size=ks, dilation=dil, scale=scale)
        yr = mc.msa_conv_reference(*ins, kernel_size=ks, dilation=dil, scale=scale)
        grad = torch.randn(y.shape, generator=g)
        wrt = [t for t in ins if t.requires_grad]
        got = torch.autograd.grad(y, wrt, grad)
        want = torch.autograd.grad(yr, wrt, grad)
        out.append({"case": name, "selected": sel.name if sel else None, "y": (y - yr).abs().max().item(),
                    "grads": [(a - r).abs().max().item() for a, r in zip(got, want)],
                    "scale": max(r.abs().max().item() for r in want)})
    # the TiC modules: every parameter's gradient through the Triton kernel = through the reference, and one
    # SGD step of each lands on the same weights
    x = torch.randn(2, 3, 16, 16, generator=g)
    target = torch.tensor([1, 0])
    impl = mc.msa_conv.implementations[0]
    calls, triton_fn = [0], impl.fn
    def counted(*args, **kwargs):
        calls[0] += 1
        return triton_fn(*args, **kwargs)
    impl.fn = counted
    for conv in ("standard", "depthwise"):
        cfg = dict(tic.TiC.example_config(), conv=conv)
        steps = []
        for kernels in ("", "reference"):
            os.environ["PANCONV_KERNELS"] = kernels
            torch.manual_seed(0)
            backbone = tic.TiC(**cfg)
            head = torch.nn.Linear(16, 3)
            opt = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.1)
            logits = head(backbone(x)[-1].mean((2, 3)))
            loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            grads = [p.grad.clone() for p in backbone.parameters()]
            opt.step()
            steps.append((loss.item(), grads, [p.detach().clone() for p in backbone.parameters()], calls[0]))
            calls[0] = 0
        os.environ.pop("PANCONV_KERNELS")
        (l1, g1, w1, n1), (l2, g2, w2, n2) = steps
        out.append({"case": f"TiC {conv}", "selected": "model", "triton_calls": [n1, n2], "y": abs(l1 - l2),
                    "grads": [max((a - b).abs().max().item() for a, b in zip(g1, g2)),
                              max((a - b).abs().max().item() for a, b in zip(w1, w2))],
                    "scale": max(b.abs().max().item() for b in g2)})
    # half precision (the autocast path): the Triton kernels against the float32 reference of the same inputs
    for dtype in (torch.float16, torch.bfloat16):
        ins = [torch.randn(2, 8, 9, 7, generator=g).to(dtype).requires_grad_(True) for _ in range(3)]
        sel = mc.msa_conv.select(*ins, kernel_size=3, dilation=2)
        y = mc.msa_conv(*ins, kernel_size=3, dilation=2)
        ref_ins = [t.detach().float().requires_grad_(True) for t in ins]
        yr = mc.msa_conv_reference(*ref_ins, kernel_size=3, dilation=2)
        grad = torch.randn(y.shape, generator=g).to(dtype)
        got = torch.autograd.grad(y, ins, grad)
        want = torch.autograd.grad(yr, ref_ins, grad.float())
        out.append({"case": str(dtype), "selected": sel.name if sel else None, "dtype": str(y.dtype),
                    "y": (y.float() - yr).abs().max().item(),
                    "grads": [(a.float() - r).abs().max().item() for a, r in zip(got, want)],
                    "scale": max(r.abs().max().item() for r in want)})
    # memory kept for the backward (distinct storages autograd saves): q, k, v, out and the log-sum-exp for Triton,
    # whatever the window; the unfolded K^2 copies of k and v for the reference
    def saved_bytes(fn):
        seen = {}
        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(seen.values())
    q, k, v = (torch.randn(2, 8, 12, 12, generator=g).requires_grad_(True) for _ in range(3))
    out.append({"case": "saved bytes", "plane_bytes": q.numel() * 4, "lse_bytes": 2 * 144 * 4,
                "triton": [saved_bytes(lambda: mc.msa_conv(q, k, v, kernel_size=ks)) for ks in (3, 5, 7)],
                "reference": [saved_bytes(lambda: mc.msa_conv_reference(q, k, v, kernel_size=ks)) for ks in (3, 5, 7)]})
    print(json.dumps(out))
""")


def test_triton_backward_matches_the_reference_gradients_under_the_interpreter():
    """dq, dk and dv of the Triton backward equal autograd through the unfold reference (standard, dilated, depthwise
    i.e. one channel per head, a window wider than the map, a custom scale, partial needs_input_grad), and TiC trains
    through it: the same parameter gradients and the same weights after an SGD step as with the reference. In
    float16 / bfloat16 the kernels stay within the format's precision of the float32 reference. What autograd keeps
    for the backward is q, k, v, out and one float per pixel, whatever the window (the reference: 2 K^2 planes)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("PANCONV_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", TRITON_BACKWARD], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 11
    for r in results[:6]:
        assert r["selected"] == "triton", r
        assert r["y"] < 1e-5, r
        assert r["grads"] and max(r["grads"]) < 1e-5 * max(1.0, r["scale"]), r
    assert len(results[5]["grads"]) == 1  # only v asked for a gradient
    for r in results[6:8]:
        assert r["triton_calls"][0] > 0 and r["triton_calls"][1] == 0, r  # Triton, then the reference
        assert r["scale"] > 0 and r["y"] < 1e-5 and max(r["grads"]) < 1e-5 * max(1.0, r["scale"]), r
    for r, dtype in zip(results[8:], ("torch.float16", "torch.bfloat16")):
        assert r["selected"] == "triton_half" and r["dtype"] == dtype, r
        tol = 2e-3 if dtype == "torch.float16" else 2e-2  # ~ 2 units in the last place of the format
        assert r["y"] < tol and max(r["grads"]) < tol * r["scale"], r
    mem = results[10]
    assert mem["triton"] == [4 * mem["plane_bytes"] + mem["lse_bytes"]] * 3, mem  # O(H W d), independent of K
    assert all(r > 2 * ks * ks * mem["plane_bytes"] for r, ks in zip(mem["reference"], (3, 5, 7))), mem


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,kernel_size,dilation", [((8, 32, 28, 28), 3, 1), ((4, 64, 14, 20), 5, 2),
                                                        ((16, 1, 30, 30), 3, 1), ((2, 256, 7, 7), 3, 1)])
def test_triton_on_cuda_matches_the_reference(shape, kernel_size, dilation, dtype):
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    ins = [torch.randn(*shape, generator=g).cuda().to(dtype).requires_grad_(True) for _ in range(3)]
    want_impl = "triton" if dtype == torch.float32 else "triton_half"
    assert mc.msa_conv.select(*ins, kernel_size=kernel_size, dilation=dilation).name == want_impl
    y = mc.msa_conv(*ins, kernel_size=kernel_size, dilation=dilation)
    ref_ins = [t.detach().float().requires_grad_(True) for t in ins]
    yr = mc.msa_conv_reference(*ref_ins, kernel_size=kernel_size, dilation=dilation)
    tol = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y.float(), yr, atol=tol, rtol=tol)
    grad = torch.randn(y.shape, generator=g).cuda().to(dtype)
    for a, r in zip(torch.autograd.grad(y, ins, grad), torch.autograd.grad(yr, ref_ins, grad.float())):
        scale = r.abs().max().item() + 1
        torch.testing.assert_close(a.float() / scale, r / scale, atol=tol, rtol=tol)


def test_kernel_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one shape"):
        mc.msa_conv_reference(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        mc.msa_conv_reference(*(torch.randn(1, 2, 3, 3) for _ in range(3)), kernel_size=2)


def test_msa_conv_module_is_the_official_operator():
    """1x1 qkv, window attention, + x, then the k x k convolution (the official MSA_Conv_2d, single head)."""
    torch.manual_seed(0)
    m = tic.MSAConv2d(4, 6, num_heads=1, kernel_size=3, conv="standard")
    x = torch.randn(2, 4, 5, 5)
    q, k, v = m.qkv(x).chunk(3, dim=1)
    expected = m.conv(brute_force(q, k, v, 3, 1) + x)
    assert torch.allclose(m(x), expected, atol=1e-5)
    assert tic.MSAConv2d(4, 6, num_heads=2, conv="depthwise", dilation=2)(x).shape == (2, 6, 5, 5)


def test_cyclic_shift_connects_distant_pixels():
    torch.manual_seed(0)
    plain = tic.MSAConv2d(8, 8, num_heads=4, kernel_size=3)
    shifted = tic.MSAConv2d(8, 8, num_heads=4, kernel_size=3, cyclic_shift=4)
    shifted.load_state_dict(plain.state_dict())
    x = torch.zeros(1, 8, 12, 12, requires_grad=True)
    for module, reaches in ((plain, False), (shifted, True)):
        x.grad = None
        module(x)[0, :, 6, 6].sum().backward()
        far = x.grad[0, :, 2, 6].abs().sum() + x.grad[0, :, 10, 6].abs().sum()  # 4 rows away
        assert (far > 0) == reaches


def test_inter_pooling_widens_the_window():
    torch.manual_seed(0)
    plain = tic.MSAConv2d(4, 4, num_heads=1, kernel_size=3)
    pooled = tic.MSAConv2d(4, 4, num_heads=1, kernel_size=3, inter_pool=2)
    pooled.load_state_dict(plain.state_dict())
    x = torch.randn(1, 4, 8, 8)
    for module, reaches in ((plain, False), (pooled, True)):
        xi = x.clone().requires_grad_(True)
        module(xi)[0, :, 4, 4].sum().backward()
        assert (xi.grad[0, :, 4, 7].abs().sum() > 0) == reaches  # 3 columns away: beyond a 3x3 window + conv


def test_backbone_any_resolution():
    model = tic.TiC(**tic.TiC.example_config()).eval()
    for side in (32, 40):
        outs = model(torch.randn(1, 3, side, side))
        assert [tuple(o.shape[1:]) for o in outs] == [(8, side // 4, side // 4), (16, side // 8, side // 8)]
