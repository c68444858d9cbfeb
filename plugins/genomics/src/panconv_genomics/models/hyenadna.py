"""HyenaDNA (Nguyen et al., NeurIPS 2023): a decoder-only Hyena language model at single-nucleotide resolution.

The network is the official ``LMBackbone`` (``standalone_hyenadna.py`` of HazyResearch/hyena-dna):

    h = dropout_embed(Embedding(ids))                                   (no positional embedding)
    for each of n_layer blocks:
        h = h + dropout(HyenaOperator(LayerNorm(h)))                    (order 2, causal, Sec. 3.1)
        h = h + dropout(fc2(gelu_tanh(fc1(LayerNorm(h)))))              (MLP d_model -> d_inner -> d_model)
    features = LayerNorm(h)

The Hyena operator is :class:`panconv_sequence.models.hyena.HyenaOperator` (the FFT long convolution of
``sequence.fftconv``), with the HyenaDNA filter settings of the published checkpoints' configs: positional
features of ``emb_dim=5`` (two bands), filter MLP width ``filter_order=64``, sine frequency ``w=10``, short
filter of 3 taps, exponential modulation with ``shift=0`` (the training code's default; the standalone
file's ``ExponentialModulation`` defaults to 0.05, which is not what the checkpoints were trained with).
The embedding has ``vocab_size`` rounded up to a multiple of ``pad_vocab_size_multiple`` (12 -> 16) rows,
and the weights start as the official ``_init_weights`` (GPT-2 scheme: N(0, 0.02), residual output
projections scaled by ``1/sqrt(2 n_layer)``).

Heads: :class:`HyenaDNALMHead` (next-nucleotide logits, bias-free as the official head; the official LM ties
it to the embedding, which a composed panconv model, whose head is a separate component, does not: the
head adds ``vocab_size x d_model`` parameters, 1,536 for tiny) and ``sequence.SequenceClsHead`` (pool ``mean``
/ ``last`` + linear: the official ``SequenceDecoder`` with ``mode='pool'``/``'last'``) for classification.
:class:`HyenaDNALM` is the official language model as one (whole-model) component, its head tied to the
embedding (``tie_embeddings=True``, the official default, exactly the official parameter count) or untied.

Size variants (plugin.py) are the published checkpoints (HF ``LongSafari/hyenadna-*-seqlen``); parameter counts
are the backbone's (= the official tied LM's):

====================  =======  =======  =======  =========  ==========
variant               d_model  n_layer  d_inner  l_max      parameters
====================  =======  =======  =======  =========  ==========
``hyenadna_tiny_1k``  128      2        512      1,026      436,096
``hyenadna_small_32k``  256    4        1,024    32,770     3,277,568
``hyenadna_medium_160k``  256  8        1,024    160,002    6,550,528
``hyenadna_medium_450k``  256  8        1,024    450,002    6,550,528
``hyenadna_large_1m`` 256      8        1,024    1,000,002  6,550,528
====================  =======  =======  =======  =========  ==========

``pretrained``: a panconv work dir or checkpoint whose model has a HyenaDNA ``backbone`` (a pre-training run):
its backbone weights are loaded (the official ``load_backbone`` state hook), the head starts fresh.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Backbone, FeatureInfo, Model

try:
    from panconv_sequence.models.hyena import HyenaOperator
    from panconv_sequence.models.layers import LMHead
except ImportError as exc:  # pragma: no cover - exercised by test_plugin through a subprocess
    raise ImportError(f"panconv-genomics needs panconv-sequence (the Hyena operator), which is not installed: "
                      f"pip install panconv-sequence panconv-genomics (from a source checkout: pip install "
                      f"./plugins/sequence ./plugins/genomics) [{exc}]") from exc

from ..datasets.tokenizer import VOCAB_SIZE


class HyenaDNAMLP(nn.Module):
    """``fc2(gelu_tanh(fc1(x)))``: ``d_model -> d_inner -> d_model`` (the tanh GELU, as the official ``Mlp``)."""

    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_inner), nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HyenaDNABlock(nn.Module):
    """Pre-norm residual block: ``x + drop(hyena(LN(x)))``, then ``x + drop(mlp(LN(x)))``."""

    def __init__(self, d_model: int, d_inner: int, mixer: nn.Module, dropout: float, eps: float):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(d_model, eps=eps), mixer
        self.norm2, self.mlp = nn.LayerNorm(d_model, eps=eps), HyenaDNAMLP(d_model, d_inner)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class HyenaDNA(Backbone):
    """HyenaDNA backbone: token ids ``(N, L)`` (``L <= l_max``) -> ``[(N, d_model, L)]`` (see the module docstring).

    Args:
        d_model, n_layer: width and depth; ``d_inner``: MLP width (default ``4 * d_model``).
        vocab_size: tokenizer size (12: the official single-nucleotide vocabulary), padded to a multiple of
            ``pad_vocab_size_multiple`` rows.
        l_max: longest sequence (the implicit filters are sampled on it; official configs: max length + 2).
        order, filter_order, emb_dim, short_filter_order, w, modulation_shift: the Hyena operator's settings.
        embed_dropout, resid_dropout: dropout on the embeddings and on each residual branch.
        pretrained: a work dir or checkpoint of a model with a HyenaDNA backbone whose weights to load.
        soft_prompt: number of learned prompt embeddings prepended to every sequence (the soft-prompt variant);
            the features returned are the input positions' only. ``freeze``: train the prompt only (with the head).
    """

    metadata_inputs = ("vocab_size",)
    example_length = 32

    def __init__(self, d_model: Annotated[int, Ge(1)] = 128, n_layer: Annotated[int, Ge(1)] = 2,
                 d_inner: Annotated[int, Ge(1)] | None = None, vocab_size: Annotated[int, Ge(1)] = VOCAB_SIZE,
                 pad_vocab_size_multiple: Annotated[int, Ge(1)] = 8, l_max: Annotated[int, Ge(2)] = 1026,
                 order: Annotated[int, Ge(2)] = 2, filter_order: Annotated[int, Ge(1)] = 64,
                 emb_dim: Annotated[int, Ge(3)] = 5, short_filter_order: Annotated[int, Ge(1)] = 3,
                 w: Annotated[float, Gt(0)] = 10.0, modulation_shift: Annotated[float, Ge(0)] = 0.0,
                 embed_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 resid_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 layer_norm_epsilon: Annotated[float, Gt(0)] = 1e-5, pretrained: str | None = None,
                 soft_prompt: Annotated[int, Ge(0)] = 0, freeze: bool = False):
        super().__init__()
        if emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd (time, cosine and sine bands), got {emb_dim}")
        self.d_model, self.n_layer, self.l_max = d_model, n_layer, l_max
        self.d_inner = d_inner or 4 * d_model
        self.vocab_size = vocab_size
        padded = math.ceil(vocab_size / pad_vocab_size_multiple) * pad_vocab_size_multiple
        self.embedding = nn.Embedding(padded, d_model)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.blocks = nn.ModuleList(
            HyenaDNABlock(d_model, self.d_inner,
                          HyenaOperator(d_model, l_max, order=order, filter_order=filter_order,
                                        short_filter_order=short_filter_order, causal=True, emb_dim=emb_dim, w=w,
                                        shift=modulation_shift),
                          resid_dropout, layer_norm_epsilon)
            for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_epsilon)
        self.feature_info = [FeatureInfo(d_model, 1, "norm")]
        self.reset_parameters()
        if pretrained:
            if not Path(pretrained).exists():
                raise ValueError(f"pretrained: {pretrained} does not exist (a work dir or checkpoint of a HyenaDNA "
                                 f"pre-training run: run it first, from the directory this path is relative to)")
            if not self.embedding.weight.is_meta:  # config validation builds on the meta device: nothing to load
                self.load_pretrained(pretrained)
        # soft prompting (the paper's in-context variant): learned embeddings prepended to every sequence; with
        # freeze=True they are the only trainable weights of the backbone (the head stays trainable)
        self.soft_prompt = nn.Parameter(torch.randn(soft_prompt, d_model) * 0.02) if soft_prompt else None
        if freeze:
            for name, p in self.named_parameters():
                p.requires_grad_(name == "soft_prompt")

    @torch.no_grad()
    def reset_parameters(self, initializer_range: float = 0.02) -> None:
        """The official ``_init_weights``: every Linear/Embedding ~ N(0, 0.02), biases 0, and the output
        projections of the residual branches (``out_proj``, ``fc2``) ~ N(0, 0.02 / sqrt(2 n_layer))."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for linear in (block.mixer.out_proj, block.mlp.fc2):
                nn.init.normal_(linear.weight, std=initializer_range / math.sqrt(2 * self.n_layer))

    def load_pretrained(self, source: str) -> None:
        """Load the ``backbone`` weights of the model saved in ``source`` (work dir or checkpoint)."""
        from panconv import load_model
        from panconv.errors import CheckpointError

        model = load_model(source)
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, HyenaDNA):
            raise CheckpointError(f"{source}: its model has no HyenaDNA backbone ({type(backbone).__name__})")
        missing, unexpected = self.load_state_dict(backbone.state_dict(), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{source}: its HyenaDNA backbone does not fit this one (missing "
                                  f"{missing[:3]}, unexpected {unexpected[:3]}): use the same size variant")

    @torch.no_grad()
    def load_official_state_dict(self, state: dict) -> None:
        """Load weights named as the official code names them (``backbone.layers.0.mixer...``; a Lightning
        checkpoint's ``model.`` prefix is dropped; head keys are ignored): see :func:`official_to_panconv`."""
        ours, positional = official_to_panconv(state)
        missing, unexpected = self.load_state_dict(ours, strict=False)
        if missing or unexpected:
            raise ValueError(f"official HyenaDNA weights do not fit this backbone: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]} (d_model/n_layer/filter_order of another variant?)")
        for i, z in positional.items():  # official z is a parameter (lr_pos_emb); ours a buffer
            target = self.blocks[i].mixer.filter_fn.z
            target.copy_(z[:, :target.shape[1]])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"HyenaDNA takes token ids (N, L), got {x.dtype} {tuple(x.shape)}")
        prompt = 0 if self.soft_prompt is None else self.soft_prompt.shape[0]
        if x.shape[-1] + prompt > self.l_max:
            raise ValueError(f"HyenaDNA: sequence length {x.shape[-1]} (+ {prompt} soft-prompt tokens) > l_max "
                             f"{self.l_max} (a longer variant, or l_max >= the longest window)")
        h = self.embedding(x.long())
        if prompt:
            h = torch.cat([self.soft_prompt.expand(h.shape[0], -1, -1), h], dim=1)
        h = self.embed_drop(h)
        for block in self.blocks:
            h = block(h)
        return [self.norm(h[:, prompt:]).transpose(1, 2)]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randint(self.vocab_size, (batch_size, min(self.example_length, self.l_max)))

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layer": 2, "l_max": 64, "filter_order": 8}


_OFFICIAL_FILTER = {"implicit_filter.0.": "implicit_filter.0.", "implicit_filter.2.": "implicit_filter.1.",
                    "implicit_filter.4.": "implicit_filter.2.", "implicit_filter.6.": "head.",
                    "implicit_filter.1.freq": "act.freq", "modulation.deltas": "deltas", "bias": "bias"}


def official_to_panconv(state: dict) -> tuple[dict, dict]:
    """Official HyenaDNA backbone keys -> ours: ``(state, {layer: positional features z})``.

    ``backbone.embeddings.word_embeddings`` -> ``embedding``; ``backbone.layers.i`` -> ``blocks.i`` (mixer, norms,
    mlp unchanged); the filter MLP ``implicit_filter.{0,2,4}`` (Linear) -> ``implicit_filter.{0,1,2}``, its last
    Linear ``implicit_filter.6`` -> ``head``, the shared ``Sin`` (``implicit_filter.{1,3,5}.freq``) -> ``act.freq``,
    ``modulation.deltas`` -> ``deltas``; ``backbone.ln_f`` -> ``norm``. ``pos_emb.t`` is recomputed, ``pos_emb.z``
    returned apart (a buffer here).
    """
    ours, positional = {}, {}
    for key, value in state.items():
        key = key.removeprefix("model.").removeprefix("backbone.")
        if key.startswith("embeddings.word_embeddings."):
            ours["embedding." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("ln_f."):
            ours["norm." + key[len("ln_f."):]] = value
        elif key.startswith("layers."):
            _, index, rest = key.split(".", 2)
            if rest.startswith("mixer.filter_fn."):
                sub = rest[len("mixer.filter_fn."):]
                if sub == "pos_emb.z":
                    positional[int(index)] = value
                    continue
                if sub == "pos_emb.t" or sub.endswith(".freq") and sub != "implicit_filter.1.freq":
                    continue  # t: recomputed; freq: one shared Sin, listed once per use
                old = next(k for k in _OFFICIAL_FILTER if sub.startswith(k))
                rest = "mixer.filter_fn." + _OFFICIAL_FILTER[old] + sub[len(old):]
            ours[f"blocks.{index}.{rest}"] = value
    return ours, positional


class HyenaDNALMHead(LMHead):
    """Next-nucleotide logits ``(N, L, vocab_size)`` by a bias-free linear map (the official LM head, untied);
    cross-entropy on ``batch["targets"]`` (``-100`` ignored); ``predict``: log-probabilities."""

    def __init__(self, in_features: list[FeatureInfo], vocab_size: Annotated[int, Ge(2)] = VOCAB_SIZE):
        super().__init__(in_features, vocab_size)
        self.fc = nn.Linear(self.in_features[-1].channels, vocab_size, bias=False)
        nn.init.normal_(self.fc.weight, std=0.02)


class HyenaDNALM(Model):
    """The official HyenaDNA language model as one component: :class:`HyenaDNA` + an LM head whose weight is the
    embedding's (``tie_embeddings=True``, the official ``tie_word_embeddings`` default) or its own
    (``tie_embeddings=False``, the official head with ``tie_word_embeddings: false``).

    ``forward(batch)``: ``batch["inputs"]`` token ids ``(N, L)`` -> logits ``(N, L, V)`` over the *padded*
    vocabulary (``V`` = the embedding's rows, 16 for the 12-token tokenizer), as the official ``lm_head``: the 4
    padding rows never occur as targets and are trained down like any wrong token. ``loss``: cross-entropy on
    ``batch["targets"]`` (``-100`` ignored) and ``bits_per_token``; ``predict``: log-probabilities (the format of
    ``sequence.Perplexity``). Tied, the parameter count is the backbone's (436,096 for tiny-1k, the official tied
    LM's); untied adds ``V x d_model`` (2,048 for tiny-1k). A composed ``backbone`` + ``genomics.HyenaDNALMHead``
    model is the untied variant with a 12-row head (1,536 for tiny-1k): the engine composes heads that cannot see
    the backbone's weights, so tying lives in this whole model.

    The other arguments are :class:`HyenaDNA`'s; ``pretrained`` loads the backbone of a run whose model has a
    HyenaDNA ``backbone`` (this model's or a composed one's).
    """

    metadata_inputs = ("vocab_size",)

    def __init__(self, d_model: Annotated[int, Ge(1)] = 128, n_layer: Annotated[int, Ge(1)] = 2,
                 d_inner: Annotated[int, Ge(1)] | None = None, vocab_size: Annotated[int, Ge(1)] = VOCAB_SIZE,
                 pad_vocab_size_multiple: Annotated[int, Ge(1)] = 8, l_max: Annotated[int, Ge(2)] = 1026,
                 order: Annotated[int, Ge(2)] = 2, filter_order: Annotated[int, Ge(1)] = 64,
                 emb_dim: Annotated[int, Ge(3)] = 5, short_filter_order: Annotated[int, Ge(1)] = 3,
                 w: Annotated[float, Gt(0)] = 10.0, modulation_shift: Annotated[float, Ge(0)] = 0.0,
                 embed_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 resid_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 layer_norm_epsilon: Annotated[float, Gt(0)] = 1e-5, pretrained: str | None = None,
                 tie_embeddings: bool = True):
        super().__init__()
        self.backbone = HyenaDNA(d_model=d_model, n_layer=n_layer, d_inner=d_inner, vocab_size=vocab_size,
                                 pad_vocab_size_multiple=pad_vocab_size_multiple, l_max=l_max, order=order,
                                 filter_order=filter_order, emb_dim=emb_dim, short_filter_order=short_filter_order,
                                 w=w, modulation_shift=modulation_shift, embed_dropout=embed_dropout,
                                 resid_dropout=resid_dropout, layer_norm_epsilon=layer_norm_epsilon,
                                 pretrained=pretrained)
        self.tie_embeddings = tie_embeddings
        rows = self.backbone.embedding.num_embeddings
        self.lm_head = nn.Linear(d_model, rows, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight   # one Parameter, counted and updated once
        else:
            with torch.no_grad():
                nn.init.normal_(self.lm_head.weight, std=0.02)

    def forward(self, batch: dict | torch.Tensor) -> torch.Tensor:
        inputs = batch["inputs"] if isinstance(batch, dict) else batch
        return self.lm_head(self.backbone(inputs)[0].transpose(1, 2))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        nats = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), batch["targets"].reshape(-1), ignore_index=-100)
        return {"loss": nats, "bits_per_token": nats.detach() / math.log(2.0)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.log_softmax(-1)

    @torch.no_grad()
    def load_official_state_dict(self, state: dict) -> None:
        """Official weights (backbone names as :meth:`HyenaDNA.load_official_state_dict`); an untied model also
        takes the official ``lm_head.weight`` (a tied one has none to take: it is the embedding)."""
        self.backbone.load_official_state_dict(state)
        head = {k.removeprefix("model."): v for k, v in state.items()}.get("lm_head.weight")
        if not self.tie_embeddings and head is not None:
            self.lm_head.weight.copy_(head)

    def example_inputs(self, batch_size: int = 2) -> dict:
        ids = self.backbone.example_inputs(batch_size)
        return {"inputs": ids, "targets": ids.roll(-1, dims=1)}

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layer": 2, "l_max": 64, "filter_order": 8}


__all__ = ["HyenaDNA", "HyenaDNABlock", "HyenaDNALM", "HyenaDNALMHead", "HyenaDNAMLP", "official_to_panconv"]
