"""Evaluators of learned representations: linear probe, weighted k-NN, retrieval (R@K, mAP).

The model's ``predict`` returns a dict holding the features, ``{"features": (B, D)}`` (the key is the
evaluator's ``key`` argument; maps ``(B, C, H, W)`` are flattened), and the labels come from
``batch["labels"]``. Everything is computed once over the whole evaluated split, after ``process`` has
seen every batch; the result does not depend on the order of the batches (the DDP merge contract).
Metrics are fractions in [0, 1].

- :func:`linear_probe` / :class:`LinearProbe` — k-fold multinomial logistic regression on the split's
  features (standardised on each training fold), the objective of scikit-learn's
  ``LogisticRegression(C=C)`` (``0.5 ||W||^2 + C sum_i CE_i``, bias not penalised) solved by L-BFGS in
  float64; ``probe_accuracy`` pools the held-out predictions of all folds.
- :func:`knn_accuracy` / :class:`KNN` — the weighted k-NN of Wu et al. 2018 (InstDisc) / DINO: cosine
  similarity, the ``k`` nearest other items vote for their class with weight ``exp(s / T)``;
  leave-one-out over the split (or a separate gallery).
- :func:`retrieval_map` / :class:`ImageRetrieval` — every item queries the others (leave-one-out) by
  cosine similarity; relevant = same label. ``R@K``: fraction of queries with a relevant item among
  the first ``K`` (a tie with an irrelevant item counts against); ``map``: mean over queries of the
  average precision of the whole ranking, tied scores grouped as ``sklearn.metrics.average_precision_score``
  does. Queries without any relevant item are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval

from panconv.api import Evaluator

from .retrieval import retrieval_ranks

__all__ = ["ImageRetrieval", "KNN", "LinearProbe", "RotationAccuracy", "average_precision", "knn_accuracy",
           "linear_probe", "retrieval_map", "stratified_folds"]


# --------------------------------------------------------------------------- functions

def _check_xy(name: str, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = torch.as_tensor(features), torch.as_tensor(labels).reshape(-1).long()
    if features.dim() < 2:
        raise ValueError(f"{name}: features must be (N, D), got {tuple(features.shape)}")
    features = features.reshape(len(features), -1)
    if len(features) != len(labels):
        raise ValueError(f"{name}: {len(features)} feature rows for {len(labels)} labels")
    return features, labels


def stratified_folds(features: torch.Tensor, labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """Fold index of every item: within each class, items in a pseudo-random order (a seeded random
    projection of their features, so the assignment does not depend on the order of the items) are
    dealt to the folds in turn, continuing across classes; folds differ in size by at most one."""
    features, labels = _check_xy("stratified_folds", features, labels)
    g = torch.Generator().manual_seed(seed)
    key = features.double() @ torch.randn(features.shape[1], generator=g, dtype=torch.float64)
    order = torch.from_numpy(np.lexsort((key.numpy(), labels.numpy())))  # by class, then key
    fold = torch.empty(len(labels), dtype=torch.long)
    fold[order] = torch.arange(len(labels)) % folds
    return fold


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float = 1.0,
                            max_iter: int = 500, tol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, ``argmin 0.5 ||W||^2 + C sum_i CE(x_i W + b, y_i)`` (float64 L-BFGS).

    Stops when the largest gradient entry of the objective divided by ``C n`` is below ``tol``.
    """
    x = x.double()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    n = len(x)

    def closure():
        opt.zero_grad()
        # the objective divided by C n (same minimiser, better scaled)
        loss = F.cross_entropy(x @ w + b, y, reduction="mean") + 0.5 / (C * n) * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def linear_probe(features: torch.Tensor, labels: torch.Tensor, folds: int = 5, C: float = 1.0, seed: int = 0,
                 standardize: bool = True, fold_ids: torch.Tensor | None = None, max_iter: int = 500,
                 tol: float = 1e-5) -> float:
    """k-fold logistic-regression accuracy of ``labels`` from ``features`` (held-out predictions pooled).

    ``fold_ids`` (one fold index per item) overrides the folds of :func:`stratified_folds`.
    """
    features, labels = _check_xy("linear_probe", features, labels)
    if fold_ids is None:
        if folds < 2:
            raise ValueError(f"linear_probe: folds must be >= 2, got {folds}")
        fold_ids = stratified_folds(features, labels, folds, seed)
    fold_ids = torch.as_tensor(fold_ids).reshape(-1).long()
    x = features.double()
    correct = 0
    for f in fold_ids.unique().tolist():
        test = fold_ids == f
        xtr, ytr, xte, yte = x[~test], labels[~test], x[test], labels[test]
        if len(ytr) == 0:
            raise ValueError("linear_probe: a fold leaves no training items")
        if standardize:
            mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
            std = torch.where(std > 0, std, torch.ones_like(std))
            xtr, xte = (xtr - mean) / std, (xte - mean) / std
        classes = ytr.unique()                                  # fit on the classes the fold has seen
        if len(classes) == 1:
            correct += int((yte == classes[0]).sum())
            continue
        w, b = fit_logistic_regression(xtr, torch.searchsorted(classes, ytr), len(classes), C, max_iter, tol)
        correct += int((classes[(xte @ w + b).argmax(1)] == yte).sum())
    return correct / len(labels)


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 20, temperature: float = 0.07,
                 gallery: torch.Tensor | None = None, gallery_labels: torch.Tensor | None = None,
                 chunk: int = 1024) -> float:
    """Weighted k-NN accuracy (cosine, votes ``exp(s / T)``); leave-one-out when no gallery is given.

    Ties in the vote go to the smallest class index.
    """
    features, labels = _check_xy("knn_accuracy", features, labels)
    loo = gallery is None
    if loo:
        gallery, gallery_labels = features, labels
    else:
        gallery, gallery_labels = _check_xy("knn_accuracy", gallery, gallery_labels)
    q, g = F.normalize(features.float(), dim=1), F.normalize(gallery.float(), dim=1)
    n_classes = int(max(labels.max(), gallery_labels.max())) + 1
    k = min(k, len(g) - 1 if loo else len(g))
    if k < 1:
        raise ValueError("knn_accuracy: needs at least one neighbour")
    correct = 0
    for start in range(0, len(q), chunk):
        sim = q[start:start + chunk] @ g.T
        if loo:
            rows = torch.arange(len(sim))
            sim[rows, rows + start] = float("-inf")
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), n_classes).scatter_add_(1, gallery_labels[idx], (top / temperature).exp())
        correct += int((votes.argmax(1) == labels[start:start + chunk]).sum())
    return correct / len(labels)


def average_precision(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Average precision of each row's ranking ``(Q, N)`` (tied scores form one step, as scikit-learn).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order.
    """
    order = scores.argsort(1, descending=True)
    s, rel = scores.gather(1, order).double(), relevant.gather(1, order).double()
    tp = rel.cumsum(1)
    count = torch.arange(1, s.shape[1] + 1, dtype=torch.float64).expand_as(s)
    group_end = torch.ones_like(s, dtype=torch.bool)
    group_end[:, :-1] = s[:, :-1] != s[:, 1:]
    tp_end = torch.where(group_end, tp, torch.zeros_like(tp))
    prev = torch.zeros_like(tp)
    prev[:, 1:] = tp_end.cummax(1).values[:, :-1]             # true positives at the previous threshold
    n_rel = rel.sum(1, keepdim=True)
    return (torch.where(group_end, (tp - prev) * tp / count, torch.zeros_like(tp)) / n_rel).sum(1)


def retrieval_map(features: torch.Tensor, labels: torch.Tensor, gallery: torch.Tensor | None = None,
                  gallery_labels: torch.Tensor | None = None, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"r1", "r5", ..., "map"}`` of every query against the gallery (leave-one-out without a gallery)."""
    features, labels = _check_xy("retrieval_map", features, labels)
    loo = gallery is None
    if loo:
        gallery, gallery_labels = features, labels
    else:
        gallery, gallery_labels = _check_xy("retrieval_map", gallery, gallery_labels)
    sim = F.normalize(features.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    relevant = labels[:, None] == gallery_labels[None, :]
    if loo:
        n = len(sim)
        keep = ~torch.eye(n, dtype=torch.bool)
        sim, relevant = sim[keep].reshape(n, n - 1), relevant[keep].reshape(n, n - 1)
    has = relevant.any(1)
    if not bool(has.any()):
        raise ValueError("retrieval_map: no query has a relevant item")
    sim, relevant = sim[has], relevant[has]
    ranks = retrieval_ranks(sim, relevant)
    out = {f"r{k}": float((ranks <= k).double().mean()) for k in ks}
    out["map"] = float(average_precision(sim, relevant).mean())
    return out


# --------------------------------------------------------------------------- evaluators

class _FeatureEvaluator(Evaluator):
    """Collects ``outputs[key]`` (flattened to ``(B, D)``) and ``batch[label_key]`` of every batch.

    ``prefix`` is put before every metric name, so that several instances (one per feature key, e.g.
    one per block of a network) can sit in one ``eval.evaluators`` list without overwriting each other.
    """

    def __init__(self, key: str = "features", label_key: str = "labels", prefix: str = ""):
        super().__init__()
        self.key, self.label_key, self.prefix = key, label_key, prefix

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        x, y = torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])
        return {f"{self.prefix}{k}": v for k, v in self._metrics(x, y).items()}

    def _labels(self, batch: dict) -> torch.Tensor:
        return batch[self.label_key]

    def process(self, batch: dict, outputs: Any) -> None:
        name = type(self).__name__
        if not isinstance(outputs, dict) or self.key not in outputs:
            raise ValueError(f"{name}: predict must return a dict with '{self.key}' (B, D), got "
                             f"{sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__}")
        features = outputs[self.key].detach().float().cpu()
        labels = torch.as_tensor(self._labels(batch)).detach().cpu().reshape(-1).long()
        if features.dim() < 2 or len(features) != len(labels):
            raise ValueError(f"{name}: features {tuple(features.shape)} do not match {len(labels)} labels")
        self.results.append((features.reshape(len(features), -1), labels))



class LinearProbe(_FeatureEvaluator):
    """``probe_accuracy``: k-fold logistic regression on the split's features (see :func:`linear_probe`)."""

    def __init__(self, folds: Annotated[int, Ge(2)] = 5, C: Annotated[float, Gt(0)] = 1.0,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0,
                 standardize: bool = True, max_iter: Annotated[int, Ge(1)] = 500, tol: Annotated[float, Gt(0)] = 1e-5,
                 key: str = "features", label_key: str = "labels", prefix: str = ""):
        super().__init__(key, label_key, prefix)
        if folds < 2 or not C > 0 or max_iter < 1:
            raise ValueError(f"LinearProbe: needs folds >= 2, C > 0, max_iter >= 1 (got {folds}, {C}, {max_iter})")
        self.folds, self.C, self.seed, self.standardize, self.max_iter = folds, C, seed, standardize, max_iter
        self.tol = tol

    def _metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {"probe_accuracy": linear_probe(x, y, self.folds, self.C, self.seed, self.standardize,
                                               max_iter=self.max_iter, tol=self.tol)}

    @classmethod
    def example(cls):
        # two well-separated classes along the first axis: every held-out item is classified right
        g = torch.Generator().manual_seed(0)
        x = torch.randn(12, 3, generator=g) * 0.1
        y = torch.tensor([0, 1] * 6)
        x[:, 0] += 2.0 * y
        batches = [({"labels": y[:6]}, {"features": x[:6]}), ({"labels": y[6:]}, {"features": x[6:]})]
        return {"folds": 3}, batches, {"probe_accuracy": 1.0}


class KNN(_FeatureEvaluator):
    """``knn_accuracy``: weighted k-NN, leave-one-out over the split (see :func:`knn_accuracy`)."""

    def __init__(self, k: Annotated[int, Ge(1)] = 20, temperature: Annotated[float, Gt(0)] = 0.07,
                 key: str = "features", label_key: str = "labels", prefix: str = ""):
        super().__init__(key, label_key, prefix)
        if k < 1 or not temperature > 0:
            raise ValueError(f"KNN: needs k >= 1 and temperature > 0 (got {k}, {temperature})")
        self.k, self.temperature = k, temperature

    def _metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {"knn_accuracy": knn_accuracy(x, y, self.k, self.temperature)}

    @classmethod
    def example(cls):
        # 4 items on the unit circle at 0, 10, 90, 100 degrees, labels 0, 0, 1, 0. With k = 1 each item's
        # nearest other item is its 10-degree neighbour: items 0, 1 right, item 2 (label 1) gets label 0
        # from item 3, item 3 gets label 1 from item 2 -> 2/4.
        angles = torch.tensor([0.0, 10.0, 90.0, 100.0]).deg2rad()
        x = torch.stack([angles.cos(), angles.sin()], 1)
        y = torch.tensor([0, 0, 1, 0])
        batches = [({"labels": y[:2]}, {"features": x[:2]}), ({"labels": y[2:]}, {"features": x[2:]})]
        return {"k": 1}, batches, {"knn_accuracy": 0.5}


class ImageRetrieval(_FeatureEvaluator):
    """``r1, r5, r10, map``: leave-one-out retrieval over the split (see :func:`retrieval_map`).

    Relevant = same ``batch[label_key]``; a batch that carries ``"relevance_key"`` (one id per item)
    uses it instead (e.g. an instance id, or an attribute value).
    """

    def __init__(self, ks: Sequence[Annotated[int, Ge(1)]] = (1, 5, 10), key: str = "features",
                 label_key: str = "labels", prefix: str = ""):
        super().__init__(key, label_key, prefix)
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ImageRetrieval: ks must be a non-empty list of integers >= 1, got {ks}")

    def _labels(self, batch: dict) -> torch.Tensor:
        return batch["relevance_key"] if "relevance_key" in batch else batch[self.label_key]

    def _metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return retrieval_map(x, y, ks=self.ks)

    @classmethod
    def example(cls):
        # 4 items at 0, 10, 90, 100 degrees, labels 0, 1, 0, 1: every item's nearest other item is of the
        # other class (R@1 = 0); the only relevant item comes 2nd for items 0 and 3 (AP 1/2), 3rd for
        # items 1 and 2 (AP 1/3): R@2 = 1/2, R@3 = 1, mAP = 5/12.
        angles = torch.tensor([0.0, 10.0, 90.0, 100.0]).deg2rad()
        x = torch.stack([angles.cos(), angles.sin()], 1)
        y = torch.tensor([0, 1, 0, 1])
        batches = [({"labels": y[:2]}, {"features": x[:2]}), ({"labels": y[2:]}, {"features": x[2:]})]
        return {"ks": (1, 2, 3)}, batches, {"r1": 0.0, "r2": 0.5, "r3": 1.0, "map": 5 / 12}


class RotationAccuracy(Evaluator):
    """Accuracy of a rotation-prediction model (RotNet) overall, per class and per applied rotation.

    ``outputs[key]``: logits ``(B, R, R)`` (image, applied rotation, predicted rotation), labels from
    ``batch[label_key]``. Metrics: ``rotation_accuracy``; ``rotation_accuracy_class<c>`` for every class
    seen (which digits are rotation-ambiguous: 0, 1, 8 look alike under 180 degrees, 6 and 9 swap);
    ``rotation_accuracy_rot<r>`` for every applied rotation index ``r``; with 4 rotations,
    ``rotation_flip_class<c>``: the fraction of the class's (image, rotation) pairs predicted off by exactly
    180 degrees, the confusion a symmetric digit invites.
    """

    def __init__(self, key: str = "rotation_logits", label_key: str = "labels"):
        super().__init__()
        self.key, self.label_key = key, label_key

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or self.key not in outputs:
            raise ValueError(f"RotationAccuracy: predict must return a dict with '{self.key}' (B, R, R)")
        logits = outputs[self.key].detach().cpu()
        if logits.dim() != 3 or logits.shape[1] != logits.shape[2]:
            raise ValueError(f"RotationAccuracy: expected logits (B, R, R), got {tuple(logits.shape)}")
        labels = torch.as_tensor(batch[self.label_key]).detach().cpu().reshape(-1).long()
        r = logits.shape[1]
        predicted = logits.argmax(-1)
        correct = predicted == torch.arange(r)                              # (B, R)
        flipped = predicted == (torch.arange(r) + r // 2) % r if r == 4 else torch.zeros_like(correct)
        self.results.append((correct, labels, flipped))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        correct, labels = torch.cat([r[0] for r in results]).double(), torch.cat([r[1] for r in results])
        out = {"rotation_accuracy": float(correct.mean())}
        for c in labels.unique().tolist():
            out[f"rotation_accuracy_class{c}"] = float(correct[labels == c].mean())
        for r in range(correct.shape[1]):
            out[f"rotation_accuracy_rot{r}"] = float(correct[:, r].mean())
        if correct.shape[1] == 4:
            flipped = torch.cat([r[2] for r in results]).double()
            for c in labels.unique().tolist():
                out[f"rotation_flip_class{c}"] = float(flipped[labels == c].mean())
        return out

    @classmethod
    def example(cls):
        eye = torch.eye(4)
        good, swap = eye, eye[[2, 1, 0, 3]]            # 'swap' mistakes 0 and 180 degrees (a symmetric digit)
        batches = [({"labels": torch.tensor([1, 0])}, {"rotation_logits": torch.stack([good, swap])}),
                   ({"labels": torch.tensor([1])}, {"rotation_logits": good[None]})]
        return {}, batches, {"rotation_accuracy": 10 / 12, "rotation_accuracy_class0": 0.5,
                             "rotation_accuracy_class1": 1.0, "rotation_accuracy_rot0": 2 / 3,
                             "rotation_accuracy_rot1": 1.0, "rotation_flip_class0": 0.5,
                             "rotation_flip_class1": 0.0}
