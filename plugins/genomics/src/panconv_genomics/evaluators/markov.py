"""The order-k Markov chain: the classical DNA language-model baseline a neural LM must beat.

``p(x_t | x_{t-k} .. x_{t-1}) = (count(context, x_t) + alpha) / (count(context) + 5 alpha)`` over the nucleotide
alphabet ``A, C, G, T, N`` (other ids count as ``N``), fitted on training token streams, optionally on both
strands (``both_strands``: the counts of the reverse complements too, as the neural models' augmentation).
Where fewer than ``k`` tokens precede a position (the start of a window) the chain of the available order is
used, so it scores exactly the positions a windowed neural LM scores, with the same context.

:meth:`MarkovChain.log_probs` returns ``(N, L, 12)`` log-probabilities over the HyenaDNA vocabulary (the special
tokens get -1e9), the format of the LM heads' ``predict``: ``sequence.Perplexity`` scores
it as it scores a model. Used by ``benchmarks/genomics_lm_baselines.py``.

:class:`MarkovPerplexity` (registered ``genomics.MarkovPerplexity``) is the chain as an evaluator: listed beside
``sequence.Perplexity`` in a language-model run's ``eval.evaluators``, it fits the chain once on the training
ranges of the DNA sources (the ``genomics.DNALanguageModel`` split, both strands) and scores the very positions
the model is scored on (``batch["inputs"]`` / ``batch["targets"]``; the model's outputs are not used), so the
baseline lands in the same ``metrics.json`` as ``markov_perplexity`` / ``markov_nll``. (A model it is not: it
has no trainable weights for the engine's optimiser and no checkpoint to save.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated

import torch
from annotated_types import Gt, Interval

from panconv.api import Evaluator

from ..datasets.tokenizer import VOCAB_SIZE, A, encode, reverse_complement

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


class MarkovPerplexity(Evaluator):
    """Perplexity of an order-``order`` Markov chain on the positions of each evaluated batch (see the module doc).

    Args:
        order, alpha, both_strands: the chain (:class:`MarkovChain`).
        sources, fractions: the training ranges it is fitted on (as the run's ``genomics.DNALanguageModel``).
        root: the data root (default: ``$PANCONV_DATA``, else where the Debian packages install the files).
        train_text: fit on this DNA string instead of the sources (tests, quick checks).
    """

    lower_is_better = ("nll", "perplexity", "bits")

    def __init__(self, order: Annotated[int, Interval(ge=0, le=10)] = 3, alpha: Annotated[float, Gt(0)] = 1.0,
                 both_strands: bool = True, sources: tuple[str, ...] = ("human", "phage", "transcripts"),
                 fractions: tuple[Annotated[float, Interval(gt=0, lt=1)], ...] = (0.8, 0.1, 0.1),
                 root: str | None = None, train_text: str | None = None):
        super().__init__()
        self.chain = MarkovChain(order, alpha, both_strands)
        self.sources, self.fractions, self.root, self.train_text = tuple(sources), tuple(fractions), root, train_text
        self.fitted = False

    def fit(self) -> MarkovChain:
        if not self.fitted:
            if self.train_text is not None:
                streams = [encode(self.train_text)]
            else:
                from ..datasets.dna import DNALanguageModel

                streams = DNALanguageModel(root=self.root, split="train", sources=self.sources,
                                           fractions=self.fractions).tokens
            self.chain.fit(streams)
            self.fitted = True
        return self.chain

    def process(self, batch: dict, outputs=None) -> None:
        inputs, targets = batch["inputs"].cpu(), batch["targets"].cpu()
        if inputs.shape != targets.shape:
            raise ValueError(f"MarkovPerplexity: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} "
                             f"differ (next-token windows expected)")
        log_p = self.fit().log_probs(inputs)
        keep = targets != -100
        picked = log_p.gather(-1, targets.clamp(min=0).long().unsqueeze(-1)).squeeze(-1)
        self.results.append((float(-picked[keep].sum()), int(keep.sum())))

    def compute_metrics(self, results: list) -> dict[str, float]:
        count = sum(r[1] for r in results)
        nll = sum(r[0] for r in results) / count if count else float("nan")
        return {"markov_perplexity": math.exp(nll), "markov_nll": nll}

    @classmethod
    def example(cls):
        # order 0 on "AAAA" (one strand, add-one): p(A) = 5/9, p(C) = 1/9; targets A, C, A: nll (2 ln 9/5 + ln 9) / 3
        nll = (2 * math.log(9 / 5) + math.log(9)) / 3
        batches = [({"inputs": torch.tensor([[A, A]]), "targets": torch.tensor([[A, A + 1]])}, None),
                   ({"inputs": torch.tensor([[A, A]]), "targets": torch.tensor([[-100, A]])}, None)]
        return ({"order": 0, "both_strands": False, "train_text": "AAAA"}, batches,
                {"markov_perplexity": math.exp(nll), "markov_nll": nll})


__all__ = ["MarkovChain", "MarkovPerplexity"]
