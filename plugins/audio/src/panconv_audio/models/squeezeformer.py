"""Squeezeformer (Kim et al., "Squeezeformer: An Efficient Transformer for Automatic Speech
Recognition", NeurIPS 2022) with a CTC decoder.

Architecture (paper Sec. 3, Fig. 2):

* depthwise-separable 4x subsampling (Sec. 3.4), linear to ``d_model``, x * sqrt(d), LayerNorm;
* Temporal U-Net (Sec. 3.1): before block ``reduce_idx`` a depthwise-separable stride-2 convolution
  halves the frame rate; before block ``recover_idx`` (the last) the sequence is upsampled by
  repetition, projected, and the activation saved before the reduction is added back (skip);
* each block is MF + CF (Sec. 3.2): ``MHSA -> FFN -> Conv -> FFN`` with post-LN after every module,
  and the input of every module scaled and shifted by a learned per-channel vector (Sec. 3.3,
  "scaled post-LN": x + f(gamma * x + beta), then LayerNorm);
* swish everywhere, the conv module's GLU replaced by swish with a 2x pointwise expansion
  (unified activations, Sec. 3.3);
* multi-head self-attention with Transformer-XL relative positional encoding.

The sizes (XS, S, SM, M, ML, L of the paper's Table 7, and a CPU-sized ``nano``) are registered as
data in :mod:`panconv_audio.plugin`, with the layers / width / heads / Temporal U-Net indices /
SpecAugment time masks of the official configurations (``examples/squeezeformer/configs`` of
github.com/kssteven418/Squeezeformer). The constructor defaults are the official XS values, and the
official regularisation and normalisation of every size: dropout 0.1 on module outputs and
inputs, none on the attention weights, LayerNorm and BatchNorm epsilon 1e-3 and BatchNorm momentum
0.985 in Keras' convention (``bn_momentum=0.015`` in PyTorch's). The paper counts parameters with a
128-token SentencePiece CTC decoder (``vocab_size=128``); the default character tokenizer here has
29 symbols.

Odd frame counts at the time reduction: the official layer pads 3 frames on the right, so it
computes ``floor(T / 2)`` frames and appends a zero frame when ``T`` (the padded batch length) is
odd. We pad ``3 + T % 2`` frames instead and compute that last frame from the utterance's last
frame, so an utterance's output does not depend on how long the batch it is padded into is
(``tests/test_squeezeformer.py::test_odd_frame_count_at_time_reduction`` shows both). Every other
frame, and the valid lengths ``ceil(L / 2)``, agree.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Backbone, FeatureInfo

from .layers import CTCSpeechModel, DepthwiseSeparableSubsampling, padding_mask


class ScaleBias(nn.Module):
    """Learned per-channel scaling and bias of a module's input (the "scaled post-LN", Sec. 3.3)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x * self.scale + self.bias


class RelPositionalEncoding(nn.Module):
    """Sinusoidal embeddings of the relative positions ``T-1, ..., 0, ..., -(T-1)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: int, device, dtype) -> torch.Tensor:
        pos = torch.arange(t - 1, -t, -1.0, device=device).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.dim, 2, device=device).float() * (-math.log(10000.0) / self.dim))
        pe = torch.zeros(2 * t - 1, self.dim, device=device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe.to(dtype).unsqueeze(0)


class RelPositionMultiHeadAttention(nn.Module):
    """MHSA with relative positions (Transformer-XL, Dai et al. 2019): content and position terms
    with the learned biases ``u`` and ``v``; the position term is aligned with a relative shift."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"RelPositionMultiHeadAttention: dim {dim} is not divisible by heads {heads}")
        self.h, self.dk = heads, dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.dk))
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """``(N, H, T, 2T-1)`` scores over relative positions -> ``(N, H, T, T)`` indexed by key."""
        n, h, t, r = x.shape
        x = F.pad(x, (1, 0)).view(n, h, r + 1, t)[:, :, 1:].reshape(n, h, t, r)
        return x[..., :t]

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, t, _ = x.shape
        q = self.q(x).view(n, t, self.h, self.dk)
        k = self.k(x).view(n, t, self.h, self.dk).transpose(1, 2)
        v = self.v(x).view(n, t, self.h, self.dk).transpose(1, 2)
        p = self.pos(pos_emb).view(1, -1, self.h, self.dk).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = self.rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1)))
        scores = (ac + bd) / math.sqrt(self.dk)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.drop(scores.softmax(-1))
        return self.out(torch.matmul(attn, v).transpose(1, 2).reshape(n, t, -1))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, expansion: int = 4, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, dim * expansion), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(dim * expansion, dim), nn.Dropout(dropout))


class ConvModule(nn.Module):
    """Pointwise (2x expansion) + swish, depthwise conv, BatchNorm, swish, pointwise back."""

    def __init__(self, dim: int, kernel_size: int = 31, expansion: int = 2, dropout: float = 0.0,
                 bn_eps: float = 1e-3, bn_momentum: float = 0.015):
        super().__init__()
        hidden = dim * expansion
        self.pw1 = nn.Conv1d(dim, hidden, 1)
        self.dw = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.bn = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=bn_momentum)
        self.pw2 = nn.Conv1d(hidden, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = F.silu(self.pw1(x.transpose(1, 2)))
        if mask is not None:
            y = y * mask[:, None, :]
        y = self.pw2(F.silu(self.bn(self.dw(y))))
        return self.drop(y.transpose(1, 2))


class SqueezeformerBlock(nn.Module):
    """MF block (MHSA, FFN) then CF block (Conv, FFN); each module: ``LN(x + f(scale * x + bias))``.

    ``dropout`` acts on every module's output (and inside the FFNs); ``attn_dropout`` on the
    attention weights (0 in the official code)."""

    def __init__(self, dim: int, heads: int, kernel_size: int = 31, dropout: float = 0.1, attn_dropout: float = 0.0,
                 norm_eps: float = 1e-3, bn_eps: float = 1e-3, bn_momentum: float = 0.015):
        super().__init__()
        self.mhsa = RelPositionMultiHeadAttention(dim, heads, attn_dropout)
        self.ff1 = FeedForward(dim, 4, dropout)
        self.conv = ConvModule(dim, kernel_size, 2, dropout, bn_eps, bn_momentum)
        self.ff2 = FeedForward(dim, 4, dropout)
        self.scales = nn.ModuleList(ScaleBias(dim) for _ in range(4))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=norm_eps) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pos_emb, mask):
        x = self.norms[0](x + self.drop(self.mhsa(self.scales[0](x), pos_emb, mask)))
        x = self.norms[1](x + self.ff1(self.scales[1](x)))
        x = self.norms[2](x + self.conv(self.scales[2](x), mask))
        return self.norms[3](x + self.ff2(self.scales[3](x)))


class TimeReduction(nn.Module):
    """Temporal U-Net downsampling: depthwise conv (kernel 5, stride 2) + pointwise conv.
    ``T -> ceil(T / 2)`` frames, all computed (right padding ``kernel - stride + T % stride``; the
    official layer pads ``kernel - stride`` and appends a zero frame for odd ``T``, see the module
    docstring)."""

    def __init__(self, dim: int, kernel_size: int = 5, stride: int = 2):
        super().__init__()
        self.k, self.s = kernel_size, stride
        self.dw = nn.Conv1d(dim, dim, kernel_size, stride=stride, groups=dim)
        self.pw = nn.Conv1d(dim, dim, 1)

    def forward(self, x, lengths, mask):
        t = x.shape[1]
        y = (x * mask[..., None]).transpose(1, 2)
        y = F.pad(y, (0, self.k - self.s + t % self.s))
        y = self.pw(self.dw(y)).transpose(1, 2)
        return y, (lengths + self.s - 1) // self.s


class SqueezeformerEncoder(Backbone):
    """Backbone view: channel-first features ``(N, n_mels, T)`` -> ``[(N, d_model, T/4)]``.
    :meth:`forward_with_lengths` takes ``(N, T, n_mels)`` + lengths and returns ``(N, T/4, d_model)``
    and the output lengths (what the CTC model uses).

    ``reduce_idx``: the Temporal U-Net halves the frame rate before this block (0-based, as the
    official ``encoder_time_reduce_idx``); ``recover_idx``: it restores it before this block
    (``None``: the last block). ``reduce_idx=None`` runs every block at 1/4 of the input rate.
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 144, num_layers: Annotated[int, Ge(1)] = 16,
                 heads: Annotated[int, Ge(1)] = 4, n_mels: Annotated[int, Ge(4)] = 80,
                 kernel_size: Annotated[int, Ge(1)] = 31, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 reduce_idx: Annotated[int, Ge(1)] | None = 7, recover_idx: Annotated[int, Ge(1)] | None = None,
                 attn_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm_eps: Annotated[float, Interval(gt=0, lt=1)] = 1e-3,
                 bn_eps: Annotated[float, Interval(gt=0, lt=1)] = 1e-3,
                 bn_momentum: Annotated[float, Interval(ge=0, le=1)] = 0.015):
        super().__init__()
        name = type(self).__name__
        if num_layers < 1 or d_model < 1 or heads < 1 or d_model % heads:
            raise ValueError(f"{name}: need num_layers >= 1 and d_model divisible by heads, got num_layers="
                             f"{num_layers}, d_model={d_model}, heads={heads}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{name}: kernel_size must be odd (same padding), got {kernel_size}")
        if not (0 <= dropout < 1 and 0 <= attn_dropout < 1 and 0 < norm_eps < 1 and 0 < bn_eps < 1
                and 0 <= bn_momentum <= 1):
            raise ValueError(f"{name}: need 0 <= dropout, attn_dropout < 1, epsilons in (0, 1) and 0 <= bn_momentum "
                             f"<= 1, got dropout={dropout}, attn_dropout={attn_dropout}, norm_eps={norm_eps}, "
                             f"bn_eps={bn_eps}, bn_momentum={bn_momentum}")
        if reduce_idx is not None:
            recover_idx = num_layers - 1 if recover_idx is None else recover_idx
            if not 0 < reduce_idx < recover_idx < num_layers:
                raise ValueError(f"{name}: the Temporal U-Net needs 0 < reduce_idx < recover_idx < num_layers, got "
                                 f"reduce_idx={reduce_idx}, recover_idx={recover_idx}, num_layers={num_layers}")
        else:
            recover_idx = None
        self.d_model = d_model
        self.subsampling = DepthwiseSeparableSubsampling(n_mels, d_model, d_model)
        self.pre_norm = nn.LayerNorm(d_model, eps=norm_eps)
        self.pos = RelPositionalEncoding(d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            SqueezeformerBlock(d_model, heads, kernel_size, dropout, attn_dropout, norm_eps, bn_eps, bn_momentum)
            for _ in range(num_layers))
        self.reduce_idx, self.recover_idx = reduce_idx, recover_idx
        if reduce_idx is not None:
            self.time_reduce = TimeReduction(d_model)
            self.time_recover = nn.Linear(d_model, d_model)
        self.feature_info = [FeatureInfo(d_model, 4, "blocks")]
        self.n_mels = n_mels

    def forward_with_lengths(self, feats: torch.Tensor, lengths: torch.Tensor | None = None, return_trace=False):
        if lengths is None:
            lengths = torch.full((feats.shape[0],), feats.shape[1], dtype=torch.long, device=feats.device)
        x, lengths = self.subsampling(feats, lengths)
        x = self.pre_norm(self.drop(x * math.sqrt(self.d_model)))
        mask = padding_mask(lengths, x.shape[1])
        pos = self.pos(x.shape[1], x.device, x.dtype)
        skip = None
        trace = []
        for i, block in enumerate(self.blocks):
            if i == self.reduce_idx:  # Temporal U-Net: halve the frame rate before block reduce_idx
                skip = (x, lengths, mask, pos)
                x, lengths = self.time_reduce(x, lengths, mask)
                mask = padding_mask(lengths, x.shape[1])
                pos = self.pos(x.shape[1], x.device, x.dtype)
            if i == self.recover_idx:  # ... and restore it before block recover_idx, with the skip
                x0, lengths, mask, pos = skip
                x = self.time_recover(x.repeat_interleave(2, dim=1)[:, : x0.shape[1]]) + x0
            x = block(x, pos, mask)
            trace.append(x.shape[1])
        return (x, lengths, trace) if return_trace else (x, lengths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_with_lengths(x.transpose(1, 2))[0].transpose(1, 2)]

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 32, "num_layers": 4, "heads": 2, "n_mels": 16, "reduce_idx": 1, "recover_idx": 3,
                "kernel_size": 7}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.n_mels, 40)


class Squeezeformer(CTCSpeechModel):
    """Squeezeformer encoder + linear CTC decoder on log-mel features of raw waveforms.

    Encoder arguments as :class:`SqueezeformerEncoder`; front-end, SpecAugment, decoding and ``loss``
    as :class:`~panconv_audio.models.layers.CTCSpeechModel` (default criterion ``audio.CTCLoss()``).
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 144, num_layers: Annotated[int, Ge(1)] = 16,
                 heads: Annotated[int, Ge(1)] = 4, kernel_size: Annotated[int, Ge(1)] = 31,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 reduce_idx: Annotated[int, Ge(1)] | None = 7, recover_idx: Annotated[int, Ge(1)] | None = None,
                 attn_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm_eps: Annotated[float, Interval(gt=0, lt=1)] = 1e-3,
                 bn_eps: Annotated[float, Interval(gt=0, lt=1)] = 1e-3,
                 bn_momentum: Annotated[float, Interval(ge=0, le=1)] = 0.015,
                 sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000, n_mels: Annotated[int, Ge(4)] = 80,
                 frontend: str | None = "logmel", spec_augment: bool = True,
                 vocab_size: Annotated[int, Ge(1)] | None = None, decoder: str = "greedy",
                 beam_size: Annotated[int, Ge(1)] = 8, time_masks: Annotated[int, Ge(0)] = 5,
                 loss: nn.Module | dict | None = None):
        super().__init__(sample_rate, n_mels, frontend, spec_augment, vocab_size, decoder, beam_size, time_masks,
                         loss=loss)
        self.d_model = d_model
        self.encoder_net = SqueezeformerEncoder(d_model, num_layers, heads, n_mels, kernel_size, dropout,
                                                reduce_idx, recover_idx, attn_dropout, norm_eps, bn_eps, bn_momentum)
        self.encoder = self.encoder_net.forward_with_lengths
        self._build_decoder()

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 32, "num_layers": 4, "heads": 2, "reduce_idx": 1, "recover_idx": 3, "kernel_size": 7,
                "sample_rate": 8000, "n_mels": 40}
