"""Timing helpers shared by the scripts in ``benchmarks/`` (run as ``python benchmarks/<script>.py``).

Every benchmark reports our time as a ratio to a peer measured in the same run, so the two sides must be
timed the same way: these two functions are that way.
"""
from __future__ import annotations

import statistics
import time

import torch


def time_call(fn, *, iters: int, warmup: int = 1, cuda: bool = False, reduce: str = "median") -> float:
    """Seconds per call of ``fn()``: ``warmup`` untimed calls, then ``iters`` timed ones, reduced by ``reduce``.

    ``reduce`` is ``"median"`` (robust to a shared machine) or ``"min"`` (the best case, for kernels). With
    ``cuda`` the device is synchronised around every call so that the time covers the queued work.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if reduce not in ("median", "min"):
        raise ValueError(f"reduce must be 'median' or 'min', got {reduce!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) if reduce == "median" else min(times)


def peak_cuda_memory(fn) -> int:
    """Peak bytes allocated on the current CUDA device during one call of ``fn()`` (0 without CUDA)."""
    if not torch.cuda.is_available():
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()
