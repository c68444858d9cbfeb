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
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, MinLen

from panconv.api import Evaluator

METRICS = ("recall", "ndcg", "precision", "hit")

# Rows of the score matrix ranked at a time: a 64 MiB float32 block, reused across blocks. Scoring
# and ranking block by block keeps the working set bounded and, on the CPU, avoids the page faults
# of a fresh (users x items) allocation per batch, which cost as much as the top-K itself.
BLOCK_ELEMENTS = 1 << 24


class UserItemScores:
    """The score matrix ``users @ items.T`` of a factorised recommender, computed when ranked.

    What MF/LightGCN/NGCF return for a ranking batch (``model.predict``): ``shape`` is
    ``(batch users, n_items)``; ``dense()`` gives the matrix. ``FullRanking`` fills it block by block
    (``rows``), masks the training items in place and ranks, so the whole matrix never exists.
    """

    __slots__ = ("users", "items")

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        if users.dim() != 2 or items.dim() != 2 or users.shape[1] != items.shape[1]:
            raise ValueError(f"UserItemScores: expected (B, d) users and (N, d) items, got "
                             f"{tuple(users.shape)} and {tuple(items.shape)}")
        self.users, self.items = users, items

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.users.shape[0], self.items.shape[0]))

    @property
    def device(self) -> torch.device:
        return self.users.device

    def dense(self) -> torch.Tensor:
        return self.users @ self.items.t()

    def rows(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Scores of rows ``start:stop`` written into ``out`` (float32, ``(stop - start, N)``)."""
        users, items = self.users[start:stop], self.items
        if users.dtype == out.dtype:
            return torch.matmul(users, items.t(), out=out)
        return out.copy_(users @ items.t())

    def __repr__(self) -> str:
        return f"UserItemScores(shape={tuple(self.shape)})"


def _csr_rows(values: torch.Tensor, offsets: torch.Tensor, start: int, stop: int):
    """Batch-relative (row, value) pairs of rows ``start:stop`` of a CSR pair."""
    lo, hi = int(offsets[start]), int(offsets[stop])
    counts = offsets[start:stop + 1].diff()
    rows = torch.repeat_interleave(torch.arange(stop - start, device=values.device), counts)
    return rows, values[lo:hi]


def top_items(scores: torch.Tensor | UserItemScores, seen_items: torch.Tensor | None,
              seen_offsets: torch.Tensor | None, k: int,
              return_scores: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(B, k)`` of each row's ``k`` best items, the row's seen items excluded.

    Rows are scored (or copied), masked and ranked in blocks of ``BLOCK_ELEMENTS`` entries; the
    input is never modified. Scores are ranked in float32. With ``return_scores`` the result is
    ``(indices, scores)``, the float32 scores of the returned items, best first.
    """
    b, n_items = scores.shape
    device = scores.device
    block = max(1, min(b, BLOCK_ELEMENTS // max(n_items, 1)))
    buffer = torch.empty(block, n_items, dtype=torch.float32, device=device)
    top = torch.empty(b, k, dtype=torch.int64, device=device)
    values = torch.empty(b if return_scores else block, k, dtype=torch.float32, device=device)
    masked = seen_items is not None and seen_items.numel() > 0
    minus_inf = torch.tensor(-torch.inf, device=device)
    for start in range(0, b, block):
        stop = min(start + block, b)
        out = buffer[: stop - start]
        if isinstance(scores, UserItemScores):
            scores.rows(start, stop, out)
        else:
            out.copy_(scores[start:stop])
        if masked:
            out.index_put_(_csr_rows(seen_items, seen_offsets, start, stop), minus_inf)
        kept = values[start:stop] if return_scores else values[: stop - start]
        torch.topk(out, k, dim=1, out=(kept, top[start:stop]))
    return (top, values) if return_scores else top


def rank_metrics(scores: torch.Tensor | UserItemScores, held_items: torch.Tensor, held_offsets: torch.Tensor,
                 seen_items: torch.Tensor | None, seen_offsets: torch.Tensor | None,
                 ks: list[int]) -> dict[str, np.ndarray]:
    """Per-user metrics for a ``(B, n_items)`` score matrix; targets/masks as batch-relative CSR."""
    if len(scores.shape) != 2:
        raise ValueError(f"FullRanking: expected (users, items) scores, got shape {tuple(scores.shape)}")
    b, n_items = scores.shape
    device = scores.device
    for name, offsets in (("held_offsets", held_offsets), ("seen_offsets", seen_offsets)):
        if offsets is not None and tuple(offsets.shape) != (b + 1,):
            raise ValueError(f"FullRanking: {b} score rows but {name} has {offsets.numel()} entries "
                             f"(expected {b + 1})")
    kmax = min(max(ks), n_items)
    top = top_items(scores, seen_items, seen_offsets, kmax)
    held_counts = held_offsets.diff()
    # hits: is top[r, j] among row r's held items? (sorted keys row * n_items + item, binary search)
    held_rows = torch.repeat_interleave(torch.arange(b, device=device), held_counts)
    keys = torch.sort(held_rows * n_items + held_items).values
    query = torch.arange(b, device=device).unsqueeze(1) * n_items + top
    pos = torch.searchsorted(keys, query).clamp(max=max(keys.numel() - 1, 0))
    hits = (keys[pos] == query).to(torch.float64) if keys.numel() else torch.zeros_like(query, dtype=torch.float64)
    return {name: v.cpu().numpy() for name, v in user_metrics(hits, held_counts, ks).items()}


def user_metrics(hits: torch.Tensor, held_counts: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-user float64 metrics from ``hits`` ``(B, kmax)`` (1 where the ranked item is held out) and
    the number of held-out items per user; the definitions of the module docstring."""
    kmax = hits.shape[1]
    discount = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float64, device=hits.device))
    n_held = held_counts.to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk].sum(1)
        dcg = (hits[:, :kk] * discount[:kk]).sum(1)
        ideal_len = torch.clamp(held_counts, max=kk)
        idcg = torch.cumsum(discount[:kk], 0)[(ideal_len - 1).clamp(min=0)]
        idcg = torch.where(ideal_len > 0, idcg, torch.ones_like(idcg))
        out[f"recall@{k}"] = h / n_held.clamp(min=1)
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"precision@{k}"] = h / k
        out[f"hit@{k}"] = (h > 0).to(torch.float64)
    return out


class DeviceRanking:
    """Full ranking of a whole evaluation split on the model's device (the GPU training loop's evaluator).

    Built once from an evaluation ``RecSysData`` (``val``/``test``): its users, held-out items and
    masked items go to ``device`` with the block boundaries computed on the host, so ranking
    (``__call__(user_emb, item_emb)``) scores ``block`` users at a time into one reused buffer
    (``users x n_items`` floats, ``block_elements`` at most), masks their training items in place,
    takes the top K and counts hits by binary search, accumulating the per-user metrics on the
    device; the only host read is the final means. Same definitions as :class:`FullRanking`, whose
    means it reproduces (tests/test_spmm_triton.py).
    """

    def __init__(self, dataset, device: torch.device | str, ks: Sequence[int] = (20,),
                 block_elements: int = BLOCK_ELEMENTS):
        self.device, self.ks = torch.device(device), [int(k) for k in ks]
        batch = dataset.collate(dataset.__getitems__(list(range(len(dataset)))))
        self.n_users, self.n_items = len(dataset), dataset.n_items
        self.kmax = min(max(self.ks), self.n_items)
        self.block = max(1, min(self.n_users, block_elements // max(self.n_items, 1)))
        seen_off, held_off = batch["seen_offsets"], batch["held_offsets"]
        starts = list(range(0, self.n_users, self.block))
        # (start, stop, first masked pair, end of the masked pairs) per block, read on the host once
        self.blocks = [(a, min(a + self.block, self.n_users), int(seen_off[a]),
                        int(seen_off[min(a + self.block, self.n_users)])) for a in starts]
        rows = lambda off: torch.repeat_interleave(torch.arange(self.n_users), off.diff())
        to = lambda t: t.to(self.device)
        self.users = to(batch["users"])
        self.seen_rows, self.seen_items = to(rows(seen_off)), to(batch["seen_items"])
        self.held_keys = to(torch.sort(rows(held_off) * self.n_items + batch["held_items"]).values)
        self.held_counts = to(held_off.diff())
        self.buffer: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, user_emb: torch.Tensor, item_emb: torch.Tensor, per_user: bool = False):
        """Means of Recall/NDCG/Precision/HitRate@K (``{name: float}``; with ``per_user`` also the
        per-user tensors, on the device) for the final embeddings of every user / item."""
        if self.buffer is None or self.buffer.device != item_emb.device:
            self.buffer = torch.empty(self.block, self.n_items, dtype=torch.float32, device=item_emb.device)
        items_t = item_emb.float().t()
        top = torch.empty(self.n_users, self.kmax, dtype=torch.int64, device=item_emb.device)
        minus_inf = torch.tensor(-torch.inf, device=item_emb.device)
        for start, stop, lo, hi in self.blocks:
            out = self.buffer[: stop - start]
            torch.matmul(user_emb[self.users[start:stop]].float(), items_t, out=out)
            out.index_put_((self.seen_rows[lo:hi] - start, self.seen_items[lo:hi]), minus_inf)
            top[start:stop] = torch.topk(out, self.kmax, dim=1).indices
        query = torch.arange(self.n_users, device=top.device).unsqueeze(1) * self.n_items + top
        pos = torch.searchsorted(self.held_keys, query).clamp_(max=max(self.held_keys.numel() - 1, 0))
        hits = (self.held_keys[pos] == query).to(torch.float64)
        metrics = user_metrics(hits, self.held_counts, self.ks)
        names = list(metrics)
        means = torch.stack([metrics[n].mean() for n in names]).cpu().tolist()  # the one host read
        result = dict(zip(names, means))
        return (result, metrics) if per_user else result


class FullRanking(Evaluator):
    """Recall@K, NDCG@K, Precision@K and HitRate@K over all items not seen in training.

    ``outputs`` (the model's ``predict``) are scores ``(batch users, n_items)``, dense or a
    ``UserItemScores`` factorisation (ranked block by block, never materialised); the batch
    carries the held-out items and the items to mask (``graph.RecSysData`` collates them).
    """

    def __init__(self, ks: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] | Annotated[int, Ge(1)] = (20,)):
        super().__init__()
        ks = [int(k) for k in ([ks] if isinstance(ks, int) else ks)]
        if not ks or min(ks) < 1:
            raise ValueError(f"FullRanking: ks must be positive integers, got {ks}")
        self.ks = ks

    def process(self, batch: dict, outputs: torch.Tensor | UserItemScores) -> None:
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
