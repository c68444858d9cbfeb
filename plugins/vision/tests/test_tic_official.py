"""TiC's MSA-Conv against the official operator (github.com/zs670980918/MSA-Conv, the paper's code).

The official repository publishes the operator only: the C++/CUDA extension ``msa_conv1`` (two window ops, each
with a hand-written backward) and the module ``MSA_Conv_2d``. ``fixtures/tic_msa_conv_official.pt`` holds its
outputs on the extension's CPU path (official commit 2d96f54; the sha256 of each official source file is stored in
the fixture), recorded once on a local build of the fetched code. No official code, and no recipe that builds it, is
part of this repository (the house rule for fetched code); no official code is needed here. Found on the way: the
CPU branches of both official C++ backwards check ``grad_output`` for CUDA, so every CPU backward raises "must be a
CUDA tensor"; the recording build checked it for the CPU instead and changed nothing else.

What the official CPU op computes (read from ``msa_conv.cpp`` and checked by the recording script against plain
unfold arithmetic) and how it maps to ``vision.msa_conv``:

* ``msa_conv_forward(q, k)`` -> ``dots`` ``(B, K*K, H, W)``: ``dots[b, t, y, x] = sum_c q[b, c, y, x] *
  k[b, c, y + (i - h) D, x + (j - h) D]`` with ``t = i K + j`` (row-major taps, ``i`` along H), ``h = (K-1)/2``,
  ``D`` the dilation, padding ``D (K-1)/2`` and taps off the map reading ZERO keys (dot 0), not masked.
* ``MSA_Conv_2d``: ``softmax(dots * input_channel ** -0.5, dim=1)`` (over the taps; the zero-key taps keep their
  share), ``msa_conv1_forward(attn, v)`` -> ``out[b, c, p] = sum_t attn[b, t, p] v[b, c, p + o_t]`` (zero values
  off the map), ``+ x``, then ``mlp = Conv2d(C, C_out, K, padding=1, bias=False)`` (padding 1 and no dilation
  whatever K and D), then ReLU (in place, so the returned tensor is the ReLU).

``vision.msa_conv(q, k, v, K, D, scale)`` is both ops and the softmax fused: no logits or weights are returned, so
the tap order (ours: ``F.unfold``'s, the same row-major ``t = i K + j``) is only visible through the weights,
which :func:`window_weights` reads off our output (it is linear in ``v``). Our default scale ``d ** -0.5`` is the
official ``input_channel ** -0.5`` for one head (``d = C``); our zero-padded borders are the official ones.
``MSAConv2d`` differs from ``MSA_Conv_2d`` in its convolution (ours is "same"-padded, dilated and has a bias;
no ReLU): the official module is rebuilt here from our pieces (qkv, ``MSAConv2d.attend``, ``+ x``) with the
official ``mlp`` arguments, and the differences are pinned by :func:`test_our_conv_is_not_the_official_mlp`.

The Triton implementation is checked the same way under ``TRITON_INTERPRET=1`` (skipped without triton).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.kernels import msa_conv as mc
from panconv_vision.models import tic

FIXTURE = Path(__file__).parent / "fixtures" / "tic_msa_conv_official.pt"
DATA = torch.load(FIXTURE, weights_only=True)
OPS = sorted(DATA["ops"])
MODULES = sorted(DATA["module"])
TOL = 1e-5


def reference(q, k, v, kernel_size, dilation, scale=None):
    return mc.msa_conv_reference(q, k, v, kernel_size, dilation, scale)


def tap_offsets(kernel_size, dilation):
    """The official tap order: tap ``t = i K + j`` reads ``(y + (i - h) D, x + (j - h) D)``."""
    half = (kernel_size - 1) // 2
    return [((i - half) * dilation, (j - half) * dilation) for i in range(kernel_size) for j in range(kernel_size)]


def window_weights(fn, q, k, kernel_size, dilation, scale):
    """``(weights, inside)``: the attention weight ``fn`` gives tap ``t`` of pixel ``p`` (``(B, K*K, H, W)``, in the
    official tap order; 0 for taps off the map, whose value is zero) and the mask of taps on the map.

    ``fn``'s output is linear in ``v`` with coefficient ``a[p, t]`` on ``v[p + o_t]``. Colouring the map by
    ``(y mod S, x mod S)`` (``S`` the window span) gives the taps of any window distinct colours, so a ``v`` that is 1
    on one colour reads one tap of every pixel; the ``S*S`` probes ride on the channels and on batch copies."""
    b, c, h, w = q.shape
    span = (kernel_size - 1) * dilation + 1
    reps = -(-span * span // c)
    color = (torch.arange(h)[:, None] % span) * span + torch.arange(w)[None] % span  # (H, W)
    probe = (color == torch.arange(reps * c)[:, None, None]).to(q.dtype).reshape(reps, 1, c, h, w)
    v = probe.expand(reps, b, c, h, w).reshape(reps * b, c, h, w)
    with torch.no_grad():
        out = fn(q.repeat(reps, 1, 1, 1), k.repeat(reps, 1, 1, 1), v, kernel_size, dilation, scale)
    out = out.reshape(reps, b, c, h, w).transpose(0, 1).reshape(b, reps * c, h, w)  # channel = colour
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None]
    weights, inside = [], []
    for dy, dx in tap_offsets(kernel_size, dilation):
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        col = color[yy.clamp(0, h - 1), xx.clamp(0, w - 1)]
        a = out.gather(1, col.expand(b, 1, h, w))[:, 0]
        weights.append(torch.where(ok, a, torch.zeros(())))
        inside.append(ok)
    return torch.stack(weights, 1), torch.stack(inside, 0)


def weight_errors(case, fn):
    """Max differences of ``fn``'s per-tap weights from the official ``softmax(dots * scale)``: taps on the map, and the
    total weight of the taps off the map (zero keys, logit 0 in the official op)."""
    ks, dil, scale = case["kernel_size"], case["dilation"], case["scale"]
    official = (case["dots"] * scale).softmax(1)
    got, inside = window_weights(fn, case["q"], case["k"], ks, dil, scale)
    on_map = ((got - official).abs() * inside).max().item()
    off_mass = (1 - got.sum(1)) - (official * ~inside).sum(1)
    return on_map, off_mass.abs().max().item()


def op_errors(case, fn):
    """Max differences from the official output and its q, k, v gradients (C++ backwards)."""
    q, k, v = (case[n].clone().requires_grad_(True) for n in "qkv")
    out = fn(q, k, v, case["kernel_size"], case["dilation"], case["scale"])
    grads = torch.autograd.grad(out, (q, k, v), case["grad_out"])
    return [(out - case["out"]).abs().max().item()] + [
        (g - case[f"grad_{n}"]).abs().max().item() for g, n in zip(grads, "qkv")]


def official_module_from_our_pieces(case):
    """The official ``MSA_Conv_2d`` forward from our pieces on its weights: our ``MSAConv2d`` (one head) for the 1x1
    qkv and the window attention (``attend``, through the ``vision.msa_conv`` dispatch), ``+ x``, then the official
    ``mlp`` (its weight, padding 1, no dilation, no bias) and ReLU. Returns ``(out, grad_x)``."""
    sd, ks, dil = case["state_dict"], case["kernel_size"], case["dilation"]
    c = case["input_channel"]
    ours = tic.MSAConv2d(c, case["output_channel"], num_heads=1, kernel_size=ks, dilation=dil, conv="standard")
    ours.qkv.load_state_dict({"weight": sd["qkv_conv.weight"], "bias": sd["qkv_conv.bias"]})
    x = case["x"].clone().requires_grad_(True)
    n, _, h, w = x.shape
    q, k, v = ours.qkv(x).reshape(n, 3, 1, c, h, w).unbind(1)  # chunk(3, dim=1): q, k, v in this order
    y = ours.attend(q, k, v) + x  # scale: our default d ** -0.5 with d = C = the official input_channel ** -0.5
    out = F.relu(F.conv2d(y, sd["mlp.weight"], None, padding=case["padding"]))
    (grad_x,) = torch.autograd.grad(out, x, case["grad_out"])
    return out, grad_x


def test_fixture_is_what_the_docstring_says():
    assert OPS == ["k3_d1", "k3_d1_step2", "k3_d2", "k5_d1", "k5_d2"]
    assert MODULES == ["k3_d1", "k3_d2", "k5_d1", "k5_d2"]
    for name in MODULES:
        case = DATA["module"][name]
        assert case["padding"] == 1 and case["mlp_dilation"] == 1 and not case["mlp_bias"]
        assert case["scale"] == pytest.approx(case["input_channel"] ** -0.5)
        assert sorted(case["state_dict"]) == ["mlp.weight", "qkv_conv.bias", "qkv_conv.weight"]


@pytest.mark.parametrize("name", OPS)
def test_official_dots_are_zero_padded_row_major_taps(name):
    """The recorded official ``dots``: tap ``t = i K + j`` at offset ``((i - h) D, (j - h) D)``, zero off the map."""
    case = DATA["ops"][name]
    q, k, ks, dil = case["q"], case["k"], case["kernel_size"], case["dilation"]
    h, w = q.shape[-2:]
    pad = dil * (ks - 1) // 2
    kp = F.pad(k, (pad, pad, pad, pad))
    for t, (dy, dx) in enumerate(tap_offsets(ks, dil)):
        shifted = kp[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]
        assert (case["dots"][:, t] - (q * shifted).sum(1)).abs().max() < TOL, t


@pytest.mark.parametrize("name", OPS)
def test_reference_equals_the_official_op(name):
    """``msa_conv_reference(q, k, v, K, D, scale=C ** -0.5)`` = the official dots -> softmax -> attn.v, and its
    autograd gradients = the official C++ backwards; the default scale is the same number for one head."""
    case = DATA["ops"][name]
    errors = op_errors(case, reference)
    assert max(errors) < TOL, errors
    default = reference(case["q"], case["k"], case["v"], case["kernel_size"], case["dilation"])
    assert (default - case["out"]).abs().max() < TOL


@pytest.mark.parametrize("name", OPS)
def test_reference_weights_are_the_official_softmax_per_tap(name):
    """Tap by tap (official order), the weights our reference gives are ``softmax(official dots * scale)``, and the
    taps off the map carry the official (zero-logit) share."""
    on_map, off_mass = weight_errors(DATA["ops"][name], reference)
    assert on_map < TOL and off_mass < TOL, (on_map, off_mass)


@pytest.mark.parametrize("name", MODULES)
def test_official_module_from_our_pieces(name):
    case = DATA["module"][name]
    out, grad_x = official_module_from_our_pieces(case)
    assert out.shape == case["out"].shape
    assert (out - case["out"]).abs().max() < TOL
    assert (grad_x - case["grad_x"]).abs().max() < TOL * max(1.0, case["grad_x"].abs().max().item())


def test_our_conv_is_not_the_official_mlp():
    """Our ``MSAConv2d`` = the official module exactly where the official ``mlp`` is "same" (K = 3, D = 1): with the
    official weights, a zero bias and a ReLU after. For K = 5 the official ``padding=1`` shrinks the map; for D = 2
    our conv is dilated and the official one is not. (Pinned so that a change on either side shows.)"""
    results = {}
    for name in MODULES:
        case = DATA["module"][name]
        sd = case["state_dict"]
        ours = tic.MSAConv2d(case["input_channel"], case["output_channel"], num_heads=1,
                             kernel_size=case["kernel_size"], dilation=case["dilation"], conv="standard")
        ours.load_state_dict({"qkv.weight": sd["qkv_conv.weight"], "qkv.bias": sd["qkv_conv.bias"],
                              "conv.weight": sd["mlp.weight"], "conv.bias": torch.zeros(case["output_channel"])})
        with torch.no_grad():
            out = F.relu(ours(case["x"]))
        results[name] = (out.shape == case["out"].shape and (out - case["out"]).abs().max().item() < TOL)
        assert out.shape[-2:] == case["x"].shape[-2:]  # ours keeps the size
    assert results == {"k3_d1": True, "k3_d2": False, "k5_d1": False, "k5_d2": False}


TRITON_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    import test_tic_official as t
    from panconv_vision.kernels import msa_conv as mc

    def triton(q, k, v, kernel_size, dilation, scale):
        sel = mc.msa_conv.select(q, k, v, kernel_size=kernel_size, dilation=dilation, scale=scale)
        assert sel is not None and sel.name == "triton", sel
        return mc.msa_conv(q, k, v, kernel_size=kernel_size, dilation=dilation, scale=scale)

    res = {}
    for name in t.OPS:
        case = t.DATA["ops"][name]
        res["ops/" + name] = t.op_errors(case, triton) + list(t.weight_errors(case, triton))
    impl = mc.msa_conv.implementations[0]
    assert impl.name == "triton"
    calls, fn = [0], impl.fn
    def counted(*args, **kwargs):
        calls[0] += 1
        return fn(*args, **kwargs)
    impl.fn = counted
    for name in t.MODULES:
        case = t.DATA["module"][name]
        calls[0] = 0
        out, grad_x = t.official_module_from_our_pieces(case)  # MSAConv2d.attend dispatches to Triton here
        assert calls[0] == 1, calls
        grad_scale = max(1.0, case["grad_x"].abs().max().item())
        res["module/" + name] = [(out - case["out"]).abs().max().item(),
                                 (grad_x - case["grad_x"]).abs().max().item() / grad_scale]
    print(json.dumps(res))
""")


def test_triton_equals_the_official_op_under_the_interpreter():
    """The Triton forward and backward (``TRITON_INTERPRET=1``, on the CPU): official outputs, the q, k, v gradients
    of the C++ backwards, the per-tap weights, and the official module rebuilt through it."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("PANCONV_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, str(Path(__file__).parent)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(res) == sorted([f"ops/{n}" for n in OPS] + [f"module/{n}" for n in MODULES])
    for name, errors in res.items():
        assert max(errors) < TOL, (name, errors)
