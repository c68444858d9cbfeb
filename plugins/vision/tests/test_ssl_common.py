"""The shared pieces of issue 20: losses (hand-computed values), SSL blocks, and the representation
evaluators against scikit-learn on the same features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panconv_vision.evaluators.representation import (
    KNN,
    ImageRetrieval,
    LinearProbe,
    average_precision,
    knn_accuracy,
    linear_probe,
    retrieval_map,
    stratified_folds,
)
from panconv_vision.losses import NormalizedSoftmaxLoss, info_nce, margin_ranking_loss, triplet_loss
from panconv_vision.models.ssl import EMATeacher, cosine_momentum, multi_crop, random_patch_mask, rotate4

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _clusters(n=120, d=8, classes=4, spread=1.5, seed=0):
    g = _gen(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g) * spread
    return centres[y] + torch.randn(n, d, generator=g), y


# --------------------------------------------------------------------------- losses

def test_info_nce_is_cross_entropy_on_the_diagonal_by_hand():
    q, k = torch.randn(5, 4, generator=_gen(1)), torch.randn(5, 4, generator=_gen(2))
    t = 0.1
    total = 0.0
    for i in range(5):
        sims = [float(q[i] @ k[j] / (q[i].norm() * k[j].norm())) / t for j in range(5)]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    assert info_nce(q, k, t).item() == pytest.approx(total / 5, rel=1e-5)


def test_info_nce_prefers_aligned_pairs_and_rejects_bad_shapes():
    k = torch.randn(6, 8, generator=_gen(3))
    assert info_nce(k, k) < info_nce(k.roll(1, 0), k)
    with pytest.raises(ValueError, match="same shape"):
        info_nce(k, k[:5])
    with pytest.raises(ValueError, match="temperature"):
        info_nce(k, k, temperature=0.0)


def test_normalized_softmax_is_the_mean_of_both_directions_and_learns_its_temperature():
    a, b = torch.randn(4, 3, generator=_gen(4)), torch.randn(4, 3, generator=_gen(5))
    loss = NormalizedSoftmaxLoss(init_temperature=0.5)
    expected = 0.5 * (info_nce(a, b, 0.5) + info_nce(b, a, 0.5))
    assert loss(a, b).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.temperature.item() == pytest.approx(0.5)
    loss(a, b).backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.abs() > 0
    frozen = NormalizedSoftmaxLoss(0.5, learnable=False)
    assert not list(frozen.parameters()) and "log_temperature" in frozen.state_dict()
    smooth = NormalizedSoftmaxLoss(0.5, label_smoothing=0.1)(a, b)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.5
    target = torch.full((4, 4), 0.1 / 4) + 0.9 * torch.eye(4)      # torch's smoothing: eps/K everywhere
    by_hand = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean())
    assert smooth.item() == pytest.approx(by_hand.item(), rel=1e-6)
    with pytest.raises(ValueError):
        NormalizedSoftmaxLoss(init_temperature=0.0)


def test_margin_ranking_loss_by_hand_sum_and_hardest():
    a, b = torch.randn(3, 4, generator=_gen(6)), torch.randn(3, 4, generator=_gen(7))
    m = 0.2
    s = [[float(F.cosine_similarity(a[i], b[j], dim=0)) for j in range(3)] for i in range(3)]
    total, hard = 0.0, 0.0
    for i in range(3):
        ci = [max(0.0, m - s[i][i] + s[i][j]) for j in range(3) if j != i]     # a_i against wrong b_j
        cj = [max(0.0, m - s[i][i] + s[j][i]) for j in range(3) if j != i]     # b_i against wrong a_j
        total += sum(ci) + sum(cj)
        hard += max(ci) + max(cj)
    assert margin_ranking_loss(a, b, m).item() == pytest.approx(total / 3, rel=1e-5)
    assert margin_ranking_loss(a, b, m, hardest=True).item() == pytest.approx(hard / 3, rel=1e-5)
    # perfectly separated pairs (orthogonal one-hot embeddings) cost nothing below a margin of 1
    eye = torch.eye(3)
    assert margin_ranking_loss(eye, eye, 0.5).item() == 0.0
    assert margin_ranking_loss(eye, eye, 1.5).item() == pytest.approx(2 * 2 * 0.5)


def test_triplet_loss_by_hand():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 3.0], [1.0, 0.5]])
    # euclidean: [1 - 3 + 0.2]_+ = 0 and [0 - 0.5 + 0.2]_+ = 0 -> mean 0; with margin 2.5: (0.5 + 2.0) / 2
    assert triplet_loss(a, p, n).item() == 0.0
    assert triplet_loss(a, p, n, margin=2.5).item() == pytest.approx(1.25)
    a2, p2, n2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    # cosine distances: d(a, p) = 1, d(a, n) = 1 - 1/sqrt(2)
    assert triplet_loss(a2, p2, n2, 0.1, "cosine").item() == pytest.approx(1 - (1 - 2 ** -0.5) + 0.1, rel=1e-6)
    with pytest.raises(ValueError, match="distance"):
        triplet_loss(a2, p2, n2, distance="manhattan")


# --------------------------------------------------------------------------- SSL blocks

def test_ema_teacher_update_is_the_moving_average_and_copies_buffers():
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = EMATeacher(student, momentum=0.9)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = teacher.module[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
    student.train()
    student(torch.randn(8, 3, generator=_gen(8)))           # moves the running statistics
    teacher.update(student)
    assert torch.allclose(teacher.module[0].weight, 0.9 * before + 0.1 * student[0].weight)
    assert torch.equal(teacher.module[1].running_mean, student[1].running_mean)
    teacher.update(student, momentum=0.0)
    assert torch.equal(teacher.module[0].weight, student[0].weight)
    out = teacher(torch.randn(4, 3))
    assert not out.requires_grad
    with pytest.raises(ValueError):
        EMATeacher(student, momentum=1.5)


def test_ema_teacher_without_copy_buffers_keeps_its_own_statistics():
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = EMATeacher(student, momentum=0.9, copy_buffers=False)
    own = teacher.module[1].running_mean.clone()
    student.train()
    student(torch.randn(8, 3, generator=_gen(8)))           # moves the student's running statistics only
    teacher.update(student)
    assert torch.equal(teacher.module[1].running_mean, own)
    assert not torch.equal(teacher.module[1].running_mean, student[1].running_mean)
    teacher.train()
    teacher(torch.randn(8, 3, generator=_gen(9)))           # its own train-mode forward moves its own
    assert not torch.equal(teacher.module[1].running_mean, own)


def test_cosine_momentum_endpoints_and_midpoint():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.99, final=1.0) == pytest.approx(0.995)


def test_random_patch_mask_count_and_seed():
    mask = random_patch_mask(5, (4, 6), 0.75, generator=_gen(9))
    assert mask.shape == (5, 4, 6) and mask.dtype == torch.bool
    assert (mask.flatten(1).sum(1) == 18).all()
    assert torch.equal(mask, random_patch_mask(5, (4, 6), 0.75, generator=_gen(9)))
    assert not torch.equal(mask[0], mask[1])          # a different draw per image
    with pytest.raises(ValueError):
        random_patch_mask(2, 4, 1.5)


def test_rotate4_matches_numpy_rot90_and_labels():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    out, labels = rotate4(x)
    assert out.shape == (8, 1, 3, 3) and labels.tolist() == [0, 1, 2, 3] * 2
    for i in range(2):
        for r in range(4):
            assert np.array_equal(out[4 * i + r, 0].numpy(), np.rot90(x[i, 0].numpy(), r))
    # the official RotNet's 90 degrees: flipud(transpose(img))
    assert np.array_equal(out[1, 0].numpy(), np.flipud(x[0, 0].numpy().T))


def test_multi_crop_shapes_full_crop_identity_and_seed():
    x = torch.randn(3, 2, 8, 8, generator=_gen(10))
    views = multi_crop(x, 2, 3, 8, 4, generator=_gen(11))
    assert [tuple(v.shape) for v in views] == [(3, 2, 8, 8)] * 2 + [(3, 2, 4, 4)] * 3
    again = multi_crop(x, 2, 3, 8, 4, generator=_gen(11))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    full = multi_crop(x, 1, 0, 8, 4, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)[0]
    assert torch.allclose(full, x, atol=1e-5)      # the whole image at its own size is the image


# --------------------------------------------------------------------------- evaluators vs scikit-learn

def test_linear_probe_matches_sklearn_logistic_regression_on_the_same_folds():
    x, y = _clusters(n=150, d=6, classes=3, spread=0.8, seed=1)
    folds = np.zeros(len(y), dtype=int)
    skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    correct = 0
    for f, (tr, te) in enumerate(skf.split(x.numpy(), y.numpy())):
        folds[te] = f
        scaler = StandardScaler().fit(x.numpy()[tr])
        clf = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(scaler.transform(x.numpy()[tr]), y.numpy()[tr])
        correct += int((clf.predict(scaler.transform(x.numpy()[te])) == y.numpy()[te]).sum())
    ours = linear_probe(x, y, C=0.5, fold_ids=torch.from_numpy(folds), tol=1e-10)
    assert ours == pytest.approx(correct / len(y))
    assert 0.5 < ours < 1.0                        # a non-trivial case: the probe is neither perfect nor chance


def test_logistic_regression_solution_matches_sklearn_coefficients():
    from panconv_vision.evaluators.representation import fit_logistic_regression

    x, y = _clusters(n=90, d=4, classes=3, spread=1.0, seed=2)
    w, b = fit_logistic_regression(x, y, 3, C=0.3, tol=1e-10)
    clf = LogisticRegression(C=0.3, max_iter=10000, tol=1e-12).fit(x.double().numpy(), y.numpy())
    ours = torch.softmax(x.double() @ w + b, 1).numpy()
    assert np.allclose(ours, clf.predict_proba(x.double().numpy()), atol=1e-6)


def test_stratified_folds_are_balanced_and_order_independent():
    x, y = _clusters(n=103, d=5, classes=4, seed=3)
    folds = stratified_folds(x, y, 5, seed=0)
    sizes = torch.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for c in range(4):
        per = torch.bincount(folds[y == c], minlength=5)
        assert per.max() - per.min() <= 1
    perm = torch.randperm(103, generator=_gen(4))
    assert torch.equal(stratified_folds(x[perm], y[perm], 5, seed=0), folds[perm])
    assert not torch.equal(stratified_folds(x, y, 5, seed=1), folds)


def _knn_by_hand(x, y, k, t):
    """sklearn's neighbours (cosine metric, the item itself dropped) and DINO's exp(s/T) vote, item by item."""
    nn_ = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x)
    dist, idx = nn_.kneighbors(x)
    correct = 0
    for i in range(len(x)):
        votes = np.zeros(int(y.max()) + 1)
        pairs = [(d, j) for d, j in zip(dist[i], idx[i]) if j != i][:k]
        for d, j in pairs:
            votes[y[j]] += math.exp((1 - d) / t)
        correct += int(votes.argmax() == y[i])
    return correct / len(x)


@pytest.mark.parametrize("k,t", [(1, 0.07), (5, 0.07), (20, 0.5)])
def test_knn_matches_hand_vote_over_sklearn_neighbours(k, t):
    x, y = _clusters(n=200, d=6, classes=5, spread=0.7, seed=5)
    ours = knn_accuracy(x, y, k=k, temperature=t, chunk=64)
    assert ours == pytest.approx(_knn_by_hand(x.double().numpy(), y.numpy(), k, t))
    assert 0.3 < ours < 1.0


def test_retrieval_matches_sklearn_average_precision_and_recall_at_k_by_hand():
    x, y = _clusters(n=80, d=6, classes=4, spread=0.6, seed=6)
    got = retrieval_map(x, y, ks=(1, 5, 10))
    xn = F.normalize(x.double(), dim=1).numpy()
    sim = xn @ xn.T
    aps, hits = [], {1: 0, 5: 0, 10: 0}
    for i in range(len(x)):
        others = np.arange(len(x)) != i
        s, rel = sim[i, others], (y.numpy()[others] == y.numpy()[i])
        aps.append(average_precision_score(rel, s))
        ranked = rel[np.argsort(-s, kind="stable")]
        for k in hits:
            hits[k] += bool(ranked[:k].any())
    assert got["map"] == pytest.approx(np.mean(aps), rel=1e-9)
    for k in hits:
        assert got[f"r{k}"] == pytest.approx(hits[k] / len(x))
    assert 0.2 < got["map"] < 0.95


def test_average_precision_groups_ties_like_sklearn():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1, 0.1]])
    relevant = torch.tensor([[False, True, False, True, True, False]])
    expected = average_precision_score(relevant[0].numpy(), scores[0].numpy())
    assert average_precision(scores, relevant).item() == pytest.approx(expected)


def test_retrieval_with_a_gallery_and_queries_without_relevant_items():
    q, qy = torch.eye(3), torch.tensor([0, 1, 7])                  # label 7 has nothing in the gallery
    g, gy = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.1, 0.0]]), torch.tensor([1, 0])
    got = retrieval_map(q, qy, g, gy, ks=(1,))
    assert got == {"r1": 1.0, "map": 1.0}


def test_evaluators_collect_batches_and_agree_with_the_functions():
    x, y = _clusters(n=60, d=5, classes=3, spread=1.0, seed=7)
    batches = [({"labels": y[i:i + 16]}, {"features": x[i:i + 16]}) for i in range(0, 60, 16)]
    for evaluator, metric, reference in (
            (LinearProbe(folds=3), "probe_accuracy", linear_probe(x, y, folds=3)),
            (KNN(k=5), "knn_accuracy", knn_accuracy(x, y, k=5)),
            (ImageRetrieval(), "map", retrieval_map(x, y)["map"])):
        for batch, out in batches:
            evaluator.process(batch, out)
        assert evaluator.compute()[metric] == pytest.approx(reference)
    maps = torch.randn(4, 2, 3, 3)                                   # feature maps are flattened
    ev = KNN(k=1)
    ev.process({"labels": torch.tensor([0, 0, 1, 1])}, {"features": maps})
    assert ev.results[0][0].shape == (4, 18)
    ev = ImageRetrieval(ks=(1,))
    ev.process({"labels": torch.zeros(4), "relevance_key": torch.tensor([0, 1, 0, 1])},
               {"features": torch.tensor([[1.0, 0], [0, 1], [1, 0.1], [0.1, 1]])})
    assert ev.compute()["r1"] == 1.0
    ev = KNN(k=5, prefix="block2_")
    for batch, out in batches:
        ev.process(batch, out)
    assert ev.compute() == {"block2_knn_accuracy": pytest.approx(knn_accuracy(x, y, k=5))}
    with pytest.raises(ValueError, match="features"):
        KNN().process({"labels": y[:2]}, x[:2])
    with pytest.raises(ValueError):
        LinearProbe(folds=1)
