"""Adapters between panconv's interfaces and mmengine's Runner."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel

from ..api.evaluator import Evaluator


class EngineModel(BaseModel):
    """Wraps a panconv :class:`~panconv.api.Model` as an mmengine ``BaseModel``.

    ``forward(**batch, mode=...)`` is what mmengine's DDP wrapper calls; ``train_step`` adds
    CPU autocast (bf16) when AMP is asked for on a CPU, which mmengine's AmpOptimWrapper
    does not support.
    """

    def __init__(self, model: torch.nn.Module, cpu_amp: bool = False, data_source: str | None = None):
        super().__init__(data_preprocessor={"type": "BaseDataPreprocessor"})
        self.model = model
        self.cpu_amp = cpu_amp
        #: what the training batches come from (named when the loss goes non-finite)
        self.data_source = data_source

    def forward(self, mode: str = "loss", **batch: Any):
        if mode == "loss":
            outputs = self.model(batch)
            return self.model.loss(outputs, batch)
        if mode == "predict":
            outputs = self.model(batch)
            return [(batch, self.model.predict(outputs, batch))]
        return self.model(batch)

    def _autocast(self):
        if self.cpu_amp:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, data, optim_wrapper):
        with optim_wrapper.optim_context(self), self._autocast():
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode="loss")
        parsed, log_vars = self.parse_losses(losses)
        if not torch.isfinite(parsed):
            from ..errors import PanconvError

            bad = _non_finite_fields(data)
            cause = (f"the batch holds NaN/inf in {', '.join(bad)}: check the data file(s) of "
                     f"{self.data_source or 'the training split'}" if bad else
                     f"the inputs are finite ({self.data_source or 'training split'}): lower the learning "
                     f"rate or set train.grad_clip")
            raise PanconvError(f"the training loss is not finite ({parsed.item()}); {cause}; "
                               f"components: { {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()} }")
        optim_wrapper.update_params(parsed)
        return log_vars

    def _run_forward(self, data, mode):
        if isinstance(data, dict):
            return self(mode=mode, **data)
        return self(data, mode=mode)


class EvaluatorMetric(BaseMetric):
    """Runs panconv evaluators under mmengine's val/test loops.

    Unlike mmengine's per-sample collection, panconv evaluators keep per-batch partial
    results; every rank's list is gathered with ``all_gather_object`` and reduced once by
    ``compute_metrics`` (the eval sampler does not pad, so nothing is counted twice).
    """

    default_prefix = "panconv"  # unused: metric names are the evaluators' own

    def __init__(self, evaluators: list[Evaluator]):
        super().__init__(collect_device="cpu")
        self.evaluators = evaluators

    def process(self, data_batch, data_samples) -> None:
        for batch, predictions in data_samples:
            for evaluator in self.evaluators:
                evaluator.process(batch, predictions)

    def compute_metrics(self, results):  # pragma: no cover - evaluate() is overridden
        raise NotImplementedError

    def evaluate(self, size: int) -> dict:
        import torch.distributed as dist

        metrics: dict[str, float] = {}
        for evaluator in self.evaluators:
            results = evaluator.results
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                gathered: list = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, _to_cpu(results))
                results = [item for part in gathered for item in part]
            for key, value in evaluator.compute_metrics(results).items():
                metrics[key] = float(value)
            evaluator.reset()
        return metrics


def _non_finite_fields(batch: Any) -> list[str]:
    """Names of the floating-point tensors of a batch that hold NaN or inf."""
    items = batch.items() if isinstance(batch, dict) else enumerate(batch if isinstance(batch, (list, tuple)) else [])
    return [str(key) for key, value in items
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
