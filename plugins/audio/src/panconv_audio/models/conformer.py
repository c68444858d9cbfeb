"""Conformer baseline (Gulati et al., 2020) from ``torchaudio.models.Conformer``, behind the same
front-end, depthwise-separable 4x subsampling and linear CTC decoder as :mod:`.squeezeformer`, so
that parameter/FLOP budgets compare the encoders alone. Sizes (``conformer_xs``, ``conformer_nano``: the
widths/depths of ``squeezeformer_xs`` / ``squeezeformer_nano``) are registered as data in
:mod:`panconv_audio.plugin`.

torchaudio's Conformer uses absolute-position-free MHSA (no relative encoding), macaron FFNs with
pre-LN and a GLU conv module; it is the model the Squeezeformer paper compares against.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Interval
from torch import nn
from torchaudio.models import Conformer as TAConformer  # imported here, not under a dry run's meta device

from .layers import CTCSpeechModel, DepthwiseSeparableSubsampling


class ConformerEncoder(nn.Module):
    """``(N, T, n_mels)`` -> ``(N, T/4, d_model)``, lengths."""

    def __init__(self, d_model: int = 144, num_layers: int = 16, heads: int = 4, n_mels: int = 80,
                 kernel_size: int = 31, dropout: float = 0.1, ffn_expansion: int = 4):
        super().__init__()
        if num_layers < 1 or d_model < 1 or heads < 1 or d_model % heads or kernel_size % 2 == 0:
            raise ValueError(f"ConformerEncoder: need num_layers >= 1, d_model divisible by heads and an odd "
                             f"kernel_size, got num_layers={num_layers}, d_model={d_model}, heads={heads}, "
                             f"kernel_size={kernel_size}")
        if not 0 <= dropout < 1:
            raise ValueError(f"ConformerEncoder: dropout must be in [0, 1), got {dropout}")

        self.subsampling = DepthwiseSeparableSubsampling(n_mels, d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.conformer = TAConformer(input_dim=d_model, num_heads=heads, ffn_dim=ffn_expansion * d_model,
                                     num_layers=num_layers, depthwise_conv_kernel_size=kernel_size, dropout=dropout)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None):
        if lengths is None:
            lengths = torch.full((feats.shape[0],), feats.shape[1], dtype=torch.long, device=feats.device)
        x, lengths = self.subsampling(feats, lengths)
        x, lengths = self.conformer(self.drop(x), lengths)
        return x, lengths


class Conformer(CTCSpeechModel):
    """torchaudio Conformer encoder + linear CTC decoder (the Squeezeformer baseline).

    Front-end, SpecAugment, decoding and ``loss`` as :class:`~panconv_audio.models.layers.CTCSpeechModel`.
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 144, num_layers: Annotated[int, Ge(1)] = 16,
                 heads: Annotated[int, Ge(1)] = 4, kernel_size: Annotated[int, Ge(1)] = 31,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000,
                 n_mels: Annotated[int, Ge(4)] = 80, frontend: str | None = "logmel", spec_augment: bool = True,
                 vocab_size: Annotated[int, Ge(1)] | None = None, decoder: str = "greedy",
                 beam_size: Annotated[int, Ge(1)] = 8, time_masks: Annotated[int, Ge(0)] = 5,
                 loss: nn.Module | dict | None = None):
        super().__init__(sample_rate, n_mels, frontend, spec_augment, vocab_size, decoder, beam_size, time_masks,
                         loss=loss)
        self.d_model = d_model
        self.encoder = ConformerEncoder(d_model, num_layers, heads, n_mels, kernel_size, dropout)
        self._build_decoder()

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 32, "num_layers": 2, "heads": 2, "kernel_size": 7, "sample_rate": 8000, "n_mels": 40}

