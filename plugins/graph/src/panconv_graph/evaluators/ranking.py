"""Full-ranking evaluation of the LightGCN reference code (``Procedure.Test`` / ``utils``).

For each evaluated user every item is scored; the items the user saw in training are masked
out; the top-K items are compared with the user's held-out items. Per user, with ``hits`` the
number of held-out items in the top K and ``T`` the held-out set:

* Recall@K = hits / |T|;  Precision@K = hits / K;  HitRate@K = 1[hits > 0]
* NDCG@K = DCG / IDCG, DCG = sum over hit ranks r (1-based) of 1/log2(r+1),
  IDCG = sum_{r=1..min(|T|, K)} 1/log2(r+1)

and the metrics are means over users. Partial results are per-user arrays, so
``compute_metrics(a + b) == compute_metrics(a_and_b)`` holds exactly (DDP merge).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from panconv.api import Evaluator

METRICS = ("recall", "ndcg", "precision", "hit")


def rank_metrics(scores: torch.Tensor, held_items: torch.Tensor, held_offsets: torch.Tensor,
                 seen_items: torch.Tensor | None, seen_offsets: torch.Tensor | None,
                 ks: list[int]) -> dict[str, np.ndarray]:
    """Per-user metrics for a ``(B, n_items)`` score matrix; targets/masks as batch-relative CSR."""
    b, n_items = scores.shape
    device = scores.device
    scores = scores.float()
    if seen_items is not None and seen_items.numel():
        rows = torch.repeat_interleave(torch.arange(b, device=device), seen_offsets.diff())
        scores = scores.index_put((rows, seen_items), torch.tensor(-torch.inf, device=device))  # out of place
    kmax = min(max(ks), n_items)
    top = torch.topk(scores, kmax, dim=1).indices
    held_counts = held_offsets.diff()
    # hits: is top[r, j] among row r's held items? (sorted keys row * n_items + item, binary search)
    held_rows = torch.repeat_interleave(torch.arange(b, device=device), held_counts)
    keys = torch.sort(held_rows * n_items + held_items).values
    query = torch.arange(b, device=device).unsqueeze(1) * n_items + top
    pos = torch.searchsorted(keys, query).clamp(max=max(keys.numel() - 1, 0))
    hits = (keys[pos] == query).to(torch.float64) if keys.numel() else torch.zeros_like(query, dtype=torch.float64)
    discount = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float64, device=scores.device))
    n_held = held_counts.to(torch.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk].sum(1)
        dcg = (hits[:, :kk] * discount[:kk]).sum(1)
        ideal_len = torch.clamp(held_counts, max=kk)
        idcg = torch.cumsum(discount[:kk], 0)[(ideal_len - 1).clamp(min=0)]
        idcg = torch.where(ideal_len > 0, idcg, torch.ones_like(idcg))
        out[f"recall@{k}"] = (h / n_held.clamp(min=1)).cpu().numpy()
        out[f"ndcg@{k}"] = (dcg / idcg).cpu().numpy()
        out[f"precision@{k}"] = (h / k).cpu().numpy()
        out[f"hit@{k}"] = (h > 0).to(torch.float64).cpu().numpy()
    return out


class FullRanking(Evaluator):
    """Recall@K, NDCG@K, Precision@K and HitRate@K over all items not seen in training.

    ``outputs`` (the model's ``predict``) are scores ``(batch users, n_items)``; the batch
    carries the held-out items and the items to mask (``graph.RecSysData`` collates them).
    """

    def __init__(self, ks: list[int] | tuple[int, ...] = (20,)):
        super().__init__()
        ks = [int(k) for k in ([ks] if isinstance(ks, int) else ks)]
        if not ks or min(ks) < 1:
            raise ValueError(f"FullRanking: ks must be positive integers, got {ks}")
        self.ks = ks

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        self.results.append(rank_metrics(outputs, batch["held_items"], batch["held_offsets"],
                                         batch.get("seen_items"), batch.get("seen_offsets"), self.ks))

    def compute_metrics(self, results: list[dict[str, np.ndarray]]) -> dict[str, float]:
        if not results:
            return {}
        return {name: float(np.concatenate([r[name] for r in results]).mean()) for name in results[0]}

    @classmethod
    def example(cls):
        """Two users (one batch each), five items, K=2 (worked by hand in tests/test_ranking.py)."""
        t = torch.tensor
        # user 0: item 0 masked -> top2 = [1, 2]; held {1, 3}: one hit at rank 1
        first = ({"users": t([0]), "held_items": t([1, 3]), "held_offsets": t([0, 2]),
                  "seen_items": t([0]), "seen_offsets": t([0, 1])}, t([[9.0, 5.0, 4.0, 3.0, 1.0]]))
        # user 1: nothing masked -> top2 = [4, 3]; held {4}: one hit at rank 1
        second = ({"users": t([1]), "held_items": t([4]), "held_offsets": t([0, 1]),
                   "seen_items": t([], dtype=torch.int64), "seen_offsets": t([0, 0])}, t([[1.0, 2.0, 3.0, 4.0, 5.0]]))
        ndcg0 = 1.0 / (1.0 + 1.0 / math.log2(3))
        expected = {"recall@2": (0.5 + 1.0) / 2, "ndcg@2": (ndcg0 + 1.0) / 2,
                    "precision@2": (0.5 + 0.5) / 2, "hit@2": 1.0}
        return {"ks": [2]}, [first, second], expected
