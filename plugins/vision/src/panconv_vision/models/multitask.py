"""Multi-task representation learning: a shared representation ``phi`` with one linear head per source task
and a target head ("Improved Active Multi-Task Representation Learning via Lasso", Wang et al. ICML 2023;
"Active Multi-Task Representation Learning", Chen et al. ICML 2022).

The model of both papers: task ``m`` predicts ``w_m^T phi(x)``; the representation ``phi`` is learnt on the
source tasks, the target head ``w_0`` on the few target samples with ``phi`` frozen. The target's relevance
vector ``nu`` solves ``w_0 = W nu`` (``W``: the source heads as columns); ``tools/active_mtl.py`` estimates
it (by Lasso, the L1 estimate of Wang et al., or by least squares, the L2 one of Chen et al.) and samples
source data in proportion to it.

Head ``m < num_tasks`` is source task ``m``; head ``num_tasks`` is the target. ``batch["task"]`` (N,) picks
each sample's head (absent: the target head). The encoder sits under the ``encoder.`` prefix.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from panconv.api import Model


class MultiTaskNet(Model):
    """Shared encoder + ``num_tasks + 1`` linear heads (sources, then the target).

    Args:
        num_tasks: number of source tasks ``M`` (from the data set).
        num_classes: classes of every task (from the data set).
        in_channels, image_size: the input images ``(N, in_channels, image_size, image_size)``.
        encoder: ``"mlp"`` (flatten -> hidden -> ReLU -> ... -> feature_dim -> ReLU) or ``"cnn"`` (two 5x5
            stride-2 convolutions, then a linear layer to ``feature_dim``).
        hidden: width of the hidden layer(s).
        feature_dim: ``K``, the representation's dimension (the heads are ``K x num_classes``).
    """

    metadata_inputs = ("num_classes", "num_tasks", "in_channels")

    def __init__(self, num_tasks: Annotated[int, Ge(1)] = 24, num_classes: Annotated[int, Ge(2)] = 10,
                 in_channels: Annotated[int, Ge(1)] = 1, image_size: Annotated[int, Ge(8)] = 28,
                 encoder: Literal["mlp", "cnn"] = "mlp", hidden: Annotated[int, Ge(1)] = 256,
                 feature_dim: Annotated[int, Ge(1)] = 64):
        super().__init__()
        if min(num_tasks, hidden, feature_dim, in_channels) < 1 or num_classes < 2 or image_size < 8:
            raise ValueError(f"MultiTaskNet: num_tasks, hidden, feature_dim, in_channels >= 1, num_classes >= 2, "
                             f"image_size >= 8; got {num_tasks}, {hidden}, {feature_dim}, {in_channels}, "
                             f"{num_classes}, {image_size}")
        if encoder not in ("mlp", "cnn"):
            raise ValueError(f"MultiTaskNet: encoder must be 'mlp' or 'cnn', got {encoder!r}")
        self.num_tasks, self.num_classes, self.feature_dim = num_tasks, num_classes, feature_dim
        self.in_channels, self.image_size = in_channels, image_size
        if encoder == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden), nn.ReLU(),
                                         nn.Linear(hidden, feature_dim), nn.ReLU())
        else:
            side = ((image_size - 1) // 2 - 1) // 2 + 1  # two k=5, s=2, p=2 convolutions
            self.encoder = nn.Sequential(nn.Conv2d(in_channels, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 5, 2, 2),
                                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * side * side, feature_dim), nn.ReLU())
        # heads: (tasks + target, K, C) and biases (tasks + target, C)
        self.head_weight = nn.Parameter(torch.randn(num_tasks + 1, feature_dim, num_classes) / math.sqrt(feature_dim))
        self.head_bias = nn.Parameter(torch.zeros(num_tasks + 1, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"MultiTaskNet: expected inputs (N, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}")
        return self.encoder(x)

    def forward(self, batch: dict) -> torch.Tensor:
        phi = self.features(batch["inputs"])
        task = batch.get("task")
        if task is None:
            task = torch.full((len(phi),), self.num_tasks, device=phi.device)
        task = torch.as_tensor(task, device=phi.device).long()
        if task.min() < 0 or task.max() > self.num_tasks:
            raise ValueError(f"MultiTaskNet: task ids must be in [0, {self.num_tasks}], got {task.tolist()[:8]}")
        return torch.einsum("nk,nkc->nc", phi, self.head_weight[task]) + self.head_bias[task]

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"])}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(-1)

    def source_heads(self) -> torch.Tensor:
        """The source heads as ``(M, K * C)`` rows, centred over classes (softmax ignores a shared shift)."""
        w = self.head_weight[: self.num_tasks]
        return (w - w.mean(-1, keepdim=True)).reshape(self.num_tasks, -1)

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        return {"inputs": torch.randn(batch_size, self.in_channels, self.image_size, self.image_size, generator=g),
                "labels": torch.arange(batch_size) % self.num_classes,
                "task": torch.arange(batch_size) % (self.num_tasks + 1)}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_tasks": 2, "num_classes": 3, "image_size": 8, "hidden": 8, "feature_dim": 4}
