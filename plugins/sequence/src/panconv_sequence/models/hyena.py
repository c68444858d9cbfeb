"""The Hyena operator (Poli et al., ICML 2023) and a Hyena backbone.

Public API (HyenaDNA and other plugins build on it):

* :class:`HyenaOperator` ``(d_model, l_max, order=2, filter_order=64, ...)``: ``(N, L, d) -> (N, L, d)``
  for ``L <= l_max``. The input is projected to ``order + 1`` streams ``x_0 .. x_{order-1}, v``,
  each through a short depthwise convolution (``short_filter_order`` taps, causal); then, for
  ``i = order-1 .. 1``: ``v <- h_i ⊛ (v · x_i) + b_i (v · x_i)`` (long convolution by
  :data:`panconv_sequence.kernels.fftconv`), finally ``y = out_proj(v · x_0)`` (Hyena recurrence,
  Eq. 2-3 of the paper).
* :class:`HyenaFilter`: the implicit long filters ``h = FFN(PE(t)) · window(t)``: a small MLP
  with sine activations (one shared learned frequency) over positional features ``PE(t) = [t,
  cos(2π f t), -sin(2π f t)]`` at ``(emb_dim-1)/2`` frequencies, times the exponential decay window
  ``exp(-α_c t) + shift`` whose rates ``α_c`` are spread from "reaches ``target`` at ``fast_decay_pct``
  of the length" to "at ``slow_decay_pct``" over the channels (Sec. 3.3); ``filter(L) -> (L, D)``.
* :class:`Hyena`: a :class:`SequenceBackbone` of Hyena operators (``causal=False``: two-sided
  long filters and a centred short filter, for classification).

The defaults and the initialisation follow the official standalone module
(``standalone_hyena.py`` of HazyResearch/safari); our forward equals it on shared weights (see
``tests/test_hyena.py``). One difference: the positional features are a fixed buffer (the
official code registers them as a parameter with learning rate 1e-5).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Interval
from torch import nn

from ..kernels.fftconv import fftconv
from .layers import SequenceBackbone


class Sin(nn.Module):
    """``sin(freq · x)`` with one learned frequency per feature (shared by every layer of a filter MLP)."""

    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


def positional_features(length: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z (1, L, emb_dim), t (1, L, 1))``: ``t`` in [0, 1] and ``(emb_dim-1)/2`` complex-exponential bands."""
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim must be odd and >= 3 (time, cosine and sine bands), got {emb_dim}")
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, length)[None, :, None]
    w = 2 * math.pi * torch.arange(length, dtype=torch.float32)[None, :, None] / length
    f = torch.linspace(1e-4, bands - 1, bands)[None, None]
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1), t


class HyenaFilter(nn.Module):
    """Implicit long filters of ``channels`` channels: ``filter(L) -> (L, channels)``; ``bias (channels,)``: skip."""

    def __init__(self, channels: int, l_max: int, emb_dim: int = 3, filter_order: int = 64, num_inner_mlps: int = 2,
                 w: float = 1.0, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, target: float = 1e-2,
                 shift: float = 0.0, modulate: bool = True):
        super().__init__()
        self.channels, self.l_max, self.modulate, self.shift = channels, l_max, modulate, shift
        z, t = positional_features(l_max, emb_dim)
        self.register_buffer("z", z, persistent=False)
        self.register_buffer("t", t, persistent=False)
        self.act = Sin(filter_order, w)
        self.implicit_filter = nn.ModuleList([nn.Linear(emb_dim, filter_order)]
                                             + [nn.Linear(filter_order, filter_order) for _ in range(num_inner_mlps)])
        self.head = nn.Linear(filter_order, channels, bias=False)
        # decay rates: exp(-α t) reaches `target` at t = fast_decay_pct (fastest channel) .. slow_decay_pct (slowest)
        max_decay, min_decay = math.log(target) / fast_decay_pct, math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels)[None, None])
        self.bias = nn.Parameter(torch.randn(channels))

    def filter(self, length: int) -> torch.Tensor:
        """The filters ``(length, channels)`` for the first ``length <= l_max`` positions."""
        h = self.z[:, :length]
        for linear in self.implicit_filter:
            h = self.act(linear(h))
        h = self.head(h)
        if self.modulate:
            h = h * (torch.exp(-self.t[:, :length] * self.deltas.abs()) + self.shift)
        return h[0]


class HyenaOperator(nn.Module):
    """The Hyena operator of order ``order``: ``(N, L, d_model) -> (N, L, d_model)`` for ``L <= l_max``.

    ``filter_args`` go to :class:`HyenaFilter` (``emb_dim``, ``num_inner_mlps``, ``w``, ``fast_decay_pct``,
    ``slow_decay_pct``, ``target``, ``shift``, ``modulate``). ``causal=False`` uses two-sided filters.
    """

    def __init__(self, d_model: int, l_max: int, order: int = 2, filter_order: int = 64, dropout: float = 0.0,
                 short_filter_order: int = 3, causal: bool = True, **filter_args):
        super().__init__()
        if order < 2:
            raise ValueError(f"Hyena order must be >= 2, got {order}")
        if short_filter_order < 1 or (not causal and short_filter_order % 2 == 0):
            raise ValueError(f"short_filter_order must be >= 1 (and odd when causal=False: a centred filter), "
                             f"got {short_filter_order}")
        self.d_model, self.l_max, self.order, self.causal = d_model, l_max, order, causal
        inner = d_model * (order + 1)
        self.in_proj = nn.Linear(d_model, inner)
        self.out_proj = nn.Linear(d_model, d_model)
        self.short_filter = nn.Conv1d(inner, inner, short_filter_order, groups=inner,
                                      padding=short_filter_order - 1 if causal else short_filter_order // 2)
        self.dropout = nn.Dropout(dropout)
        channels = d_model * (order - 1)
        self.filter_fn = HyenaFilter(channels if causal else 2 * channels, l_max, filter_order=filter_order,
                                     **filter_args)

    def long_filters(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k (order-1, d, K), bias (order-1, d))``: ``K = length`` causal, ``2·length - 1`` centred otherwise."""
        h = self.filter_fn.filter(length).t()                     # (channels', L)
        bias = self.filter_fn.bias
        if not self.causal:  # forward filters for lags 0.., backward ones for lags -1, -2, ...
            fwd, bwd = h.chunk(2, dim=0)
            h = torch.cat([bwd[:, 1:].flip(-1), fwd], dim=-1)
            bias = bias.chunk(2)[0]
        return h.reshape(self.order - 1, self.d_model, -1), bias.reshape(self.order - 1, self.d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        length = u.shape[-2]
        if length > self.l_max:
            raise ValueError(f"HyenaOperator: sequence length {length} > l_max {self.l_max}")
        # causal: padding taps-1 on both sides, the first L outputs see no future; centred: "same" padding
        z = self.short_filter(self.in_proj(u).transpose(1, 2))[..., :length]
        *x, v = z.split(self.d_model, dim=1)
        k, bias = self.long_filters(length)
        for o, x_i in enumerate(reversed(x[1:])):
            v = self.dropout(v * x_i)
            v = fftconv(v.contiguous(), k[o], bias[o], bidirectional=not self.causal)
        return self.out_proj((v * x[0]).transpose(1, 2))


class Hyena(SequenceBackbone):
    """Hyena backbone: :class:`SequenceBackbone` whose mixers are :class:`HyenaOperator` (with the MLP of each block).

    ``l_max``: the longest sequence (the implicit filters are sampled on it).
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 l_max: Annotated[int, Ge(1)] = 1024, order: Annotated[int, Ge(2)] = 2,
                 filter_order: Annotated[int, Ge(1)] = 64, emb_dim: Annotated[int, Ge(3)] = 3,
                 short_filter_order: Annotated[int, Ge(1)] = 3, causal: bool = True,
                 fast_decay_pct: Annotated[float, Gt(0)] = 0.3, slow_decay_pct: Annotated[float, Gt(0)] = 1.5,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        if emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd (time, cosine and sine bands), got {emb_dim}")
        self.operator_args = dict(l_max=l_max, order=order, filter_order=filter_order, emb_dim=emb_dim,
                                  short_filter_order=short_filter_order, causal=causal,
                                  fast_decay_pct=fast_decay_pct, slow_decay_pct=slow_decay_pct, dropout=dropout)
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return HyenaOperator(self.d_model, **self.operator_args)


__all__ = ["Hyena", "HyenaFilter", "HyenaOperator", "Sin", "positional_features"]
