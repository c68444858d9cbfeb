"""Segmentation scores: ARI / AMI of unsupervised instance decompositions (Slot Attention), Dice of semantic masks.

* :func:`adjusted_rand_index` (Hubert & Arabie 1985) and :func:`adjusted_mutual_info` (Vinh, Epps & Bailey 2010,
  the arithmetic-mean normalisation and the exact hypergeometric expectation): clusterings compared up to a
  relabelling, equal to ``sklearn.metrics.adjusted_rand_score`` / ``adjusted_mutual_info_score``
  (tests/test_slot_attention.py checks both).
* ``vision.ObjectDiscovery``: per image, the predicted slot of each pixel (``predict()["masks"]``, ``(B, H, W)``)
  against the ground-truth instance ids (``batch["masks"]``, 0 = background): ``fg_ari`` (ARI over the
  foreground pixels only, the metric of Slot Attention, Locatello et al. 2020, and of MONet/IODINE), ``ari``
  (all pixels), ``fg_ami``, ``ami``, each the mean over images. ``kmeans: K`` also scores the classical
  baseline on the same images: k-means (K clusters, k-means++ seeding) on each image's pixel colours and
  positions (``position_weight`` scales the [0, 1] coordinates against the colours), reported as ``kmeans_*``.
* ``vision.Dice``: the Dice coefficient ``2|P ∩ G| / (|P| + |G|)`` of each foreground class, per image
  (an image where the class is absent from both is skipped), averaged over images then classes: ``dice``
  and ``dice_<c>`` per class ``c``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge

from panconv.api import Evaluator


# ---------------------------------------------------------------- clustering scores
def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, ia = np.unique(np.asarray(a).ravel(), return_inverse=True)
    _, ib = np.unique(np.asarray(b).ravel(), return_inverse=True)
    table = np.zeros((ia.max(initial=-1) + 1, ib.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def _pairs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float((x * (x - 1) / 2).sum())


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """ARI of two labelings of the same items (1: identical up to relabelling; 0: chance level)."""
    table = _contingency(labels_true, labels_pred)
    n = int(table.sum())
    if n == 0:
        return 1.0
    index, sum_a, sum_b = _pairs(table), _pairs(table.sum(1)), _pairs(table.sum(0))
    expected = sum_a * sum_b / (n * (n - 1) / 2) if n > 1 else 0.0
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:            # both are one cluster (or all singletons): perfect agreement by convention
        return 1.0
    return float((index - expected) / (maximum - expected))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64) / counts.sum()
    return float(-(p * np.log(p)).sum())


def _expected_mutual_info(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """E[MI] of two random labelings with the marginals ``a`` and ``b`` (hypergeometric model, Vinh et al. Eq. 24a)."""
    from scipy.special import gammaln

    lg = gammaln(np.arange(n + 2, dtype=np.float64))            # lg[k] = log((k-1)!)
    log_fact = lambda k: lg[np.asarray(k, dtype=np.int64) + 1]  # noqa: E731  log(k!)
    emi = 0.0
    for ai in a:
        for bj in b:
            lo, hi = max(1, ai + bj - n), min(ai, bj)
            if lo > hi:
                continue
            nij = np.arange(lo, hi + 1)
            term = nij / n * (np.log(n * nij) - np.log(ai * bj))
            log_p = (log_fact(ai) + log_fact(bj) + log_fact(n - ai) + log_fact(n - bj) - log_fact(n)
                     - log_fact(nij) - log_fact(ai - nij) - log_fact(bj - nij) - log_fact(n - ai - bj + nij))
            emi += float((term * np.exp(log_p)).sum())
    return emi


def adjusted_mutual_info(labels_true, labels_pred) -> float:
    """AMI with the arithmetic-mean normalisation: ``(MI - E[MI]) / (mean(H(U), H(V)) - E[MI])``."""
    table = _contingency(labels_true, labels_pred)
    n = int(table.sum())
    rows, cols = table.sum(1), table.sum(0)
    if len(rows) == len(cols) == 1 or len(rows) == len(cols) == n or n == 0:
        return 1.0
    nz = table[table > 0].astype(np.float64)
    outer = np.outer(rows, cols)[table > 0].astype(np.float64)
    mi = float((nz / n * (np.log(nz * n) - np.log(outer))).sum())
    emi = _expected_mutual_info(rows, cols, n)
    normaliser = (_entropy(rows) + _entropy(cols)) / 2
    denominator = normaliser - emi
    if abs(denominator) < np.finfo(np.float64).eps:
        denominator = np.finfo(np.float64).eps if denominator >= 0 else -np.finfo(np.float64).eps
    return float((mi - emi) / denominator)


# ---------------------------------------------------------------- the k-means baseline
def kmeans_segments(images: torch.Tensor, k: int, position_weight: float = 1.0, iterations: int = 20,
                    seed: int = 0) -> torch.Tensor:
    """``(B, C, H, W)`` images -> ``(B, H, W)`` cluster ids: k-means++ then Lloyd iterations on each image's
    ``(colour, position_weight * (y, x))`` pixel features (coordinates in [0, 1])."""
    b, c, h, w = images.shape
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    pos = torch.stack([ys, xs]).to(images) * position_weight
    feats = torch.cat([images, pos[None].expand(b, -1, -1, -1)], 1).flatten(2).transpose(1, 2).double()  # (B, P, F)
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(b, h * w, dtype=torch.long)
    for i in range(b):
        x = feats[i]
        centres = [x[torch.randint(len(x), (1,), generator=generator)].squeeze(0)]
        for _ in range(1, k):
            d = torch.cdist(x, torch.stack(centres)).min(1).values.pow(2)
            probs = d / d.sum() if d.sum() > 0 else torch.full_like(d, 1 / len(d))
            centres.append(x[torch.multinomial(probs.float(), 1, generator=generator)].squeeze(0))
        centres = torch.stack(centres)
        for _ in range(iterations):
            assign = torch.cdist(x, centres).argmin(1)
            for j in range(k):
                members = x[assign == j]
                if len(members):
                    centres[j] = members.mean(0)
        out[i] = torch.cdist(x, centres).argmin(1)
    return out.view(b, h, w)


# ---------------------------------------------------------------- evaluators
class ObjectDiscovery(Evaluator):
    """FG-ARI, ARI, FG-AMI, AMI of predicted slot masks vs ground-truth instances (mean over images);
    ``kmeans: K`` adds the k-means baseline's scores on the same images (see the module docstring)."""

    lower_is_better = ()

    def __init__(self, kmeans: Annotated[int, Ge(1)] | None = None, position_weight: Annotated[float, Ge(0)] = 1.0,
                 seed: Annotated[int, Ge(0)] = 0):
        super().__init__()
        if kmeans is not None and kmeans < 1 or position_weight < 0:
            raise ValueError("ObjectDiscovery: kmeans must be >= 1 and position_weight >= 0")
        self.kmeans, self.position_weight, self.seed = kmeans, position_weight, seed

    @staticmethod
    def _scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
        fg = truth > 0
        fg_ari = adjusted_rand_index(truth[fg], pred[fg]) if fg.any() else math.nan
        fg_ami = adjusted_mutual_info(truth[fg], pred[fg]) if fg.any() else math.nan
        return fg_ari, adjusted_rand_index(truth, pred), fg_ami, adjusted_mutual_info(truth, pred)

    def process(self, batch: dict, outputs: Any) -> None:
        pred = outputs["masks"] if isinstance(outputs, dict) else outputs
        truth = batch["masks"]
        if tuple(pred.shape) != tuple(truth.shape):
            raise ValueError(f"ObjectDiscovery: predicted masks {tuple(pred.shape)} and batch['masks'] "
                             f"{tuple(truth.shape)} differ in shape")
        pred, truth = pred.detach().cpu().numpy(), truth.detach().cpu().numpy()
        base = None
        if self.kmeans is not None:
            base = kmeans_segments(batch["inputs"].detach().cpu().float(), self.kmeans, self.position_weight,
                                   seed=self.seed).numpy()
        for i in range(len(truth)):
            row = self._scores(truth[i].ravel(), pred[i].ravel())
            if base is not None:
                row = row + self._scores(truth[i].ravel(), base[i].ravel())
            self.results.append(row)

    def compute_metrics(self, results: list) -> dict[str, float]:
        names = ["fg_ari", "ari", "fg_ami", "ami"]
        if results and len(results[0]) == 8:
            names += [f"kmeans_{n}" for n in names]
        if not results:
            return {n: math.nan for n in names}
        table = np.asarray(results, dtype=np.float64)
        return {n: float(np.nanmean(table[:, j])) if np.isfinite(table[:, j]).any() else math.nan
                for j, n in enumerate(names)}

    @classmethod
    def example(cls):
        truth = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2]], [[1, 1, 2, 2], [0, 0, 0, 0]]])
        perfect = torch.tensor([[[5, 5, 3, 3], [5, 5, 1, 1]], [[2, 2, 0, 0], [2, 2, 1, 1]]])
        # image 2: foreground exact, the background shares the first object's slot
        batches = [({"masks": truth[:1]}, {"masks": perfect[:1]}), ({"masks": truth[1:]}, {"masks": perfect[1:]})]
        a2 = adjusted_rand_index(truth[1].flatten().numpy(), perfect[1].flatten().numpy())
        m2 = adjusted_mutual_info(truth[1].flatten().numpy(), perfect[1].flatten().numpy())
        return {}, batches, {"fg_ari": 1.0, "ari": (1 + a2) / 2, "fg_ami": 1.0, "ami": (1 + m2) / 2}


class Dice(Evaluator):
    """Per-class Dice of predicted label maps (``predict()["masks"]`` or a tensor, ``(B, H, W)`` ints) against
    ``batch["masks"]``; classes ``1..num_classes-1`` (0 is background)."""

    lower_is_better = ()

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 2, smooth: Annotated[float, Ge(0)] = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Dice: num_classes must be >= 2 (background + one class), got {num_classes}")
        self.num_classes, self.smooth = num_classes, smooth

    def process(self, batch: dict, outputs: Any) -> None:
        pred = outputs["masks"] if isinstance(outputs, dict) else outputs
        truth = batch["masks"]
        if tuple(pred.shape) != tuple(truth.shape):
            raise ValueError(f"Dice: predicted masks {tuple(pred.shape)} and batch['masks'] {tuple(truth.shape)} "
                             f"differ in shape")
        pred, truth = pred.detach().cpu().flatten(1), truth.detach().cpu().flatten(1)
        for i in range(len(truth)):
            row = []
            for c in range(1, self.num_classes):
                p, g = pred[i] == c, truth[i] == c
                denominator = float(p.sum() + g.sum())
                row.append(math.nan if denominator == 0 else
                           (2 * float((p & g).sum()) + self.smooth) / (denominator + self.smooth))
            self.results.append(tuple(row))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {"dice": math.nan}
        table = np.asarray(results, dtype=np.float64)
        per_class = [float(np.nanmean(table[:, j])) if np.isfinite(table[:, j]).any() else math.nan
                     for j in range(table.shape[1])]
        out = {"dice": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else math.nan}
        if len(per_class) > 1:
            out.update({f"dice_{c + 1}": v for c, v in enumerate(per_class)})
        return out

    @classmethod
    def example(cls):
        truth = torch.tensor([[[0, 1, 1, 0]], [[0, 0, 1, 1]]])
        pred = torch.tensor([[[0, 1, 0, 0]], [[0, 0, 1, 1]]])
        batches = [({"masks": truth[:1]}, pred[:1]), ({"masks": truth[1:]}, {"masks": pred[1:]})]
        return {"num_classes": 2}, batches, {"dice": (2 / 3 + 1.0) / 2}


__all__ = ["Dice", "ObjectDiscovery", "adjusted_mutual_info", "adjusted_rand_index", "kmeans_segments"]
