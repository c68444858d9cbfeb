"""TiC: the MSA-Conv kernel against brute-force per-window attention (reference and Triton under
TRITON_INTERPRET=1), the MSA-Conv variants and the two capacity strategies."""

import os
import subprocess
import sys

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
