"""Keypoint localisation scores: PCK (percentage of correct keypoints) at pixel thresholds and the mean error.

``process`` takes ``predict()["keypoints"]`` (or a tensor) ``(B, K, 2)`` and ``batch["keypoints"]`` (same shape,
``(x, y)`` in input pixels); ``pck_<t>px`` is the percentage of keypoints within ``t`` pixels (Euclidean) of the
truth, ``error_px`` the mean distance, ``error_px_<k>`` per keypoint index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import torch
from annotated_types import Gt

from panconv.api import Evaluator

__all__ = ["KeypointPCK"]


class KeypointPCK(Evaluator):
    """PCK at ``thresholds`` pixels and the mean pixel error (see the module docstring)."""

    lower_is_better = ("error_px",)

    def __init__(self, thresholds: Sequence[Annotated[float, Gt(0)]] = (2.0, 4.0)):
        super().__init__()
        self.thresholds = tuple(float(t) for t in thresholds)
        if not self.thresholds or min(self.thresholds) <= 0:
            raise ValueError(f"KeypointPCK: thresholds must be positive pixel distances, got {thresholds}")

    def process(self, batch: dict, outputs: Any) -> None:
        pred = outputs["keypoints"] if isinstance(outputs, dict) else outputs
        truth = batch["keypoints"]
        if tuple(pred.shape) != tuple(truth.shape) or pred.dim() != 3 or pred.shape[-1] != 2:
            raise ValueError(f"KeypointPCK: predicted keypoints {tuple(pred.shape)} and batch['keypoints'] "
                             f"{tuple(truth.shape)} must both be (B, K, 2)")
        self.results.append((pred.detach().float().cpu() - truth.detach().float().cpu()).norm(dim=-1))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {"error_px": float("nan")}
        errors = torch.cat(results)                                  # (N, K)
        out = {f"pck_{t:g}px": 100.0 * float((errors <= t).double().mean()) for t in self.thresholds}
        out["error_px"] = float(errors.mean())
        out.update({f"error_px_{k}": float(errors[:, k].mean()) for k in range(errors.shape[1])})
        return out

    @classmethod
    def example(cls):
        truth = torch.zeros(2, 2, 2)
        pred = torch.tensor([[[1.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 6.0]]])
        batches = [({"keypoints": truth[:1]}, {"keypoints": pred[:1]}), ({"keypoints": truth[1:]}, pred[1:])]
        return {"thresholds": [2.0, 5.0]}, batches, {"pck_2px": 50.0, "pck_5px": 75.0, "error_px": 3.0}
