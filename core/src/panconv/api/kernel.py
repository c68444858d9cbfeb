"""Kernel interface: one named operation, a PyTorch reference, optional accelerated versions.

    spmm = Kernel("graph.spmm", reference=spmm_reference)

    @spmm.implementation("triton", backend="triton", dtypes=(torch.float32,), atol=1e-5)
    def spmm_triton(a, x): ...

``spmm(a, x)`` runs the first implementation whose backend is available and that supports
the arguments (device, dtype, and an optional ``supports(*args)`` predicate), else the
reference. Triton implementations are also eligible for CPU tensors when
``TRITON_INTERPRET=1`` is set, which is how CI tests them without a GPU.
``PANCONV_KERNELS=reference`` forces the reference everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def backend_available(backend: str, device: torch.device) -> bool:
    """Whether ``backend`` ("triton", "cuda", "torch") can run on ``device`` here."""
    if backend == "torch":
        return True
    if backend == "triton":
        if not _has_module("triton"):
            return False
        if device.type == "cuda":
            return torch.cuda.is_available()
        return device.type == "cpu" and triton_interpret()
    if backend == "cuda":
        return device.type == "cuda" and torch.cuda.is_available()
    return False


@dataclass
class Implementation:
    name: str
    fn: Callable
    backend: str = "triton"
    dtypes: Sequence[torch.dtype] | None = None
    supports: Callable[..., bool] | None = None
    atol: float = 1e-5
    rtol: float = 1e-5

    def accepts(self, args: tuple, kwargs: dict) -> bool:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
        if not backend_available(self.backend, device):
            return False
        if self.dtypes is not None and any(t.dtype not in self.dtypes for t in tensors if t.is_floating_point()):
            return False
        return self.supports is None or bool(self.supports(*args, **kwargs))


@dataclass
class Kernel:
    """A named operation with a reference and accelerated implementations."""

    name: str
    reference: Callable
    doc: str | None = None
    implementations: list[Implementation] = field(default_factory=list)
    #: inputs for the conformance kit: ``make_inputs(device, dtype, seed) -> (args, kwargs)``
    make_inputs: Callable[..., tuple[tuple, dict]] | None = None

    def implementation(self, name: str, *, backend: str = "triton", dtypes=None, supports=None,
                       atol: float = 1e-5, rtol: float = 1e-5) -> Callable:
        def decorate(fn: Callable) -> Callable:
            self.implementations.append(Implementation(name, fn, backend, dtypes, supports, atol, rtol))
            return fn

        return decorate

    def select(self, *args, **kwargs) -> Implementation | None:
        """The implementation that would run for these arguments (``None``: the reference)."""
        if os.environ.get("PANCONV_KERNELS", "").lower() == "reference":
            return None
        for impl in self.implementations:
            if impl.accepts(args, kwargs):
                return impl
        return None

    def __call__(self, *args, **kwargs) -> Any:
        impl = self.select(*args, **kwargs)
        return (impl.fn if impl is not None else self.reference)(*args, **kwargs)
