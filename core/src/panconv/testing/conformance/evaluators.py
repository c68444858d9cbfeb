"""Checks of evaluators: known values from the declared ``example()``, and the DDP merge contract."""

from __future__ import annotations

import copy
import math

from .base import check, fail


def evaluator_example(entry):
    factory = entry.load()
    try:
        kwargs, batches, expected = factory.example()
    except NotImplementedError as exc:
        fail(entry, "example", str(exc))
    return factory, kwargs, batches, expected


@check("evaluator", doc="known inputs give the declared metric values")
def check_known_values(entry):
    factory, kwargs, batches, expected = evaluator_example(entry)
    evaluator = factory(**kwargs)
    for batch, outputs in batches:
        evaluator.process(batch, outputs)
    got = evaluator.compute()
    for key, value in expected.items():
        if key not in got:
            fail(entry, "known_values", f"metric '{key}' missing; got {sorted(got)}")
        if not math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9):
            fail(entry, "known_values", f"{key} = {got[key]!r}, expected {value!r}")


@check("evaluator", doc="merging partial results of two workers equals the whole (the DDP contract)")
def check_merge(entry):
    factory, kwargs, batches, _ = evaluator_example(entry)
    if len(batches) < 2:
        fail(entry, "merge", "example() must give at least two batches to test merging")
    whole = factory(**kwargs)
    for batch, outputs in batches:
        whole.process(batch, outputs)
    parts = [factory(**kwargs), factory(**kwargs)]
    for i, (batch, outputs) in enumerate(batches):
        parts[i % 2].process(batch, outputs)
    merged = whole.compute_metrics(copy.deepcopy(parts[1].results) + copy.deepcopy(parts[0].results))
    for key, value in whole.compute().items():
        if not math.isclose(float(merged[key]), value, rel_tol=1e-6, abs_tol=1e-9):
            fail(entry, "merge", f"{key}: merged {merged[key]!r} != whole {value!r}")
