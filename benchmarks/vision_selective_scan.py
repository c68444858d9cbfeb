"""Selective scan (S6): our sequential / parallel PyTorch paths vs mambapy's pscan (CPU), Triton vs mamba-ssm (GPU).

Same inputs for every method in one run (``u``, ``delta`` ``(B, D, L)``, ``A`` ``(D, N)``, input-dependent
``B``/``C`` ``(B, N, L)``, ``D`` skip; ``delta`` already positive, no gate, so that every method computes
the same function), best of ``--repeats``:

* CPU (always): ``sequential`` (``selective_scan_reference``, the loop over L), ``parallel``
  (``selective_scan_parallel``, the odd-even scan in 2 log2 L rounds) and ``mambapy`` (mambapy 1.2.0's
  ``MambaBlock.selective_scan``: the Blelloch ``pscan`` with its hand-written backward, (B, L, D) layout;
  skipped if mambapy is not installed). Forward, and forward + backward. Printed: milliseconds and the
  ratios ``sequential / parallel`` and ``mambapy / parallel`` (> 1: ours is faster).
* GPU (``--gpu``, needs CUDA, else it says so and skips): ``triton`` (``selective_scan_triton``, the fused
  recurrent kernel with its Triton reverse-scan backward), ``parallel`` on the GPU, and
  ``mamba-ssm`` (``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``, the official CUDA kernel;
  skipped if not importable). Printed: milliseconds, ``mamba-ssm / triton`` (the issue's goal: >= 0.8 for
  the forward) and peak memory.

    OMP_NUM_THREADS=1 python benchmarks/vision_selective_scan.py
    python benchmarks/vision_selective_scan.py --gpu --lengths 512 2048 8192 --dim 1536
"""

from __future__ import annotations

import argparse

import torch
from _timing import time_call

from panconv_vision.kernels.selective_scan import (
    selective_scan_parallel,
    selective_scan_reference,
    selective_scan_triton,
)

try:
    from mambapy.mamba import MambaBlock
except ImportError:  # benchmark peer, optional (the vision [test] extra installs it)
    MambaBlock = None


def make_inputs(batch: int, dim: int, n_state: int, length: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(batch, dim, length, generator=g) - 2)
    A = -torch.exp(torch.randn(dim, n_state, generator=g) * 0.5)
    B, C = torch.randn(batch, n_state, length, generator=g), torch.randn(batch, n_state, length, generator=g)
    D = torch.randn(dim, generator=g)
    return [t.to(device) for t in (u, delta, A, B, C, D)]


def _mambapy(u, delta, A, B, C, D):
    y = MambaBlock.selective_scan(None, u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2),
                                  C.transpose(1, 2), D)
    return y.transpose(1, 2)


def _fwd_bwd(fn, inputs):
    leaves = [t.detach().requires_grad_(True) for t in inputs]

    def run():
        fn(*leaves).sum().backward()
    return run


def cpu_table(args) -> None:
    methods = {"sequential": selective_scan_reference, "parallel": selective_scan_parallel}
    if MambaBlock is not None:
        methods["mambapy"] = _mambapy
    else:
        print("mambapy is not installed: pip install --no-deps mambapy==1.2.0 (the mambapy column is skipped)")
    print(f"CPU, batch {args.batch}, D {args.dim}, N {args.state}, threads {torch.get_num_threads()}")
    print(f"{'L':>6} {'pass':>8} " + " ".join(f"{m + ' ms':>14}" for m in methods)
          + f" {'seq/par':>8} {'mambapy/par':>12} {'max diff':>9}")
    for length in args.lengths:
        inputs = make_inputs(args.batch, args.dim, args.state, length, "cpu")
        with torch.no_grad():
            ref = selective_scan_reference(*inputs)
            diff = max(float((fn(*inputs) - ref).abs().max()) for fn in methods.values())
        for kind in ("fwd", "fwd+bwd"):
            times = {}
            for name, fn in methods.items():
                if name == "sequential" and length > args.sequential_limit:
                    continue
                if kind == "fwd":
                    def run(fn=fn, inputs=inputs):
                        with torch.no_grad():
                            fn(*inputs)
                else:
                    run = _fwd_bwd(fn, inputs)
                times[name] = time_call(run, iters=args.repeats, reduce="min")
            cells = " ".join(f"{times[m] * 1e3:14.2f}" if m in times else f"{'-':>14}" for m in methods)
            seq = f"{times['sequential'] / times['parallel']:8.2f}" if "sequential" in times else f"{'-':>8}"
            mp = f"{times['mambapy'] / times['parallel']:12.2f}" if "mambapy" in times else f"{'-':>12}"
            print(f"{length:6d} {kind:>8} {cells} {seq} {mp} {diff:9.1e}")


def gpu_table(args) -> None:
    if not torch.cuda.is_available():
        print("GPU part skipped: CUDA is not available here")
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        print("GPU part skipped: triton is not installed")
        return
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        selective_scan_fn = None
        print("mamba-ssm is not importable (pip install mamba-ssm, GPU only): its column is skipped")
    methods = {"triton": selective_scan_triton, "parallel": selective_scan_parallel}
    if selective_scan_fn is not None:
        methods["mamba-ssm"] = selective_scan_fn
    print(f"GPU {torch.cuda.get_device_name()}, batch {args.batch}, D {args.dim}, N {args.state}")
    print(f"{'L':>6} {'pass':>8} " + " ".join(f"{m + ' ms':>14}" for m in methods)
          + f" {'mamba/triton':>12} {'MiB triton':>10} {'MiB mamba':>10} {'max diff':>9}")
    for length in args.lengths:
        inputs = make_inputs(args.batch, args.dim, args.state, length, "cuda")
        with torch.no_grad():
            ref = selective_scan_triton(*inputs)
            diff = max(float((fn(*inputs) - ref).abs().max()) for fn in methods.values())
        for kind in ("fwd", "fwd+bwd"):
            times, memory = {}, {}
            for name, fn in methods.items():
                if name == "parallel" and length > args.parallel_limit:
                    continue
                if kind == "fwd":
                    def run(fn=fn, inputs=inputs):
                        with torch.no_grad():
                            fn(*inputs)
                else:
                    run = _fwd_bwd(fn, inputs)
                torch.cuda.reset_peak_memory_stats()
                times[name] = time_call(run, iters=args.repeats, cuda=True, reduce="min")
                memory[name] = torch.cuda.max_memory_allocated() / 2**20
            cells = " ".join(f"{times[m] * 1e3:14.3f}" if m in times else f"{'-':>14}" for m in methods)
            ratio = f"{times['mamba-ssm'] / times['triton']:12.2f}" if "mamba-ssm" in times else f"{'-':>12}"
            mm = f"{memory['mamba-ssm']:10.0f}" if "mamba-ssm" in memory else f"{'-':>10}"
            print(f"{length:6d} {kind:>8} {cells} {ratio} {memory['triton']:10.0f} {mm} {diff:9.1e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dim", type=int, default=None, help="channels D (default: 64 on CPU, 1536 on GPU)")
    parser.add_argument("--state", type=int, default=16, help="state size N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential-limit", type=int, default=4096, help="longest L the CPU loop is timed at")
    parser.add_argument("--parallel-limit", type=int, default=4096, help="longest L the GPU parallel path is timed at")
    parser.add_argument("--gpu", action="store_true", help="the GPU comparison (Triton vs mamba-ssm) instead")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        args.lengths = args.lengths or [512, 2048, 8192]
        args.dim = args.dim or 1536
        args.batch = max(args.batch, 2)
        gpu_table(args)
    else:
        args.lengths = args.lengths or [64, 256, 1024, 4096]
        args.dim = args.dim or 64
        cpu_table(args)


if __name__ == "__main__":
    main()
