"""Checks of kernels: every accelerated implementation equals the reference within its tolerance.

Triton implementations run on a GPU when there is one. Without one they run under Triton's
interpreter (``TRITON_INTERPRET=1``), which Triton reads when a ``@triton.jit`` function is
*defined*: so, unless the variable is already set, the kit checks them in a child process
started with it (``python -m panconv.testing.conformance.interpreter module:attr``) and leaves
this process's environment alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import torch

from ...api.kernel import Kernel, backend_available, triton_interpret
from .base import SkipCheck, check, close, fail, max_abs_diff

CHECK = "implementations_match_reference"


def as_kernel(obj) -> Kernel:
    kernel = obj if isinstance(obj, Kernel) else obj()
    if not isinstance(kernel, Kernel):
        raise TypeError(f"expected a panconv.api.Kernel, got {type(kernel).__name__}")
    return kernel


def compare(kernel: Kernel, backends: tuple[str, ...] | None = None) -> tuple[int, str | None]:
    """Run every implementation that can run here against the reference: ``(comparisons, first failure)``."""
    ran = 0
    for impl in kernel.implementations:
        if backends is not None and impl.backend not in backends:
            continue
        for device in ("cuda", "cpu"):  # the first device the backend runs on
            if device == "cuda" and not torch.cuda.is_available():
                continue
            if not backend_available(impl.backend, torch.device(device)):
                continue
            for dtype in impl.dtypes or (torch.float32,):
                for seed in (0, 1):
                    args, kwargs = kernel.make_inputs(torch.device(device), dtype, seed)
                    if impl.supports is not None and not impl.supports(*args, **kwargs):
                        continue
                    got, want = impl.fn(*args, **kwargs), kernel.reference(*args, **kwargs)
                    if not close(got, want, atol=impl.atol, rtol=impl.rtol):
                        return ran, (f"{impl.name} on {device}/{dtype}: max abs diff {max_abs_diff(got, want):.3g} "
                                     f"> atol {impl.atol}")
                    ran += 1
            break
    return ran, None


def _needs_interpreter(kernel: Kernel) -> bool:
    return (not torch.cuda.is_available() and not triton_interpret() and importlib.util.find_spec("triton") is not None
            and any(impl.backend == "triton" for impl in kernel.implementations))


def _compare_in_interpreter(entry) -> tuple[int, str | None]:
    """Compare the Triton implementations in a child process with ``TRITON_INTERPRET=1``."""
    if not isinstance(entry.target, str):
        raise SkipCheck("Triton implementations of a kernel registered as an object (not 'module:attr') are "
                        "checked on the CPU only with TRITON_INTERPRET=1 set before the kernel is imported")
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-m", f"{__package__}.interpreter", entry.target],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        fail(entry, CHECK, f"the Triton interpreter run failed: {last}")
    result = json.loads(lines[-1])
    return result["ran"], result["failure"]


@check("kernel", doc="every accelerated implementation equals the reference within its tolerance (Triton ones "
                     "under the Triton interpreter, in a child process, when there is no GPU)")
def check_implementations_match_reference(entry):
    try:
        kernel = as_kernel(entry.load())
    except TypeError as exc:
        fail(entry, "kernel", str(exc))
    if kernel.make_inputs is None:
        fail(entry, CHECK, "declares no make_inputs(device, dtype, seed)")
    ran, failure = compare(kernel)
    if failure is None and _needs_interpreter(kernel):
        more, failure = _compare_in_interpreter(entry)
        ran += more
    if failure is not None:
        fail(entry, CHECK, failure)
    if kernel.implementations and not ran:
        raise SkipCheck("no accelerated implementation can run here")

