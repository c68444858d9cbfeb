"""Long convolution: FFT (``sequence.fftconv``'s torch.fft reference) vs direct convolution, as L doubles.

A depthwise causal convolution of ``H`` channels (batch ``B``) with a full-length filter (``K = L``,
the long-convolution case of S4/Hyena), ``L`` from ``--start`` (1k) to ``--stop`` (64k). Timed in the same
run, same inputs, forward only, best of ``--repeats``:

* ``fft``: ``fftconv_reference`` (rfft of both signals zero-padded to 2L, product, irfft): O(L log L);
* ``direct``: ``F.conv1d`` with ``groups=H`` (PyTorch's direct / im2col path): O(L·K) = O(L²);
* ``fft-conv-pytorch``: the ``fft_conv`` of the ``fft-conv-pytorch`` package, if it is importable
  (a benchmark-only dependency: ``pip install fft-conv-pytorch``; it is not a dependency of panconv).

Printed per L: milliseconds, ``direct / fft`` and ``fft-conv-pytorch / fft`` (> 1: ours is faster), the
max difference between the methods (all compute the same convolution), and at the end the crossover: the
first L at which the FFT path is faster than direct convolution. ``direct`` is skipped once one call took
longer than ``--direct-limit`` seconds (its time grows 4x per doubling).

    OMP_NUM_THREADS=1 python benchmarks/sequence_fftconv.py
    OMP_NUM_THREADS=1 python benchmarks/sequence_fftconv.py --start 64 --stop 65536 --channels 64
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import time_call

from panconv_sequence.kernels.fftconv import fftconv_reference

try:
    from fft_conv_pytorch import fft_conv
except ImportError:  # benchmark-only, optional
    fft_conv = None


def measure(u: torch.Tensor, k: torch.Tensor, repeats: int, with_direct: bool) -> dict:
    """Seconds per call of each method on ``u (B, H, L)``, ``k (H, L)``, and their max difference to the FFT."""
    length, channels = u.shape[-1], u.shape[-2]
    weight = k.flip(-1)[:, None]  # conv1d cross-correlates: flip the filter for a convolution
    padded = F.pad(u, (length - 1, 0))
    methods = {"fft": lambda: fftconv_reference(u, k)}
    if with_direct:
        methods["direct"] = lambda: F.conv1d(padded, weight, groups=channels)
    if fft_conv is not None:
        methods["fcp"] = lambda: fft_conv(padded, weight, groups=channels)
    reference = methods["fft"]()
    times, diff = {}, 0.0
    for name, fn in methods.items():
        times[name] = time_call(fn, iters=1 if name == "direct" and length >= 16384 else repeats, reduce="min")
        diff = max(diff, (fn() - reference).abs().max().item())
    return {"times": times, "diff": diff}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--stop", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct-limit", type=float, default=20.0,
                        help="stop timing direct convolution after one call took this many seconds")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"causal depthwise convolution, K = L, B={args.batch}, H={args.channels}, float32, "
          f"{torch.get_num_threads()} thread(s); fft-conv-pytorch: {'yes' if fft_conv else 'not installed'}")
    header = f"{'L':>7} {'fft ms':>9} {'direct ms':>10} {'direct/fft':>10}"
    if fft_conv is not None:
        header += f" {'fcp ms':>9} {'fcp/fft':>8}"
    print(header + f" {'max |diff|':>10}")
    crossover, direct_on = None, True
    length = args.start
    while length <= args.stop:
        g = torch.Generator().manual_seed(length)
        u = torch.randn(args.batch, args.channels, length, generator=g)
        k = torch.randn(args.channels, length, generator=g) / length ** 0.5
        result = measure(u, k, args.repeats, direct_on)
        t = result["times"]
        row = f"{length:>7} {t['fft'] * 1e3:>9.2f}"
        if "direct" in t:
            row += f" {t['direct'] * 1e3:>10.2f} {t['direct'] / t['fft']:>10.2f}"
            if crossover is None and t["fft"] < t["direct"]:
                crossover = length
            direct_on = t["direct"] < args.direct_limit
        else:
            row += f" {'-':>10} {'-':>10}"
        if "fcp" in t:
            row += f" {t['fcp'] * 1e3:>9.2f} {t['fcp'] / t['fft']:>8.2f}"
        print(row + f" {result['diff']:>10.2e}", flush=True)
        length *= 2
    if crossover is None:
        print("crossover: direct convolution was faster at every length measured")
    elif crossover == args.start:
        print(f"crossover: the FFT path is already faster at the smallest length ({args.start}); "
              f"rerun with a smaller --start to locate it")
    else:
        print(f"crossover: the FFT path is faster from L = {crossover} on (between {crossover // 2} and {crossover})")


if __name__ == "__main__":
    main()
