"""Per-point segmentation: mean IoU from a confusion matrix (unlabelled / padded points ignored)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from panconv.api import Evaluator


class MeanIoU(Evaluator):
    """``miou`` (mean over classes of TP / (TP + FP + FN)), overall point ``accuracy`` and ``iou/<class>``.

    ``process`` takes the model's probabilities ``(B, N, K)`` (or logits; the arg-max is used) and
    ``batch["labels"]`` ``(B, N)``; labels equal to ``ignore_index`` (unlabelled, padding) are skipped.
    A class absent from both the labels and the predictions is left out of the mean.
    Partial results are confusion matrices, so merging workers is summing them.
    """

    def __init__(self, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 ignore_index: int = -1):
        super().__init__()
        self.num_classes, self.class_names, self.ignore_index = num_classes, class_names, ignore_index

    def process(self, batch: dict, outputs) -> None:
        probs = outputs if isinstance(outputs, torch.Tensor) else torch.as_tensor(outputs)
        labels = torch.as_tensor(batch["labels"]).to(probs.device)
        classes = self.num_classes or probs.shape[-1]
        pred = probs.argmax(-1)
        keep = labels != self.ignore_index
        index = labels[keep].long() * classes + pred[keep].long()
        self.results.append(torch.bincount(index, minlength=classes * classes).view(classes, classes).cpu().numpy())

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {"miou": 0.0, "accuracy": 0.0}
        conf = np.sum(results, axis=0).astype(np.float64)
        tp = np.diag(conf)
        denom = conf.sum(0) + conf.sum(1) - tp
        present = denom > 0
        iou = np.where(present, tp / np.maximum(denom, 1), 0.0)
        metrics = {"miou": float(iou[present].mean()) if present.any() else 0.0,
                   "accuracy": float(tp.sum() / max(conf.sum(), 1))}
        names = self.class_names or [str(i) for i in range(len(iou))]
        metrics.update({f"iou/{name}": float(v) for name, v in zip(names, iou)})
        return metrics

    @classmethod
    def example(cls):
        # labels 0 0 1 1 2 -1 | predictions 0 1 1 1 2 0  -> class 0: 1/2, class 1: 2/3, class 2: 1/1
        probs = torch.eye(3)[torch.tensor([[0, 1, 1], [1, 2, 0]])]
        labels = torch.tensor([[0, 0, 1], [1, 2, -1]])
        batches = [({"labels": labels[:1]}, probs[:1]), ({"labels": labels[1:]}, probs[1:])]
        return {}, batches, {"miou": (1 / 2 + 2 / 3 + 1) / 3, "accuracy": 4 / 5, "iou/1": 2 / 3}


__all__ = ["MeanIoU"]
