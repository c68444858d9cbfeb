"""Image-text matching with a joint embedding space and a bidirectional ranking loss (2015).

After "Deep Learning Applied to Image and Text Matching" (2015) and the visual-semantic embeddings of
its time (Kiros et al. 2014; Karpathy & Fei-Fei 2015): an image and a sentence are mapped into one
space where matching pairs have a higher cosine similarity than mismatched ones.

* **Image side**: CNN features (here a small conv-BN-ReLU-max-pool network, globally averaged — the
  papers used ImageNet CNN features) through an MLP (linear, ReLU, linear) into the joint space.
* **Text side**, three encoders (``text``):
  ``bow``: bag of words — the count vector of the caption's words through an MLP (the first layer
  is an ``EmbeddingBag(sum)``, the same as a linear layer on counts);
  ``ngram``: bag of words *and* bigrams (bigrams hashed into ``ngram_buckets`` extra slots), then
  the same MLP;
  ``gru`` / ``lstm``: word embeddings read by a recurrent network, the state at the last real word
  projected into the joint space.
* **Loss**: the bidirectional margin ranking loss on cosine similarity ``s``:
  ``sum_i sum_{j in N(i)} [m - s(x_i, t_i) + s(x_i, t_j)]_+ + [m - s(x_i, t_i) + s(x_j, t_i)]_+``
  over in-batch negatives ``N(i)`` (:func:`sampled_margin_ranking_loss`): all of them
  (``negatives="all"``, :func:`panconv_vision.losses.margin_ranking_loss`), ``num_negatives`` drawn at
  random (``"random"``), or the ``num_negatives`` hardest ones (``"hardest"``; 1 = VSE++'s max of
  hinges). ``mask_duplicates``: items whose caption is identical to the positive's (templated
  captions repeat) are not used as negatives.

``predict``: ``image_embeddings`` / ``text_embeddings`` (normalised; ``vision.Retrieval`` with
``video_key: image_embeddings``), ``features`` (the image embedding) and, once ``attach_data`` has the
data set's prompts, zero-shot ``logits`` as ALIGN's (cosine to each class's prompt ensemble).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Model

from ..losses import margin_ranking_loss
from .align import prompt_ensemble

PAD, BOS, EOS = 0, 1, 2     # as panconv_vision.datasets.captions


def sampled_margin_ranking_loss(a: torch.Tensor, b: torch.Tensor, margin: float = 0.2,
                                negatives: Literal["all", "random", "hardest"] = "all",
                                num_negatives: int | None = None, exclude: torch.Tensor | None = None,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """Bidirectional hinge over a chosen set of in-batch negatives (see the module docstring).

    ``a``, ``b``: ``(B, D)`` paired embeddings (``a_i`` matches ``b_i``). ``exclude``: ``(B, B)`` bool,
    True where ``b_j`` must not serve as a negative of ``a_i`` (and ``a_i`` of ``b_j``); the diagonal
    is always excluded. ``num_negatives``: per query and direction (None: all).
    With ``negatives="all"`` (or ``num_negatives`` >= B - 1) and no ``exclude`` this is exactly
    :func:`panconv_vision.losses.margin_ranking_loss`; ``"hardest"`` with 1 its ``hardest=True``.
    """
    if negatives not in ("all", "random", "hardest"):
        raise ValueError(f"sampled_margin_ranking_loss: negatives must be 'all', 'random' or 'hardest', got "
                         f"{negatives!r}")
    if num_negatives is not None and num_negatives < 1:
        raise ValueError(f"sampled_margin_ranking_loss: num_negatives must be >= 1, got {num_negatives}")
    n = a.shape[0]
    if exclude is None and (negatives == "all" or (negatives == "hardest" and num_negatives in (None, 1))):
        return margin_ranking_loss(a, b, margin=margin, hardest=negatives == "hardest")
    s = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    positive = s.diagonal()
    allowed = ~torch.eye(n, dtype=torch.bool, device=a.device)
    if exclude is not None:
        allowed &= ~exclude.to(a.device)
    cost_b = (margin - positive[:, None] + s).clamp(min=0)          # row i: query a_i against b_j
    cost_a = (margin - positive[None, :] + s).clamp(min=0).T        # row i: query b_i against a_j
    total = a.new_zeros(())
    for cost, ok in ((cost_b, allowed), (cost_a, allowed.T)):
        if negatives == "all" or num_negatives is None or num_negatives >= n - 1:
            pick = ok
        else:
            k = num_negatives
            if negatives == "random":
                key = torch.rand(n, n, generator=generator).to(a.device)
            else:
                key = cost.detach()
            key = key.masked_fill(~ok, -1.0)
            pick = torch.zeros_like(ok).scatter_(1, key.topk(min(k, n - 1), dim=1).indices, True) & ok
        total = total + (cost * pick).sum(1).mean()
    return total


class ConvFeatures(nn.Module):
    """Conv-BN-ReLU-max-pool stages, globally averaged: ``(N, C, H, W) -> (N, widths[-1])``."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        layers, prev = [], in_channels
        for width in widths:
            layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            prev = width
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class ImageTextMatching(Model):
    """CNN + MLP image encoder, bag-of-words / n-gram / recurrent text encoder, bidirectional ranking loss.

    Args:
        vocab_size: caption vocabulary (ids 0/1/2 = pad/bos/eos); ``in_channels``: image channels.
        text: ``"bow"``, ``"ngram"``, ``"gru"`` or ``"lstm"``. ``ngram_buckets``: hashed bigram slots.
        widths: the CNN's channels; ``hidden``: MLP / recurrent width; ``embed_dim``: the joint space.
        margin / negatives / num_negatives / mask_duplicates: the loss (see the module docstring).
    """

    metadata_inputs = ("vocab_size", "in_channels")

    def __init__(self, vocab_size: Annotated[int, Ge(4)] = 59, in_channels: Annotated[int, Ge(1)] = 1,
                 text: Literal["bow", "ngram", "gru", "lstm"] = "gru", ngram_buckets: Annotated[int, Ge(1)] = 1024,
                 widths: Sequence[Annotated[int, Ge(1)]] = (32, 64, 128), hidden: Annotated[int, Ge(1)] = 256,
                 embed_dim: Annotated[int, Ge(1)] = 128, margin: Annotated[float, Ge(0)] = 0.2,
                 negatives: Literal["all", "random", "hardest"] = "all",
                 num_negatives: Annotated[int, Ge(1)] | None = None, mask_duplicates: bool = True,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if text not in ("bow", "ngram", "gru", "lstm"):
            raise ValueError(f"ImageTextMatching: text must be 'bow', 'ngram', 'gru' or 'lstm', got {text!r}")
        if negatives not in ("all", "random", "hardest"):
            raise ValueError(f"ImageTextMatching: negatives must be 'all', 'random' or 'hardest', got {negatives!r}")
        if vocab_size < 4 or in_channels < 1 or not widths or min(widths) < 1 or hidden < 1 or embed_dim < 1:
            raise ValueError("ImageTextMatching: vocab_size >= 4; in_channels, widths, hidden, embed_dim >= 1")
        if margin < 0 or (num_negatives is not None and num_negatives < 1):
            raise ValueError("ImageTextMatching: margin >= 0 and num_negatives >= 1 (or null for all)")
        self.text, self.vocab_size, self.ngram_buckets, self.in_channels = text, vocab_size, ngram_buckets, in_channels
        self.margin, self.negatives, self.num_negatives = float(margin), negatives, num_negatives
        self.mask_duplicates = mask_duplicates
        self.image_features = ConvFeatures(in_channels, widths)
        self.image_mlp = _mlp(widths[-1], hidden, embed_dim)
        self.dropout = nn.Dropout(dropout)
        if text in ("bow", "ngram"):
            slots = vocab_size + (ngram_buckets if text == "ngram" else 0)
            self.bag = nn.EmbeddingBag(slots, hidden, mode="sum")          # = a linear layer on the counts
            self.bag_bias = nn.Parameter(torch.zeros(hidden))
            self.text_out = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, embed_dim))
        else:
            self.embed = nn.Embedding(vocab_size, hidden, padding_idx=PAD)
            self.rnn = (nn.GRU if text == "gru" else nn.LSTM)(hidden, hidden, batch_first=True)
            self.text_out = nn.Linear(hidden, embed_dim)
        self.class_prompts: torch.Tensor | None = None       # (classes, prompts, length) ids, from attach_data

    # ---- encoders ----
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ImageTextMatching: expected images (N, {self.in_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        return self.image_mlp(self.dropout(self.image_features(images)))

    def bag_indices(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened word (and hashed bigram) slots with per-caption weights 1 (0 for specials/padding)."""
        words = ids.clamp(0, self.vocab_size - 1)
        real = words > EOS                                       # the caption's words, not pad/bos/eos
        slots, weights = [words], [real.float()]
        if self.text == "ngram":
            left, right = words[:, :-1], words[:, 1:]
            bigram = self.vocab_size + (left * 1_000_003 + right * 7919) % self.ngram_buckets
            slots.append(bigram)
            weights.append((real[:, :-1] & real[:, 1:]).float())
        return torch.cat(slots, 1), torch.cat(weights, 1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"ImageTextMatching: expected token ids (N, L), got {tuple(ids.shape)} {ids.dtype}")
        ids = ids.long()
        if self.text in ("bow", "ngram"):
            slots, weights = self.bag_indices(ids)
            return self.text_out(self.bag(slots, per_sample_weights=weights) + self.bag_bias)
        states, _ = self.rnn(self.embed(ids))
        last = ((ids != PAD).sum(1) - 1).clamp(min=0)            # the last real token (<eos>)
        return self.text_out(states[torch.arange(len(ids), device=ids.device), last])

    # ---- Model contract ----
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = {"image_embeddings": self.encode_image(batch["inputs"])}
        if batch.get("captions") is not None:
            out["text_embeddings"] = self.encode_text(batch["captions"])
        return out

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "text_embeddings" not in outputs:
            raise ValueError("ImageTextMatching: the batch has no 'captions' to train on")
        exclude = None
        if self.mask_duplicates:
            captions = batch["captions"]
            exclude = (captions[:, None, :] == captions[None, :, :]).all(-1)
        loss = sampled_margin_ranking_loss(outputs["image_embeddings"], outputs["text_embeddings"], self.margin,
                                           self.negatives, self.num_negatives, exclude)
        return {"loss": loss}

    def attach_data(self, dataset) -> None:
        prompts = getattr(dataset, "class_prompts", None)
        if callable(prompts):
            self.class_prompts = prompts()

    def predict(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        image = F.normalize(outputs["image_embeddings"], dim=-1)
        out = {"image_embeddings": image, "features": outputs["image_embeddings"]}
        if "text_embeddings" in outputs:
            out["text_embeddings"] = F.normalize(outputs["text_embeddings"], dim=-1)
        prompts = (batch or {}).get("class_prompts", self.class_prompts)
        if prompts is not None:                        # zero-shot scores, as ALIGN's (cosine to the prompt ensemble)
            out["logits"] = image @ prompt_ensemble(self.encode_text, prompts.to(image.device)).T
        return out

    @classmethod
    def example_config(cls) -> dict:
        return {"vocab_size": 12, "in_channels": 1, "widths": (4, 8), "hidden": 16, "embed_dim": 8,
                "ngram_buckets": 16}

    def example_inputs(self, batch_size: int = 2) -> dict:
        captions = torch.randint(3, self.vocab_size, (batch_size, 7))
        captions[:, 0], captions[:, -2:] = BOS, torch.tensor([EOS, PAD])
        return {"inputs": torch.randn(batch_size, self.in_channels, 16, 16), "captions": captions}


__all__ = ["ConvFeatures", "ImageTextMatching", "sampled_margin_ranking_loss"]
