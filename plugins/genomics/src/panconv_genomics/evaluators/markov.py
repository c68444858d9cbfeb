"""The order-k Markov chain: the classical DNA language-model baseline a neural LM must beat.

``p(x_t | x_{t-k} .. x_{t-1}) = (count(context, x_t) + alpha) / (count(context) + 5 alpha)`` over the nucleotide
alphabet ``A, C, G, T, N`` (other ids count as ``N``), fitted on training token streams, optionally on both
strands (``both_strands``: the counts of the reverse complements too, as the neural models' augmentation).
Where fewer than ``k`` tokens precede a position (the start of a window) the chain of the available order is
used, so it scores exactly the positions a windowed neural LM scores, with the same context.

:meth:`MarkovChain.log_probs` returns ``(N, L, 12)`` log-probabilities over the HyenaDNA vocabulary (the special
tokens get -1e9), the format of the LM heads' ``predict``: ``sequence.Perplexity`` scores
it as it scores a model. Used by ``benchmarks/genomics_lm_baselines.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..datasets.tokenizer import VOCAB_SIZE, A, reverse_complement

ALPHABET = 5  # A C G T N


def _letters(ids: torch.Tensor) -> torch.Tensor:
    """Vocabulary ids -> 0..4 (A C G T N); specials and [UNK] -> N."""
    letters = ids.long() - A
    return torch.where((letters >= 0) & (letters < ALPHABET), letters, torch.full_like(letters, ALPHABET - 1))


class MarkovChain:
    """Order-``order`` Markov chain with add-``alpha`` smoothing and lower orders at window starts."""

    def __init__(self, order: int = 4, alpha: float = 1.0, both_strands: bool = True):
        if not 0 <= order <= 10:
            raise ValueError(f"order must be in 0..10 (5^order contexts), got {order}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.order, self.alpha, self.both_strands = order, alpha, both_strands
        self.counts = [torch.zeros(ALPHABET ** k, ALPHABET, dtype=torch.float64) for k in range(order + 1)]

    def fit(self, streams: Iterable[torch.Tensor]) -> MarkovChain:
        """Count every (context, next) pair of each id stream (``(T,)``) for orders ``0..order``."""
        for ids in streams:
            for strand in ((ids, reverse_complement(ids)) if self.both_strands else (ids,)):
                x = _letters(strand)
                for k in range(self.order + 1):
                    if len(x) <= k:
                        continue
                    context = torch.zeros(len(x) - k, dtype=torch.long)
                    for j in range(k):  # x[t-k+j] for the next symbol x[t], t = k..T-1
                        context = context * ALPHABET + x[j:len(x) - k + j]
                    flat = context * ALPHABET + x[k:]
                    self.counts[k] += torch.bincount(flat, minlength=ALPHABET ** (k + 1)).view(-1, ALPHABET).double()
        return self

    def table(self, k: int) -> torch.Tensor:
        """``(5^k, 5)`` log p(next | context) of order ``k``."""
        counts = self.counts[k] + self.alpha
        return (counts / counts.sum(-1, keepdim=True)).log()

    def log_probs(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` ids -> ``(N, L, 12)`` log p(next token | inputs[:, :t+1]) over the HyenaDNA vocabulary."""
        x = _letters(inputs)
        n, length = x.shape
        out = torch.full((n, length, ALPHABET), -math.inf, dtype=torch.float64)
        for t in range(length):
            k = min(self.order, t + 1)
            context = torch.zeros(n, dtype=torch.long)
            for j in range(t + 1 - k, t + 1):
                context = context * ALPHABET + x[:, j]
            out[:, t] = self.table(k)[context]
        full = torch.full((n, length, VOCAB_SIZE), -1e9, dtype=torch.float64)
        full[..., A:A + ALPHABET] = out
        return full


__all__ = ["MarkovChain"]
