"""``vision.msa_conv``: self-attention inside each convolution window (TiC's MSA-Conv, Zhang et al. 2023).

Shapes: ``q``, ``k``, ``v`` are ``(B, d, H, W)`` (``B`` = batch x heads, ``d`` the head width). For every
pixel ``p`` the query ``q_p`` attends to the ``kernel_size x kernel_size`` window of keys centred on
``p`` with ``dilation`` (the taps of a "same"-padded convolution; taps outside the map are zero keys and
values, as the zero padding of a convolution):

    a_p = softmax_j(scale * q_p . k_{p + dilation * j}),   out_p = sum_j a_pj v_{p + dilation * j}

``scale`` defaults to ``d ** -0.5``. The reference unfolds ``k`` and ``v`` (``F.unfold``: the im2col of
the convolution) and takes the softmax over the window axis: O(H W K^2 d) memory. The Triton
implementation walks the ``K^2`` taps of a block of pixels with an online softmax (one pass, no
unfolded copies: O(H W d) memory) and keeps each pixel's log-sum-exp. Its backward is a Triton kernel
too (a ``torch.autograd.Function``, so training runs through it): with the weights rebuilt from the
log-sum-exp and ``delta_p = dout_p . out_p``,

    da_pj = a_pj (dout_p . v_{p + dilation * j} - delta_p)
    dq_p  = scale * sum_j da_pj k_{p + dilation * j}
    dk_r  = scale * sum_j da_{r - dilation * j, j} q_{r - dilation * j}
    dv_r  = sum_j a_{r - dilation * j, j} dout_{r - dilation * j}

``dq`` gathers over a pixel's own taps, ``dk``/``dv`` over the mirrored taps (the queries whose window
covers the pixel), so every program writes only its own pixels: no atomics, O(H W d) memory.

Variants: standard (``dilation=1``), dilated (``dilation > 1``) and depthwise (one channel per head,
``d = 1``: each channel attends on its own, as a depthwise convolution filters each channel on its own)
are the same kernel. ``triton`` serves float32 (tolerance 1e-5); ``triton_half`` float16 / bfloat16 (the
autocast path; loads widened to float32, softmax statistics in float32; tolerance 3e-2).
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
                      "Triton one-pass online softmax over the taps, and its Triton backward)")


def _make_inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    shape, ks, dil = ((3, 5, 9, 11), 3, 1) if seed == 0 else ((2, 8, 12, 7), 5, 2)
    q, k, v = (torch.randn(*shape, generator=g, dtype=dtype).to(device) for _ in range(3))
    return (q, k, v), {"kernel_size": ks, "dilation": dil}


msa_conv.make_inputs = _make_inputs


# ---- Triton: one pass over the taps with an online softmax; backward by two gathers ----
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

if triton is not None:
    # Loop bounds are compile-time constants (``KS``): Triton's interpreter cannot loop over a run-time integer
    # with NumPy >= 2.4.
    @triton.jit
    def _msa_conv_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, D, H, W, scale, DIL,
                         KS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
        """One program: ``BLOCK_P`` pixels of one (batch x head) plane, all ``d`` channels. Also writes the
        log-sum-exp of each pixel's logits (``lse``, float32), which the backward uses to rebuild the weights."""
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
        tl.store(lse_ptr + plane.to(tl.int64) * hw + p, m + tl.log(s), mask=inside_p)

    @triton.jit
    def _msa_conv_bwd_kernel(q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, dq_ptr, dk_ptr, dv_ptr, D, H, W, scale,
                             DIL, KS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
        """The three input gradients of ``BLOCK_P`` pixels of one plane, each pixel both as a query and as a key.

        With ``a_pj = exp(s q_p . k_{p+o_j} - lse_p)`` (``o_j`` the tap offsets), ``g = dL/dout`` and
        ``delta_p = g_p . out_p``, the softmax backward is ``da_pj = a_pj (g_p . v_{p+o_j} - delta_p)``; then

        * as a query (gather over its own taps ``r = p + o_j``): ``dq_p = s sum_j da_pj k_r``;
        * as a key/value ``r`` (gather over the queries whose tap ``j`` lands on it, ``p = r - o_j``):
          ``dk_r = s sum_j da_pj q_p`` and ``dv_r = sum_j a_pj g_p``.

        Taps off the map hold zero keys and values: they keep their share of the softmax (``lse`` counts them),
        contribute nothing to ``dq`` (their key is zero) and their own gradients are dropped (the padding).
        Each program writes only its own pixels, so no atomics are needed.
        """
        plane = tl.program_id(0)
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.arange(0, BLOCK_D)
        hw = H * W
        inside_p = p < hw
        y, x = p // W, p % W
        base = plane.to(tl.int64) * D * hw
        row = plane.to(tl.int64) * hw
        cmask = c < D
        own = cmask[:, None] & inside_p[None, :]
        offs = base + c[:, None] * hw + p[None, :]  # (BLOCK_D, BLOCK_P)
        q = tl.load(q_ptr + offs, mask=own, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=own, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + offs, mask=own, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=own, other=0.0).to(tl.float32)
        lse = tl.load(lse_ptr + row + p, mask=inside_p, other=0.0)
        delta = tl.load(delta_ptr + row + p, mask=inside_p, other=0.0)
        dq = tl.zeros((BLOCK_D, BLOCK_P), tl.float32)
        dk = tl.zeros((BLOCK_D, BLOCK_P), tl.float32)
        dv = tl.zeros((BLOCK_D, BLOCK_P), tl.float32)
        half = (KS - 1) // 2
        for tap in range(KS * KS):
            oy = (tap // KS - half) * DIL
            ox = (tap % KS - half) * DIL
            # -- p as the query: its tap j is the key/value at p + o_j --
            yy, xx = y + oy, x + ox
            valid = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & inside_p
            src = base + c[:, None] * hw + (yy * W + xx)[None, :]
            kn = tl.load(k_ptr + src, mask=cmask[:, None] & valid[None, :], other=0.0).to(tl.float32)
            vn = tl.load(v_ptr + src, mask=cmask[:, None] & valid[None, :], other=0.0).to(tl.float32)
            a = tl.where(inside_p, tl.exp(tl.sum(q * kn, axis=0) * scale - lse), 0.0)
            da = a * (tl.sum(g * vn, axis=0) - delta)
            dq += kn * da[None, :]
            # -- p as the key/value: tap j of the query at p - o_j lands on it --
            yy, xx = y - oy, x - ox
            valid = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & inside_p
            src = base + c[:, None] * hw + (yy * W + xx)[None, :]
            qm = tl.load(q_ptr + src, mask=cmask[:, None] & valid[None, :], other=0.0).to(tl.float32)
            gm = tl.load(g_ptr + src, mask=cmask[:, None] & valid[None, :], other=0.0).to(tl.float32)
            lse_m = tl.load(lse_ptr + row + yy * W + xx, mask=valid, other=0.0)
            delta_m = tl.load(delta_ptr + row + yy * W + xx, mask=valid, other=0.0)
            a = tl.where(valid, tl.exp(tl.sum(qm * k, axis=0) * scale - lse_m), 0.0)
            da = a * (tl.sum(gm * v, axis=0) - delta_m)
            dk += qm * da[None, :]
            dv += gm * a[None, :]
        tl.store(dq_ptr + offs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=own)
        tl.store(dk_ptr + offs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=own)
        tl.store(dv_ptr + offs, dv.to(dv_ptr.dtype.element_ty), mask=own)

    def _blocks(d: int, forward: bool) -> tuple[int, int]:
        """``(BLOCK_P, BLOCK_D)``: the backward holds ~8 ``BLOCK_D x BLOCK_P`` tiles, so it takes fewer pixels
        per program for wide heads."""
        block_d = triton.next_power_of_2(d)
        if forward:
            return 64, block_d
        return max(16, min(64, 2048 // block_d)), block_d

    def _msa_conv_forward(q, k, v, kernel_size, dilation, scale):
        b, d, h, w = q.shape
        out = torch.empty_like(q)
        lse = torch.empty(b, h * w, device=q.device, dtype=torch.float32)
        block_p, block_d = _blocks(d, forward=True)
        grid = (b, triton.cdiv(h * w, block_p))
        _msa_conv_kernel[grid](q, k, v, out, lse, d, h, w, float(scale), dilation, KS=kernel_size, BLOCK_P=block_p,
                               BLOCK_D=block_d)
        return out, lse

    def _msa_conv_backward(q, k, v, out, lse, grad, kernel_size, dilation, scale):
        b, d, h, w = q.shape
        grad = grad.contiguous()
        delta = (grad.float() * out.float()).sum(1).reshape(b, h * w)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        block_p, block_d = _blocks(d, forward=False)
        grid = (b, triton.cdiv(h * w, block_p))
        _msa_conv_bwd_kernel[grid](q, k, v, grad, lse, delta, dq, dk, dv, d, h, w, float(scale), dilation,
                                   KS=kernel_size, BLOCK_P=block_p, BLOCK_D=block_d)
        return dq, dk, dv
else:  # pragma: no cover
    def _msa_conv_forward(q, k, v, kernel_size, dilation, scale):
        raise RuntimeError("triton is not installed")

    def _msa_conv_backward(q, k, v, out, lse, grad, kernel_size, dilation, scale):
        raise RuntimeError("triton is not installed")


class _MSAConv(torch.autograd.Function):
    """Triton forward (saves the per-pixel log-sum-exp) and Triton backward (``dq``, ``dk``, ``dv`` in one kernel,
    no unfolded copies: O(H W d) memory both ways)."""

    @staticmethod
    def forward(ctx, q, k, v, kernel_size, dilation, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse = _msa_conv_forward(q, k, v, kernel_size, dilation, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (kernel_size, dilation, scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _msa_conv_backward(q, k, v, out, lse, grad, *ctx.args)
        needs = ctx.needs_input_grad
        return (dq if needs[0] else None, dk if needs[1] else None, dv if needs[2] else None, None, None, None)


def _triton_supports(q, k, v, kernel_size=3, dilation=1, scale=None) -> bool:
    return (q.dim() == 4 and q.shape == k.shape == v.shape and q.device == k.device == v.device
            and q.dtype == k.dtype == v.dtype and kernel_size % 2 == 1 and q.shape[1] <= 256 and q.numel() > 0)


@msa_conv.implementation("triton", backend="triton", dtypes=(torch.float32,), supports=_triton_supports,
                         atol=1e-5, rtol=1e-5)
def msa_conv_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int = 3, dilation: int = 1,
                    scale: float | None = None) -> torch.Tensor:
    """The one-pass window attention (differentiable); same conventions as :func:`msa_conv_reference`."""
    _check(q, k, v, kernel_size, dilation)
    return _MSAConv.apply(q, k, v, kernel_size, dilation, q.shape[1] ** -0.5 if scale is None else scale)


# half precision (autocast): the same kernels, loads widened to float32, the softmax statistics kept in float32
msa_conv.implementation("triton_half", backend="triton", dtypes=(torch.float16, torch.bfloat16),
                        supports=_triton_supports, atol=3e-2, rtol=3e-2)(msa_conv_triton)


__all__ = ["msa_conv", "msa_conv_reference", "msa_conv_triton"]
