"""Exact AUC and accuracy over every predicted next answer (the metric of the DKT, DKVMN, SAKT and CAKT papers).

``process`` keeps the probabilities and targets of a batch's real predictions (its partial result);
``compute_metrics`` concatenates the partial results of every batch (and, under DDP, of every rank) and
computes the AUC exactly, from ranks (the Mann-Whitney statistic; tied scores get their average rank,
so a tie counts 1/2 as ``sklearn.metrics.roc_auc_score`` does), not from a binned ROC curve. The result
does not depend on how the predictions were split into batches or ranks.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval

from panconv.api import Evaluator


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing the average of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def exact_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve: ``P(score of a positive > score of a negative)`` + ``P(tie) / 2``;
    NaN when one class is absent."""
    targets = np.asarray(targets).astype(bool)
    n_pos = int(targets.sum())
    n_neg = len(targets) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[targets].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class KTMetrics(Evaluator):
    """``auc`` (exact) and ``accuracy`` (probability >= ``threshold`` counts as "correct") over all
    predicted next answers; ``outputs`` is a model's ``predict``: ``{"probs", "targets", "mask"}``."""

    def __init__(self, threshold: Annotated[float, Interval(ge=0, le=1)] = 0.5):
        super().__init__()
        if not 0 <= threshold <= 1:
            raise ValueError(f"KTMetrics: threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)

    def process(self, batch: dict, outputs: dict[str, Any]) -> None:
        probs = outputs["probs"]
        targets = outputs["targets"] if "targets" in outputs else batch["responses"][:, 1:]
        mask = outputs["mask"] if "mask" in outputs else batch["mask"][:, 1:]
        self.results.append({"probs": torch.as_tensor(probs)[mask].detach().float().cpu().numpy(),
                             "targets": torch.as_tensor(targets)[mask].detach().cpu().numpy().astype(np.int8)})

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {"auc": float("nan"), "accuracy": float("nan")}
        probs = np.concatenate([np.asarray(r["probs"], dtype=np.float64) for r in results])
        targets = np.concatenate([np.asarray(r["targets"]) for r in results]).astype(bool)
        if not len(probs):
            return {"auc": float("nan"), "accuracy": float("nan")}
        accuracy = float(((probs >= self.threshold) == targets).mean())
        return {"auc": exact_auc(probs, targets), "accuracy": accuracy}

    @classmethod
    def example(cls):
        """Scores 0.1/0.4 for the wrong answers, 0.35/0.8/0.4 for the right ones: of the 6 (positive,
        negative) pairs 4 are ordered, 1 inverted (0.35 < 0.4) and 1 tied (0.4 = 0.4): AUC = 4.5 / 6."""
        def part(probs, targets, valid):
            batch = {"responses": torch.tensor([[0, *targets]]), "mask": torch.tensor([[True, *valid]])}
            return batch, {"probs": torch.tensor([probs]), "targets": torch.tensor([targets]),
                           "mask": torch.tensor([valid])}

        batches = [part([0.1, 0.35, 0.9], [0, 1, 1], [True, True, False]),
                   part([0.8, 0.4, 0.0], [1, 0, 0], [True, True, False]),
                   part([0.4, 0.5, 0.5], [1, 0, 0], [True, False, False])]
        # predictions: (0.1,0) (0.35,1) (0.8,1) (0.4,0) (0.4,1); accuracy at 0.5: 0.1->0 ok, 0.35->0 wrong,
        # 0.8->1 ok, 0.4->0 ok, 0.4->0 wrong: 3/5
        return {}, batches, {"auc": 4.5 / 6, "accuracy": 3 / 5}
