"""Orchid: data-dependent global convolution (Karami & Ghodsi, NeurIPS 2024).

"Orchid: Flexible and Data-Dependent Convolution for Sequence Modeling". The long convolution
kernel is not only a learned (static) filter but also a function of the input: a *conditioning
network* ``h_theta(x)`` maps the sequence to a kernel as long as the sequence. Its defining
property is shift invariance, ``h_theta(S_m x) = h_theta(x)`` for every (circular) shift
``S_m``, so that the data-dependent convolution ``y = h_theta(x) * x`` stays shift-*equivariant*
like any convolution. The paper gives two designs, both here (``design``):

* ``"abs"`` (Type I, eq. 2): ``h_theta(x) = F^-1( Conv1d_w( |F( Conv1d_t(x) )| ) )``: a short
  depthwise convolution in time (shift-equivariant; circular padding), the magnitude of its DFT
  (shift-invariant: a shift only changes phases), a short depthwise convolution across
  frequencies, back to time.
* ``"xcorr"`` (Type II, eq. 3): ``h_theta(x) = F^-1( Conv1d_w( sigma( F(k~) . conj(F(q~)) ) ) )``
  with ``k~, q~`` two short-convolved linear projections of ``x``: their cross-correlation is
  shift-invariant (the phases of a common shift cancel). ``sigma`` acts on the magnitude
  (identity, the paper's ablation's best, tanh or softshrink).

The DFTs are length-``L`` (``norm="ortho"``) so the invariance is exact for circular shifts.

The Orchid mixer (Hyena-like block, order 2): ``x -> Linear(d, 3d)`` -> short causal depthwise
convolution -> ``(x0, x1, v)``; the long kernel is the static implicit filter (Hyena's:
FFN over positional features times an exponential decay window,
:class:`~panconv_sequence.models.hyena.HyenaFilter`) *plus* the data-dependent
``h_theta(x1)``; ``y = x0 * (k * v + D v)`` by FFT (a per-sample kernel, so a batched FFT
convolution), then ``Linear(d, d)``. The data-dependent kernel sees the whole sequence (the
paper's classification / bidirectional use); it is not a causal language-model layer.

The official code is not released (github.com/Karami-m/orchid holds the paper's experiment
notes only), so the tests check the defining identity instead of parity.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from .hyena import HyenaFilter
from .layers import SequenceBackbone


def fft_long_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal linear convolution ``y[..., t] = sum_{s<=t} k[..., s] u[..., t-s]`` by FFT (zero-padded to ``2L``).

    Unlike ``sequence.fftconv`` (one filter per channel) ``k`` may differ per sample: ``u`` is
    ``(..., L)``, ``k`` broadcastable to it with ``K <= L`` taps. Half precision is computed in float32.
    """
    length = u.shape[-1]
    n = 2 * length
    work = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    y = torch.fft.irfft(torch.fft.rfft(u.to(work), n=n) * torch.fft.rfft(k.to(work), n=n), n=n)
    return y[..., :length].to(u.dtype)


def circular_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Circular convolution over the last axis (length-``L`` FFTs): the exactly shift-equivariant form."""
    length = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=length) * torch.fft.rfft(k, n=length), n=length)


class ConditioningNetwork(nn.Module):
    """Shift-invariant map ``x (N, d, L) -> h_theta(x) (N, d, L)`` (Orchid's Type I ``abs`` or Type II ``xcorr``).

    ``kernel_size``: the short depthwise convolutions in time and across frequencies. ``sigma``:
    the nonlinearity on the cross-spectrum's magnitude (``xcorr`` only).
    """

    def __init__(self, d_model: int, design: str = "abs", kernel_size: int = 3, sigma: str = "identity"):
        super().__init__()
        if design not in ("abs", "xcorr"):
            raise ValueError(f"design must be 'abs' or 'xcorr', got {design!r}")
        if sigma not in ("identity", "tanh", "softshrink"):
            raise ValueError(f"sigma must be identity, tanh or softshrink, got {sigma!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (centred convolutions), got {kernel_size}")
        self.design, self.sigma = design, sigma
        streams = 1 if design == "abs" else 2  # xcorr: k and q
        self.proj = nn.Linear(d_model, 2 * d_model) if design == "xcorr" else None
        self.time_conv = nn.Conv1d(streams * d_model, streams * d_model, kernel_size, padding=kernel_size // 2,
                                   padding_mode="circular", groups=streams * d_model)
        # xcorr: the complex spectrum's real and imaginary parts share the frequency filter (a real filter)
        self.freq_conv = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """The shift-invariant spectral feature ``(N, d, L//2+1)`` (real for ``abs``, complex for ``xcorr``)."""
        length = x.shape[-1]
        if self.design == "abs":
            return torch.fft.rfft(self.time_conv(x), n=length, norm="ortho").abs()
        kq = self.time_conv(self.proj(x.transpose(1, 2)).transpose(1, 2))
        k, q = kq.chunk(2, dim=1)
        cross = torch.fft.rfft(k, n=length, norm="ortho") * torch.fft.rfft(q, n=length, norm="ortho").conj()
        if self.sigma == "identity":
            return cross
        mag = cross.abs()
        scaled = torch.tanh(mag) if self.sigma == "tanh" else F.softshrink(mag)
        return cross * (scaled / mag.clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        s = self.spectrum(x)
        if s.is_complex():
            n, d, f = s.shape
            parts = self.freq_conv(torch.view_as_real(s).permute(0, 3, 1, 2).reshape(2 * n, d, f))
            s = torch.complex(*parts.reshape(n, 2, d, f).unbind(1))
        else:
            s = self.freq_conv(s)
        return torch.fft.irfft(s, n=length, norm="ortho")


class OrchidMixer(nn.Module):
    """The Orchid layer ``(N, L, d_model) -> (N, L, d_model)`` (see the module docstring), ``L <= l_max``."""

    def __init__(self, d_model: int, l_max: int, design: str = "abs", short_kernel: int = 3, cond_kernel: int = 3,
                 sigma: str = "identity", filter_order: int = 64, static_filter: bool = True, dropout: float = 0.0):
        super().__init__()
        if short_kernel < 1:
            raise ValueError(f"short_kernel must be >= 1, got {short_kernel}")
        self.d_model, self.l_max = d_model, l_max
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_filter = nn.Conv1d(3 * d_model, 3 * d_model, short_kernel, padding=short_kernel - 1,
                                      groups=3 * d_model)
        self.conditioning = ConditioningNetwork(d_model, design, cond_kernel, sigma)
        self.static = HyenaFilter(d_model, l_max, filter_order=filter_order) if static_filter else None
        self.D = nn.Parameter(torch.randn(d_model)) if not static_filter else None  # else the filter's bias
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, d_model)

    def kernel(self, x1: torch.Tensor) -> torch.Tensor:
        """The long kernel ``(N, d, L)``: static implicit filter + ``h_theta(x1)``."""
        k = self.conditioning(x1)
        if self.static is not None:
            k = k + self.static.filter(x1.shape[-1]).t()[None]
        return k

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        length = u.shape[1]
        if length > self.l_max:
            raise ValueError(f"OrchidMixer: sequence length {length} > l_max {self.l_max}")
        z = self.short_filter(self.in_proj(u).transpose(1, 2))[..., :length]  # causal short conv
        x0, x1, v = z.split(self.d_model, dim=1)
        skip = self.static.bias if self.static is not None else self.D
        y = fft_long_conv(v, self.kernel(x1)) + v * skip[:, None]
        return self.out_proj(self.dropout(y * x0).transpose(1, 2))


class Orchid(SequenceBackbone):
    """Orchid backbone: :class:`SequenceBackbone` with an :class:`OrchidMixer` in every block.

    ``design``: the conditioning network, ``"abs"`` (Type I) or ``"xcorr"`` (Type II). ``l_max``:
    the longest sequence (the static filter's positional features are built for it).
    """

    example_length = 32

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 l_max: Annotated[int, Ge(1)] = 1024, design: Literal["abs", "xcorr"] = "abs",
                 short_kernel: Annotated[int, Ge(1)] = 3, cond_kernel: Annotated[int, Ge(1)] = 3,
                 sigma: Literal["identity", "tanh", "softshrink"] = "identity",
                 filter_order: Annotated[int, Ge(1)] = 64, static_filter: bool = True,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        self.mixer_args = dict(l_max=l_max, design=design, short_kernel=short_kernel, cond_kernel=cond_kernel,
                               sigma=sigma, filter_order=filter_order, static_filter=static_filter, dropout=dropout)
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return OrchidMixer(self.d_model, **self.mixer_args)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "l_max": 32, "filter_order": 16}


__all__ = ["ConditioningNetwork", "Orchid", "OrchidMixer", "circular_conv", "fft_long_conv"]
