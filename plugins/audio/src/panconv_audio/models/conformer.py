"""Conformer baseline (Gulati et al., 2020) from ``torchaudio.models.Conformer``, behind the same
front-end, depthwise-separable 4x subsampling and linear CTC decoder as :mod:`.squeezeformer`, so
that parameter/FLOP budgets compare the encoders alone.

torchaudio's Conformer uses absolute-position-free MHSA (no relative encoding), macaron FFNs with
pre-LN and a GLU conv module; it is the model the Squeezeformer paper compares against.
"""

from __future__ import annotations

import torch
from torch import nn

from .asr import CTCSpeechModel, DepthwiseSeparableSubsampling


class ConformerEncoder(nn.Module):
    """``(N, T, n_mels)`` -> ``(N, T/4, d_model)``, lengths."""

    def __init__(self, d_model: int = 144, num_layers: int = 16, heads: int = 4, n_mels: int = 80,
                 kernel_size: int = 31, dropout: float = 0.1, ffn_expansion: int = 4):
        super().__init__()
        from torchaudio.models import Conformer as TAConformer

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
    """torchaudio Conformer encoder + linear CTC decoder (the Squeezeformer baseline)."""

    def __init__(self, d_model: int = 144, num_layers: int = 16, heads: int = 4, kernel_size: int = 31,
                 dropout: float = 0.1, sample_rate: int = 16000, n_mels: int = 80, frontend: str = "logmel",
                 spec_augment: bool = True, vocab_size: int | None = None, decoder: str = "greedy",
                 beam_size: int = 8, time_masks: int = 5):
        super().__init__(sample_rate, n_mels, frontend, spec_augment, vocab_size, decoder, beam_size, time_masks)
        self.d_model = d_model
        self.encoder = ConformerEncoder(d_model, num_layers, heads, n_mels, kernel_size, dropout)
        self._build_decoder()

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 32, "num_layers": 2, "heads": 2, "kernel_size": 7, "sample_rate": 8000, "n_mels": 40}


def conformer_xs(**kwargs) -> Conformer:
    """Conformer at Squeezeformer-XS's width/depth budget: 16 layers, d=144, 4 heads."""
    return Conformer(**{"d_model": 144, "num_layers": 16, "heads": 4, **kwargs})


def conformer_nano(**kwargs) -> Conformer:
    """Conformer at squeezeformer_nano's budget: 6 layers, d=64, 4 heads."""
    return Conformer(**{"d_model": 64, "num_layers": 6, "heads": 4, **kwargs})


def _example_config() -> dict:
    """Conformance-kit config of the size factories: the size's width and heads, 2 blocks."""
    return {"num_layers": 2, "sample_rate": 8000, "n_mels": 40}


for _factory in (conformer_xs, conformer_nano):
    _factory.example_config = _example_config
