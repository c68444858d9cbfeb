"""Link-prediction metrics under the filtered protocol: MRR and Hits@K (Bordes et al., 2013).

For each query the model scores every entity (``outputs``: ``(B, n_entities)``); the other correct
answers of the query (``batch["filter_items"]`` / ``batch["filter_offsets"]``, a CSR list per row,
which never holds the query's own answer ``batch["labels"]``) are removed from the ranking. The rank
of the answer is ``1 + #{e : s_e > s_answer} + #{e != answer : s_e = s_answer} / 2`` over the
remaining entities: ties count half, the expected rank under a random tie-break (a model that
gives every entity the same score gets the random rank, not rank 1). Then

* MRR = mean(1 / rank);  Hits@K = mean(1[rank <= K]);  MR = mean(rank)

Partial results are per-query rank arrays, so ``compute_metrics(a + b) == compute_metrics(all)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, MinLen

from panconv.api import Evaluator


def filtered_ranks(scores: torch.Tensor, labels: torch.Tensor, filter_items: torch.Tensor | None,
                   filter_offsets: torch.Tensor | None) -> torch.Tensor:
    """Filtered rank (float64, ties counted half) of ``labels[i]`` in row ``i`` of ``scores``."""
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"LinkPrediction: expected (B, n_entities) scores and (B,) labels, got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    scores = scores.detach().to(torch.float64)
    rows = torch.arange(scores.shape[0], device=scores.device)
    target = scores[rows, labels].unsqueeze(1)
    greater = scores > target
    equal = scores == target
    if filter_items is not None and filter_items.numel():
        counts = filter_offsets.diff()
        filter_rows = torch.repeat_interleave(rows, counts.to(scores.device))
        greater[filter_rows, filter_items] = False
        equal[filter_rows, filter_items] = False
    equal[rows, labels] = False
    return 1.0 + greater.sum(1).to(torch.float64) + 0.5 * equal.sum(1).to(torch.float64)


class LinkPrediction(Evaluator):
    """MRR, MR and Hits@K of the answer entity over all entities, filtered (see module docstring)."""

    def __init__(self, ks: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (1, 3, 10)):
        super().__init__()
        ks = [int(k) for k in ks]
        if not ks or min(ks) < 1:
            raise ValueError(f"LinkPrediction: ks must be positive integers, got {ks}")
        self.ks = ks

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        ranks = filtered_ranks(outputs, batch["labels"].to(outputs.device), batch.get("filter_items"),
                               batch.get("filter_offsets"))
        self.results.append(ranks.cpu().numpy())

    def compute_metrics(self, results: list[np.ndarray]) -> dict[str, float]:
        if not results:
            return {}
        ranks = np.concatenate(results)
        out = {"mrr": float(np.mean(1.0 / ranks)), "mr": float(np.mean(ranks))}
        out.update({f"hits@{k}": float(np.mean(ranks <= k)) for k in self.ks})
        return out

    lower_is_better = ("loss", "mr")

    def greater_is_better(self, metric: str) -> bool:
        return metric.lower() != "mr"

    @classmethod
    def example(cls):
        """Three queries over five entities (worked by hand in tests/test_kg_data.py)."""
        t = torch.tensor
        # query 0: answer 2 (score 0.5); entities 0 (0.9) and 1 (0.7) score higher but 0 is another
        # correct answer (filtered) -> rank 2
        first = ({"labels": t([2]), "filter_items": t([0]), "filter_offsets": t([0, 1])},
                 t([[0.9, 0.7, 0.5, 0.1, 0.0]]))
        # query 1: answer 4 scores highest -> rank 1; query 2: answer 0 ties with entity 3, 1 higher -> 2.5
        second = ({"labels": t([4, 0]), "filter_items": t([], dtype=torch.int64), "filter_offsets": t([0, 0, 0])},
                  t([[0.1, 0.2, 0.3, 0.4, 0.9], [0.3, 0.8, 0.1, 0.3, 0.0]]))
        ranks = np.array([2.0, 1.0, 2.5])
        expected = {"mrr": float(np.mean(1 / ranks)), "mr": float(ranks.mean()), "hits@1": 1 / 3,
                    "hits@3": 1.0, "hits@10": 1.0}
        return {"ks": [1, 3, 10]}, [first, second], expected
