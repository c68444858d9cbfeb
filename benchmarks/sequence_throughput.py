"""Throughput (tokens/s, forward + backward) and peak memory of every sequence backbone as L doubles.

Every backbone panconv-sequence registers (size variants left out) is built at the same width
(``--d-model``, ``--n-layers``, byte vocabulary) and run on one sequence of ``L`` tokens, ``L`` doubling
from ``--start`` (1k) to ``--stop`` (64k); a model stops growing once a step took longer than ``--step-limit``
seconds or its next step is predicted to (from its measured growth), or the whole run would pass
``--time-limit``. Printed per ``L``: tokens/s and peak memory, each model's ratio to the dense
``sequence.Transformer`` measured in the same run, and the growth exponent
``log2(time(L) / time(L/2))`` (1 = linear, 2 = quadratic).

Memory: on CUDA ``torch.cuda.max_memory_allocated`` over the step; on the CPU the peak resident-set growth
over the step (``/proc/self/statm`` sampled every millisecond; the script re-runs itself with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so that large tensors are mmap-ed and returned on free and the resident set
follows the live tensors) and, as a deterministic figure, the bytes autograd saves for backward. The dense
Transformer's attention goes through ``F.scaled_dot_product_attention``, whose fused CPU/GPU kernels keep
memory linear in ``L``; its time stays quadratic.

    OMP_NUM_THREADS=1 python benchmarks/sequence_throughput.py                 # CPU, ~ a few minutes
    python benchmarks/sequence_throughput.py --device cuda --stop 65536
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import threading
import time

import torch

BASELINE = "sequence.Transformer"


def backbones(names: list[str] | None) -> list[str]:
    import panconv

    found = [name for name in panconv.list_components("backbone", "sequence.*")
             if inspect.isclass(panconv.get_component("backbone", name))]          # size variants are not classes
    if names:
        found = [n for n in found if n in names or n.split(".", 1)[1] in names]
    return sorted(found, key=lambda n: (n != BASELINE, n))


def build(name: str, length: int, d_model: int, n_layers: int, device: str) -> torch.nn.Module:
    import panconv

    cls = panconv.get_component("backbone", name)
    params = inspect.signature(cls).parameters
    kwargs = dict(d_model=d_model, n_layers=n_layers, vocab_size=256)
    for key in ("l_max", "max_len", "max_length", "seq_len"):
        if key in params:
            kwargs[key] = length
    torch.manual_seed(0)
    return cls(**kwargs).to(device)


class PeakRSS:
    """Peak resident-set growth (bytes) over a block, sampled by a thread every millisecond."""

    page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.base


def step(model, x):
    """One forward + backward; returns the bytes autograd saved for backward."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)[0]
    out.float().pow(2).mean().backward()
    return saved[0]


def measure(model, length: int, device: str, min_time: float = 0.5):
    x = torch.randint(256, (1, length), device=device)
    step(model, x)                                                            # warm-up (kernels, allocator)
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    runs, start = 0, time.perf_counter()
    with PeakRSS() as rss:
        while True:
            saved = step(model, x)
            model.zero_grad(set_to_none=True)
            runs += 1
            if device == "cuda":
                torch.cuda.synchronize()
            if time.perf_counter() - start >= min_time:
                break
    seconds = (time.perf_counter() - start) / runs
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else rss.growth
    return seconds, peak, saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="registered names (default: every sequence backbone)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--stop", type=int, default=65536)
    parser.add_argument("--step-limit", type=float, default=20.0, help="seconds one fwd+bwd step may take")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.device == "cpu" and argv is None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if args.threads:
        torch.set_num_threads(args.threads)
    names = backbones(args.models)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    print(f"device={args.device} threads={torch.get_num_threads()} d_model={args.d_model} "
          f"n_layers={args.n_layers} batch=1 torch={torch.__version__}")
    results: dict[str, dict[int, tuple]] = {n: {} for n in names}
    stopped: dict[str, str] = {}
    clock = time.perf_counter()
    length = args.start
    while length <= args.stop and len(stopped) < len(names):
        for name in names:
            if name in stopped:
                continue
            previous = results[name].get(length // 2)
            before = results[name].get(length // 4)
            if previous:
                growth = previous[0] / before[0] if before else 4.0
                predicted = previous[0] * max(growth, 2.0)
                left = args.time_limit - (time.perf_counter() - clock)
                if predicted > args.step_limit or 3 * predicted > left:
                    why = (f"over --step-limit {args.step_limit:.0f}s" if predicted > args.step_limit
                           else f"{left:.0f}s of --time-limit left")
                    stopped[name] = f"stopped before L={length}: a step predicted at {predicted:.1f}s ({why})"
                    continue
            try:
                model = build(name, length, args.d_model, args.n_layers, args.device)
                results[name][length] = measure(model, length, args.device)
            except (RuntimeError, MemoryError, ValueError) as exc:               # out of memory, unsupported length
                stopped[name] = f"failed at L={length}: {str(exc).splitlines()[0][:100]}"
            finally:
                model = None
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        report(length, names, results)
        length *= 2
    for name, why in stopped.items():
        print(f"{name}: {why}")


def report(length: int, names: list[str], results: dict) -> None:
    if not any(length in results[name] for name in names):
        return
    base = results[BASELINE].get(length)
    print(f"\nL={length}" + ("" if base else f"  ({BASELINE} has stopped: no ratios)"))
    print(f"  {'model':<22}{'tokens/s':>11}{'x dense':>9}{'peak MB':>10}{'x dense':>9}{'saved MB':>10}"
          f"{'x dense':>9}{'growth':>8}")
    for name in names:
        got = results[name].get(length)
        if got is None:
            continue
        seconds, peak, saved = got
        half = results[name].get(length // 2)
        growth = f"{math.log2(seconds / half[0]):.2f}" if half else "-"
        ratio = lambda a, b: f"{a / b:.2f}" if b else "-"                      # noqa: E731
        speed = (f"{ratio(base[0], seconds)}" if base else "-")
        memory = ratio(peak, base[1]) if base and base[1] >= 2**20 else "-"
        saved_ratio = ratio(saved, base[2]) if base else "-"
        print(f"  {name:<22}{length / seconds:>11.0f}{speed:>9}{peak / 2**20:>10.1f}{memory:>9}"
              f"{saved / 2**20:>10.1f}{saved_ratio:>9}{growth:>8}", flush=True)


if __name__ == "__main__":
    main()
