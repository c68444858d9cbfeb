"""Registered transforms of panconv-vision.

``Mixup`` is a batch transform (``level = "batch"``): the engine applies it to each collated
training batch when a config lists it, e.g.::

    data:
      transforms: [{type: vision.Mixup, splits: [train], alpha: 0.2}]

``num_classes`` comes from the data set's metadata (``metadata_inputs``) unless the config sets it.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval


class Mixup:
    """Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018).

    Mixes a batch with a shuffled copy of itself: ``x = lam*x + (1-lam)*x[perm]`` and the same for
    the one-hot labels (``lam ~ Beta(alpha, alpha)``), optionally label-smoothed. Called on a
    collated batch ``{"inputs": (N, ...), "labels": (N,)}``, it returns a new batch whose ``labels``
    are soft targets ``(N, num_classes)`` (also when the batch is left unmixed: with probability
    ``1 - prob``, or for a single sample). ``seed`` (default: drawn from torch's global generator,
    so a run's seed fixes it) makes it reproducible; ``set_epoch(e)`` reseeds with ``seed + e``.
    """

    level = "batch"
    metadata_inputs = ("num_classes",)

    def __init__(self, num_classes: Annotated[int, Ge(2)], alpha: Annotated[float, Gt(0)] = 0.2,
                 label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 prob: Annotated[float, Interval(ge=0, le=1)] = 1.0,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] | None = None):
        if num_classes < 2:
            raise ValueError(f"Mixup: num_classes must be >= 2, got {num_classes}")
        if alpha <= 0:
            raise ValueError(f"Mixup: alpha must be > 0, got {alpha}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Mixup: label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"Mixup: prob must be in [0, 1], got {prob}")
        self.num_classes, self.alpha, self.label_smoothing, self.prob = num_classes, alpha, label_smoothing, prob
        # no seed: one drawn from torch's global generator, so that a run's seed fixes it too
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)
        self.rng = np.random.default_rng(self.seed + epoch)

    def soft_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() == 2:
            return labels.float()
        off = self.label_smoothing / self.num_classes
        return F.one_hot(labels, self.num_classes).float() * (1 - self.label_smoothing) + off

    def __call__(self, batch: dict) -> dict:
        inputs, labels = batch["inputs"], self.soft_labels(batch["labels"])
        n = inputs.shape[0]
        if n < 2 or torch.rand((), generator=self.generator) >= self.prob:
            return {**batch, "labels": labels}
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(n, generator=self.generator)
        return {**batch, "inputs": lam * inputs + (1 - lam) * inputs[perm],
                "labels": lam * labels + (1 - lam) * labels[perm]}

    def __repr__(self) -> str:
        return (f"Mixup(num_classes={self.num_classes}, alpha={self.alpha}, label_smoothing={self.label_smoothing}, "
                f"prob={self.prob}, seed={self.seed})")
