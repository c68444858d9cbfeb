"""Word and character error rates (Levenshtein distance, batched over a batch's hypotheses).

``outputs`` (the model's ``predict``) is a list of hypothesis strings; references come from
``batch["texts"]``. Partial results are (edits, reference length) sums, so merging partial results
from several processes gives exactly the single-process figure.
"""

from __future__ import annotations

from collections.abc import Sequence

from panconv.api import Evaluator


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def batch_edit_distance(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> tuple[int, int]:
    """Total edits and total reference length over a batch."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)), sum(len(r) for r in refs)


class _ErrorRate(Evaluator):
    name = "error_rate"

    def __init__(self, key: str = "texts"):
        super().__init__()
        self.key = key

    def units(self, text: str) -> Sequence:
        raise NotImplementedError

    def process(self, batch: dict, outputs) -> None:
        refs = [self.units(t) for t in batch[self.key]]
        hyps = [self.units(t) for t in outputs]
        edits, n = batch_edit_distance(refs, hyps)
        exact = sum(r == h for r, h in zip(refs, hyps))
        self.results.append({"edits": edits, "n": n, "exact": exact, "utts": len(refs)})

    def compute_metrics(self, results: list) -> dict[str, float]:
        n = sum(r["n"] for r in results)
        utts = sum(r["utts"] for r in results)
        return {self.name: sum(r["edits"] for r in results) / max(n, 1),
                f"{self.name}_exact": sum(r["exact"] for r in results) / max(utts, 1)}


class WER(_ErrorRate):
    """Word error rate: word-level edits / reference words; also the exact-match rate."""

    name = "wer"

    def units(self, text: str):
        return text.split()

    @classmethod
    def example(cls):
        batches = [({"texts": ["one two three", "four"]}, ["one too three", "four five"]),
                   ({"texts": ["six seven"]}, [""])]
        # edits: 1 (sub) + 1 (ins) + 2 (del) = 4 over 6 reference words; exact: 0 of 3
        return {}, batches, {"wer": 4 / 6, "wer_exact": 0.0}


class CER(_ErrorRate):
    """Character error rate: character-level edits / reference characters (spaces count)."""

    name = "cer"

    def units(self, text: str):
        return list(text)

    @classmethod
    def example(cls):
        batches = [({"texts": ["kitten", "ab"]}, ["sitting", "ab"]), ({"texts": ["abc"]}, ["ac"])]
        # kitten->sitting 3, ab->ab 0, abc->ac 1: 4 edits over 11 characters; exact 1 of 3
        return {}, batches, {"cer": 4 / 11, "cer_exact": 1 / 3}
