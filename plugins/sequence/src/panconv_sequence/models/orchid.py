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

In :class:`ConditioningNetwork` (the paper form below) the DFTs are length-``L`` (``norm="ortho"``) and
the time convolution pads circularly, so the invariance is exact for circular shifts; in the official
form it is exact with a pointwise time convolution and a frequency-domain kernel (both tested).

Two forms of the block:

* :class:`OrchidOperator` (``block="official"``, the default of :class:`Orchid`): the block as the
  official standalone code computes it (github.com/Karami-m/orchid, ``orchid_standalone/`` at
  061f6df; forward parity on shared weights in ``tests/test_orchid_parity.py``, max error ~1e-15 in
  float64, < 2e-6 in float32). ``x -> Linear(d, 3d)``; the conditioning network reads the third stream
  *before* the short causal depthwise convolution; ``(x0, x1, v)`` after it;
  ``y = x0 · ((v·x1) ⊛ k + b·(v·x1))`` with a length-``L`` circular FFT convolution whose kernel
  spectrum is ``rfft(k_static)/L`` plus the data-dependent part; a second static filter on the block
  input is added (``residual_long_conv``); ``Linear(d, d)``. Its conditioning network
  (:class:`OrchidConditioning`) differs from the paper's equations in the details: a zero-padded
  time convolution + LayerNorm, the *power* spectrum ``|F|^2`` of a ``2L``-point (time-domain kernel)
  or ``L``-point (frequency-domain kernel) DFT scaled by ``1/n``, and a frequency convolution with
  two outputs (real, imaginary) per feature + LayerNorm. Type II multiplies ``conj(F k)`` by
  ``σ(F q)`` and mixes the ``[re, im]`` stack with a grouped convolution.
* :class:`OrchidMixer` (``block="paper"``): our earlier reading of the paper's equations, written
  before the official code was released: the conditioning network reads ``x1`` after the short
  convolution, uses ``|F|`` of a length-``L`` orthonormal DFT and circular padding, so its shift
  invariance is exact (the property ``tests/test_orchid.py`` checks); ``y = x0 · (k ⊛ v + D v)`` by
  a causal linear FFT convolution, no residual long convolution.

The data-dependent kernel sees the whole sequence (the paper's classification / bidirectional use);
neither form is a causal language-model layer.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
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


# ---- the official block (Karami-m/orchid, orchid_standalone/, commit 061f6df): forward-parity tested ----


def _spectrum(x: torch.Tensor, n: int) -> torch.Tensor:
    """``rfft(x, n) / n`` over the last axis (the official ``transform(mode='fft')``); half precision in float32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return torch.fft.rfft(x, n=n) / n


class ConvNorm(nn.Conv1d):
    """A grouped ``Conv1d`` (centred, zero padding) over ``(N, C_in, T)``, then LayerNorm over the channels.

    ``norm=False`` leaves the LayerNorm out (the official ``norm: none``).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, kernel_size: int, norm: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, groups=groups)
        self.norm = nn.LayerNorm(out_channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        return self.norm(super().forward(x)[..., :length].transpose(1, 2)).transpose(1, 2)


class OrchidConditioning(nn.Module):
    """The official conditioning network ``c (N, d, L) -> h`` (the data-dependent part of the long kernel).

    ``design="abs"`` (the official ``type: absfreq``, ``nn: convtf``): ``a = LN(Conv_t(c))``;
    ``P = |rfft(a, n) / n|^2`` (the power spectrum, shift-invariant for circular shifts of length ``n``);
    ``g = LN(Conv_f(P))`` with two output channels per feature (real, imaginary part), ``H = g_re + i g_im``.
    ``design="xcorr"`` (``type: corrTime``, ``nn: convtf``): ``k = LN(Conv_k(c))``, ``q = LN(Conv_q(c))``,
    ``H = Conv_f(conj(F k) · σ(F q))`` with ``F = rfft(·, n) / n``, ``σ`` on real and imaginary parts
    separately, and ``Conv_f`` a grouped convolution over the ``[re, im]`` channel stack (the official layout,
    two consecutive channels per group).

    ``domain="freq"``: ``n = L`` and ``H (N, d, L//2+1)`` is added to the static kernel's spectrum.
    ``domain="time"`` (``abs`` only; the official ``causal=True`` default): ``n = 2L`` and the kernel is
    ``irfft(H, 2L)[:L]`` (unnormalised inverse) in time, ``(N, d, L)``.
    """

    def __init__(self, d_model: int, design: str = "abs", kernel_size: int = 3, norm: bool = True,
                 sigma: str = "identity", domain: str = "time"):
        super().__init__()
        if design not in ("abs", "xcorr"):
            raise ValueError(f"design must be 'abs' or 'xcorr', got {design!r}")
        if domain not in ("time", "freq"):
            raise ValueError(f"domain must be 'time' or 'freq', got {domain!r}")
        if design == "xcorr" and domain == "time":
            raise ValueError("design 'xcorr' gives a frequency-domain kernel: use domain='freq' (the official "
                             "corrTime conditioning does not run with causal=True)")
        if sigma not in _SIGMAS:
            raise ValueError(f"sigma must be one of {sorted(_SIGMAS)}, got {sigma!r}")
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.design, self.domain, self.sigma = design, domain, sigma
        d = d_model
        if design == "abs":
            self.time_conv = ConvNorm(d, d, d, kernel_size, norm)
            self.freq_conv = ConvNorm(d, 2 * d, d, kernel_size, norm)
        else:
            self.k_conv = ConvNorm(d, d, d, kernel_size, norm)
            self.q_conv = ConvNorm(d, d, d, kernel_size, norm)
            self.freq_conv = ConvNorm(2 * d, 2 * d, d, kernel_size, norm)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        length = c.shape[-1]
        n = 2 * length if self.domain == "time" else length
        # spectra in float32 at least; the convolutions in the input's dtype (half precision / autocast)
        if self.design == "abs":
            power = _spectrum(self.time_conv(c), n).abs().square()
            g = self.freq_conv(power.to(c.dtype)).to(power.dtype)     # (N, 2d, F): channel 2j real, 2j+1 imag
            h = torch.complex(g[:, 0::2], g[:, 1::2])
        else:
            k, q = _spectrum(self.k_conv(c), n), _spectrum(self.q_conv(c), n)
            act = _SIGMAS[self.sigma]
            cross = k.conj() * torch.complex(act(q.real), act(q.imag))
            stacked = torch.cat([cross.real, cross.imag], dim=1)
            g = self.freq_conv(stacked.to(c.dtype)).to(stacked.dtype)
            h = torch.complex(*g.chunk(2, dim=1))
        if self.domain == "time":
            return torch.fft.irfft(h, n=n, norm="forward")[..., :length]
        return h


_SIGMAS = {"identity": lambda x: x, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu,
           "relu": F.relu}


class OrchidOperator(nn.Module):
    """The Orchid block as the official standalone ``OrchidOperator`` computes it: ``(N, L, d) -> (N, L, d)``.

    ``in_proj`` to three streams; the conditioning network reads the last one (``v``) *before* the short
    convolution; a short causal depthwise convolution gives ``(x0, x1, v)``; then
    ``y = x0 · ((v·x1) ⊛_L k + b · (v·x1))`` where ``⊛_L`` is the length-``L`` circular convolution with
    the official scaling (``irfft(rfft(u) · K)`` with ``K = rfft(k_static, L)/L + H``: the static implicit
    filter enters scaled by ``1/L``, the data-dependent ``H`` as made by :class:`OrchidConditioning`);
    with ``residual_long_conv`` a second static filter on the block *input* is added,
    ``u ⊛_L k_res / L + b_res · u``; finally ``out_proj``. Order 2 only (the official conditioning
    network does not build for order > 2). The static filters are :class:`HyenaFilter` (the official
    ``ConvKernel_Static``: same MLP, positional features and decay window). ``trainable_positional``
    registers the positional features as parameters as the official code does (it trains them at lr 1e-5);
    by default they are a fixed buffer as in :class:`~panconv_sequence.models.hyena.HyenaOperator`.
    """

    def __init__(self, d_model: int, l_max: int, design: str = "abs", filter_order: int = 64,
                 short_filter_order: int = 3, cond_kernel: int = 3, cond_norm: bool = True, sigma: str = "identity",
                 kernel_domain: str | None = None, residual_long_conv: bool = True, emb_dim: int = 3,
                 num_inner_mlps: int = 2, w: float = 1.0, trainable_positional: bool = False, dropout: float = 0.0):
        super().__init__()
        if short_filter_order < 1:
            raise ValueError(f"short_filter_order must be >= 1, got {short_filter_order}")
        self.d_model, self.l_max = d_model, l_max
        self.kernel_domain = kernel_domain or ("time" if design == "abs" else "freq")
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_filter = nn.Conv1d(3 * d_model, 3 * d_model, short_filter_order, padding=short_filter_order - 1,
                                      groups=3 * d_model)
        filter_args = dict(filter_order=filter_order, emb_dim=emb_dim, num_inner_mlps=num_inner_mlps, w=w)
        self.static = HyenaFilter(d_model, l_max, **filter_args)
        self.static_res = HyenaFilter(d_model, l_max, **filter_args) if residual_long_conv else None
        if trainable_positional:
            for f in (self.static, self.static_res):
                if f is not None:
                    z = f.z
                    del f.z
                    f.z = nn.Parameter(z.clone())
        self.conditioning = OrchidConditioning(d_model, design, cond_kernel, cond_norm, sigma, self.kernel_domain)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, d_model)

    def kernel_spectrum(self, c: torch.Tensor, length: int) -> torch.Tensor:
        """``K (N, d, L//2+1)``: the static filter's ``rfft(k, L)/L`` plus the data-dependent part of ``c``."""
        h = self.conditioning(c)
        k = _spectrum(self.static.filter(length).t(), length)
        return k + (_spectrum(h, length) if self.kernel_domain == "time" else h)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        length = u.shape[1]
        if length > self.l_max:
            raise ValueError(f"OrchidOperator: sequence length {length} > l_max {self.l_max}")
        z = self.in_proj(u).transpose(1, 2)                            # (N, 3d, L)
        spec = self.kernel_spectrum(z[:, 2 * self.d_model:], length)
        x0, x1, v = self.short_filter(z)[..., :length].split(self.d_model, dim=1)
        w = v * x1
        work = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        y = torch.fft.irfft(torch.fft.rfft(w.to(work), n=length) * spec, n=length) + w * self.static.bias[:, None]
        y = y.to(u.dtype) * x0
        if self.static_res is not None:
            ut = u.transpose(1, 2)
            k = _spectrum(self.static_res.filter(length).t(), length)
            y = y + torch.fft.irfft(torch.fft.rfft(ut.to(work), n=length) * k, n=length).to(u.dtype) \
                + ut * self.static_res.bias[:, None]
        return self.out_proj(self.dropout(y).transpose(1, 2))


class Orchid(SequenceBackbone):
    """Orchid backbone: :class:`SequenceBackbone` with an Orchid block in every layer.

    ``block="official"`` (default): :class:`OrchidOperator`, the official standalone block (forward parity
    tested); ``block="paper"``: :class:`OrchidMixer`, our earlier reading of the paper's equations (exactly
    shift-invariant conditioning, causal linear long convolution; ``static_filter`` applies to it only).
    ``design``: the conditioning network, ``"abs"`` (Type I) or ``"xcorr"`` (Type II). ``l_max``: the
    longest sequence (the static filters' positional features are built for it). ``kernel_domain``,
    ``residual_long_conv``, ``cond_norm``, ``emb_dim``, ``num_inner_mlps``, ``w``, ``trainable_positional``:
    the official block's options (see :class:`OrchidOperator`).
    """

    example_length = 32

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 l_max: Annotated[int, Ge(1)] = 1024, design: Literal["abs", "xcorr"] = "abs",
                 block: Literal["official", "paper"] = "official",
                 short_kernel: Annotated[int, Ge(1)] = 3, cond_kernel: Annotated[int, Ge(1)] = 3,
                 sigma: Literal["identity", "tanh", "softshrink", "sigmoid", "gelu", "relu"] = "identity",
                 filter_order: Annotated[int, Ge(1)] = 64, static_filter: bool = True,
                 kernel_domain: Literal["time", "freq"] | None = None, residual_long_conv: bool = True,
                 cond_norm: bool = True, emb_dim: Annotated[int, Ge(3)] = 3, num_inner_mlps: Annotated[int, Ge(0)] = 2,
                 w: Annotated[float, Gt(0)] = 1.0, trainable_positional: bool = False,
                 filter_lr_mult: Annotated[float, Ge(0)] = 1.0,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        self.block, self.filter_lr_mult = block, filter_lr_mult
        if block == "paper":
            if sigma not in ("identity", "tanh", "softshrink"):
                raise ValueError(f"block 'paper': sigma must be identity, tanh or softshrink, got {sigma!r}")
            self.mixer_args = dict(l_max=l_max, design=design, short_kernel=short_kernel, cond_kernel=cond_kernel,
                                   sigma=sigma, filter_order=filter_order, static_filter=static_filter,
                                   dropout=dropout)
        else:
            if sigma == "softshrink":
                raise ValueError("block 'official': sigma must be identity, tanh, sigmoid, gelu or relu "
                                 "(applied to the real and imaginary parts), got 'softshrink'")
            if emb_dim % 2 == 0:
                raise ValueError(f"emb_dim must be odd (time, cosine and sine bands), got {emb_dim}")
            self.mixer_args = dict(l_max=l_max, design=design, filter_order=filter_order,
                                   short_filter_order=short_kernel, cond_kernel=cond_kernel, cond_norm=cond_norm,
                                   sigma=sigma, kernel_domain=kernel_domain, residual_long_conv=residual_long_conv,
                                   emb_dim=emb_dim, num_inner_mlps=num_inner_mlps, w=w,
                                   trainable_positional=trainable_positional, dropout=dropout)
        if block == "official" and design == "xcorr" and kernel_domain == "time":
            raise ValueError("design 'xcorr' makes a frequency-domain kernel: kernel_domain must be 'freq' (or unset)")
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def param_groups(self) -> dict[str, dict]:
        """The official rule for the static implicit filters (MLP, shared sine frequency, output map): no weight
        decay and their own learning rate (``filter_lr_mult``; the official code uses lr 1e-3 for them); trainable
        positional features at 1/100 of that (the official 1e-5 beside 1e-3)."""
        names = ("implicit_filter", "head", "act") if self.block == "official" else ()
        groups = {f"mixer.{f}.{n}": {"lr_mult": self.filter_lr_mult, "decay_mult": 0.0}
                  for f in ("static", "static_res") for n in names}
        if self.block == "official" and self.mixer_args["trainable_positional"]:
            groups.update({f"mixer.{f}.z": {"lr_mult": self.filter_lr_mult * 0.01, "decay_mult": 0.0}
                           for f in ("static", "static_res")})
        return groups

    def make_mixer(self, layer: int) -> nn.Module:
        if self.block == "paper":
            return OrchidMixer(self.d_model, **self.mixer_args)
        return OrchidOperator(self.d_model, **self.mixer_args)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "l_max": 32, "filter_order": 16}


__all__ = ["ConditioningNetwork", "ConvNorm", "Orchid", "OrchidConditioning", "OrchidMixer", "OrchidOperator",
           "circular_conv", "fft_long_conv"]
