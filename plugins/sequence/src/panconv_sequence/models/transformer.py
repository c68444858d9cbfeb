"""The dense-attention Transformer baseline: every efficient sequence model here is measured against it.

A :class:`~.layers.SequenceBackbone` whose mixer is multi-head self-attention over the whole sequence
(``F.scaled_dot_product_attention``, rotary positions, optional causal mask): time and memory grow as
``L^2`` — the quadratic wall the long-sequence models avoid.
"""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Interval
from torch import nn

from .layers import MultiHeadAttention, SequenceBackbone


class Transformer(SequenceBackbone):
    """Pre-norm Transformer encoder (``causal=True``: decoder-only, for language modelling).

    Args:
        n_heads: attention heads (``d_model`` must be divisible by it).
        causal: position ``t`` attends to positions ``<= t`` only.
        attn_dropout: dropout on the attention weights.
        (the rest as :class:`~.layers.SequenceBackbone`)
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 n_heads: Annotated[int, Ge(1)] = 4, causal: bool = False,
                 attn_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.causal, self.attn_dropout = n_heads, causal, attn_dropout
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return MultiHeadAttention(self.d_model, self.n_heads, self.causal, self.attn_dropout)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "vocab_size": 11, "n_heads": 2, "causal": True}
