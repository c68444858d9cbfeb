"""Squeezeformer (Kim et al., "Squeezeformer: An Efficient Transformer for Automatic Speech
Recognition", NeurIPS 2022) with a CTC decoder.

Architecture (paper Sec. 3, Fig. 2):

* depthwise-separable 4x subsampling (Sec. 3.4), linear to ``d_model``, x * sqrt(d), LayerNorm;
* Temporal U-Net (Sec. 3.1): after the 7th block a depthwise-separable stride-2 convolution halves
  the frame rate; before the last block the sequence is upsampled by repetition, projected, and the
  activation saved before the reduction is added back (skip connection);
* each block is MF + CF (Sec. 3.2): ``MHSA -> FFN -> Conv -> FFN`` with post-LN after every module,
  and the input of every module scaled and shifted by a learned per-channel vector (Sec. 3.3,
  "scaled post-LN": x + f(gamma * x + beta), then LayerNorm);
* swish everywhere, the conv module's GLU replaced by swish with a 2x pointwise expansion
  (unified activations, Sec. 3.3);
* multi-head self-attention with Transformer-XL relative positional encoding.

Sizes (paper Table 7: layers / dim / heads; params including the CTC decoder): XS 16/144/4 9.0M,
S 18/196/4 18.6M, SM 16/256/4 28.2M, M 20/324/4 55.6M, ML 18/512/8 125.1M, L 22/640/8 236.3M.
The paper uses a 128-token SentencePiece vocabulary; ``vocab_size=128`` reproduces its counts, the
default character tokenizer (29 symbols) is used for training here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import Backbone, FeatureInfo

from .asr import CTCSpeechModel, DepthwiseSeparableSubsampling


def padding_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """``(N, T)`` bool, True on valid frames."""
    return torch.arange(t, device=lengths.device)[None] < lengths[:, None]


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
        assert dim % heads == 0, "dim must be divisible by heads"
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

    def __init__(self, dim: int, kernel_size: int = 31, expansion: int = 2, dropout: float = 0.0):
        super().__init__()
        hidden = dim * expansion
        self.pw1 = nn.Conv1d(dim, hidden, 1)
        self.dw = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.pw2 = nn.Conv1d(hidden, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = F.silu(self.pw1(x.transpose(1, 2)))
        if mask is not None:
            y = y * mask[:, None, :]
        y = self.pw2(F.silu(self.bn(self.dw(y))))
        return self.drop(y.transpose(1, 2))


class SqueezeformerBlock(nn.Module):
    """MF block (MHSA, FFN) then CF block (Conv, FFN); each module: ``LN(x + f(scale * x + bias))``."""

    def __init__(self, dim: int, heads: int, kernel_size: int = 31, dropout: float = 0.1):
        super().__init__()
        self.mhsa = RelPositionMultiHeadAttention(dim, heads, dropout)
        self.ff1 = FeedForward(dim, 4, dropout)
        self.conv = ConvModule(dim, kernel_size, 2, dropout)
        self.ff2 = FeedForward(dim, 4, dropout)
        self.scales = nn.ModuleList(ScaleBias(dim) for _ in range(4))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pos_emb, mask):
        x = self.norms[0](x + self.drop(self.mhsa(self.scales[0](x), pos_emb, mask)))
        x = self.norms[1](x + self.ff1(self.scales[1](x)))
        x = self.norms[2](x + self.conv(self.scales[2](x), mask))
        return self.norms[3](x + self.ff2(self.scales[3](x)))


class TimeReduction(nn.Module):
    """Temporal U-Net downsampling: depthwise conv (kernel 5, stride 2) + pointwise conv.
    ``T -> ceil(T / 2)`` frames (padding on the right)."""

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
    and the output lengths (what the CTC model uses)."""

    def __init__(self, d_model: int = 144, num_layers: int = 16, heads: int = 4, n_mels: int = 80,
                 kernel_size: int = 31, dropout: float = 0.1, reduce_idx: int | None = 7,
                 recover_idx: int | None = None):
        super().__init__()
        self.d_model = d_model
        self.subsampling = DepthwiseSeparableSubsampling(n_mels, d_model, d_model)
        self.pre_norm = nn.LayerNorm(d_model)
        self.pos = RelPositionalEncoding(d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SqueezeformerBlock(d_model, heads, kernel_size, dropout) for _ in range(num_layers))
        self.reduce_idx = reduce_idx
        self.recover_idx = (num_layers - 1 if recover_idx is None else recover_idx) if reduce_idx is not None else None
        if reduce_idx is not None:
            assert 0 < reduce_idx < self.recover_idx < num_layers, "need reduce_idx < recover_idx < num_layers"
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
            if i == self.reduce_idx:  # Temporal U-Net: halve the frame rate after block 7
                skip = (x, lengths, mask, pos)
                x, lengths = self.time_reduce(x, lengths, mask)
                mask = padding_mask(lengths, x.shape[1])
                pos = self.pos(x.shape[1], x.device, x.dtype)
            if i == self.recover_idx:  # ... and restore it before the last block, with the skip
                x0, lengths, mask, pos = skip
                x = self.time_recover(x.repeat_interleave(2, dim=1)[:, : x0.shape[1]]) + x0
            x = block(x, pos, mask)
            trace.append(x.shape[1])
        return (x, lengths, trace) if return_trace else (x, lengths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_with_lengths(x.transpose(1, 2))[0].transpose(1, 2)]

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 32, "num_layers": 4, "heads": 2, "n_mels": 16, "reduce_idx": 1, "kernel_size": 7}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.n_mels, 40)


class Squeezeformer(CTCSpeechModel):
    """Squeezeformer encoder + linear CTC decoder on log-mel features of raw waveforms."""

    def __init__(self, d_model: int = 144, num_layers: int = 16, heads: int = 4, kernel_size: int = 31,
                 dropout: float = 0.1, reduce_idx: int | None = 7, recover_idx: int | None = None,
                 sample_rate: int = 16000, n_mels: int = 80, frontend: str = "logmel", spec_augment: bool = True,
                 vocab_size: int | None = None, decoder: str = "greedy", beam_size: int = 8, time_masks: int = 5):
        super().__init__(sample_rate, n_mels, frontend, spec_augment, vocab_size, decoder, beam_size, time_masks)
        self.d_model = d_model
        self.encoder_net = SqueezeformerEncoder(d_model, num_layers, heads, n_mels, kernel_size, dropout,
                                                reduce_idx, recover_idx)
        self.encoder = self.encoder_net.forward_with_lengths
        self._build_decoder()

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 32, "num_layers": 4, "heads": 2, "reduce_idx": 1, "kernel_size": 7,
                "sample_rate": 8000, "n_mels": 40}


# Paper Table 7: (layers, dim, heads)
SIZES = {"xs": (16, 144, 4), "s": (18, 196, 4), "sm": (16, 256, 4), "m": (20, 324, 4), "ml": (18, 512, 8),
         "l": (22, 640, 8)}
#: paper-reported parameter counts (millions, Table 7)
PAPER_PARAMS_M = {"xs": 9.0, "s": 18.6, "sm": 28.2, "m": 55.6, "ml": 125.1, "l": 236.3}


def _make(size: str, **kwargs) -> Squeezeformer:
    layers, dim, heads = SIZES[size]
    return Squeezeformer(**{"d_model": dim, "num_layers": layers, "heads": heads, **kwargs})


def squeezeformer_xs(**kwargs) -> Squeezeformer:
    """Squeezeformer-XS: 16 layers, d=144, 4 heads (9.0M with the paper's 128-token decoder)."""
    return _make("xs", **kwargs)


def squeezeformer_s(**kwargs) -> Squeezeformer:
    """Squeezeformer-S: 18 layers, d=196, 4 heads (18.6M)."""
    return _make("s", **kwargs)


def squeezeformer_sm(**kwargs) -> Squeezeformer:
    """Squeezeformer-SM: 16 layers, d=256, 4 heads (28.2M)."""
    return _make("sm", **kwargs)


def squeezeformer_m(**kwargs) -> Squeezeformer:
    """Squeezeformer-M: 20 layers, d=324, 4 heads (55.6M)."""
    return _make("m", **kwargs)


def squeezeformer_ml(**kwargs) -> Squeezeformer:
    """Squeezeformer-ML: 18 layers, d=512, 8 heads (125.1M)."""
    return _make("ml", **kwargs)


def squeezeformer_l(**kwargs) -> Squeezeformer:
    """Squeezeformer-L: 22 layers, d=640, 8 heads (236.3M)."""
    return _make("l", **kwargs)


def squeezeformer_nano(**kwargs) -> Squeezeformer:
    """Not in the paper: a CPU-sized variant (6 layers, d=64, 4 heads; Temporal U-Net reduces after
    block 3 and restores before the last) for the examples; same block structure as XS."""
    return Squeezeformer(**{"d_model": 64, "num_layers": 6, "heads": 4, "reduce_idx": 3, **kwargs})


def _example_config() -> dict:
    """Conformance-kit config of the size factories: the size's width and heads, 3 blocks."""
    return {"num_layers": 3, "reduce_idx": 1, "sample_rate": 8000, "n_mels": 40}


for _factory in (squeezeformer_xs, squeezeformer_s, squeezeformer_sm, squeezeformer_m, squeezeformer_ml,
                 squeezeformer_l, squeezeformer_nano):
    _factory.example_config = _example_config
