"""Generic components of the built-in ``core`` plugin."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from ..api import Backbone, Dataset, Evaluator, FeatureInfo, Head, Neck
from ..errors import DataError


class MLP(Backbone):
    """``in_dim`` -> hidden layers with ReLU (``batch_norm``: Linear -> BatchNorm1d -> ReLU); one output feature
    ``(N, hidden[-1])``."""

    metadata_inputs = ("in_dim",)

    def __init__(self, in_dim: Annotated[int, Ge(1)] = 2, hidden: Sequence[Annotated[int, Ge(1)]] = (32, 32),
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if batch_norm else []), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.feature_info = [FeatureInfo(dims[-1], 1, "layers")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.layers(x)]

    @classmethod
    def example_config(cls) -> dict:
        return {"in_dim": 4, "hidden": [8]}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_dim)


class GlobalAvgPool(Neck):
    """Mean over every axis after the channel axis; keeps channels, one output per input."""

    def __init__(self, in_features: list[FeatureInfo], last_only: bool = True):
        super().__init__(in_features)
        self.last_only = last_only
        kept = self.in_features[-1:] if last_only else self.in_features
        self.feature_info = [FeatureInfo(f.channels, f.reduction, f"pool.{f.name}") for f in kept]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        chosen = features[-1:] if self.last_only else features
        return [f.flatten(2).mean(-1) if f.dim() > 2 else f for f in chosen]


class LinearClsHead(Head):
    """Linear layer on the last feature; cross-entropy on ``batch["labels"]``.

    ``label_smoothing`` as in Szegedy et al. (2016); ``batch["labels"]`` may also be soft
    targets of shape ``(N, num_classes)`` (mixup), then soft cross-entropy is used.
    """

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(1)] = 2,
                 label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__(in_features)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(self.in_features[-1].channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        if x.dim() > 2:
            x = x.flatten(2).mean(-1)
        return self.fc(self.dropout(x))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if labels.dim() == 2:  # soft targets
            return {"loss": torch.sum(-labels * F.log_softmax(outputs, dim=-1), dim=-1).mean()}
        return {"loss": F.cross_entropy(outputs, labels, label_smoothing=self.label_smoothing)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(dim=-1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3}

    def example_inputs(self, batch_size: int = 2):
        features = [torch.randn(batch_size, self.in_features[-1].channels)]
        return features, {"labels": torch.randint(self.num_classes, (batch_size,))}


class GaussianBlobs(Dataset):
    """``num_classes`` Gaussian clusters in ``dim`` dimensions, generated from ``seed``.

    The splits draw disjoint samples from the same clusters (train, val, test use seeds
    ``seed``, ``seed+1``, ``seed+2``). With ``file`` set, samples are read from a CSV instead
    (``label,x1,...,xd`` per line) — used to exercise the malformed-file path.
    """

    metadata_keys = ("num_classes", "in_dim")

    def __init__(self, root=None, split: str = "train", num_classes: Annotated[int, Ge(1)] = 3,
                 dim: Annotated[int, Ge(1)] = 2, size: Annotated[int, Ge(1)] = 256,
                 spread: float = 0.6, seed: int = 0, file: str | None = None):
        super().__init__(root, split)
        self.num_classes, self.dim = num_classes, dim
        if file is not None:
            self.x, self.y = self._read_csv(Path(file), dim, num_classes)
            return
        centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)) * 3
        g = torch.Generator().manual_seed(seed + 1 + self.splits.index(split))
        self.y = torch.randint(num_classes, (size,), generator=g)
        self.x = centres[self.y] + spread * torch.randn(size, dim, generator=g)

    @staticmethod
    def _read_csv(path: Path, dim: int, num_classes: int):
        xs, ys = [], []
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(",")
            shown = repr(line) if len(line) <= 80 else repr(line[:77]) + "..."
            try:
                label, values = int(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected 'label,x1,...,x{dim}' with numbers, got {shown}") from None
            if len(values) != dim or not 0 <= label < num_classes:
                raise DataError(f"{path}:{lineno}: expected a label in [0, {num_classes}) and {dim} values, "
                                f"got {shown}")
            if not all(math.isfinite(v) for v in values):
                raise DataError(f"{path}:{lineno}: NaN or inf in the values")
            xs.append(values)
            ys.append(label)
        if not xs:
            raise DataError(f"{path}: no samples")
        return torch.tensor(xs), torch.tensor(ys)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.x[index], "labels": self.y[index]}

    @property
    def metadata(self) -> dict:
        return {"num_classes": self.num_classes, "in_dim": self.dim}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "blobs.csv"
        path.write_text("0,0.1,0.2\n1,1.0,1.1\n2,-1.0,0.5\n")
        return {"file": str(path), "dim": 2, "num_classes": 3}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "broken.csv"
        path.write_text("0,0.1,0.2\n1,abc,1.1\n")
        return {"file": str(path), "dim": 2, "num_classes": 3}


class Accuracy(Evaluator):
    """Top-k accuracy; ``outputs`` are scores or probabilities ``(N, C)``, ``batch["labels"]``."""

    def __init__(self, topk: Sequence[Annotated[int, Ge(1)]] = (1,)):
        super().__init__()
        self.topk = tuple(topk)

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        labels = batch["labels"]
        if labels.dim() == 2:
            labels = labels.argmax(-1)
        k_max = min(max(self.topk), outputs.shape[-1])
        top = outputs.topk(k_max, dim=-1).indices
        hits = top.eq(labels.view(-1, 1))
        self.results.append({"n": int(labels.numel()),
                             **{f"top{k}": int(hits[:, :k].any(-1).sum()) for k in self.topk}})

    def compute_metrics(self, results: list) -> dict[str, float]:
        n = sum(r["n"] for r in results)
        if n == 0:
            return {("accuracy" if k == 1 else f"accuracy@{k}"): 0.0 for k in self.topk}
        return {("accuracy" if k == 1 else f"accuracy@{k}"): sum(r[f"top{k}"] for r in results) / n
                for k in self.topk}

    @classmethod
    def example(cls):
        scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
        labels = torch.tensor([0, 2, 2, 1])
        batches = [({"labels": labels[:2]}, scores[:2]), ({"labels": labels[2:]}, scores[2:])]
        return {"topk": (1, 2)}, batches, {"accuracy": 0.5, "accuracy@2": 1.0}
