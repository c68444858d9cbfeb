"""graph.SkeletonGestures: the seeded generator (layout, reproducibility, class signal, speed variation)
and the .npz reader's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_graph.datasets.skeletons import NUM_KEYPOINTS, RIGHT_HAND, SkeletonGestures, node_features


def make(split="train", **kw):
    return SkeletonGestures(**{"root": "/nonexistent", "split": split, "num_classes": 5, "num_frames": 20,
                               "samples_per_class": 6, **kw})


def test_layout_and_metadata():
    ds = make()
    assert NUM_KEYPOINTS == 55
    assert len(ds) == 30 and ds[0]["inputs"].shape == (55, 40)
    assert ds.metadata == {"num_classes": 5, "num_keypoints": 55, "num_frames": 20}
    assert torch.bincount(ds.labels).tolist() == [6] * 5
    assert torch.isfinite(ds.inputs).all() and ds.inputs.abs().max() < 2


def test_node_features_are_trajectories():
    poses = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).reshape(2, 3, 4, 2)  # (N, T, K, 2)
    x = node_features(poses)
    assert x.shape == (2, 4, 6)
    assert x[1, 2].tolist() == [poses[1, t, 2, c].item() for t in range(3) for c in range(2)]


def test_seeded_and_splits_differ():
    assert torch.equal(make().inputs, make().inputs)
    assert not torch.equal(make(seed=1).inputs, make().inputs)
    assert not torch.equal(make("test", eval_samples_per_class=6).inputs[:5], make().inputs[:5])


def test_classes_differ_more_than_samples_of_a_class():
    ds = make(noise=0.0, samples_per_class=10)
    wrist = ds.inputs[:, RIGHT_HAND].reshape(len(ds), -1)  # right-wrist trajectory
    means = torch.stack([wrist[ds.labels == c].mean(0) for c in range(5)])
    within = torch.stack([(wrist[ds.labels == c] - means[c]).norm(dim=1).mean() for c in range(5)]).mean()
    between = torch.cdist(means, means)[~torch.eye(5, dtype=torch.bool)].mean()
    assert between > 2 * within


def test_noise_and_speed_vary_samples_of_one_class():
    ds = make(noise=0.0)
    same = ds.inputs[ds.labels == 0]
    assert (same[0] - same[1]).abs().max() > 1e-3  # speed / scale / position differ even without noise


def test_npz_reader(tmp_path):
    poses = np.random.default_rng(0).normal(size=(4, 20, 55, 2)).astype(np.float32)
    np.savez(tmp_path / "p_train.npz", poses=poses, labels=np.array([0, 1, 2, 3]))
    ds = make(file="p_{split}.npz", root=tmp_path)
    assert len(ds) == 4 and torch.equal(ds.inputs, node_features(poses))
    np.savez(tmp_path / "bad_train.npz", poses=poses, labels=np.array([0, 1, 2, 9]))
    with pytest.raises(DataError, match=r"bad_train\.npz: labels must be integers in 0\.\.4"):
        make(file="bad_{split}.npz", root=tmp_path)
    np.savez(tmp_path / "short_train.npz", poses=poses[:, :5], labels=np.array([0, 1, 2, 3]))
    with pytest.raises(DataError, match="short_train.npz"):
        make(file="short_{split}.npz", root=tmp_path)
    (tmp_path / "junk_train.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk_train.npz"):
        make(file="junk_{split}.npz", root=tmp_path)
    with pytest.raises(DataError, match="no such file"):
        make(file="missing_{split}.npz", root=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make(num_classes=1)
    with pytest.raises(ValueError):
        make(noise=-0.1)
