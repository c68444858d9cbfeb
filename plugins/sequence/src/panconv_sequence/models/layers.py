"""Building blocks the sequence models share (public: other plugins import them).

Every sequence backbone of this plugin is a :class:`SequenceBackbone`: an input embedding
(token ids ``(N, L)`` through an embedding table, or features ``(N, L, C)`` through a linear
map) to width ``d_model``, then ``n_layers`` pre-norm residual blocks, each a *sequence mixer*
(S4, Hyena, SGConv, chunked attention, ...) followed by an optional MLP, then a final norm.
A family only says how to make its mixer (:meth:`SequenceBackbone.make_mixer`), so every
family reads the same way and is compared on the same footing.

The backbone returns one feature map ``(N, d_model, L)`` (channels first, as every panconv
backbone), so ``core.GlobalAvgPool`` + ``core.LinearClsHead`` or this module's
:class:`SequenceClsHead` / :class:`LMHead` size themselves from ``feature_info``.

Batches: ``{"inputs": (N, L) long or (N, L, C) float, "labels": (N,)}`` for classification,
``{"inputs": (N, L), "targets": (N, L)}`` for language modelling (``-100`` marks ignored
positions), optionally ``"lengths": (N,)`` for padded sequences.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Backbone, FeatureInfo, Head


class SequenceInput(nn.Module):
    """Token ids ``(N, L)`` -> ``(N, L, d)`` through an embedding, or features ``(N, L, C)`` through a linear map."""

    def __init__(self, d_model: int, vocab_size: int | None = None, in_channels: int | None = None):
        super().__init__()
        if (vocab_size is None) == (in_channels is None):
            raise ValueError(f"give exactly one of vocab_size (token inputs) and in_channels (feature inputs), "
                             f"got vocab_size={vocab_size}, in_channels={in_channels}")
        self.vocab_size, self.in_channels = vocab_size, in_channels
        self.embed = nn.Embedding(vocab_size, d_model) if vocab_size is not None else nn.Linear(in_channels, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vocab_size is not None:
            if x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
                raise ValueError(f"token inputs must be integer ids (N, L), got {x.dtype} {tuple(x.shape)}")
            return self.embed(x.long())
        if x.dim() == 2:  # (N, L) scalar features
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"feature inputs must be (N, L, {self.in_channels}), got {tuple(x.shape)}")
        return self.embed(x.to(self.embed.weight.dtype))

    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        """One time step: ids ``(N,)``, scalar features ``(N,)`` or features ``(N, C)`` -> ``(N, d)``."""
        if self.vocab_size is not None:
            return self.embed(x_t.long())
        return self.embed((x_t.unsqueeze(-1) if x_t.dim() == 1 else x_t).to(self.embed.weight.dtype))


class MLP(nn.Module):
    """The position-wise feed-forward of a block: ``d -> ratio*d -> d`` with GELU."""

    def __init__(self, d_model: int, ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        hidden = max(1, int(round(d_model * ratio)))
        self.fc1, self.fc2 = nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class MixerBlock(nn.Module):
    """Pre-norm residual block: ``x + drop(mixer(norm(x)))``, then ``x + drop(mlp(norm(x)))`` when an MLP is used.

    ``mixer`` maps ``(N, L, d) -> (N, L, d)``.
    """

    def __init__(self, mixer: nn.Module, d_model: int, mlp_ratio: float = 0.0, dropout: float = 0.0,
                 norm: str = "layer"):
        super().__init__()
        make_norm = (lambda: nn.LayerNorm(d_model)) if norm == "layer" else (lambda: RMSNorm(d_model))
        self.norm1, self.mixer, self.drop = make_norm(), mixer, nn.Dropout(dropout)
        self.norm2 = make_norm() if mlp_ratio > 0 else None
        self.mlp = MLP(d_model, mlp_ratio, dropout) if mlp_ratio > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x)))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.norm2(x)))
        return x

    def step(self, x_t: torch.Tensor, state):
        """One time step ``(N, d) -> (N, d)`` through a mixer with ``step(x_t, state) -> (y_t, state)``."""
        y_t, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + self.drop(y_t)
        if self.mlp is not None:
            x_t = x_t + self.drop(self.mlp(self.norm2(x_t)))
        return x_t, state


class RMSNorm(nn.Module):
    """Root-mean-square norm (no centring), as Hyena/Orchid use."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d_model)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SequenceBackbone(Backbone):
    """Embedding -> ``n_layers`` x :class:`MixerBlock` -> norm; returns ``[(N, d_model, L)]``.

    Subclasses implement :meth:`make_mixer` (and may override :meth:`example_inputs`). Exactly
    one of ``vocab_size`` (token inputs) and ``in_channels`` (feature inputs) is set; both are
    filled from the dataset's metadata when the config leaves them unset.
    """

    metadata_inputs = ("vocab_size", "in_channels")
    #: the example sequence length the conformance kit uses
    example_length: int = 32

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        super().__init__()
        if vocab_size is None and in_channels is None:
            in_channels = 1  # a scalar signal: the default for building without data (panconv info)
        self.d_model, self.n_layers = d_model, n_layers
        self.input = SequenceInput(d_model, vocab_size, in_channels)
        self.blocks = nn.ModuleList(MixerBlock(self.make_mixer(i), d_model, mlp_ratio, dropout, norm)
                                    for i in range(n_layers))
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else RMSNorm(d_model)
        self.feature_info = [FeatureInfo(d_model, 1, "norm")]

    def make_mixer(self, layer: int) -> nn.Module:  # pragma: no cover - interface
        """The sequence mixer of block ``layer``: ``(N, L, d_model) -> (N, L, d_model)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.input(x)
        for block in self.blocks:
            h = block(h)
        return [self.norm(h).transpose(1, 2)]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        """Ids ``(N, L)``, scalar features ``(N, L)`` (``in_channels=1``: the time axis is last, as in the
        ``(N, d, L)`` output) or features ``(N, L, C)``."""
        length = self.example_length
        if self.input.vocab_size is not None:
            return torch.randint(self.input.vocab_size, (batch_size, length))
        if self.input.in_channels == 1:
            return torch.randn(batch_size, length)
        return torch.randn(batch_size, length, self.input.in_channels)


class RecurrentSequenceBackbone(SequenceBackbone):
    """A :class:`SequenceBackbone` whose mixers also run step by step (``initial_state``/``step``: S4, S4D).

    Declares the kit's *recurrent* capability: ``step(x_t, state) -> ([features_t (N, d)], state)``
    equals ``forward`` one position at a time. ``x_t`` is one time step of the input: ids or scalar
    features ``(N,)``, or ``(N, C)``. The time axis is the last one of ``forward``'s ``(N, L)`` input and
    ``(N, d, L)`` output (``time_dim = -1``; the example input of a one-channel backbone is ``(N, L)``).
    """

    time_dim = -1

    def initial_state(self, batch_size: int) -> list:
        return [block.mixer.initial_state(batch_size) for block in self.blocks]

    def step(self, x_t: torch.Tensor, state: list) -> tuple[list[torch.Tensor], list]:
        h = self.input.step(x_t)
        new_state = []
        for block, s in zip(self.blocks, state):
            h, s = block.step(h, s)
            new_state.append(s)
        return [self.norm(h)], new_state


def pool_sequence(features: torch.Tensor, mode: str, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, C, L) -> (N, C)``: ``mean`` over valid positions, ``last`` valid position, or ``first``."""
    n, _, length = features.shape
    if lengths is None:
        lengths = torch.full((n,), length, device=features.device)
    lengths = lengths.clamp(1, length).to(features.device)
    if mode == "mean":
        mask = (torch.arange(length, device=features.device)[None] < lengths[:, None]).to(features.dtype)
        return (features * mask[:, None]).sum(-1) / lengths[:, None].to(features.dtype)
    if mode == "last":
        return features.gather(2, (lengths - 1).view(n, 1, 1).expand(-1, features.shape[1], 1)).squeeze(2)
    if mode == "first":
        return features[..., 0]
    raise ValueError(f"pool must be mean, last or first, got {mode!r}")


class SequenceClsHead(Head):
    """Pool ``(N, C, L)`` (mean, last or first position), then a linear classifier; cross-entropy."""

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(1)] = 2,
                 pool: Literal["mean", "last", "first"] = "mean",
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__(in_features)
        self.num_classes, self.pool = num_classes, pool
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.in_features[-1].channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.drop(pool_sequence(features[-1], self.pool)))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"])}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(-1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3}

    def example_inputs(self, batch_size: int = 2):
        features = [torch.randn(batch_size, self.in_features[-1].channels, 16)]
        return features, {"labels": torch.randint(self.num_classes, (batch_size,))}


class LMHead(Head):
    """Per-position next-token logits ``(N, L, V)``; cross-entropy on ``batch["targets"]`` (``-100`` ignored).

    ``loss`` reports ``loss`` (nats per token) and ``bits_per_token``.
    """

    metadata_inputs = ("vocab_size",)

    def __init__(self, in_features: list[FeatureInfo], vocab_size: Annotated[int, Ge(2)] = 256):
        super().__init__(in_features)
        self.vocab_size = vocab_size
        self.fc = nn.Linear(self.in_features[-1].channels, vocab_size)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(features[-1].transpose(1, 2))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        nats = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), batch["targets"].reshape(-1), ignore_index=-100)
        return {"loss": nats, "bits_per_token": nats.detach() / torch.log(torch.tensor(2.0))}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.log_softmax(-1)

    @classmethod
    def example_config(cls) -> dict:
        return {"vocab_size": 11}

    def example_inputs(self, batch_size: int = 2):
        features = [torch.randn(batch_size, self.in_features[-1].channels, 16)]
        return features, {"targets": torch.randint(self.vocab_size, (batch_size, 16))}


def causal_mask(length: int, device=None) -> torch.Tensor:
    """``(L, L)`` boolean mask, True where attention is allowed (``j <= i``)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


__all__ = ["LMHead", "MLP", "MixerBlock", "RMSNorm", "RecurrentSequenceBackbone", "SequenceBackbone", "SequenceClsHead",
           "SequenceInput", "causal_mask", "pool_sequence"]


# ---------------------------------------------------------------------------------------------------------------
# Attention helpers (helper C's section: the Transformer baseline, TCNCA, Combiner and FIT share these)
# ---------------------------------------------------------------------------------------------------------------

def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoFormer) of ``x (..., L, h)`` at integer ``positions (L,)``; ``h`` even.

    Rotating queries and keys makes their dot product depend on the position difference only, for any
    length: the attention mixers here need no maximum length.
    """
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs[None]                       # (L, h/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([rotated, x[..., 2 * half:]], dim=-1) if x.shape[-1] % 2 else rotated


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention through ``F.scaled_dot_product_attention``, rotary positions.

    ``forward(x, context=None, mask=None, causal=None, positions=None, context_positions=None)``: queries from
    ``x (N, L, d)``, keys/values from ``context (N, S, d)`` (default ``x``); ``mask (L, S)`` or broadcastable,
    True where attention is allowed; ``causal`` defaults to the constructor's value (self-attention only).
    ``positions`` (and ``context_positions``) are the integer positions rotary embeds (default ``arange``);
    ``rotary=False`` turns positions off (cross-attention between latents and tokens).
    """

    def __init__(self, d_model: int, n_heads: int = 4, causal: bool = False, dropout: float = 0.0,
                 use_rotary: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim, self.causal, self.dropout = n_heads, d_model // n_heads, causal, dropout
        self.use_rotary = use_rotary
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                causal: bool | None = None, positions: torch.Tensor | None = None,
                context_positions: torch.Tensor | None = None) -> torch.Tensor:
        self_attention = context is None
        context = x if context is None else context
        causal = (self.causal if causal is None else causal) and self_attention
        q = self._heads(self.q(x))
        k, v = (self._heads(t) for t in self.kv(context).chunk(2, dim=-1))
        if self.use_rotary:
            pos = torch.arange(x.shape[1], device=x.device) if positions is None else positions
            cpos = pos if self_attention and context_positions is None else (
                torch.arange(context.shape[1], device=x.device) if context_positions is None else context_positions)
            q, k = rotary(q, pos), rotary(k, cpos)
        if causal and mask is not None:
            raise ValueError("give either causal=True or an explicit mask, not both")
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
