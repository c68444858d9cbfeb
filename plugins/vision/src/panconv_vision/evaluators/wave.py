"""Relative L2 error of wave-field predictions, per rollout step (``vision.WaveRollout``).

For every sample and rollout step ``s``: ``||pred_s - target_s||_2 / ||target_s||_2`` over the field's
nodes. Reported (means over samples): ``rel_l2_step1`` (one-step prediction), ``rel_l2_final`` (the last
rollout step), ``rel_l2_mean`` (over all steps); with ``batch["baseline"]`` (``vision.WaveFields``
attaches the persistence forecast) the same three for the baseline, suffixed ``_baseline``.
Lower is better.
"""

from __future__ import annotations

from typing import Any

import torch

from panconv.api import Evaluator

__all__ = ["WaveRollout", "relative_l2"]


def relative_l2(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(B, R, ...)`` predictions and targets -> ``(B, R)`` relative L2 errors."""
    if pred.shape != target.shape or pred.dim() < 3:
        raise ValueError(f"relative_l2: expected equal (B, R, ...) shapes, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    diff = (pred.double() - target.double()).flatten(2).norm(dim=-1)
    return diff / target.double().flatten(2).norm(dim=-1).clamp_min(eps)


class WaveRollout(Evaluator):
    """Relative L2 error of rolled-out wave fields (model and persistence baseline)."""

    lower_is_better = Evaluator.lower_is_better + ("rel_l2",)

    def process(self, batch: dict, outputs: Any) -> None:
        target = batch["targets"]
        result = {"model": relative_l2(outputs.detach().cpu(), target.cpu())}
        if "baseline" in batch:
            result["baseline"] = relative_l2(batch["baseline"].cpu(), target.cpu())
        self.results.append(result)

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = {}
        for key, suffix in (("model", ""), ("baseline", "_baseline")):
            parts = [r[key] for r in results if key in r]
            if not parts:
                continue
            err = torch.cat(parts)
            metrics[f"rel_l2_step1{suffix}"] = float(err[:, 0].mean())
            metrics[f"rel_l2_final{suffix}"] = float(err[:, -1].mean())
            metrics[f"rel_l2_mean{suffix}"] = float(err.mean())
        return metrics

    @classmethod
    def example(cls):
        target = torch.ones(2, 2, 2, 2)
        pred = target.clone()
        pred[0, 0] = 0.0      # error 1 at step 1 of sample 0
        pred[1, 1] = 1.5      # error 0.5 at step 2 of sample 1
        batch1 = {"targets": target[:1], "baseline": torch.zeros(1, 2, 2, 2)}
        batch2 = {"targets": target[1:], "baseline": torch.zeros(1, 2, 2, 2)}
        expected = {"rel_l2_step1": 0.5, "rel_l2_final": 0.25, "rel_l2_mean": 0.375, "rel_l2_mean_baseline": 1.0}
        return {}, [(batch1, pred[:1]), (batch2, pred[1:])], expected
