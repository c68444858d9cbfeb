"""HyenaDNA vs a dense (SDPA) Transformer of equal width: tokens/s and peak memory as the context L doubles.

Both models are built at HyenaDNA tiny's width (``--d-model`` 128, ``--n-layers`` 2, d_inner 4 x d_model, the
12-token nucleotide vocabulary) for each ``L`` (HyenaDNA's ``l_max = L``) and run forward + backward on one
sequence of ``L`` nucleotides, ``L`` doubling from ``--start`` to ``--stop``; a model stops once a step took, or is
predicted to take, longer than ``--step-limit`` seconds. Time is the fastest of at least 3 steps
(``--min-time`` seconds of them): the figure least disturbed by other processes on a shared machine.
Printed per ``L``: tokens/s and peak memory of each model and HyenaDNA's
ratio to the Transformer measured in the same run (speed: > 1 = HyenaDNA faster; memory: < 1 =
HyenaDNA smaller), and the time growth exponent ``log2(t(L) / t(L/2))`` (1 linear, 2 quadratic). The Transformer is
``sequence.Transformer`` (causal, rotary positions, ``F.scaled_dot_product_attention``, 2 heads of 64 as the
official attention baseline); with ``--official DIR`` (holding the fetched ``standalone_hyenadna.py``, never
committed; its ``einops`` on PYTHONPATH) the official HyenaDNA model is measured too.

Memory on the CPU: the peak resident-set growth over the step (sampled every millisecond, with glibc's
``MALLOC_MMAP_THRESHOLD_`` lowered so freed tensors leave the resident set: see benchmarks/sequence_throughput.py,
whose ``PeakRSS`` and ``step`` this script uses) and the bytes autograd saves for backward; on CUDA
``torch.cuda.max_memory_allocated``. ``--plot PATH`` writes the two curves (log-log) as a PNG.

``--mode`` chooses what one step is: ``train`` (forward + backward, the default), ``checkpointed`` (forward +
backward with each block's activations recomputed in the backward pass: the engine's
``train.activation_checkpointing: true``, applied to both models) or ``inference`` (forward only, in
``torch.inference_mode``: embedding a long sequence). On the CPU a model also stops once its peak memory is
predicted (from the last two lengths) above ``--memory-limit`` GB (default: 80 % of the memory available at the
start), since an allocation the machine cannot back kills the process instead of raising. ``--min-steps 1``
measures one step per length with no warm-up step (for lengths where a step takes minutes).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_hyenadna_scaling.py \
        --plot plugins/genomics/figures/hyenadna_scaling.png
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_hyenadna_scaling.py --mode inference --start 131072 \
        --stop 1048576 --min-steps 1 --step-limit 900     # L = 1M (2^20) forward, tiny-1k's width
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/genomics_hyenadna_scaling.py --mode inference --d-model 256 \
        --n-layers 8 --start 1000000 --stop 1000000 --min-steps 1 --no-transformer   # large-1m's size at 1,000,000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequence_throughput import PeakRSS, step  # noqa: E402


def build(name: str, length: int, d_model: int, n_layers: int, device: str, official_dir: str | None):
    torch.manual_seed(0)
    if name == "HyenaDNA":
        from panconv_genomics.models.hyenadna import HyenaDNA

        return HyenaDNA(d_model=d_model, n_layer=n_layers, l_max=length, embed_dropout=0.0).to(device)
    if name == "Transformer (SDPA)":
        from panconv_sequence.models.transformer import Transformer

        return Transformer(d_model=d_model, n_layers=n_layers, n_heads=max(1, d_model // 64), causal=True,
                           vocab_size=12, mlp_ratio=4.0).to(device)
    sys.path.insert(0, official_dir)
    import standalone_hyenadna as official

    layer = dict(emb_dim=5, filter_order=64, short_filter_order=3, l_max=length, modulate=True, w=10, lr=6e-4,
                 wd=0.0, lr_pos_emb=0.0)
    model = official.HyenaDNAModel(d_model=d_model, n_layer=n_layers, d_inner=4 * d_model, vocab_size=12,
                                   pad_vocab_size_multiple=8, embed_dropout=0.0, layer=layer).to(device)

    class Wrapped(torch.nn.Module):  # the official model returns (N, L, d); step() takes [features]
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return [self.model(x)]

    return Wrapped()


def run_step(model, x, mode: str) -> int:
    """One step of ``mode``; returns the bytes autograd saved for backward (0 in inference)."""
    if mode == "inference":
        with torch.inference_mode():
            model(x)
        return 0
    return step(model, x)


def measure(model, length: int, device: str, min_time: float, mode: str = "train", min_steps: int = 3):
    if mode == "checkpointed":
        from panconv.engine.scale import apply_activation_checkpointing

        apply_activation_checkpointing(model, True)
    x = torch.randint(7, 12, (1, length), device=device)
    if min_steps > 1:
        run_step(model, x, mode)                                                 # warm-up
        model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times, start = [], time.perf_counter()
    with PeakRSS() as rss:
        while len(times) < min_steps or time.perf_counter() - start < min_time:
            began = time.perf_counter()
            saved = run_step(model, x, mode)
            model.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
    seconds = min(times)  # the fastest of the steps: the least disturbed by other processes on a shared machine
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else rss.growth
    return seconds, peak, saved


def available_gb() -> float:
    """``MemAvailable`` of /proc/meminfo in GB (inf where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return math.inf


def predict(points: dict, length: int, index: int) -> float | None:
    """Field ``index`` of the measurement at ``length``, extrapolated from ``length / 2`` and ``length / 4``
    (their growth ratio, at least 2: no better than linear; 4 where only one point exists)."""
    previous, before = points.get(length // 2), points.get(length // 4)
    if not previous:
        return None
    return previous[index] * max(previous[index] / before[index] if before and before[index] > 0 else 4.0, 2.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--stop", type=int, default=1 << 20)
    parser.add_argument("--step-limit", type=float, default=20.0, help="seconds one step may take")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of repeated steps per measurement")
    parser.add_argument("--min-steps", type=int, default=3,
                        help="steps per measurement (the fastest counts); 1: one step, no warm-up step")
    parser.add_argument("--mode", choices=("train", "checkpointed", "inference"), default="train",
                        help="train: fwd+bwd; checkpointed: fwd+bwd recomputing each block; inference: fwd only")
    parser.add_argument("--no-transformer", action="store_true",
                        help="measure HyenaDNA alone (one long L: --start L --stop L, where attention takes hours)")
    parser.add_argument("--memory-limit", type=float, default=None,
                        help="GB a model's predicted peak may reach (CPU; default 80%% of the available memory)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--official", default=None, help="directory holding the official standalone_hyenadna.py")
    parser.add_argument("--plot", default=None, help="write the curves to this PNG")
    args = parser.parse_args(argv)
    if args.device == "cpu" and argv is None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if args.min_steps < 1:
        parser.error(f"--min-steps must be >= 1, got {args.min_steps}")
    names = ["HyenaDNA"] + ([] if args.no_transformer else ["Transformer (SDPA)"]) + (
        ["official HyenaDNA"] if args.official else [])
    limit_gb = args.memory_limit
    if limit_gb is None and args.device == "cpu":
        limit_gb = 0.8 * available_gb()
    print(f"device={args.device} threads={torch.get_num_threads()} d_model={args.d_model} n_layers={args.n_layers} "
          f"batch=1 mode={args.mode} memory-limit={f'{limit_gb:.1f} GB' if limit_gb else 'none'} "
          f"torch={torch.__version__}")
    print(f"{'L':>8} {'model':<20}{'tokens/s':>11}{'peak MB':>10}{'saved MB':>10}{'growth':>8}"
          f"{'speed x':>9}{'memory x':>10}")
    warm = min(args.start, 1024)
    measure(build(names[0], warm, args.d_model, args.n_layers, args.device, args.official), warm, args.device, 0.0,
            args.mode)                                                      # warm-up (thread pools, allocator)
    results: dict[str, dict[int, tuple]] = {n: {} for n in names}
    stopped: dict[str, str] = {}
    length = args.start
    while length <= args.stop and len(stopped) < len(names):
        for name in names:
            if name in stopped:
                continue
            seconds, peak = predict(results[name], length, 0), predict(results[name], length, 1)
            if seconds is not None and seconds > args.step_limit:
                stopped[name] = f"stopped before L={length}: a step predicted at {seconds:.1f}s"
                continue
            if peak is not None and limit_gb and peak / 2**30 > limit_gb:
                stopped[name] = (f"stopped before L={length}: its peak memory predicted at {peak / 2**30:.1f} GB "
                                 f"(--memory-limit {limit_gb:.1f} GB)")
                continue
            model = None
            try:
                model = build(name, length, args.d_model, args.n_layers, args.device, args.official)
                results[name][length] = measure(model, length, args.device, args.min_time, args.mode,
                                                args.min_steps)
            except (RuntimeError, MemoryError) as exc:                         # out of memory
                stopped[name] = f"failed at L={length}: {str(exc).splitlines()[0][:100]}"
            finally:
                del model
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        base = results.get("Transformer (SDPA)", {}).get(length)
        for name in names:
            got = results[name].get(length)
            if got is None:
                continue
            seconds, peak, saved = got
            half = results[name].get(length // 2)
            growth = f"{math.log2(seconds / half[0]):.2f}" if half else "-"
            speed = f"{base[0] / seconds:.2f}" if base else "-"
            memory = f"{peak / base[1]:.2f}" if base and base[1] >= 2**20 else "-"
            print(f"{length:>8} {name:<20}{length / seconds:>11.0f}{peak / 2**20:>10.1f}{saved / 2**20:>10.1f}"
                  f"{growth:>8}{speed:>9}{memory:>10}", flush=True)
        length *= 2
    for name, why in stopped.items():
        print(f"{name}: {why}")
    if args.plot:
        plot(results, args)


def plot(results: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step_name = {"train": "fwd+bwd", "checkpointed": "checkpointed fwd+bwd", "inference": "forward"}[args.mode]
    # inference saves nothing for backward: its memory is the peak (resident-set growth / CUDA allocation)
    memory, memory_name = (1, "peak MB") if args.mode == "inference" else (2, "MB saved for backward")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, points in results.items():
        lengths = sorted(points)
        if not lengths:
            continue
        axes[0].plot(lengths, [points[L][0] for L in lengths], "o-", label=name)
        axes[1].plot(lengths, [points[L][memory] / 2**20 for L in lengths], "o-", label=name)
    for ax, label in zip(axes, (f"seconds per {step_name} step", memory_name)):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L (nucleotides)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"HyenaDNA vs Transformer, d_model {args.d_model}, {args.n_layers} layers, batch 1, "
                 f"{args.device} ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})",
                 fontsize=9)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=80)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
