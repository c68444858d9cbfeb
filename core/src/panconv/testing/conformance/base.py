"""What every check shares: the result and error types, the check registry, and the helpers
that build a component from its declared example and compare outputs."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...registry import MODEL_KINDS, Variant


class ConformanceError(AssertionError):
    """A component broke the contract; the message names the component and the check."""


class SkipCheck(Exception):
    """The check does not apply (declared opt-out, or a backend missing here)."""


@dataclass
class CheckResult:
    component: str
    check: str
    status: str  # passed | failed | skipped
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable
    doc: str
    #: the capability a component must declare for this check to apply (None: every component of the kinds)
    capability: str | None = None


#: kind -> check name -> Check; filled by the ``@check`` decorators of the check modules
CHECKS: dict[str, dict[str, Check]] = {}


def check(*kinds: str, doc: str, capability: str | None = None):
    """Register ``check_<name>(entry)`` for ``kinds`` (only for components with ``capability``, if given)."""

    def decorate(fn):
        name = fn.__name__.removeprefix("check_")
        for kind in kinds:
            CHECKS.setdefault(kind, {})[name] = Check(name, fn, doc, capability)
        return fn

    return decorate


def fail(entry, name: str, message: str):
    raise ConformanceError(f"{entry.qualname}: {name}: {message}")


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def example_config(factory) -> dict:
    config = getattr(factory, "example_config", None)
    return dict(config()) if callable(config) else {}


def component_class(entry) -> type | None:
    """The class an entry builds (a variant's class, a registered class), ``None`` for a plain function."""
    target = entry.load()
    if isinstance(target, Variant):
        target = target.factory
    return target if inspect.isclass(target) else None


def build(entry, seed: int = 0, config: dict | None = None):
    """Build a model-kind component from its example config (necks/heads get example_in_features)."""
    factory = entry.load()
    config = example_config(factory) if config is None else config
    seed_everything(seed)
    if entry.kind in ("neck", "head"):
        return factory(factory.example_in_features(), **config)
    return factory(**config)


def example_inputs(entry, module, batch_size: int = 2):
    """(forward input, batch for loss/predict) of a built component."""
    if entry.kind == "backbone":
        return module.example_inputs(batch_size), None
    if entry.kind == "model":
        batch = module.example_inputs(batch_size)
        return batch, batch
    if entry.kind == "neck":
        if hasattr(module, "example_inputs"):
            return module.example_inputs(batch_size), None
        side = [max(1, 64 // f.reduction) for f in module.in_features]
        return [torch.randn(batch_size, f.channels, s, s) for f, s in zip(module.in_features, side)], None
    if entry.kind == "head":
        if not hasattr(module, "example_inputs"):
            fail(entry, "example", "declares no example_inputs(batch_size) -> (features, batch)")
        features, batch = module.example_inputs(batch_size)
        return features, batch
    raise AssertionError(entry.kind)


def tensors(value) -> list[torch.Tensor]:
    """The tensors in a (nested) output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    return []


def requires_grad(inputs):
    """Float input tensors as gradient leaves, so parameter-free components can backpropagate too."""
    for tensor in tensors(inputs):
        if tensor.is_floating_point() and tensor.is_leaf:
            tensor.requires_grad_(True)
    return inputs


def close(a, b, atol=1e-6, rtol=1e-5) -> bool:
    """Same structure of tensors, same shapes, values within tolerance (NaN equals NaN)."""
    ta, tb = tensors(a), tensors(b)
    return len(ta) == len(tb) and all(
        x.shape == y.shape and torch.allclose(dense(x).float(), dense(y).float(), atol=atol, rtol=rtol, equal_nan=True)
        for x, y in zip(ta, tb))


def max_abs_diff(a, b) -> float:
    pairs = [(x, y) for x, y in zip(tensors(a), tensors(b)) if x.shape == y.shape]
    return max(((dense(x).float() - dense(y).float()).abs().max().item() for x, y in pairs if x.numel()),
               default=float("nan"))


def dense(t: torch.Tensor) -> torch.Tensor:
    return t if t.layout == torch.strided else t.to_dense()


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical tensors (shape, dtype and values; NaN equals NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = dense(a), dense(b)
    if a.is_floating_point() or a.is_complex():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


__all__ = ["CHECKS", "MODEL_KINDS", "Check", "CheckResult", "ConformanceError", "SkipCheck", "build", "check",
           "close", "component_class", "example_config", "example_inputs", "fail", "max_abs_diff",
           "requires_grad", "same_values", "seed_everything", "tensors"]
