"""Answer accuracy of one-word visual question answering (EntityGrid-QA), overall, per task and split by
whether the question is about an entity cut by a slice boundary (the fragmentation HiRes-LLaVA restores)."""

from __future__ import annotations

from typing import Any

import torch

from panconv.api import Evaluator


class QAAccuracy(Evaluator):
    """``accuracy`` (exact answer token), ``accuracy/<task>`` for each task name and ``accuracy/boundary``,
    ``accuracy/interior`` (questions about entities cut / not cut by a slice boundary), in percent.

    ``outputs`` is the model's ``predict`` (``{"answer": (B,)}`` or the ``(B,)`` tensor); the batch holds
    ``answer``, and optionally ``task`` (indices into ``tasks``) and ``on_boundary``.
    """

    def __init__(self, tasks: list[str] | None = None):
        super().__init__()
        self.tasks = list(tasks) if tasks is not None else ["identify", "position", "count"]

    def process(self, batch: dict, outputs: Any) -> None:
        pred = outputs["answer"] if isinstance(outputs, dict) else outputs
        pred, answer = torch.as_tensor(pred).reshape(-1).cpu(), torch.as_tensor(batch["answer"]).reshape(-1).cpu()
        if pred.shape != answer.shape:
            raise ValueError(f"QAAccuracy: {pred.numel()} predicted answers for {answer.numel()} questions")
        n = answer.numel()
        task = torch.as_tensor(batch.get("task", torch.full((n,), -1))).reshape(-1).cpu()
        boundary = torch.as_tensor(batch.get("on_boundary", torch.full((n,), -1))).reshape(-1).cpu().long()
        self.results.extend(zip((pred == answer).tolist(), task.tolist(), boundary.tolist()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        def acc(rows) -> float:
            return 100.0 * sum(r[0] for r in rows) / len(rows) if rows else float("nan")

        out = {"accuracy": acc(results)}
        for i, name in enumerate(self.tasks):
            rows = [r for r in results if r[1] == i]
            if rows:
                out[f"accuracy/{name}"] = acc(rows)
        for flag, name in ((1, "boundary"), (0, "interior")):
            rows = [r for r in results if r[2] == flag]
            if rows:
                out[f"accuracy/{name}"] = acc(rows)
        return out

    @classmethod
    def example(cls):
        first = ({"answer": torch.tensor([1, 2, 3]), "task": torch.tensor([0, 1, 2]),
                  "on_boundary": torch.tensor([True, False, True])}, {"answer": torch.tensor([1, 2, 0])})
        second = ({"answer": torch.tensor([4]), "task": torch.tensor([2]), "on_boundary": torch.tensor([True])},
                  {"answer": torch.tensor([4])})
        return {}, [first, second], {"accuracy": 75.0, "accuracy/identify": 100.0, "accuracy/position": 100.0,
                                     "accuracy/count": 50.0, "accuracy/boundary": 200 / 3, "accuracy/interior": 100.0}
