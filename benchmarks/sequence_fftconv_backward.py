"""The FFT long convolution's backward: autograd through the ``torch.fft`` reference vs ``fft_recompute``.

``sequence.fftconv`` runs ``fft_recompute`` wherever no Triton implementation takes the call (every CPU
call): the reference's forward with a hand-written backward that keeps only ``u``, ``k`` and ``D`` and
recomputes their spectra, where autograd through the reference keeps both spectra and both zero-padded
signals. Both sides do one forward + backward of the same causal full-length convolution (``K = L``,
``D`` on), in the same run, same inputs; timed the same way (best of ``--repeats``).

Printed per ``L``: milliseconds per forward + backward of each, the bytes autograd kept for the backward
(distinct storages), their ratios (ours / the reference's: < 1 is better) and the largest gradient
difference between the two.

    OMP_NUM_THREADS=1 python benchmarks/sequence_fftconv_backward.py                    # H = 128, L 1k..256k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_call  # noqa: E402

from panconv_sequence.kernels.fftconv import fftconv_recompute, fftconv_reference  # noqa: E402


def kept_bytes(fn, *inputs) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``fn(*inputs)``."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(storages.values())


def measure(length: int, channels: int, batch: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(length)
    u = torch.randn(batch, channels, length, generator=g, requires_grad=True)
    k = (torch.randn(channels, length, generator=g) / length ** 0.5).requires_grad_(True)
    d = torch.randn(channels, generator=g, requires_grad=True)
    grad = torch.randn(batch, channels, length, generator=g)
    out = {}
    grads = {}
    for name, fn in (("reference", fftconv_reference), ("recompute", fftconv_recompute)):
        def step(fn=fn):
            return torch.autograd.grad(fn(u, k, d), (u, k, d), grad)

        out[name] = (time_call(step, iters=repeats, reduce="min"), kept_bytes(fn, u, k, d))
        grads[name] = step()
    out["diff"] = max((a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)
                      for a, b in zip(grads["recompute"], grads["reference"]))
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--stop", type=int, default=262144)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=128, help="channels (Hyena's width at tiny-1k: 128)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"causal depthwise FFT convolution with D, K = L, B={args.batch}, H={args.channels}, float32, "
          f"{torch.get_num_threads()} thread(s); forward + backward")
    print(f"{'L':>8} {'ref ms':>9} {'ours ms':>9} {'time x':>7} {'ref kept MB':>12} {'ours kept MB':>13} "
          f"{'memory x':>9} {'grad rel diff':>14}")
    rows, length = [], args.start
    while length <= args.stop:
        r = measure(length, args.channels, args.batch, args.repeats)
        (t_ref, m_ref), (t_ours, m_ours) = r["reference"], r["recompute"]
        rows.append({"length": length, "time_ratio": t_ours / t_ref, "memory_ratio": m_ours / m_ref,
                     "diff": r["diff"]})
        print(f"{length:>8} {t_ref * 1e3:>9.1f} {t_ours * 1e3:>9.1f} {t_ours / t_ref:>7.2f} {m_ref / 2**20:>12.1f} "
              f"{m_ours / 2**20:>13.1f} {m_ours / m_ref:>9.2f} {r['diff']:>14.1e}", flush=True)
        length *= 2
    return rows


if __name__ == "__main__":
    main()
