"""Language-modelling metrics from the model's per-position log-probabilities: bits per byte, perplexity.

``process(batch, outputs)``: ``outputs`` are the model's ``predict`` — log-probabilities (or logits: they
are log-softmaxed again, which leaves log-probabilities unchanged) ``(N, L, V)``; ``batch["targets"]``
``(N, L)`` with ``-100`` at ignored positions. Each batch adds one exact partial result, the summed
negative log-likelihood (nats, float64) and the number of scored positions, so that the metrics over
merged partial results (DDP) equal the metrics over all positions at once:

    nll = sum_t -log p(x_t | x_<t) / T;   bits_per_byte = nll / ln 2 (byte-level vocabularies);
    perplexity = exp(nll)
"""

from __future__ import annotations

import math

import torch

from panconv.api import Evaluator

IGNORE_INDEX = -100


class _NegativeLogLikelihood(Evaluator):
    lower_is_better = ("nll", "bits", "perplexity", "loss")

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        targets = batch["targets"].to(outputs.device)
        if outputs.shape[:-1] != targets.shape:
            raise ValueError(f"{type(self).__name__}: outputs {tuple(outputs.shape)} do not match targets "
                             f"{tuple(targets.shape)} (expected (N, L, V) and (N, L))")
        logp = outputs.detach().double().log_softmax(-1)
        keep = targets != IGNORE_INDEX
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        self.results.append((float(-(picked[keep]).sum()), int(keep.sum())))

    @staticmethod
    def _nll(results: list) -> float:
        count = sum(r[1] for r in results)
        return sum(r[0] for r in results) / count if count else float("nan")

    @classmethod
    def _example_batches(cls):
        """Two batches of uniform predictions over 4 symbols (some positions ignored) and one certain batch."""
        uniform = torch.zeros(1, 3, 4)
        certain = torch.full((1, 2, 4), -1e4)
        certain[0, 0, 1] = certain[0, 1, 2] = 0.0
        return [({"targets": torch.tensor([[0, 3, -100]])}, uniform),
                ({"targets": torch.tensor([[1, 2]])}, certain),
                ({"targets": torch.tensor([[-100, 1, 2]])}, uniform)]


class BitsPerByte(_NegativeLogLikelihood):
    """``bits_per_byte`` (mean NLL in bits over every non-ignored position; the token is a byte) and ``nll`` (nats)."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        nll = self._nll(results)
        return {"bits_per_byte": nll / math.log(2), "nll": nll}

    @classmethod
    def example(cls):
        # 4 uniform positions (2 bits each) + 2 certain ones (0 bits) -> 8 bits / 6 bytes
        return {}, cls._example_batches(), {"bits_per_byte": 8 / 6, "nll": 8 / 6 * math.log(2)}


class Perplexity(_NegativeLogLikelihood):
    """``perplexity`` = exp(mean NLL in nats over every non-ignored position), and ``nll``."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        nll = self._nll(results)
        return {"perplexity": math.exp(nll), "nll": nll}

    @classmethod
    def example(cls):
        # mean NLL = 4 ln 4 / 6 -> perplexity 4^(2/3)
        return {}, cls._example_batches(), {"perplexity": 4 ** (2 / 3), "nll": 4 * math.log(4) / 6}
