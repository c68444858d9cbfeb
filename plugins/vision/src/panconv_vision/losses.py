"""Contrastive and metric-learning losses shared by the representation-learning systems (issue 20).

All functions take batched embeddings ``(B, D)`` and return a scalar (mean over the batch):

- :func:`info_nce` — InfoNCE (van den Oord et al. 2018; the MoCo/SimCLR form): cosine logits between
  every query and every key divided by a temperature, cross-entropy with the positive on the diagonal.
- :class:`NormalizedSoftmaxLoss` — ALIGN's loss (Jia et al. 2021, Sec. 4): the same logits with a
  *learnable* temperature, cross-entropy in both directions (image -> text and text -> image),
  averaged, with optional label smoothing.
- :func:`margin_ranking_loss` — bidirectional hinge over in-batch negatives (Kiros et al. 2014; the
  2015 image-text matching losses), or over the hardest negative only (VSE++, Faghri et al. 2018).
- :func:`triplet_loss` — hinge on ``d(a, p) - d(a, n) + margin`` (Euclidean or cosine distance).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import nn

__all__ = ["NormalizedSoftmaxLoss", "cosine_logits", "info_nce", "margin_ranking_loss", "triplet_loss"]


def _pair(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{name}: expected two (B, D) embeddings of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def cosine_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` cosine similarities: ``[i, j] = cos(a_i, b_j)``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE: ``mean_i -log softmax_j(cos(q_i, k_j) / T)[i]`` (positive pairs on the diagonal)."""
    _pair("info_nce", query, keys)
    if not temperature > 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
    logits = cosine_logits(query, keys) / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


class NormalizedSoftmaxLoss(nn.Module):
    """ALIGN's normalised-softmax loss with a learnable temperature (Jia et al. 2021, Eq. 1-2).

    ``forward(a, b)``: logits ``cos(a_i, b_j) / T``; the loss is the mean of the cross-entropies of the
    rows (a -> b) and of the columns (b -> a), the positive on the diagonal. ``T`` is stored as its log
    (``log_temperature``) so it stays positive while it learns; ``learnable=False`` keeps it a buffer.
    ``label_smoothing`` as in ``torch.nn.functional.cross_entropy`` (ALIGN uses 0.1 for its
    ImageNet fine-tuning, not for pre-training).
    """

    def __init__(self, init_temperature: Annotated[float, Gt(0)] = 1.0, learnable: bool = True,
                 label_smoothing: Annotated[float, Ge(0)] = 0.0):
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"NormalizedSoftmaxLoss: init_temperature must be > 0, got {init_temperature}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"NormalizedSoftmaxLoss: label_smoothing must be in [0, 1), got {label_smoothing}")
        log_t = torch.tensor(float(init_temperature)).log()
        if learnable:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.label_smoothing = float(label_smoothing)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _pair("NormalizedSoftmaxLoss", a, b)
        logits = cosine_logits(a, b) / self.temperature
        target = torch.arange(len(a), device=a.device)
        return 0.5 * (F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
                      + F.cross_entropy(logits.T, target, label_smoothing=self.label_smoothing))


def margin_ranking_loss(a: torch.Tensor, b: torch.Tensor, margin: float = 0.2, hardest: bool = False) -> torch.Tensor:
    """Bidirectional hinge over in-batch negatives on cosine similarity ``s``.

    ``sum_{j != i} [m - s(a_i, b_i) + s(a_i, b_j)]_+ + [m - s(a_i, b_i) + s(a_j, b_i)]_+``, averaged
    over ``i``; ``hardest=True`` keeps only the largest term of each sum (VSE++'s max of hinges).
    """
    _pair("margin_ranking_loss", a, b)
    if margin < 0:
        raise ValueError(f"margin_ranking_loss: margin must be >= 0, got {margin}")
    s = cosine_logits(a, b)
    positive = s.diagonal()
    off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    cost_b = (margin - positive[:, None] + s).clamp(min=0) * off      # query a_i, negatives b_j
    cost_a = (margin - positive[None, :] + s).clamp(min=0) * off      # query b_i (column i), negatives a_j
    if hardest:
        return cost_b.max(1).values.mean() + cost_a.max(0).values.mean()
    return cost_b.sum(1).mean() + cost_a.sum(0).mean()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.2,
                 distance: Literal["euclidean", "cosine"] = "euclidean") -> torch.Tensor:
    """``mean [d(a, p) - d(a, n) + margin]_+`` with ``d`` the Euclidean distance or ``1 - cos``."""
    _pair("triplet_loss", anchor, positive)
    _pair("triplet_loss", anchor, negative)
    if margin < 0:
        raise ValueError(f"triplet_loss: margin must be >= 0, got {margin}")
    if distance == "euclidean":
        d_pos, d_neg = (anchor - positive).norm(dim=-1), (anchor - negative).norm(dim=-1)
    elif distance == "cosine":
        d_pos = 1 - F.cosine_similarity(anchor, positive, dim=-1)
        d_neg = 1 - F.cosine_similarity(anchor, negative, dim=-1)
    else:
        raise ValueError(f"triplet_loss: distance must be 'euclidean' or 'cosine', got {distance!r}")
    return (d_pos - d_neg + margin).clamp(min=0).mean()
