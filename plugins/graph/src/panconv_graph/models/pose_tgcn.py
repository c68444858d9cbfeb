"""Pose-TGCN and Pose-GRU (Li et al., "Word-level Deep Sign Language Recognition from Video: A New
Large-scale Dataset and Methods Comparison", WACV 2020; the WLASL code, ``code/TGCN/tgcn_model.py``).

**Pose-TGCN.** A sign is a graph of ``K`` keypoints whose node features are each keypoint's
whole trajectory (``2T`` values: ``x_0, y_0, ..., x_{T-1}, y_{T-1}``), so one graph convolution
mixes space (over keypoints) and time (over the trajectory features) at once.

* graph convolution with a learnable adjacency: ``Y = A (X W) + b``, ``A`` a free ``K x K`` matrix
  (``GraphConvolution_att``), ``W``, ``A`` and ``b`` initialised ``U(-1/sqrt(F_out), 1/sqrt(F_out))``;
* input layer: graph convolution ``2T -> hidden``, BatchNorm over the ``K * hidden`` features,
  tanh, dropout;
* ``num_stages`` residual blocks: ``x + drop(tanh(BN(gc2(drop(tanh(BN(gc1(x))))))))``;
* the mean over keypoints, then a linear classifier; cross-entropy. ``num_classes`` defaults to 100
  (WLASL100) and is filled from the data set when a config leaves it unset.

The official configuration (``configs/asl*.ini``): 55 keypoints (13 upper-body + 2 x 21 hand),
50 frames, hidden 64, 20 blocks, dropout 0.3; registered as ``graph.PoseTGCN_wlasl``.

**Dense, not sparse.** Each layer's ``A`` is a dense learnable matrix over all 55 x 55 keypoint
pairs (no skeleton prior: every entry is a parameter and none stays zero), so the plugin's sparse
kernels (``graph.spmm_sym``: a fixed, sparse, symmetric matrix) do not apply: a 55 x 55 dense
product is one small GEMM, and a sparse layout would only add index overhead and lose the gradient
on the entries that are zero at a given step.

**Pose-GRU** (the paper's pose baseline): the ``K x 2`` coordinates of each frame as one vector,
a stacked GRU (2 layers, 64 hidden by default) over the frames, the last hidden state into a linear
classifier.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Model


class LearnableAdjacencyGC(nn.Module):
    """``Y = A (X W) + b`` with a learnable dense ``A`` (``num_nodes x num_nodes``)."""

    def __init__(self, in_features: int, out_features: int, num_nodes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.adjacency = nn.Parameter(torch.empty(num_nodes, num_nodes))
        self.bias = nn.Parameter(torch.empty(out_features))
        stdv = 1.0 / math.sqrt(out_features)
        for p in (self.weight, self.adjacency, self.bias):
            nn.init.uniform_(p, -stdv, stdv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.adjacency, torch.matmul(x, self.weight)) + self.bias


class _NodeBN(nn.BatchNorm1d):
    """BatchNorm1d over the flattened ``(nodes x features)`` of ``(B, N, F)`` (as the official code)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, f = x.shape
        return super().forward(x.reshape(b, n * f)).reshape(b, n, f)


class GCBlock(nn.Module):
    """Residual block: two learnable-adjacency graph convolutions, each with BN, tanh and dropout."""

    def __init__(self, features: int, num_nodes: int, dropout: float, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.gc1, self.bn1 = LearnableAdjacencyGC(features, features, num_nodes), _NodeBN(num_nodes * features)
        self.gc2, self.bn2 = LearnableAdjacencyGC(features, features, num_nodes), _NodeBN(num_nodes * features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(torch.tanh(self.bn1(self.gc1(x))))
        y = self.dropout(torch.tanh(self.bn2(self.gc2(y))))
        return x + y if self.residual else y


class _PoseClassifier(Model):
    """What Pose-TGCN and Pose-GRU share: batches ``{"inputs": (B, K, 2T), "labels": (B,)}``,
    cross-entropy, logits as predictions (``Accuracy`` ranks them)."""

    metadata_inputs = ("num_classes", "num_keypoints", "num_frames")

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"])}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs

    def _check_inputs(self, x: torch.Tensor) -> None:
        expected = (self.num_keypoints, 2 * self.num_frames)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{type(self).__name__}: expected inputs (B, {expected[0]}, {expected[1]}) (keypoints, "
                             f"2 x frames), got {tuple(x.shape)}")

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        return {"inputs": torch.randn(batch_size, self.num_keypoints, 2 * self.num_frames, generator=g),
                "labels": torch.randint(0, self.num_classes, (batch_size,), generator=g)}


def _validate(name: str, **values) -> None:
    for key, (value, low) in values.items():
        if value < low:
            raise ValueError(f"{name}: {key} must be >= {low}, got {value}")


class PoseTGCN(_PoseClassifier):
    """Pose-TGCN (``GCN_muti_att`` of the WLASL code); ``graph.PoseTGCN_wlasl`` is the official size."""

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 100, num_keypoints: Annotated[int, Ge(1)] = 55,
                 num_frames: Annotated[int, Ge(1)] = 50, hidden: Annotated[int, Ge(1)] = 64,
                 num_stages: Annotated[int, Ge(0)] = 20, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.3,
                 residual: bool = True):
        super().__init__()
        _validate("PoseTGCN", num_classes=(num_classes, 2), num_keypoints=(num_keypoints, 1),
                  num_frames=(num_frames, 1), hidden=(hidden, 1), num_stages=(num_stages, 0))
        if not 0 <= dropout < 1:
            raise ValueError(f"PoseTGCN: dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.num_keypoints, self.num_frames = int(num_classes), int(num_keypoints), int(num_frames)
        self.gc1 = LearnableAdjacencyGC(2 * self.num_frames, hidden, self.num_keypoints)
        self.bn1 = _NodeBN(self.num_keypoints * hidden)
        self.blocks = nn.ModuleList(GCBlock(hidden, self.num_keypoints, dropout, residual) for _ in range(num_stages))
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(hidden, self.num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        x = batch["inputs"]
        self._check_inputs(x)
        y = self.dropout(torch.tanh(self.bn1(self.gc1(x))))
        for block in self.blocks:
            y = block(y)
        return self.fc_out(y.mean(1))

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "num_keypoints": 5, "num_frames": 4, "hidden": 8, "num_stages": 2}


class PoseGRU(_PoseClassifier):
    """Pose-GRU: a stacked GRU over the frames' flattened keypoint coordinates."""

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 100, num_keypoints: Annotated[int, Ge(1)] = 55,
                 num_frames: Annotated[int, Ge(1)] = 50, hidden: Annotated[int, Ge(1)] = 64,
                 num_layers: Annotated[int, Ge(1)] = 2, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        _validate("PoseGRU", num_classes=(num_classes, 2), num_keypoints=(num_keypoints, 1),
                  num_frames=(num_frames, 1), hidden=(hidden, 1), num_layers=(num_layers, 1))
        if not 0 <= dropout < 1:
            raise ValueError(f"PoseGRU: dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.num_keypoints, self.num_frames = int(num_classes), int(num_keypoints), int(num_frames)
        self.gru = nn.GRU(2 * self.num_keypoints, hidden, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.fc_out = nn.Linear(hidden, self.num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        x = batch["inputs"]
        self._check_inputs(x)
        b = x.shape[0]
        frames = x.reshape(b, self.num_keypoints, self.num_frames, 2).permute(0, 2, 1, 3)
        out, _ = self.gru(frames.reshape(b, self.num_frames, 2 * self.num_keypoints))
        return self.fc_out(out[:, -1])

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "num_keypoints": 5, "num_frames": 4, "hidden": 8}
