"""SGConv: Structured Global Convolution (Li, Cai, Zhang, Chen, Dey, 2023).

"What Makes Convolutional Models Great on Long Sequence Modeling?" (ICLR 2023). A global
convolution kernel as long as the sequence, with two properties the paper argues make long
convolutions work: a *sub-linear* number of parameters and a *decaying* structure.

Kernel construction (per channel ``c`` and feature ``h``; ``d = kernel_dim``, ``S = n_scales``)::

    k = concat_i  w_i * upsample(k_i, 2**max(0, i-1))         i = 0 .. S-1
    w_i = decay**(S - 1 - i)                                 (earlier scales weigh more)
    k = k / ||k_init||                                       (norm fixed at initialisation)

Every sub-kernel ``k_i`` has ``d`` parameters; scale ``i`` covers ``d * 2**max(0, i-1)``
positions, so the kernel covers ``d * 2**(S-1)`` positions with ``S * d`` parameters: ``O(log L)``
per feature. ``decay`` interpolates linearly from ``decay_min`` (feature 0) to ``decay_max``
(last feature), 2 by default (the official defaults), so scale ``i`` is weighted ``decay**-i``
relative to scale 0 (the paper's decay ``alpha = 1/2``). The kernel is then truncated or
zero-padded to the input length and applied by FFT (``O(L log L)``); with ``bidirectional``
half the channels act on the past and half (flipped) on the future. As in the official
``gconv_standalone.py``: a ``D`` skip term per channel, GELU, then a position-wise linear map
``channels * d_model -> d_model``.

``n_scales=None`` gives the official default ``1 + ceil(log2(l_max / kernel_dim))`` (the kernel
covers ``l_max``). Weights map one to one onto the official ``GConv`` (``mode="cat_randn"``,
``init_scale=0``) state dict: ``kernel_list.i``, ``D``, ``output_linear.weight/bias``,
``multiplier`` and ``kernel_norm`` (see :meth:`SGConvMixer.load_official_state_dict`).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from ..kernels.fftconv import fftconv_reference
from .layers import SequenceBackbone


def centred_kernel(k_fwd: torch.Tensor, k_bwd: torch.Tensor) -> torch.Tensor:
    """Two length-``L`` kernels -> one centred length-``2L-1`` kernel (``sequence.fftconv``'s bidirectional form).

    ``k_fwd`` acts on the past (lags ``0..L-1``), ``k_bwd`` on the future (``k_bwd[s]`` on lag
    ``-(s+1)``): ``y[t] = sum_s k_fwd[s] u[t-s] + sum_s k_bwd[s] u[t+1+s]``, the official layer's
    convention (``k_bwd[L-1]`` would act on lag ``-L``, which no output of length ``L`` reaches).
    """
    return torch.cat([k_bwd[..., : k_bwd.shape[-1] - 1].flip(-1), k_fwd], dim=-1)


class SGConvMixer(nn.Module):
    """The SGConv layer: ``(N, L, d_model) -> (N, L, d_model)``.

    ``kernel_dim``: parameters per sub-kernel (the official ``kernel_dim``, 64). ``n_scales``:
    number of scales (default: enough for the kernel to cover ``l_max``). ``decay_min`` /
    ``decay_max``: per-feature decay factors (weights ``decay**(S-1-i)`` before normalisation).
    ``channels``: kernels per feature ("heads"); ``bidirectional``: a second set of kernels on
    the future. ``interpolation``: how sub-kernels are upsampled (``linear``, the official default,
    or ``nearest``).
    """

    def __init__(self, d_model: int, l_max: int = 1024, kernel_dim: int = 64, n_scales: int | None = None,
                 decay_min: float = 2.0, decay_max: float = 2.0, channels: int = 1, bidirectional: bool = False,
                 interpolation: str = "linear", dropout: float = 0.0):
        super().__init__()
        if interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
        if n_scales is None:
            n_scales = 1 + max(0, math.ceil(math.log2(l_max / kernel_dim)))
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        self.d_model, self.kernel_dim, self.n_scales = d_model, kernel_dim, n_scales
        self.channels, self.bidirectional, self.interpolation = channels, bidirectional, interpolation
        kernel_channels = channels * (2 if bidirectional else 1)
        self.kernel_list = nn.ParameterList(nn.Parameter(torch.randn(kernel_channels, d_model, kernel_dim))
                                            for _ in range(n_scales))
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.register_buffer("multiplier", torch.linspace(decay_min, decay_max, d_model).view(1, -1, 1))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(channels * d_model, d_model)
        with torch.no_grad():  # the official layer fixes the kernel norm at its first forward (i.e. at init)
            self.register_buffer("kernel_norm", self.raw_kernel().norm(dim=-1, keepdim=True))

    @property
    def kernel_length(self) -> int:
        """Positions the concatenated kernel covers: ``kernel_dim * 2**(n_scales - 1)``."""
        return self.kernel_dim * 2 ** (self.n_scales - 1)

    def raw_kernel(self) -> torch.Tensor:
        """The unnormalised multi-scale kernel ``(C, d_model, kernel_length)`` (C doubled when bidirectional)."""
        parts = []
        for i, sub in enumerate(self.kernel_list):
            up = F.interpolate(sub, scale_factor=2 ** max(0, i - 1), mode=self.interpolation)
            parts.append(up * self.multiplier ** (self.n_scales - i - 1))
        return torch.cat(parts, dim=-1)

    def kernel(self, length: int) -> torch.Tensor:
        """The normalised kernel cut or zero-padded to ``length``: ``(C, d_model, length)``."""
        k = self.raw_kernel()
        k = k[..., :length] if k.shape[-1] >= length else F.pad(k, (0, length - k.shape[-1]))
        return k / self.kernel_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.transpose(1, 2)  # (N, d, L)
        length = u.shape[-1]
        k = self.kernel(length)  # (C', d, L)
        if self.bidirectional:
            k = centred_kernel(k[: self.channels], k[self.channels:])  # (C, d, 2L-1)
        c, d = self.channels, self.d_model
        u_c = u if c == 1 else u.unsqueeze(1).expand(-1, c, -1, -1).reshape(u.shape[0], c * d, length)
        y = fftconv_reference(u_c, k.reshape(c * d, -1), self.D.reshape(c * d), bidirectional=self.bidirectional)
        y = self.dropout(F.gelu(y))  # (N, C*d, L)
        return self.output_linear(y.transpose(1, 2))

    def load_official_state_dict(self, state: dict) -> None:
        """Load an official ``GConv`` (``cat_randn``, transposed, no ``ln``) state dict."""
        ours = {k: v for k, v in state.items() if k not in ("kernel_norm_initialized",)}
        self.load_state_dict(ours)


class SGConv(SequenceBackbone):
    """SGConv backbone: :class:`SequenceBackbone` with an :class:`SGConvMixer` in every block.

    ``l_max`` fixes the default number of scales (the kernel covers ``l_max`` positions; longer
    inputs see a zero-padded kernel). ``kernel_lr_mult``: learning-rate factor of the sub-kernels
    (the official code trains them at 1e-3 beside a larger base rate). The other knobs are the
    mixer's (official names).
    """

    example_length = 48

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 l_max: Annotated[int, Ge(1)] = 1024, kernel_dim: Annotated[int, Ge(1)] = 64,
                 n_scales: Annotated[int, Ge(1)] | None = None, decay_min: Annotated[float, Gt(0)] = 2.0,
                 decay_max: Annotated[float, Gt(0)] = 2.0, channels: Annotated[int, Ge(1)] = 1,
                 bidirectional: bool = True, interpolation: Literal["linear", "nearest"] = "linear",
                 kernel_lr_mult: Annotated[float, Ge(0)] = 0.1,
                 mlp_ratio: Annotated[float, Ge(0)] = 0.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        self.mixer_args = dict(l_max=l_max, kernel_dim=kernel_dim, n_scales=n_scales, decay_min=decay_min,
                               decay_max=decay_max, channels=channels, bidirectional=bidirectional,
                               interpolation=interpolation, dropout=dropout)
        self.kernel_lr_mult = kernel_lr_mult
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def param_groups(self) -> dict[str, dict]:
        """The official rule: the sub-kernels train at their own (lower) learning rate (kernel ``_optim`` lr 1e-3)."""
        return {"kernel_list": {"lr_mult": self.kernel_lr_mult, "decay_mult": 1.0}}

    def make_mixer(self, layer: int) -> nn.Module:
        return SGConvMixer(self.d_model, **self.mixer_args)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "l_max": 48, "kernel_dim": 8}


__all__ = ["SGConv", "SGConvMixer", "centred_kernel"]
