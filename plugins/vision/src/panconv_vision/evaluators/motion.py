"""Motion of generated (or real) clips: the intensity centre of mass of each frame, the displacement of the last
frame from the first, and ``vision.MotionDirection``, how well clips follow one of ``classes`` motion directions
(LAMP's motion transfer on Moving-MNIST, issue 19)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from annotated_types import Ge

from panconv.api import Evaluator

__all__ = ["MotionDirection", "centre_of_mass", "direction_vector", "displacement"]


def centre_of_mass(frames: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre ``(..., 2)`` = (row, column) of ``(..., C, H, W)`` frames (negative values,
    below the background, count as zero)."""
    p = frames.clamp(min=0).sum(-3)
    h, w = p.shape[-2:]
    rows = torch.arange(h, dtype=p.dtype, device=p.device)
    cols = torch.arange(w, dtype=p.dtype, device=p.device)
    mass = p.sum((-2, -1)).clamp(min=1e-8)
    return torch.stack([(p.sum(-1) * rows).sum(-1) / mass, (p.sum(-2) * cols).sum(-1) / mass], -1)


def displacement(clips: torch.Tensor) -> torch.Tensor:
    """The centre-of-mass displacement ``(B, 2)`` = (dy, dx) of the last frame from the first of ``(B, F, C, H, W)``."""
    com = centre_of_mass(clips)
    return com[:, -1] - com[:, 0]


def direction_vector(direction: int, classes: int = 8) -> torch.Tensor:
    """The unit (dy, dx) of direction class ``direction`` (vision.MovingMNIST: k * 45 degrees counter-clockwise
    from "right", image rows growing downwards)."""
    angle = direction * 2 * math.pi / classes
    return torch.tensor([-math.sin(angle), math.cos(angle)], dtype=torch.float64)


class MotionDirection(Evaluator):
    """How well generated clips follow a motion direction: from the ``displacement`` (dy, dx) the model's predict
    gives per clip, ``motion_cos``: the mean cosine between the displacement and ``direction``'s unit vector;
    ``motion_acc``: the fraction of clips whose displacement is nearest (in angle) to ``direction`` among the
    ``classes`` directions; ``motion_along``: the mean displacement along ``direction`` (pixels)."""

    def __init__(self, direction: Annotated[int, Ge(0)] = 0, classes: Annotated[int, Ge(2)] = 8,
                 key: str = "displacement"):
        super().__init__()
        if direction >= classes:
            raise ValueError(f"direction must be < classes ({classes}), got {direction}")
        self.direction, self.classes, self.key = direction, classes, key

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or self.key not in outputs:
            raise ValueError(f"MotionDirection: the model's predict() must return {self.key!r}: (B, 2) (dy, dx)")
        d = torch.as_tensor(outputs[self.key]).detach().double().cpu().reshape(-1, 2)
        self.results.append(d)

    def compute_metrics(self, results: list) -> dict[str, float]:
        d = torch.cat(results) if results else torch.zeros(0, 2, dtype=torch.float64)
        if len(d) == 0:
            return {"motion_cos": float("nan"), "motion_acc": float("nan"), "motion_along": float("nan")}
        target = direction_vector(self.direction, self.classes)
        along = d @ target
        cos = along / d.norm(dim=1).clamp(min=1e-12)
        angle = torch.atan2(-d[:, 0], d[:, 1])  # counter-clockwise from "right"
        nearest = torch.round(angle / (2 * math.pi / self.classes)).long() % self.classes
        return {"motion_cos": float(cos.mean()), "motion_acc": float((nearest == self.direction).double().mean()),
                "motion_along": float(along.mean())}

    @classmethod
    def example(cls):
        # direction 0 ("right"): (0, 2) exactly right; (-1, 1) up-right (cos 1/sqrt 2, nearest class 1); (0, -1)
        batches = [({}, {"displacement": torch.tensor([[0.0, 2.0], [-1.0, 1.0]])}),
                   ({}, {"displacement": torch.tensor([[0.0, -1.0]])})]
        return ({"direction": 0}, batches,
                {"motion_cos": (1 + 1 / math.sqrt(2) - 1) / 3, "motion_acc": 1 / 3, "motion_along": 2 / 3})
