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

from ..kernels.fftconv import fftconv
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
    or ``nearest``). ``postact="glu"``: the output map is ``Linear(C*d, 2d)`` + GLU (the official
    ``postact: glu`` of its LRA configs); default: ``Linear(C*d, d)`` (``gconv_standalone.py``'s default).
    ``init_scale``: the official ``init_scale`` (Path-X config: 1): every scale is upsampled
    ``2**init_scale`` times more and the default number of scales drops by ``init_scale``.
    ``power_decay``: the official ``learnable`` modes: no per-scale weights; the concatenated kernel is
    multiplied by ``(t+1)**-decay`` with a per-feature ``decay`` drawn in ``[decay_min, decay_max]``,
    a trained parameter (``"learnable"``) or a frozen one (``"fixed"``, the LRA-Image config).
    ``kernel_init``: ``"randn"`` (the official ``cat_randn``) or ``"cos"`` (``cat_cos``: feature ``h``'s
    sub-kernels start as ``cos(linspace(0, 2πh, kernel_dim))``, features shuffled).
    """

    def __init__(self, d_model: int, l_max: int = 1024, kernel_dim: int = 64, n_scales: int | None = None,
                 decay_min: float = 2.0, decay_max: float = 2.0, channels: int = 1, bidirectional: bool = False,
                 interpolation: str = "linear", dropout: float = 0.0, postact: str | None = None,
                 init_scale: int = 0, power_decay: str | None = None, kernel_init: str = "randn"):
        super().__init__()
        if init_scale < 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        if power_decay not in (None, "learnable", "fixed"):
            raise ValueError(f"power_decay must be None, 'learnable' or 'fixed', got {power_decay!r}")
        if kernel_init not in ("randn", "cos"):
            raise ValueError(f"kernel_init must be 'randn' or 'cos', got {kernel_init!r}")
        if postact not in (None, "glu"):
            raise ValueError(f"postact must be None or 'glu', got {postact!r}")
        if interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
        if n_scales is None:
            n_scales = 1 + max(0, math.ceil(math.log2(l_max / kernel_dim))) - init_scale
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        self.d_model, self.kernel_dim, self.n_scales = d_model, kernel_dim, n_scales
        self.channels, self.bidirectional, self.interpolation = channels, bidirectional, interpolation
        kernel_channels = channels * (2 if bidirectional else 1)
        self.init_scale, self.power_decay = init_scale, power_decay
        self.kernel_list = nn.ParameterList(nn.Parameter(self._init_kernel(kernel_init, kernel_channels, d_model,
                                                                           kernel_dim))
                                            for _ in range(n_scales))
        self.D = nn.Parameter(torch.randn(channels, d_model))
        if power_decay is None:
            self.register_buffer("multiplier", torch.linspace(decay_min, decay_max, d_model).view(1, -1, 1))
        else:
            self.register_buffer("multiplier", torch.tensor(1.0))
            self.decay = nn.Parameter(torch.rand(d_model) * (decay_max - decay_min) + decay_min,
                                      requires_grad=power_decay == "learnable")
        self.dropout = nn.Dropout(dropout)
        self.postact = postact  # "glu": the official ``postact: glu`` (every LRA config): Linear(C*d, 2d) + GLU
        self.output_linear = nn.Linear(channels * d_model, d_model * (2 if postact == "glu" else 1))
        with torch.no_grad():  # the official layer fixes the kernel norm at its first forward (i.e. at init)
            self.register_buffer("kernel_norm", self.raw_kernel().norm(dim=-1, keepdim=True))

    @staticmethod
    def _init_kernel(kind: str, channels: int, d_model: int, kernel_dim: int) -> torch.Tensor:
        if kind == "randn":
            return torch.randn(channels, d_model, kernel_dim)
        waves = torch.stack([torch.cos(torch.linspace(0, 2 * h * math.pi, kernel_dim)) for h in range(d_model)])
        return waves[torch.randperm(d_model)].expand(channels, -1, -1).clone()

    @property
    def kernel_length(self) -> int:
        """Positions the concatenated kernel covers: ``kernel_dim * 2**(n_scales - 1 + init_scale)``."""
        return self.kernel_dim * 2 ** (self.n_scales - 1 + self.init_scale)

    def raw_kernel(self) -> torch.Tensor:
        """The unnormalised multi-scale kernel ``(C, d_model, kernel_length)`` (C doubled when bidirectional)."""
        parts = []
        for i, sub in enumerate(self.kernel_list):
            up = F.interpolate(sub, scale_factor=2 ** (max(0, i - 1) + self.init_scale), mode=self.interpolation)
            parts.append(up * self.multiplier ** (self.n_scales - i - 1))
        k = torch.cat(parts, dim=-1)
        if self.power_decay is not None:  # (t+1)**-decay per feature
            # log(t+1) in the default float dtype (float32), as the official layer computes it, whatever k's dtype
            log_t = torch.log(torch.arange(k.shape[-1], device=k.device) + 1)
            k = k * torch.exp(-self.decay.view(1, -1, 1) * log_t.view(1, 1, -1))
        return k

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
        y = fftconv(u_c, k.reshape(c * d, -1), self.D.reshape(c * d), bidirectional=self.bidirectional)
        y = self.dropout(F.gelu(y))  # (N, C*d, L)
        y = self.output_linear(y.transpose(1, 2))
        return F.glu(y, dim=-1) if self.postact == "glu" else y

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
                 kernel_lr_mult: Annotated[float, Ge(0)] = 0.1, postact: Literal["glu"] | None = None,
                 init_scale: Annotated[int, Ge(0)] = 0, power_decay: Literal["learnable", "fixed"] | None = None,
                 kernel_init: Literal["randn", "cos"] = "randn",
                 mlp_ratio: Annotated[float, Ge(0)] = 0.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        self.mixer_args = dict(l_max=l_max, kernel_dim=kernel_dim, n_scales=n_scales, decay_min=decay_min,
                               decay_max=decay_max, channels=channels, bidirectional=bidirectional,
                               interpolation=interpolation, dropout=dropout, postact=postact,
                               init_scale=init_scale, power_decay=power_decay, kernel_init=kernel_init)
        self.kernel_lr_mult = kernel_lr_mult
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def param_groups(self) -> dict[str, dict]:
        """The official rule: the sub-kernels train at their own (lower) learning rate (kernel ``_optim`` lr 1e-3)."""
        groups = {"kernel_list": {"lr_mult": self.kernel_lr_mult, "decay_mult": 1.0}}
        if self.mixer_args["power_decay"] == "learnable":  # the official learnable decay trains at the kernels' lr
            groups["mixer.decay"] = {"lr_mult": self.kernel_lr_mult, "decay_mult": 1.0}
        return groups

    def make_mixer(self, layer: int) -> nn.Module:
        return SGConvMixer(self.d_model, **self.mixer_args)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "l_max": 48, "kernel_dim": 8}


__all__ = ["SGConv", "SGConvMixer", "centred_kernel"]
