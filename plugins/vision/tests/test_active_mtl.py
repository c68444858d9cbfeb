"""Active multi-task representation learning via Lasso (Wang et al. ICML 2023): the relevance estimates,
the sampling, the multi-task MNIST tasks, the multi-head model and the tool end to end (tiny)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_vision.datasets import multitask as D
from panconv_vision.models.multitask import MultiTaskNet
from panconv_vision.tools import active_mtl as A

pytestmark = pytest.mark.usefixtures("single_thread")


def _synthetic(seed=0, m=20, d=40, support=(3, 11, 17), noise=0.01):
    rng = np.random.default_rng(seed)
    heads = rng.standard_normal((m, d))
    nu = np.zeros(m)
    nu[list(support)] = rng.uniform(0.5, 1.5, len(support)) * rng.choice([-1, 1], len(support))
    target = heads.T @ nu + noise * rng.standard_normal(d)
    return heads, target, nu


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lasso_recovers_the_relevant_sources(seed):
    heads, target, nu = _synthetic(seed)
    est = A.lasso_relevance(heads, target, alpha_ratio=0.05)
    support = set(np.flatnonzero(nu))
    assert set(np.argsort(-np.abs(est))[:3]) == support
    off = np.abs(np.delete(est, sorted(support)))
    assert off.max() < 0.05 * np.abs(est).max(), off.max()
    np.testing.assert_allclose(est[sorted(support)], nu[sorted(support)], rtol=0.15)


def test_lasso_is_sparser_than_l2_when_heads_outnumber_dimensions():
    """Underdetermined (M > D): the minimum-norm L2 estimate spreads over every source, Lasso stays sparse."""
    heads, target, nu = _synthetic(0, m=60, d=30, support=(5, 40))
    lasso, l2 = A.lasso_relevance(heads, target, alpha_ratio=0.02), A.l2_relevance(heads, target)
    np.testing.assert_allclose(heads.T @ l2, target, atol=1e-8)  # l2 solves heads^T nu = target exactly
    assert (np.abs(lasso) > 1e-3).sum() <= 6 < (np.abs(l2) > 1e-3).sum()
    assert set(np.argsort(-np.abs(lasso))[:2]) == {5, 40}
    p1, p2 = A.sampling_probabilities(lasso, "lasso"), A.sampling_probabilities(l2, "l2")
    assert p1[[5, 40]].sum() > 0.9 > p2[[5, 40]].sum()


def test_sampling_probabilities_follow_nu():
    nu = np.array([0.5, -1.5, 0.0, 2.0])
    np.testing.assert_allclose(A.sampling_probabilities(nu, "lasso"), [0.125, 0.375, 0.0, 0.5])
    np.testing.assert_allclose(A.sampling_probabilities(nu, "l2"), np.array([0.25, 2.25, 0, 4]) / 6.5)
    np.testing.assert_allclose(A.sampling_probabilities(nu, "uniform"), [0.25] * 4)
    np.testing.assert_allclose(A.sampling_probabilities(np.zeros(3), "lasso"), [1 / 3] * 3)
    with pytest.raises(ValueError, match="unknown strategy"):
        A.sampling_probabilities(nu, "l3")


@pytest.mark.parametrize("budget", [0, 1, 7, 1000, 1237])
def test_allocate_follows_the_probabilities(budget):
    probs = A.sampling_probabilities(np.array([0.5, -1.5, 0.0, 2.0, 0.01]), "lasso")
    counts = A.allocate(budget, probs)
    assert counts.sum() == budget and counts.dtype.kind == "i"
    assert np.all(np.abs(counts - budget * probs) < 1)
    assert counts[2] == 0
    with pytest.raises(ValueError):
        A.allocate(10, np.array([0.5, 0.6]))


def test_tasks_are_deterministic_label_maps_are_permutations():
    for name, mapping in D.LABEL_MAPS.items():
        assert sorted(mapping) == list(range(10)), name
    images = torch.rand(6, 28, 28)
    labels = torch.arange(6)
    x1, y1 = D.make_task(images, labels, "rot90+noise/cyclic", seed=3)
    x2, y2 = D.make_task(images, labels, "rot90+noise/cyclic", seed=3)
    torch.testing.assert_close(x1, x2)
    assert y1.tolist() == [1, 2, 3, 4, 5, 6] and x1.shape == (6, 1, 28, 28)
    xr, _ = D.make_task(images, labels, "rot90/identity")
    xi, _ = D.make_task(images, labels, "identity/identity")
    torch.testing.assert_close(xr[:, 0], torch.rot90(xi[:, 0], 1, (-2, -1)))
    xv, _ = D.make_task(images, labels, "invert/identity")
    torch.testing.assert_close(xv[:, 0] * D.MNIST_STD + D.MNIST_MEAN, 1 - images)
    for bad in ("rot45/identity", "rot90/shuffle", "rot90"):
        with pytest.raises(ValueError, match="task"):
            D.parse_task(bad)


def test_dataset_splits_and_metadata(tmp_path):
    kwargs = D.MultiTaskMNIST.example(tmp_path)
    train = D.MultiTaskMNIST(root=tmp_path, split="train", **kwargs)
    assert len(train) == 3 * 2 + 2 and train.metadata == {"num_classes": 10, "num_tasks": 2, "in_channels": 1}
    assert train.tasks.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    test = D.MultiTaskMNIST(root=tmp_path, split="test", **kwargs)
    assert set(test.tasks.tolist()) == {2}
    batch = train.collate([train[i] for i in range(4)])
    model = MultiTaskNet(num_tasks=2)
    assert model(batch).shape == (4, 10)
    with pytest.raises(DataError):
        D.MultiTaskMNIST(root=tmp_path, split="train", **D.MultiTaskMNIST.broken_example(tmp_path))


def test_model_routes_each_sample_to_its_head():
    torch.manual_seed(0)
    model = MultiTaskNet(num_tasks=3, num_classes=4, image_size=8, hidden=6, feature_dim=5)
    x = torch.randn(4, 1, 8, 8)
    task = torch.tensor([0, 2, 3, 1])
    out = model({"inputs": x, "task": task})
    phi = model.features(x)
    for i, t in enumerate(task.tolist()):
        torch.testing.assert_close(out[i], phi[i] @ model.head_weight[t] + model.head_bias[t])
    torch.testing.assert_close(model({"inputs": x}), phi @ model.head_weight[3] + model.head_bias[3])  # the target
    with pytest.raises(ValueError, match="task ids"):
        model({"inputs": x, "task": torch.tensor([0, 4, 0, 0])})
    with pytest.raises(ValueError, match="expected inputs"):
        model({"inputs": torch.randn(2, 1, 9, 9)})


def test_target_head_fit_leaves_the_representation_alone():
    torch.manual_seed(0)
    model = MultiTaskNet(num_tasks=2, num_classes=3, image_size=8, hidden=16, feature_dim=8)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    x = torch.randn(60, 1, 8, 8)
    with torch.no_grad():
        y = (model.features(x) @ torch.randn(8, 3)).argmax(-1)  # labels a linear function of the features
    A.fit_target_head(model, x, y, steps=300, weight_decay=0.0)
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert A.target_accuracy(model, x, y) > 0.9  # the target head recovers a linear rule of the features


def test_cli_tiny_run(tmp_path):
    kwargs = D.MultiTaskMNIST.example(tmp_path)
    args = argparse.Namespace(output=str(tmp_path / "out"), seeds=1, rounds=1, n0=2, budget=4, target_size=4,
                              test_size=4, steps=3, hidden=8, feature_dim=4, file=kwargs["file"],
                              sources="identity/identity,rot90/identity,noise/cyclic", target="rot90+noise/identity")
    assert A.main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["strategy"] for r in res["runs"]} == {"lasso", "l2", "uniform"}
    # equal budget: every strategy collects n0 * M + rounds * budget source samples
    assert {r["total_source_samples"] for r in res["runs"]} == {2 * 3 + 4}
    assert (tmp_path / "out" / "active_mtl.png").stat().st_size > 0
