"""TCNCA: Temporal Convolution Network with Chunked Attention (Terzić et al., NeurIPS 2023 ENLSP workshop,
arXiv:2312.05605).

MEGA's layer (Ma et al., "Mega: Moving Average Equipped Gated Attention", chunked variant) with its
multi-dimensional damped EMA replaced by a dilated causal temporal convolution network (TCN):

    X' = TCN(X)                                  dilated causal convolutions, receptive field R >= chunk
    Z = silu(X' W_z);  Q = Z * g_q + b_q;  K = Z * g_k + b_k      (one shared z-dim projection, as MEGA)
    V = silu(X W_v)
    O = chunked single-head attention(Q, K, V)   softmax within chunks of ``chunk_size`` (causal inside)
    G = silu(X' W_g)                             (attention output gate)
    H = silu(X' W_h + (G * O) W_o)
    F = sigmoid(X' W_f)                          (update gate)
    Y = F * H + (1 - F) * X                      MEGA's gated residual

The TCN has ``D`` blocks; block ``i`` is a depthwise causal convolution of kernel ``K`` and dilation
``f^i``, GELU and a pointwise linear map, with a residual connection. Its receptive field is
``R = 1 + (K - 1) (f^D - 1) / (f - 1)``; ``D`` defaults to the smallest depth with ``R >= chunk_size``
(the paper's design rule: the TCN carries information across the chunk boundary that the chunked
attention cannot see), and a depth too shallow for the chunk is refused.

Cost: TCN ``O(L K D d)``, chunked attention ``O(L c z)``: linear in ``L``. Positions inside a chunk are
rotary-embedded on ``Q`` and ``K``. Here the block's own pre-norm residual supplies ``X``: the mixer
returns ``F * (H - X)`` so that ``x + mixer(norm(x))`` is MEGA's ``F * H + (1 - F) * X`` on the normed input.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from .layers import SequenceBackbone, rotary


def tcn_receptive_field(kernel_size: int, dilation_base: int, depth: int) -> int:
    """Receptive field of ``depth`` stacked convolutions of kernel ``K`` with dilations ``1, f, f^2, ...``."""
    return 1 + (kernel_size - 1) * sum(dilation_base ** i for i in range(depth))


def tcn_depth_for(chunk_size: int, kernel_size: int, dilation_base: int) -> int:
    """The smallest depth whose receptive field covers ``chunk_size`` positions."""
    depth = 1
    while tcn_receptive_field(kernel_size, dilation_base, depth) < chunk_size:
        depth += 1
    return depth


def check_tcn_covers_chunk(chunk_size: int, kernel_size: int, dilation_base: int, depth: int | None) -> int:
    """The TCN depth to use (``depth``, else the smallest covering the chunk); ``ValueError`` if it falls short."""
    depth = depth if depth is not None else tcn_depth_for(chunk_size, kernel_size, dilation_base)
    field = tcn_receptive_field(kernel_size, dilation_base, depth)
    if field < chunk_size:
        raise ValueError(f"the TCN's receptive field ({field} = 1 + ({kernel_size}-1) * sum {dilation_base}^i, "
                         f"i < {depth}) must cover the chunk ({chunk_size}): raise tcn_depth or leave it unset")
    return depth


class TCN(nn.Module):
    """Dilated (causal) temporal convolution network on ``(N, L, d)``: depthwise conv + GELU + pointwise, residual."""

    def __init__(self, d_model: int, kernel_size: int = 3, dilation_base: int = 2, depth: int = 4,
                 causal: bool = True):
        super().__init__()
        self.kernel_size, self.dilation_base, self.depth, self.causal = kernel_size, dilation_base, depth, causal
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel_size, dilation=dilation_base ** i,
                                             groups=d_model) for i in range(depth))
        self.mix = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(depth))

    @property
    def receptive_field(self) -> int:
        return tcn_receptive_field(self.kernel_size, self.dilation_base, self.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)                                                     # (N, d, L)
        for conv, mix in zip(self.convs, self.mix):
            span = (self.kernel_size - 1) * conv.dilation[0]
            pad = (span, 0) if self.causal else (span // 2, span - span // 2)
            y = F.gelu(conv(F.pad(h, pad)))
            h = h + mix(y.transpose(1, 2)).transpose(1, 2)
        return h.transpose(1, 2)


class ChunkedGatedAttention(nn.Module):
    """The TCNCA mixer: TCN, then MEGA's single-head gated attention within chunks (see the module docstring)."""

    def __init__(self, d_model: int, chunk_size: int = 64, z_dim: int = 64, v_dim: int | None = None,
                 kernel_size: int = 3, dilation_base: int = 2, tcn_depth: int | None = None, causal: bool = True,
                 attn_dropout: float = 0.0):
        super().__init__()
        v_dim = v_dim or 2 * d_model
        depth = check_tcn_covers_chunk(chunk_size, kernel_size, dilation_base, tcn_depth)
        self.chunk_size, self.z_dim, self.causal, self.attn_dropout = chunk_size, z_dim, causal, attn_dropout
        self.tcn = TCN(d_model, kernel_size, dilation_base, depth, causal)
        self.to_z = nn.Linear(d_model, z_dim)
        self.qk_scale = nn.Parameter(torch.ones(2, z_dim) + 0.02 * torch.randn(2, z_dim))
        self.qk_bias = nn.Parameter(torch.zeros(2, z_dim))
        self.to_v = nn.Linear(d_model, v_dim)
        self.to_gate = nn.Linear(d_model, v_dim)
        self.to_h = nn.Linear(d_model, d_model)
        self.from_o = nn.Linear(v_dim, d_model, bias=False)
        self.to_update = nn.Linear(d_model, d_model)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax attention within consecutive chunks of ``chunk_size`` (the last padded): ``(N, L, *)``."""
        n, length, _ = q.shape
        c = min(self.chunk_size, length)
        pad = (-length) % c
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        chunks = (length + pad) // c
        q, k, v = (t.reshape(n * chunks, c, t.shape[-1]) for t in (q, k, v))
        pos = torch.arange(c, device=q.device)
        q, k = rotary(q, pos), rotary(k, pos)
        mask = None
        if pad and not self.causal:  # padded keys of the last chunk must not be attended
            valid = torch.ones(chunks, c, dtype=torch.bool, device=q.device)
            valid[-1, c - pad:] = False
            mask = valid.repeat(n, 1)[:, None, :]                                  # (N*chunks, 1, c)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return o.reshape(n, chunks * c, -1)[:, :length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = self.tcn(x)                                                           # X'
        z = F.silu(self.to_z(xc))
        q, k = z * self.qk_scale[0] + self.qk_bias[0], z * self.qk_scale[1] + self.qk_bias[1]
        o = self.attention(q, k, F.silu(self.to_v(x)))
        h = F.silu(self.to_h(xc) + self.from_o(F.silu(self.to_gate(xc)) * o))
        update = torch.sigmoid(self.to_update(xc))
        return update * (h - x)


class TCNCA(SequenceBackbone):
    """TCNCA backbone: ``n_layers`` blocks of [TCN -> chunked gated attention] (+ MLP), linear in ``L``.

    Args:
        chunk_size: attention chunk length ``c``.
        z_dim: the shared query/key dimension (MEGA's ``z``); ``v_dim``: value/gate width (default ``2 d``).
        kernel_size, dilation_base, tcn_depth: the TCN's ``K``, ``f``, ``D`` (``D`` default: smallest
            depth whose receptive field covers the chunk).
        causal: causal TCN and causal attention inside chunks (language modelling).
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 chunk_size: Annotated[int, Ge(1)] = 64, z_dim: Annotated[int, Ge(2)] = 64,
                 v_dim: Annotated[int, Ge(1)] | None = None, kernel_size: Annotated[int, Ge(2)] = 3,
                 dilation_base: Annotated[int, Ge(1)] = 2, tcn_depth: Annotated[int, Ge(1)] | None = None,
                 causal: bool = True, attn_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        for name, value, low in (("chunk_size", chunk_size, 1), ("z_dim", z_dim, 2), ("kernel_size", kernel_size, 2),
                                 ("dilation_base", dilation_base, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.mixer_args = dict(chunk_size=chunk_size, z_dim=z_dim, v_dim=v_dim, kernel_size=kernel_size,
                               dilation_base=dilation_base, tcn_depth=tcn_depth, causal=causal,
                               attn_dropout=attn_dropout)
        self.causal = causal
        check_tcn_covers_chunk(chunk_size, kernel_size, dilation_base, tcn_depth)
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return ChunkedGatedAttention(self.d_model, **self.mixer_args)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "vocab_size": 11, "chunk_size": 8, "z_dim": 8, "kernel_size": 3}
