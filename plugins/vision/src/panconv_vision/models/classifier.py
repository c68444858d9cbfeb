"""Image classification as a composition: backbone -> ``PoolNorm`` -> ``core.LinearClsHead``.

``PoolNorm`` is the global average pooling followed by the final LayerNorm that ConvNeXt and
HorNet put before their linear classifier (ConvNeXt Fig. 2 / official ``forward_features``).
``Mixup`` (Zhang et al. 2018) mixes a training batch and turns its labels into soft targets,
which ``core.LinearClsHead`` trains on with soft cross-entropy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import FeatureInfo, Neck


class PoolNorm(Neck):
    """Global average pool of the last feature map, then LayerNorm (eps 1e-6): ``[N, C]``."""

    def __init__(self, in_features: list[FeatureInfo], eps: float = 1e-6):
        super().__init__(in_features)
        last = self.in_features[-1]
        self.norm = nn.LayerNorm(last.channels, eps=eps)
        self.feature_info = [FeatureInfo(last.channels, last.reduction, f"pool_norm.{last.name}")]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.norm(features[-1].mean((-2, -1)))]

    def example_inputs(self, batch_size: int = 2) -> list[torch.Tensor]:
        return [torch.randn(batch_size, f.channels, 4, 4) for f in self.in_features]


class Mixup:
    """Mix a batch with a shuffled copy of itself: ``x = lam*x + (1-lam)*x[perm]`` and the same
    for one-hot labels (``lam ~ Beta(alpha, alpha)``), optionally label-smoothed.

    Call it on a collated batch ``{"inputs": (N, ...), "labels": (N,)}``; it returns a new batch
    whose ``labels`` are soft targets ``(N, num_classes)``. ``seed`` makes it reproducible.
    """

    def __init__(self, num_classes: int, alpha: float = 0.2, label_smoothing: float = 0.0, prob: float = 1.0,
                 seed: int | None = None):
        if alpha <= 0:
            raise ValueError(f"Mixup: alpha must be > 0, got {alpha}")
        self.num_classes, self.alpha, self.label_smoothing, self.prob = num_classes, alpha, label_smoothing, prob
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.rng = np.random.default_rng(seed)

    def soft_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() == 2:
            return labels.float()
        off = self.label_smoothing / self.num_classes
        return F.one_hot(labels, self.num_classes).float() * (1 - self.label_smoothing) + off

    def __call__(self, batch: dict) -> dict:
        inputs, labels = batch["inputs"], self.soft_labels(batch["labels"])
        n = inputs.shape[0]
        if torch.rand((), generator=self.generator) >= self.prob or n < 2:
            return {**batch, "labels": labels}
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(n, generator=self.generator)
        return {**batch, "inputs": lam * inputs + (1 - lam) * inputs[perm],
                "labels": lam * labels + (1 - lam) * labels[perm]}
