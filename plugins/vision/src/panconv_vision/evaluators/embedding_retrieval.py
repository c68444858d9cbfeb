"""Retrieval metrics for multi-space and backward-compatible embeddings (issue 20: CCA, BT^2).

Both are leave-one-out over the evaluated split (every item queries all the others, by cosine
similarity), built on :func:`panconv_vision.evaluators.retrieval.retrieval_ranks` (rank = 1 + wrong items
scoring at least as high as the best relevant one) and
:func:`panconv_vision.evaluators.representation.average_precision` (scikit-learn's AP). Recalls are
fractions in [0, 1]; ``map`` is the mean AP over queries that have a relevant item.

* :class:`AttributeRetrieval` (Conditional Cross Attention): ``predict`` gives ``"attribute_features"``
  ``(B, K, E)``, the batch ``"attributes"`` ``(B, K)``; for attribute ``k`` the items are compared in space
  ``k`` and relevant = same value of attribute ``k``. Metrics ``<name>_map``, ``<name>_r<K>`` per attribute
  and their means ``map``, ``r<K>``.
* :class:`CompatibleRetrieval` (BT^2, BCT): ``predict`` gives the new model's ``"features"`` and the old
  model's ``"old_features"`` of the same images; relevant = same label. ``new_new`` (query and gallery by
  the new model), ``new_old`` (new queries against the old gallery: backfill-free search, the papers'
  "phi_new / phi_old"; the new embedding is cut to the old one's size when longer, as the official
  evaluation does), ``old_new`` (old queries against the new gallery) and ``old_old``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge

from panconv.api import Evaluator

from .representation import average_precision
from .retrieval import retrieval_ranks

__all__ = ["AttributeRetrieval", "CompatibleRetrieval", "cross_retrieval"]


def cross_retrieval(queries: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor,
                    ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Leave-one-out retrieval where item ``i``'s query is ``queries[i]`` and the gallery is ``gallery`` without
    item ``i`` (the same images embedded by possibly another model). Relevant = same ``labels``.
    Returns ``{"r<k>": ..., "map": ...}``."""
    if queries.dim() != 2 or gallery.dim() != 2 or len(queries) != len(gallery) or len(labels) != len(queries):
        raise ValueError(f"cross_retrieval: queries {tuple(queries.shape)}, gallery {tuple(gallery.shape)} and "
                         f"labels {tuple(labels.shape)} must describe the same N items")
    d = min(queries.shape[1], gallery.shape[1])
    sim = F.normalize(queries[:, :d].double(), dim=1) @ F.normalize(gallery[:, :d].double(), dim=1).T
    n = len(sim)
    keep = ~torch.eye(n, dtype=torch.bool)
    relevant = (labels[:, None] == labels[None, :])[keep].reshape(n, n - 1)
    sim = sim[keep].reshape(n, n - 1)
    has = relevant.any(1)
    if not bool(has.any()):
        raise ValueError("cross_retrieval: no query has a relevant item")
    sim, relevant = sim[has], relevant[has]
    ranks = retrieval_ranks(sim, relevant)
    out = {f"r{k}": float((ranks <= k).double().mean()) for k in ks}
    out["map"] = float(average_precision(sim, relevant).mean())
    return out


def _ks(name: str, ks) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or min(out) < 1:
        raise ValueError(f"{name}: ks must be a non-empty list of integers >= 1, got {ks}")
    return out


class AttributeRetrieval(Evaluator):
    """Per-attribute retrieval in per-attribute spaces (see the module docstring).

    Args:
        ks: the recalls. names: one name per attribute for the metric keys (default ``attr0``, ``attr1``...).
        key / attributes_key: where the embeddings (in ``predict``) and the attribute values (in the batch) are.
    """

    def __init__(self, ks: Sequence[Annotated[int, Ge(1)]] = (1, 5, 10), names: Sequence[str] | None = None,
                 key: str = "attribute_features", attributes_key: str = "attributes"):
        super().__init__()
        self.ks, self.key, self.attributes_key = _ks("AttributeRetrieval", ks), key, attributes_key
        self.names = tuple(names) if names is not None else None

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or self.key not in outputs:
            raise ValueError(f"AttributeRetrieval: predict must return a dict with '{self.key}' (B, K, E)")
        emb = outputs[self.key].detach().float().cpu()
        attrs = torch.as_tensor(batch[self.attributes_key]).detach().cpu().long()
        if emb.dim() != 3 or attrs.shape != emb.shape[:2]:
            raise ValueError(f"AttributeRetrieval: embeddings {tuple(emb.shape)} (B, K, E) and attributes "
                             f"{tuple(attrs.shape)} (B, K) do not match")
        self.results.append((emb, attrs))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        emb, attrs = torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])
        k_attr = emb.shape[1]
        names = self.names if self.names is not None and len(self.names) == k_attr else \
            tuple(f"attr{k}" for k in range(k_attr))
        out: dict[str, float] = {}
        for k, name in enumerate(names):
            for metric, value in cross_retrieval(emb[:, k], emb[:, k], attrs[:, k], self.ks).items():
                out[f"{name}_{metric}"] = value
        for metric in [f"r{k}" for k in self.ks] + ["map"]:
            out[metric] = sum(out[f"{name}_{metric}"] for name in names) / k_attr
        return out

    @classmethod
    def example(cls):
        # attribute 0: items at 0, 10, 90, 100 degrees with values 0, 1, 0, 1 (every nearest item is wrong:
        # R@1 0, mAP 5/12, as ImageRetrieval's example); attribute 1: values 0, 0, 1, 1 (nearest is right: R@1 1,
        # mAP 1). Means: r1 1/2, map 17/24.
        angles = torch.tensor([0.0, 10.0, 90.0, 100.0]).deg2rad()
        x = torch.stack([angles.cos(), angles.sin()], 1)
        emb = torch.stack([x, x], 1)
        attrs = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]])
        batches = [({"attributes": attrs[:2]}, {"attribute_features": emb[:2]}),
                   ({"attributes": attrs[2:]}, {"attribute_features": emb[2:]})]
        return ({"ks": (1, 2), "names": ("a", "b")}, batches,
                {"a_r1": 0.0, "a_map": 5 / 12, "b_r1": 1.0, "b_map": 1.0, "r1": 0.5, "map": 17 / 24})


class CompatibleRetrieval(Evaluator):
    """new/new, new/old, old/new and old/old retrieval (query/gallery; see the module docstring): metrics
    ``new_new_map``, ``new_old_r1``, ``old_new_map``, ``old_old_map``... Without ``old_key`` outputs only new/new."""

    def __init__(self, ks: Sequence[Annotated[int, Ge(1)]] = (1, 5), new_key: str = "features",
                 old_key: str = "old_features", label_key: str = "labels"):
        super().__init__()
        self.ks, self.new_key, self.old_key, self.label_key = _ks("CompatibleRetrieval", ks), new_key, old_key, \
            label_key

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or self.new_key not in outputs:
            raise ValueError(f"CompatibleRetrieval: predict must return a dict with '{self.new_key}' (B, D)")
        new = outputs[self.new_key].detach().float().cpu()
        old = outputs.get(self.old_key)
        old = old.detach().float().cpu() if old is not None else None
        labels = torch.as_tensor(batch[self.label_key]).detach().cpu().reshape(-1).long()
        if new.dim() != 2 or len(new) != len(labels) or (old is not None and old.shape[0] != len(labels)):
            raise ValueError(f"CompatibleRetrieval: features {tuple(new.shape)} / old features "
                             f"{None if old is None else tuple(old.shape)} do not match {len(labels)} labels")
        self.results.append((new, old, labels))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        new = torch.cat([r[0] for r in results])
        labels = torch.cat([r[2] for r in results])
        pairs = {"new_new": (new, new)}
        if all(r[1] is not None for r in results):
            old = torch.cat([r[1] for r in results])
            pairs.update(new_old=(new, old), old_new=(old, new), old_old=(old, old))
        return {f"{name}_{metric}": value for name, (q, g) in pairs.items()
                for metric, value in cross_retrieval(q, g, labels, self.ks).items()}

    @classmethod
    def example(cls):
        # new features separate the labels (0, 0, 1, 1) perfectly; the old ones are the same points with items 1
        # and 2 swapped, so in the old space every item's nearest other item has the other label (old/old R@1 0).
        new = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        old = new[[0, 2, 1, 3]]
        labels = torch.tensor([0, 0, 1, 1])
        batches = [({"labels": labels[:2]}, {"features": new[:2], "old_features": old[:2]}),
                   ({"labels": labels[2:]}, {"features": new[2:], "old_features": old[2:]})]
        return {"ks": (1,)}, batches, {"new_new_r1": 1.0, "new_new_map": 1.0, "old_old_r1": 0.0}
