"""Evaluator interface: ``process(batch, outputs)`` then ``compute() -> {metric: value}``.

The DDP contract: ``process`` appends *partial results* (anything picklable: numbers,
small tensors, arrays) to ``self.results``; ``compute_metrics(results)`` turns a list of
partial results into metrics. Under DDP the engine gathers every rank's ``results``
(dropping the padding the distributed sampler adds) and calls ``compute_metrics`` once on
the merged list, so ``compute_metrics(a + b) == compute_metrics(all)`` must hold — and
``panconv.testing`` checks it.
"""

from __future__ import annotations

from typing import Any


class Evaluator:
    """Accumulates per-batch partial results and reduces them into metrics."""

    #: ``panconv.testing`` opt-outs: check name -> declared reason
    conformance_skips: dict[str, str] = {}
    #: metric-name substrings for which lower is better (for best-checkpoint selection)
    lower_is_better: tuple[str, ...] = ("loss", "error", "wer", "cer", "mse", "mae")

    def __init__(self) -> None:
        self.results: list[Any] = []

    def reset(self) -> None:
        self.results = []

    def process(self, batch: dict, outputs: Any) -> None:  # pragma: no cover - interface
        """Add the partial results of one batch (``outputs`` is the model's ``predict``)."""
        raise NotImplementedError

    def compute_metrics(self, results: list[Any]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """Metrics over everything processed since the last ``reset`` (single process)."""
        return {k: float(v) for k, v in self.compute_metrics(self.results).items()}

    def greater_is_better(self, metric: str) -> bool:
        name = metric.lower()
        return not any(token in name for token in self.lower_is_better)

    # ---- conformance-kit example (see panconv.testing) ----
    @classmethod
    def example(cls) -> tuple[dict, list[tuple[dict, Any]], dict[str, float]]:
        """``(constructor kwargs, [(batch, outputs), ...], expected metrics)`` for a known case."""
        raise NotImplementedError(f"{cls.__name__} declares no example()")
