"""``sequence.fftconv``: long convolution ``y = k ⊛ u`` along the last axis, causal or bidirectional.

Shapes: ``u`` is ``(..., H, L)`` (any leading batch dims), ``k`` is ``(H, K)`` (one filter per
channel, depthwise), ``D`` an optional ``(H,)`` skip (``y += D * u``, the SSM's feed-through).

* causal (default): ``y[t] = sum_{j=0}^{K-1} k[j] u[t-j]`` (``u`` is zero before 0); any ``K``
  (a kernel longer than the input is cut, a shorter one is a short convolution);
* bidirectional: ``K = 2M-1`` is odd and the kernel is centred: lag ``j`` in ``-(M-1)..M-1`` is
  ``k[j + M - 1]``, so ``y[t] = sum_j k[j+M-1] u[t-j]`` with ``u`` zero outside ``0..L-1``
  (``conv1d(padding="same")`` with a flipped kernel).

The reference is ``torch.fft``: both signals zero-padded to ``n >= L + K - 1`` (``2L`` for the
usual ``K = L`` causal filter), so the circular product is the linear convolution; half
precision is computed in float32 (``torch.fft`` has no CPU half kernels). O(L log L).

``fft_recompute`` (backend ``torch``, every device: the path that runs on a CPU) is the same FFT
convolution with a hand-written backward that keeps only ``u``, ``k`` and ``D`` for the backward pass and
recomputes their transforms there (``∂u = (g ⋆ k)``, ``∂k = Σ_batch (g ⋆ u)``, correlations by the same
zero-padded FFTs), where autograd through the reference keeps both spectra and both padded signals: at
Hyena's width that is 4 KB less per token and call, for two more FFTs in the backward pass.

The Triton implementation is the direct convolution written as a blocked Toeplitz product:
one program per (row, block of ``BLOCK_T`` outputs) walks the input blocks its lags reach and
accumulates ``T_block @ u_block`` in float32, where ``T[t, s] = k[t - s]`` is gathered from the
filter. O(L·K) work with no FFT, so it is registered for filters up to ``TRITON_MAX_TAPS`` taps
(Hyena's short and mid-range filters, S4 kernels of short sequences); longer ones use the
FFT. Its backward runs the same kernel on the flipped gradient (``∂u = flip(k ⊛ flip(g))``, the
correlation with ``k``) and takes ``∂k`` from the reference's vector-Jacobian product.
"""

from __future__ import annotations

import torch

from panconv.api import Kernel

#: longest filter the direct (O(L*K)) Triton implementation is used for
TRITON_MAX_TAPS = 2048


def _check(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None, bidirectional: bool) -> None:
    if u.dim() < 2 or k.dim() != 2 or k.shape[0] != u.shape[-2]:
        raise ValueError(f"fftconv: u must be (..., H, L) and k (H, K), got u {tuple(u.shape)}, k {tuple(k.shape)}")
    if bidirectional and k.shape[-1] % 2 == 0:
        raise ValueError(f"fftconv: a bidirectional kernel is centred and must have odd length, got {k.shape[-1]}")
    if D is not None and D.shape != (k.shape[0],):
        raise ValueError(f"fftconv: D must be (H,) = ({k.shape[0]},), got {tuple(D.shape)}")


def fft_size(length: int, taps: int) -> int:
    """The FFT length used for a length-``length`` input and a ``taps``-tap filter: ``>= L + K - 1``, even."""
    n = length + taps - 1
    return n + (n % 2)


def fftconv_reference(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None,
                      bidirectional: bool = False) -> torch.Tensor:
    """``k ⊛ u`` (+ ``D * u``) by zero-padded real FFTs; see the module docstring for the conventions."""
    _check(u, k, D, bidirectional)
    length, taps = u.shape[-1], k.shape[-1]
    work = u.dtype if u.dtype in (torch.float32, torch.float64) else torch.float32
    n = fft_size(length, taps)
    u_f = torch.fft.rfft(u.to(work), n=n)
    k_f = torch.fft.rfft(k.to(work), n=n)
    full = torch.fft.irfft(u_f * k_f, n=n)
    start = (taps - 1) // 2 if bidirectional else 0
    y = full[..., start:start + length]
    if D is not None:
        y = y + u.to(work) * D.to(work)[:, None]
    return y.to(u.dtype)


fftconv = Kernel("sequence.fftconv", reference=fftconv_reference,
                 doc="depthwise long convolution y = k * u (+ D u) along the last axis, causal or bidirectional "
                     "(torch.fft reference; Triton blocked-Toeplitz direct convolution)")


def _make_inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    length, channels = (37, 3) if seed == 0 else (64, 2)
    taps = length if seed == 0 else 9  # a full-length causal filter, and a short centred one
    u = torch.randn(2, channels, length, generator=g, dtype=dtype).to(device)
    k = torch.randn(channels, taps, generator=g, dtype=dtype).to(device)
    D = torch.randn(channels, generator=g, dtype=dtype).to(device)
    return (u, k, D), {"bidirectional": seed == 1}


fftconv.make_inputs = _make_inputs


# ---- Triton: blocked direct (Toeplitz) convolution ----
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

if triton is not None:
    @triton.jit
    def _toeplitz_conv_kernel(u_ptr, k_ptr, y_ptr, H, L, K, LAG0,
                              BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, N_BLOCKS: tl.constexpr):
        """``y[r, t] = sum_s k[h, t - s - LAG0] u[r, s]`` for the lags ``0 <= t - s - LAG0 < K`` (h = r % H)."""
        row = tl.program_id(0)
        t0 = tl.program_id(1) * BLOCK_T
        h = row % H
        base = row.to(tl.int64) * L  # rows * L may pass 2^31 at L ~ 10^6
        t = t0 + tl.arange(0, BLOCK_T)
        acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
        # input positions s that some output of this block reaches: t - LAG0 - (K - 1) <= s <= t - LAG0
        # (BLOCK_T + K - 1 of them, in N_BLOCKS blocks; positions outside 0..L-1 are the zero padding)
        for i in range(N_BLOCKS):
            s = t0 - LAG0 - (K - 1) + i * BLOCK_S + tl.arange(0, BLOCK_S)
            inside = (s >= 0) & (s < L)
            u = tl.load(u_ptr + base + s, mask=inside, other=0.0).to(tl.float32)
            lag = t[:, None] - s[None, :] - LAG0
            valid = (lag >= 0) & (lag < K) & inside[None, :]
            taps = tl.load(k_ptr + h * K + lag, mask=valid, other=0.0).to(tl.float32)
            acc += tl.sum(taps * u[None, :], axis=1)
        tl.store(y_ptr + base + t, acc.to(y_ptr.dtype.element_ty), mask=t < L)

    def _toeplitz_conv(u: torch.Tensor, k: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        length, channels, taps = u.shape[-1], k.shape[0], k.shape[-1]
        rows = u.reshape(-1, length).contiguous()
        out = torch.empty_like(rows)
        lag0 = -((taps - 1) // 2) if bidirectional else 0
        block_t = block_s = 64
        grid = (rows.shape[0], triton.cdiv(length, block_t))
        _toeplitz_conv_kernel[grid](rows, k.contiguous(), out, channels, length, taps, lag0, BLOCK_T=block_t,
                                    BLOCK_S=block_s, N_BLOCKS=triton.cdiv(block_t + taps - 1, block_s))
        return out.view(u.shape)
else:  # pragma: no cover
    def _toeplitz_conv(u, k, bidirectional):
        raise RuntimeError("triton is not installed")


class _ToeplitzConv(torch.autograd.Function):
    """Triton forward; backward: ``∂u`` by the same kernel on flipped inputs, ``∂k`` from the reference."""

    @staticmethod
    def forward(ctx, u, k, bidirectional):
        ctx.save_for_backward(u, k)
        ctx.bidirectional = bidirectional
        return _toeplitz_conv(u, k, bidirectional)

    @staticmethod
    def backward(ctx, grad):
        u, k = ctx.saved_tensors
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            # ∂u[s] = sum_t k[t - s] g[t]: the convolution of the reversed gradient with the same filter, reversed
            grad_u = _toeplitz_conv(grad.flip(-1).contiguous(), k, ctx.bidirectional).flip(-1)
        if ctx.needs_input_grad[1]:
            with torch.enable_grad():
                k_ = k.detach().requires_grad_(True)
                y = fftconv_reference(u.detach(), k_, None, ctx.bidirectional)
                (grad_k,) = torch.autograd.grad(y, k_, grad)
        return grad_u, grad_k, None


def _triton_supports(u, k, D=None, bidirectional=False) -> bool:
    return (u.dim() >= 2 and k.dim() == 2 and k.shape[0] == u.shape[-2] and u.dtype == k.dtype
            and k.shape[-1] <= TRITON_MAX_TAPS and not (bidirectional and k.shape[-1] % 2 == 0)
            and u.device == k.device)


@fftconv.implementation("triton", backend="triton", dtypes=(torch.float32,), supports=_triton_supports,
                        atol=1e-4, rtol=1e-4)
def fftconv_triton(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None,
                   bidirectional: bool = False) -> torch.Tensor:
    """The blocked direct convolution (differentiable); same conventions as :func:`fftconv_reference`."""
    _check(u, k, D, bidirectional)
    y = _ToeplitzConv.apply(u, k, bidirectional)
    return y if D is None else y + u * D[:, None]


# ---- every device: the FFT convolution with a lean backward (after Triton: the first eligible one runs) ----
class _FFTConvRecompute(torch.autograd.Function):
    """The reference's forward; a backward that needs only ``u``, ``k`` and ``D`` (the spectra are recomputed)."""

    @staticmethod
    def forward(ctx, u, k, D, bidirectional):
        ctx.save_for_backward(u, k, D)
        ctx.bidirectional = bidirectional
        return fftconv_reference(u, k, D, bidirectional)

    @staticmethod
    def backward(ctx, grad):
        u, k, D = ctx.saved_tensors
        length, taps = u.shape[-1], k.shape[-1]
        work = u.dtype if u.dtype in (torch.float32, torch.float64) else torch.float32
        n = fft_size(length, taps)
        start = (taps - 1) // 2 if ctx.bidirectional else 0
        g = grad.to(work)
        # y[t] = full[t + start], full = k * u (linear, n >= L + K - 1): the gradient of `full` is g placed at start
        g_f = torch.fft.rfft(torch.nn.functional.pad(g, (start, 0)) if start else g, n=n)
        grad_u = grad_k = grad_d = None
        if ctx.needs_input_grad[0]:
            # ∂u[s] = Σ_m ∂full[m] k[m - s]: a correlation; lags the padding wraps land on zeros of k
            grad_u = torch.fft.irfft(g_f * torch.fft.rfft(k.to(work), n=n).conj(), n=n)[..., :length]
            if D is not None:
                grad_u = grad_u + g * D.to(work)[:, None]
            grad_u = grad_u.to(u.dtype)
        if ctx.needs_input_grad[1]:
            # ∂k[j] = Σ_batch Σ_m ∂full[m] u[m - j], summed over the batch in the frequency domain
            cross = (g_f * torch.fft.rfft(u.to(work), n=n).conj()).reshape(-1, *g_f.shape[-2:]).sum(0)
            grad_k = torch.fft.irfft(cross, n=n)[..., :taps].to(k.dtype)
        if D is not None and ctx.needs_input_grad[2]:
            grad_d = (g * u.to(work)).reshape(-1, *g.shape[-2:]).sum(dim=(0, 2)).to(D.dtype)
        return grad_u, grad_k, grad_d, None


def _recompute_supports(u, k, D=None, bidirectional=False) -> bool:
    try:
        _check(u, k, D, bidirectional)
    except ValueError:
        return False  # the reference raises the error
    return u.device == k.device


@fftconv.implementation("fft_recompute", backend="torch", dtypes=None, supports=_recompute_supports)
def fftconv_recompute(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None,
                      bidirectional: bool = False) -> torch.Tensor:
    """:func:`fftconv_reference`'s values; its backward keeps only the inputs (see the module docstring)."""
    return _FFTConvRecompute.apply(u, k, D, bidirectional)


__all__ = ["TRITON_MAX_TAPS", "fft_size", "fftconv", "fftconv_recompute", "fftconv_reference", "fftconv_triton"]
