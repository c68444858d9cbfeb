"""FIT: Far-reaching Interleaved Transformers (Chen & Li, 2023, arXiv:2305.12689).

The sequence is cut into groups of ``group_size`` tokens, and each group owns ``n_latents`` latent
tokens. A FIT block interleaves

1. *local* layers: self-attention among the tokens of one group (cost ``O(L G)``);
2. *read*: the latents of each group cross-attend to their group's tokens;
3. *global* layers: self-attention among all latents of all groups (``O((L n / G)^2)``, on few tokens);
4. *write*: the tokens of each group cross-attend to their group's latents.

Information crosses group boundaries only through the latents (steps 2-4); the latents persist from
block to block. ``causal=True`` (language modelling): local attention is causal, global attention is
causal by group (a latent sees the latents of its own and earlier groups), and the tokens of group ``g``
write from the latents of group ``g - 1`` (group 0 from the learned, data-free initial latents), so no
position sees a later one. ``n_layers`` counts local layers; every ``local_per_block`` of them are
followed by read, ``n_global`` global layers and write.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from .layers import MixerBlock, MultiHeadAttention, SequenceBackbone


def _to_groups(x: torch.Tensor, group_size: int):
    """``(N, L, d) -> (N * n_groups, G, d)`` (zero-padded) and the key mask ``(n_groups, G)`` of real tokens."""
    n, length, d = x.shape
    groups = -(-length // group_size)
    pad = groups * group_size - length
    valid = (torch.arange(groups * group_size, device=x.device) < length).view(groups, group_size)
    return F.pad(x, (0, 0, 0, pad)).reshape(n * groups, group_size, d), valid


class LocalAttention(nn.Module):
    """Multi-head self-attention within consecutive groups of ``group_size`` tokens: ``(N, L, d) -> (N, L, d)``."""

    def __init__(self, d_model: int, n_heads: int, group_size: int, causal: bool, dropout: float = 0.0):
        super().__init__()
        self.group_size, self.causal = group_size, causal
        self.attn = MultiHeadAttention(d_model, n_heads, causal, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        groups, valid = _to_groups(x, self.group_size)
        mask = None
        if not self.causal and not bool(valid.all()):
            eye = torch.eye(self.group_size, dtype=torch.bool, device=x.device)
            mask = (valid[:, None, :] | eye).repeat(n, 1, 1)[:, None]                  # (N*ng, 1, G, G)
        y = self.attn(groups, mask=mask)
        return y.reshape(n, -1, d)[:, :length]


class CrossBlock(nn.Module):
    """Pre-norm residual cross-attention ``x + attn(norm(x), norm(context))`` (no positions: set attention)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm_x, self.norm_context = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, use_rotary=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.attn(self.norm_x(x), self.norm_context(context), mask=mask)


class GlobalAttention(nn.Module):
    """Self-attention among all latents ``(N, ng * n, d)``; rotary position = the group index; causal by group."""

    def __init__(self, d_model: int, n_heads: int, n_latents: int, causal: bool, dropout: float = 0.0):
        super().__init__()
        self.n_latents, self.causal = n_latents, causal
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        group = torch.arange(z.shape[1], device=z.device) // self.n_latents
        mask = (group[None, :] <= group[:, None]) if self.causal else None
        return self.attn(z, mask=mask, causal=False, positions=group)


class FIT(SequenceBackbone):
    """FIT backbone (see the module docstring).

    Args:
        group_size: tokens per group ``G``.
        n_latents: latent tokens per group.
        local_per_block: local layers before each read/global/write step (``n_layers`` must be a multiple).
        n_global: global (latent) layers per FIT block.
        n_heads: attention heads (local, global and cross-attention).
        causal: no position sees a later one (language modelling).
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 group_size: Annotated[int, Ge(1)] = 64, n_latents: Annotated[int, Ge(1)] = 4,
                 local_per_block: Annotated[int, Ge(1)] = 1, n_global: Annotated[int, Ge(1)] = 1,
                 n_heads: Annotated[int, Ge(1)] = 4, causal: bool = False,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if n_layers % local_per_block:
            raise ValueError(f"n_layers ({n_layers}) must be a multiple of local_per_block ({local_per_block})")
        for name, value in (("group_size", group_size), ("n_latents", n_latents), ("n_global", n_global)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.group_size, self.n_latents, self.local_per_block = group_size, n_latents, local_per_block
        self.n_heads, self.causal = n_heads, causal
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)
        n_blocks = n_layers // local_per_block
        self.latents = nn.Parameter(0.02 * torch.randn(n_latents, d_model))
        self.reads = nn.ModuleList(CrossBlock(d_model, n_heads, dropout) for _ in range(n_blocks))
        self.globals = nn.ModuleList(
            nn.Sequential(*(MixerBlock(GlobalAttention(d_model, n_heads, n_latents, causal), d_model, mlp_ratio,
                                       dropout, norm) for _ in range(n_global)))
            for _ in range(n_blocks))
        self.writes = nn.ModuleList(CrossBlock(d_model, n_heads, dropout) for _ in range(n_blocks))

    def make_mixer(self, layer: int) -> nn.Module:
        return LocalAttention(self.d_model, self.n_heads, self.group_size, self.causal)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.input(x)
        n, length, d = h.shape
        groups = -(-length // self.group_size)
        z = self.latents.expand(n * groups, -1, -1)                                     # (N*ng, n, d)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if (i + 1) % self.local_per_block:
                continue
            j = i // self.local_per_block
            tokens, valid = _to_groups(h, self.group_size)                               # (N*ng, G, d)
            z = self.reads[j](z, tokens, mask=valid.repeat(n, 1)[:, None, None, :])
            z = self.globals[j](z.reshape(n, groups * self.n_latents, d)).reshape(n * groups, self.n_latents, d)
            source = z
            if self.causal:  # group g writes from the latents of group g-1; group 0 from the data-free latents
                source = torch.cat([self.latents.expand(n, 1, -1, -1), z.view(n, groups, self.n_latents, d)[:, :-1]],
                                   1).reshape(n * groups, self.n_latents, d)
            tokens = self.writes[j](tokens, source)
            h = tokens.reshape(n, groups * self.group_size, d)[:, :length]
        return [self.norm(h).transpose(1, 2)]

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "vocab_size": 11, "group_size": 8, "n_latents": 2, "n_heads": 2,
                "causal": True}
