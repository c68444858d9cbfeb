"""Zero-shot classification accuracy: top-k accuracy of class scores carried in a dict prediction.

Contrastive image-text models (``vision.ALIGN``) predict a dict (embeddings for retrieval, and the
zero-shot class scores under ``logits``: cosine of the image with each class's prompt-ensemble
embedding); the core's ``Accuracy`` reads a bare score tensor. ``ZeroShotAccuracy(key="logits")``
reads ``outputs[key]`` ``(N, C)`` against ``batch["labels"]`` and reports ``zero_shot_accuracy``
(and ``zero_shot_accuracy@k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import torch
from annotated_types import Ge

from panconv.api import Evaluator


class ZeroShotAccuracy(Evaluator):
    """Top-k accuracy of ``outputs[key]`` (class scores ``(N, C)``) against ``batch["labels"]``."""

    def __init__(self, key: str = "logits", topk: Sequence[Annotated[int, Ge(1)]] = (1,)):
        super().__init__()
        if not topk or any(int(k) < 1 for k in topk):
            raise ValueError(f"ZeroShotAccuracy: topk must be a non-empty list of integers >= 1, got {topk}")
        self.key, self.topk = key, tuple(int(k) for k in topk)

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or self.key not in outputs:
            raise ValueError(f"ZeroShotAccuracy: predict must return a dict with '{self.key}' (class scores); got "
                             f"{sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__} (does the "
                             f"model have the data set's class prompts?)")
        scores, labels = outputs[self.key].detach().cpu(), batch["labels"].detach().cpu()
        if scores.dim() != 2 or scores.shape[0] != labels.shape[0]:
            raise ValueError(f"ZeroShotAccuracy: expected scores (N, C) for {labels.shape[0]} labels, got "
                             f"{tuple(scores.shape)}")
        top = scores.topk(min(max(self.topk), scores.shape[1]), dim=1).indices
        hits = top.eq(labels.view(-1, 1))
        self.results.append({"n": int(labels.numel()), **{k: int(hits[:, :k].any(1).sum()) for k in self.topk}})

    def compute_metrics(self, results: list) -> dict[str, float]:
        n = sum(r["n"] for r in results)
        names = {k: "zero_shot_accuracy" if k == 1 else f"zero_shot_accuracy@{k}" for k in self.topk}
        return {names[k]: (sum(r[k] for r in results) / n if n else 0.0) for k in self.topk}

    @classmethod
    def example(cls):
        scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
        labels = torch.tensor([0, 2, 2, 1])
        batches = [({"labels": labels[:2]}, {"logits": scores[:2]}), ({"labels": labels[2:]}, {"logits": scores[2:]})]
        return {"topk": (1, 2)}, batches, {"zero_shot_accuracy": 0.5, "zero_shot_accuracy@2": 1.0}


__all__ = ["ZeroShotAccuracy"]
