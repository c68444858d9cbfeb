"""vision.dwconv2d_large: the reference is the depthwise "same" convolution; the Triton kernel (forward and
both backward products) equals it under TRITON_INTERPRET=1; the large-kernel models route through it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panconv_vision.kernels.dwconv_large import (
    dwconv2d_large,
    dwconv2d_large_reference,
    is_large_depthwise,
    large_depthwise_conv,
)


def _explicit(x, w, b):
    """y[n,c,i,j] = b[c] + sum_{a,b} w[c,0,a,b] x[n,c,i+a-p,j+b-p], by a loop over the taps."""
    k = w.shape[-1]
    p = k // 2
    xp = F.pad(x, [p] * 4)
    h, wd = x.shape[-2:]
    y = torch.zeros_like(x) + (0 if b is None else b.view(1, -1, 1, 1))
    for a in range(k):
        for bb in range(k):
            y = y + w[:, 0, a, bb].view(1, -1, 1, 1) * xp[:, :, a:a + h, bb:bb + wd]
    return y


@pytest.mark.parametrize("k", [13, 31])
def test_reference_is_the_depthwise_same_convolution(k):
    g = torch.Generator().manual_seed(k)
    x, w, b = torch.randn(2, 3, 9, 20, generator=g), torch.randn(3, 1, k, k, generator=g), torch.randn(3, generator=g)
    torch.testing.assert_close(dwconv2d_large_reference(x, w, b), _explicit(x, w, b), atol=1e-4, rtol=1e-4)


def test_half_precision_on_cpu_is_computed_in_float32():
    x, w = torch.randn(1, 2, 8, 8), torch.randn(2, 1, 13, 13) / 13
    y = dwconv2d_large_reference(x.bfloat16(), w.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), dwconv2d_large_reference(x.bfloat16().float(), w.bfloat16().float()),
                               atol=2e-2, rtol=2e-2)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="odd side"):
        dwconv2d_large_reference(torch.randn(1, 2, 8, 8), torch.randn(2, 1, 14, 14))
    with pytest.raises(ValueError, match=r"\(C, 1, K, K\)"):
        dwconv2d_large_reference(torch.randn(1, 2, 8, 8), torch.randn(3, 1, 13, 13))
    with pytest.raises(ValueError, match="bias"):
        dwconv2d_large_reference(torch.randn(1, 2, 8, 8), torch.randn(2, 1, 13, 13), torch.randn(3))


def test_reference_runs_on_cpu_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w = torch.randn(1, 2, 8, 8), torch.randn(2, 1, 13, 13)
    assert dwconv2d_large.select(x, w) is None


def test_routing_predicate_accepts_only_same_padded_large_depthwise_convs():
    assert is_large_depthwise(nn.Conv2d(4, 4, 13, padding=6, groups=4))
    assert is_large_depthwise(nn.Conv2d(4, 4, 31, padding=15, groups=4, bias=False))
    assert is_large_depthwise(nn.Conv2d(4, 4, 7, padding=3, groups=4))
    assert not is_large_depthwise(nn.Conv2d(4, 4, 5, padding=2, groups=4))       # small kernel
    assert not is_large_depthwise(nn.Conv2d(4, 4, 13, padding=6, groups=2))      # not depthwise
    assert not is_large_depthwise(nn.Conv2d(4, 4, 13, padding=6, groups=4, stride=2))
    assert not is_large_depthwise(nn.Conv2d(4, 4, 13, padding=12, groups=4, dilation=2))
    conv = nn.Conv2d(4, 4, 15, padding=7, groups=4)
    x = torch.randn(1, 4, 10, 10)
    torch.testing.assert_close(large_depthwise_conv(conv, x), conv(x))


TRITON_CHECK = textwrap.dedent("""
    import json, torch
    from panconv_vision.kernels.dwconv_large import dwconv2d_large, dwconv2d_large_reference
    from panconv_vision.models.replknet import LargeKernelConv
    from panconv_vision.models.unireplknet import DilatedReparamBlock
    out = []
    for (n, c, h, w), k, bias in (((2, 1, 5, 9), 13, True), ((1, 2, 4, 17), 15, False), ((1, 1, 2, 3), 31, True)):
        g = torch.Generator().manual_seed(k)
        x = torch.randn(n, c, h, w, generator=g, requires_grad=True)
        wt = (torch.randn(c, 1, k, k, generator=g) / k).requires_grad_(True)
        b = torch.randn(c, generator=g, requires_grad=True) if bias else None
        ins = [t for t in (x, wt, b) if t is not None]
        selected = dwconv2d_large.select(x, wt, b)
        y = dwconv2d_large(x, wt, b)
        grad = torch.randn(y.shape, generator=g)
        got = torch.autograd.grad(y, ins, grad)
        yr = dwconv2d_large_reference(x, wt, b)
        want = torch.autograd.grad(yr, ins, grad)
        out.append({"case": [n, c, h, w, k], "selected": selected.name if selected else None,
                    "y": (y - yr).abs().max().item(),
                    "grads": [(a - r).abs().max().item() for a, r in zip(got, want)]})
    x = torch.randn(1, 1, 4, 4).bfloat16()
    wt = (torch.randn(1, 1, 7, 7) / 7).bfloat16()
    out.append({"case": "bf16", "selected": dwconv2d_large.select(x, wt).name,
                "y": (dwconv2d_large(x, wt).float() - dwconv2d_large_reference(x, wt).float()).abs().max().item(),
                "grads": []})
    # the models route their large kernels through the dispatch: gradients flow through the Triton kernel
    torch.manual_seed(0)
    for m in (LargeKernelConv(1, 13, 5), DilatedReparamBlock(1, 13)):
        x = torch.randn(1, 1, 5, 5, requires_grad=True)
        y = m(x)
        (gx,) = torch.autograd.grad(y.sum(), x)
        import os
        os.environ["PANCONV_KERNELS"] = "reference"
        x2 = x.detach().requires_grad_(True)
        y2 = m(x2)
        (gx2,) = torch.autograd.grad(y2.sum(), x2)
        del os.environ["PANCONV_KERNELS"]
        out.append({"case": type(m).__name__, "selected": "model", "y": (y - y2).abs().max().item(),
                    "grads": [(gx - gx2).abs().max().item()]})
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
    assert len(results) == 6
    for r in results[:3]:
        assert r["selected"] == "triton", r
        assert r["y"] < 1e-4 and max(r["grads"]) < 1e-4, r
    assert results[3]["selected"] == "triton_half" and results[3]["y"] < 3e-2, results[3]
    for r in results[4:]:
        assert r["y"] < 1e-5 and r["grads"][0] < 1e-5, r


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [13, 31])
def test_triton_on_cuda_matches_the_reference(dtype, k):
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 40, 36, generator=g).cuda().to(dtype).requires_grad_(True)
    w = (torch.randn(16, 1, k, k, generator=g) / k).cuda().to(dtype).requires_grad_(True)
    b = torch.randn(16, generator=g).cuda().to(dtype).requires_grad_(True)
    assert dwconv2d_large.select(x, w, b) is not None
    y = dwconv2d_large(x, w, b)
    yr = dwconv2d_large_reference(x, w, b)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(y.float(), yr.float(), atol=tol, rtol=tol)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), grad)
    want = torch.autograd.grad(yr, (x, w, b), grad)
    for a, r in zip(got, want):
        scale = r.float().abs().max().item() + 1
        torch.testing.assert_close(a.float() / scale, r.float() / scale, atol=tol, rtol=tol)
