"""``vision.msa_conv``: self-attention inside each convolution window (TiC's MSA-Conv, Zhang et al. 2023).

Shapes: ``q``, ``k``, ``v`` are ``(B, d, H, W)`` (``B`` = batch x heads, ``d`` the head width). For every
pixel ``p`` the query ``q_p`` attends to the ``kernel_size x kernel_size`` window of keys centred on
``p`` with ``dilation`` (the taps of a "same"-padded convolution; taps outside the map are zero keys and
values, as the zero padding of a convolution):

    a_p = softmax_j(scale * q_p . k_{p + dilation * j}),   out_p = sum_j a_pj v_{p + dilation * j}

``scale`` defaults to ``d ** -0.5``. The reference unfolds ``k`` and ``v`` (``F.unfold``: the im2col of
the convolution) and takes the softmax over the window axis: O(H W K^2 d) memory. The Triton
implementation walks the ``K^2`` taps of a block of pixels with an online softmax (one pass, no
unfolded copies: O(H W d) memory); its backward recomputes through the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from panconv.api import Kernel


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, dilation: int) -> None:
    if q.dim() != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"msa_conv: q, k and v must be (B, d, H, W) of one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0 or dilation < 1:
        raise ValueError(f"msa_conv: kernel_size must be odd and >= 1 and dilation >= 1, got {kernel_size}, {dilation}")


def msa_conv_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int = 3, dilation: int = 1,
                       scale: float | None = None) -> torch.Tensor:
    """Window attention by unfold (im2col) + softmax over the window; see the module docstring."""
    _check(q, k, v, kernel_size, dilation)
    b, d, h, w = q.shape
    scale = d ** -0.5 if scale is None else scale
    pad = dilation * (kernel_size - 1) // 2
    k_unf = F.unfold(k, kernel_size, dilation=dilation, padding=pad).reshape(b, d, kernel_size ** 2, h * w)
    v_unf = F.unfold(v, kernel_size, dilation=dilation, padding=pad).reshape(b, d, kernel_size ** 2, h * w)
    logits = (q.reshape(b, d, 1, h * w) * k_unf).sum(1) * scale  # (B, K^2, HW)
    attn = logits.softmax(1)
    return (attn.unsqueeze(1) * v_unf).sum(2).reshape(b, d, h, w)


msa_conv = Kernel("vision.msa_conv", reference=msa_conv_reference,
                  doc="self-attention inside each (dilated) convolution window, TiC's MSA-Conv (unfold reference; "
                      "Triton one-pass online softmax over the taps)")


def _make_inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    shape, ks, dil = ((3, 5, 9, 11), 3, 1) if seed == 0 else ((2, 8, 12, 7), 5, 2)
    q, k, v = (torch.randn(*shape, generator=g, dtype=dtype).to(device) for _ in range(3))
    return (q, k, v), {"kernel_size": ks, "dilation": dil}


msa_conv.make_inputs = _make_inputs


# ---- Triton: one pass over the taps with an online softmax ----
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

if triton is not None:
    @triton.jit
    def _msa_conv_kernel(q_ptr, k_ptr, v_ptr, o_ptr, D, H, W, scale, DIL,
                         KS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
        """One program: ``BLOCK_P`` pixels of one (batch x head) plane, all ``d`` channels."""
        plane = tl.program_id(0)
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.arange(0, BLOCK_D)
        hw = H * W
        inside_p = p < hw
        y, x = p // W, p % W
        base = plane.to(tl.int64) * D * hw
        cmask = c < D
        offs = base + c[:, None] * hw + p[None, :]  # (BLOCK_D, BLOCK_P)
        q = tl.load(q_ptr + offs, mask=cmask[:, None] & inside_p[None, :], other=0.0).to(tl.float32)
        m = tl.full((BLOCK_P,), float("-inf"), tl.float32)
        s = tl.zeros((BLOCK_P,), tl.float32)
        acc = tl.zeros((BLOCK_D, BLOCK_P), tl.float32)
        half = (KS - 1) // 2
        for tap in range(KS * KS):
            yy = y + (tap // KS - half) * DIL
            xx = x + (tap % KS - half) * DIL
            valid = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & inside_p
            src = base + c[:, None] * hw + (yy * W + xx)[None, :]
            kv_mask = cmask[:, None] & valid[None, :]
            k = tl.load(k_ptr + src, mask=kv_mask, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + src, mask=kv_mask, other=0.0).to(tl.float32)
            logit = tl.sum(q * k, axis=0) * scale  # zero keys outside the map: logit 0, as the zero padding
            m_new = tl.maximum(m, logit)
            alpha = tl.exp(m - m_new)
            e = tl.exp(logit - m_new)
            s = s * alpha + e
            acc = acc * alpha[None, :] + v * e[None, :]
            m = m_new
        out = acc / s[None, :]
        tl.store(o_ptr + offs, out.to(o_ptr.dtype.element_ty), mask=cmask[:, None] & inside_p[None, :])

    def _msa_conv_forward(q, k, v, kernel_size, dilation, scale):
        b, d, h, w = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty_like(q)
        block_p = 64
        grid = (b, triton.cdiv(h * w, block_p))
        _msa_conv_kernel[grid](q, k, v, out, d, h, w, float(scale), dilation, KS=kernel_size, BLOCK_P=block_p,
                               BLOCK_D=triton.next_power_of_2(d))
        return out
else:  # pragma: no cover
    def _msa_conv_forward(q, k, v, kernel_size, dilation, scale):
        raise RuntimeError("triton is not installed")


class _MSAConv(torch.autograd.Function):
    """Triton forward; backward through the reference (recomputed)."""

    @staticmethod
    def forward(ctx, q, k, v, kernel_size, dilation, scale):
        ctx.save_for_backward(q, k, v)
        ctx.args = (kernel_size, dilation, scale)
        return _msa_conv_forward(q, k, v, kernel_size, dilation, scale)

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = msa_conv_reference(*inputs, *ctx.args)
            grads = torch.autograd.grad(out, inputs, grad)
        return (*grads, None, None, None)


def _triton_supports(q, k, v, kernel_size=3, dilation=1, scale=None) -> bool:
    return (q.dim() == 4 and q.shape == k.shape == v.shape and q.device == k.device == v.device
            and kernel_size % 2 == 1 and q.shape[1] <= 256)


@msa_conv.implementation("triton", backend="triton", dtypes=(torch.float32,), supports=_triton_supports,
                         atol=1e-5, rtol=1e-5)
def msa_conv_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int = 3, dilation: int = 1,
                    scale: float | None = None) -> torch.Tensor:
    """The one-pass window attention (differentiable); same conventions as :func:`msa_conv_reference`."""
    _check(q, k, v, kernel_size, dilation)
    return _MSAConv.apply(q, k, v, kernel_size, dilation, q.shape[1] ** -0.5 if scale is None else scale)


__all__ = ["msa_conv", "msa_conv_reference", "msa_conv_triton"]
