"""Character tokenizer and CTC decoding (greedy and prefix beam search).

Blank is index 0. ``ctc_greedy_decode`` takes the best label per frame, merges repeats and
drops blanks; ``ctc_prefix_beam_search`` sums over alignments of each prefix (Hannun et al.,
2014, without a language model) and keeps the ``beam`` most probable prefixes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch


class CharTokenizer:
    """Characters ``<blank>``, space, apostrophe, ``a``-``z`` (29 symbols); unknown characters are dropped."""

    def __init__(self, alphabet: str = " 'abcdefghijklmnopqrstuvwxyz"):
        self.symbols = ["<blank>", *alphabet]
        self.index = {c: i for i, c in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def blank(self) -> int:
        return 0

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text.lower() if c in self.index and c != "<blank>"]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != 0)

    def batch_encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated targets and their lengths, as ``torch.nn.functional.ctc_loss`` takes them."""
        ids = [self.encode(t) for t in texts]
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        flat = torch.tensor([x for seq in ids for x in seq], dtype=torch.long)
        return flat, lengths


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. ``log_probs``: ``(N, T, V)``."""
    best = log_probs.argmax(-1).cpu()
    n, t = best.shape
    lengths = lengths.cpu().tolist() if lengths is not None else [t] * n
    out = []
    for i in range(n):
        seq, prev = [], blank
        for s in best[i, : lengths[i]].tolist():
            if s != prev and s != blank:
                seq.append(s)
            prev = s
        out.append(seq)
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_prefix_beam_search(log_probs: torch.Tensor, beam: int = 8, blank: int = 0,
                           prune: float | None = None, rescore: bool = True) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance ``(T, V)`` of log-probabilities.

    Returns up to ``beam`` ``(labels, log_prob)`` pairs, best first; ``log_prob`` is the total
    probability of the label sequence summed over the alignments kept in the beam (exact when
    nothing was pruned). ``prune``: skip symbols with frame log-probability below this.
    ``rescore``: add the greedy (best-path) labelling to the final candidates and rank them all by
    their exact CTC likelihood, so the result is never less likely than greedy decoding (pruning
    alone can lose the best-path prefix).
    """
    lp = log_probs.detach().double().cpu().tolist()
    # prefix -> (log P ending in blank, log P ending in non-blank)
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in lp:
        nxt: dict[tuple, list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        symbols = range(len(frame)) if prune is None else [s for s, v in enumerate(frame) if v >= prune]
        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            for s in symbols:
                p = frame[s]
                if s == blank:
                    e = nxt[prefix]
                    e[0] = _logsumexp(e[0], total + p)
                    continue
                last = prefix[-1] if prefix else None
                ext = prefix + (s,)
                e = nxt[ext]
                if s == last:
                    e[1] = _logsumexp(e[1], pb + p)  # a repeat needs a blank in between
                    same = nxt[prefix]
                    same[1] = _logsumexp(same[1], pnb + p)  # collapse into the same prefix
                else:
                    e[1] = _logsumexp(e[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    if not rescore:
        return [(list(k), _logsumexp(*v)) for k, v in
                sorted(beams.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)]
    candidates = {k for k in beams} | {tuple(ctc_greedy_decode(log_probs[None], blank=blank)[0])}
    scored = [(list(k), ctc_sequence_log_prob(log_probs, list(k), blank)) for k in candidates]
    return sorted(scored, key=lambda kv: kv[1], reverse=True)[:beam]


def ctc_sequence_log_prob(log_probs: torch.Tensor, labels: Sequence[int], blank: int = 0) -> float:
    """Exact ``log P(labels | x)`` for one utterance ``(T, V)`` (via ``ctc_loss``)."""
    t = log_probs.shape[0]
    loss = torch.nn.functional.ctc_loss(
        log_probs.double().unsqueeze(1), torch.tensor([list(labels)] if labels else [[]], dtype=torch.long),
        torch.tensor([t]), torch.tensor([len(labels)]), blank=blank, reduction="sum", zero_infinity=False)
    return -float(loss)
