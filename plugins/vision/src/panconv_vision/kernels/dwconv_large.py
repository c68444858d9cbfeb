"""``vision.dwconv2d_large``: depthwise 2-D convolution with a large square kernel ("same" padding).

Shapes: ``x`` is ``(N, C, H, W)``, ``weight`` ``(C, 1, K, K)`` with ``K`` odd, ``bias`` an optional
``(C,)``; stride 1, dilation 1, zero padding ``K // 2`` on every side, so ``y`` is ``(N, C, H, W)``:

    y[n, c, i, j] = b[c] + sum_{a, b} w[c, 0, a, b] * x[n, c, i + a - K//2, j + b - K//2].

This is the hot spot of RepLKNet (31x31 ... 13x13 kernels), UniRepLKNet (13..17), CFSR (9) and FFNet (7):
a depthwise conv does ``K^2`` multiply-adds per output and reads every input ``K^2`` times, so it is
memory-bound unless the input tile is reused from on-chip memory (RepLKNet's paper, Sec. 3,
guideline 1, needed a dedicated implicit-GEMM kernel for it).

The reference is ``torch.nn.functional.conv2d(groups=C)`` (half precision on the CPU is computed in
float32, which CPU convolutions lack). The Triton implementation is a direct convolution: one
program per (image plane, ``BLOCK_H x BLOCK_W`` output tile) accumulates the ``K^2`` shifted input
tiles (masked loads give the zero padding) times one tap each, in float32. Backward:

* ``dx`` is the same convolution of ``dy`` with the kernel rotated by 180 degrees
  (``dx[i, j] = sum_{a,b} w[a, b] dy[i - a + p, j - b + p]``, the transpose of a "same" conv);
* ``dw[c, a, b] = sum_{n,i,j} dy[n, c, i, j] x[n, c, i + a - p, j + b - p]``: one program per
  (channel, kernel row, image) reduces a ``BLOCK_J x BLOCK_K`` gather of ``x`` against a row of
  ``dy`` over the plane, the images' partial sums are added afterwards;
* ``db = dy.sum((0, 2, 3))``.

The dispatch (``panconv.api.Kernel``) runs the Triton version on CUDA tensors (and on the CPU under
``TRITON_INTERPRET=1``, which is how the tests check it) for odd ``K`` in ``MIN_KERNEL..MAX_KERNEL``;
anything else goes to the reference. Models call it through :func:`large_depthwise_conv`, which
routes an ``nn.Conv2d`` that is such a convolution and calls the module itself otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import Kernel

#: the kernel sizes the Triton implementation is used for (odd sizes in between): the 13..31 of RepLKNet and
#: UniRepLKNet, and the 7x7 / 9x9 mixers of FFNet, CFSR and HorNet
MIN_KERNEL, MAX_KERNEL = 7, 31


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"dwconv2d_large: x must be (N, C, H, W) and weight (C, 1, K, K), got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise ValueError(f"dwconv2d_large: the kernel must be square with an odd side, got {tuple(weight.shape[-2:])}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"dwconv2d_large: bias must be (C,) = ({weight.shape[0]},), got {tuple(bias.shape)}")


def dwconv2d_large_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise "same" convolution by ``F.conv2d``; see the module docstring for the conventions."""
    _check(x, weight, bias)
    k = weight.shape[-1]
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        y = F.conv2d(x.float(), weight.float(), None if bias is None else bias.float(), padding=k // 2,
                     groups=x.shape[1])
        return y.to(x.dtype)
    return F.conv2d(x, weight, bias, padding=k // 2, groups=x.shape[1])


dwconv2d_large = Kernel("vision.dwconv2d_large", reference=dwconv2d_large_reference,
                        doc="depthwise 2-D 'same' convolution with a large odd square kernel (13..31): F.conv2d "
                            "reference; Triton direct convolution, forward and backward")


def _make_inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    (n, c, h, w), k = ((2, 3, 9, 11), 13) if seed == 0 else ((1, 2, 16, 7), 15)
    x = torch.randn(n, c, h, w, generator=g).to(device=device, dtype=dtype)
    weight = (torch.randn(c, 1, k, k, generator=g) / k).to(device=device, dtype=dtype)
    bias = torch.randn(c, generator=g).to(device=device, dtype=dtype) if seed == 0 else None
    return (x, weight, bias), {}


dwconv2d_large.make_inputs = _make_inputs


# ---- Triton: direct convolution, forward and the two backward products ----
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

if triton is not None:
    # Loop bounds are compile-time constants (``K``, and the tile counts of the weight-gradient kernel):
    # Triton's interpreter cannot loop over a run-time integer with NumPy >= 2.4.
    @triton.jit
    def _dwconv_fwd_kernel(x_ptr, w_ptr, y_ptr, C, H, W, K: tl.constexpr, FLIP: tl.constexpr,
                           BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
        """``y[plane, i, j] = sum_{a,b} w[c, a, b] x[plane, i + a - P, j + b - P]`` (``w`` rotated if FLIP)."""
        P: tl.constexpr = K // 2
        plane = tl.program_id(0)
        tiles_w = tl.cdiv(W, BLOCK_W)
        i0 = (tl.program_id(1) // tiles_w) * BLOCK_H
        j0 = (tl.program_id(1) % tiles_w) * BLOCK_W
        c = plane % C
        base = plane.to(tl.int64) * H * W
        i = i0 + tl.arange(0, BLOCK_H)
        j = j0 + tl.arange(0, BLOCK_W)
        acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
        for a in range(K):
            row = i + a - P
            row_ok = (row >= 0) & (row < H)
            for b in range(K):
                col = j + b - P
                ok = row_ok[:, None] & ((col >= 0) & (col < W))[None, :]
                xv = tl.load(x_ptr + base + row[:, None] * W + col[None, :], mask=ok, other=0.0).to(tl.float32)
                if FLIP:
                    tap = tl.load(w_ptr + c * K * K + (K - 1 - a) * K + (K - 1 - b)).to(tl.float32)
                else:
                    tap = tl.load(w_ptr + c * K * K + a * K + b).to(tl.float32)
                acc += tap * xv
        out = (i < H)[:, None] & (j < W)[None, :]
        tl.store(y_ptr + base + i[:, None] * W + j[None, :], acc.to(y_ptr.dtype.element_ty), mask=out)

    @triton.jit
    def _dwconv_dw_kernel(x_ptr, g_ptr, dw_ptr, C, H, W, TILES_I, K: tl.constexpr, BLOCK_I: tl.constexpr,
                          BLOCK_J: tl.constexpr, TILES_J: tl.constexpr, BLOCK_K: tl.constexpr):
        """Partial ``dw[c, a, :] = sum_{i,j} g[n, c, i, j] x[n, c, i + a - P, j + b - P]`` over one image n
        and one band of BLOCK_I rows i (program axis 2 = n * TILES_I + band)."""
        P: tl.constexpr = K // 2
        c = tl.program_id(0)
        a = tl.program_id(1)
        part = tl.program_id(2)
        n = part // TILES_I
        i0 = (part % TILES_I) * BLOCK_I
        base = (n * C + c).to(tl.int64) * H * W
        b = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for ii in range(BLOCK_I):
            i = i0 + ii
            row = i + a - P
            row_ok = (i < H) & (row >= 0) & (row < H)
            for jb in range(TILES_J):
                j = jb * BLOCK_J + tl.arange(0, BLOCK_J)
                gv = tl.load(g_ptr + base + i * W + j, mask=(j < W) & row_ok, other=0.0).to(tl.float32)
                col = j[:, None] + b[None, :] - P
                ok = (j < W)[:, None] & (b < K)[None, :] & (col >= 0) & (col < W) & row_ok
                xv = tl.load(x_ptr + base + row * W + col, mask=ok, other=0.0).to(tl.float32)
                acc += tl.sum(gv[:, None] * xv, axis=0)
        tl.store(dw_ptr + ((part.to(tl.int64) * C + c) * K + a) * K + b, acc, mask=b < K)

    def _block(n: int, cap: int) -> int:
        return min(cap, max(4, triton.next_power_of_2(n)))

    def _conv(x: torch.Tensor, weight: torch.Tensor, flip: bool) -> torch.Tensor:
        n, c, h, w = x.shape
        k = weight.shape[-1]
        x = x.contiguous()
        y = torch.empty_like(x)
        bh, bw = _block(h, 16), _block(w, 32)
        grid = (n * c, triton.cdiv(h, bh) * triton.cdiv(w, bw))
        _dwconv_fwd_kernel[grid](x, weight.contiguous(), y, c, h, w, K=k, FLIP=flip, BLOCK_H=bh, BLOCK_W=bw)
        return y

    def _grad_weight(x: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
        n, c, h, w = x.shape
        block_i, block_j = _block(h, 8), _block(w, 64)
        tiles_i = triton.cdiv(h, block_i)
        partial = torch.empty(n * tiles_i, c, k, k, device=x.device, dtype=torch.float32)
        _dwconv_dw_kernel[(c, k, n * tiles_i)](x.contiguous(), grad.contiguous(), partial, c, h, w, tiles_i, K=k,
                                               BLOCK_I=block_i, BLOCK_J=block_j, TILES_J=triton.cdiv(w, block_j),
                                               BLOCK_K=triton.next_power_of_2(k))
        return partial.sum(0).unsqueeze(1)
else:  # pragma: no cover
    def _conv(x, weight, flip):
        raise RuntimeError("triton is not installed")

    def _grad_weight(x, grad, k):
        raise RuntimeError("triton is not installed")


class _DWConvLarge(torch.autograd.Function):
    """Triton forward; backward: ``dx`` by the same kernel with the rotated filter, ``dw`` by a reduction kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = _conv(x, weight, flip=False)
        return y if bias is None else y + bias.view(1, -1, 1, 1).to(y.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv(grad, weight, flip=True)
        if ctx.needs_input_grad[1]:
            grad_w = _grad_weight(x, grad, weight.shape[-1]).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.float().sum((0, 2, 3)).to(grad.dtype)
        return grad_x, grad_w, grad_b


def _triton_supports(x, weight, bias=None) -> bool:
    return (x.dim() == 4 and weight.dim() == 4 and weight.shape[1] == 1 and weight.shape[0] == x.shape[1]
            and weight.shape[-1] == weight.shape[-2] and weight.shape[-1] % 2 == 1
            and MIN_KERNEL <= weight.shape[-1] <= MAX_KERNEL and x.dtype == weight.dtype
            and (bias is None or (bias.shape == (weight.shape[0],) and bias.device == x.device))
            and x.device == weight.device and x.numel() > 0)


def _triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    _check(x, weight, bias)
    return _DWConvLarge.apply(x, weight, bias)


dwconv2d_large.implementation("triton", backend="triton", dtypes=(torch.float32,), supports=_triton_supports,
                              atol=1e-4, rtol=1e-4)(_triton)
dwconv2d_large.implementation("triton_half", backend="triton", dtypes=(torch.float16, torch.bfloat16),
                              supports=_triton_supports, atol=3e-2, rtol=3e-2)(_triton)
dwconv2d_large_triton = _triton


def is_large_depthwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a stride-1, undilated, "same"-padded depthwise conv with an odd kernel in range."""
    if not isinstance(conv, nn.Conv2d):
        return False
    k = conv.kernel_size
    return (k[0] == k[1] and k[0] % 2 == 1 and MIN_KERNEL <= k[0] <= MAX_KERNEL
            and conv.groups == conv.in_channels == conv.out_channels and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.padding == (k[0] // 2, k[0] // 2) and conv.padding_mode == "zeros")


def large_depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, through ``vision.dwconv2d_large`` when ``conv`` is a large depthwise conv (else the module)."""
    if is_large_depthwise(conv):
        return dwconv2d_large(x, conv.weight, conv.bias)
    return conv(x)


__all__ = ["MAX_KERNEL", "MIN_KERNEL", "dwconv2d_large", "dwconv2d_large_reference", "dwconv2d_large_triton",
           "is_large_depthwise", "large_depthwise_conv"]
