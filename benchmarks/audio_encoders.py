"""Squeezeformer-XS vs torchaudio's Conformer at the same width/depth budget (d=144, 16 blocks,
4 heads, kernel 31, the same depthwise-separable 4x subsampling): encoder forward+backward time per
second of audio, peak memory, parameters and forward FLOPs (``torch.utils.flop_counter``; forward
only, because its ``convolution_backward`` formula ignores ``groups`` and over-counts the backward of
depthwise convolutions ~100x in torch 2.11 — fwd+bwd is conventionally ~3x forward).

    OMP_NUM_THREADS=1 python benchmarks/audio_encoders.py [--seconds 8] [--batch 4] [--device cpu]

Each configuration runs in a fresh subprocess so that peak memory is measured per model: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak resident set size
over the forward+backward passes (``ru_maxrss``, after the model and inputs exist).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time


def build(name: str, d_model: int, layers: int, heads: int):

    from panconv_audio.models.conformer import ConformerEncoder
    from panconv_audio.models.squeezeformer import SqueezeformerEncoder

    if name == "squeezeformer":
        enc = SqueezeformerEncoder(d_model=d_model, num_layers=layers, heads=heads, n_mels=80)
        return enc, lambda x, lengths: enc.forward_with_lengths(x, lengths)[0]
    enc = ConformerEncoder(d_model=d_model, num_layers=layers, heads=heads, n_mels=80)
    return enc, lambda x, lengths: enc(x, lengths)[0]


def run_one(args: dict, queue) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    enc, fwd = build(args["name"], args["d_model"], args["layers"], args["heads"])
    enc = enc.to(device).train()
    frames = int(args["seconds"] * 100)  # 10 ms hop
    x = torch.randn(args["batch"], frames, 80, device=device)
    lengths = torch.full((args["batch"],), frames, device=device)

    def step():
        out = fwd(x, lengths)
        out.float().pow(2).mean().backward()
        enc.zero_grad(set_to_none=True)

    enc.eval()  # forward FLOPs (torch's counter ignores `groups` in convolution_backward, which
    with torch.no_grad(), FlopCounterMode(display=False) as fc:  # inflates depthwise-conv backward
        fwd(x, lengths)                                                # FLOPs ~100x; so count forward only)
    flops = fc.get_total_flops()
    enc.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (counted in the peak memory)
    times = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    audio_s = args["batch"] * args["seconds"]
    queue.put({"model": args["name"], "params_M": sum(p.numel() for p in enc.parameters()) / 1e6,
               "gflops_fwd": flops / 1e9, "gflops_per_audio_s": flops / 1e9 / audio_s,
               "ms_per_audio_s": 1000 * sorted(times)[len(times) // 2] / audio_s, "peak_mem_MB": peak_mb})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="utterance length")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--d-model", type=int, default=144)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    a = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for name in ("squeezeformer", "conformer"):
        q = ctx.Queue()
        proc = ctx.Process(target=run_one, args=({"name": name, "seconds": a.seconds, "batch": a.batch,
                                                  "repeats": a.repeats, "device": a.device, "threads": a.threads,
                                                  "d_model": a.d_model, "layers": a.layers, "heads": a.heads}, q))
        proc.start()
        rows.append(q.get())
        proc.join()
    if a.json:
        print(json.dumps(rows))
        return 0
    print(f"encoder fwd+bwd, d={a.d_model}, {a.layers} blocks, {a.heads} heads, batch {a.batch} x {a.seconds:g} s, "
          f"device {a.device}, {a.threads} thread(s)")
    print("| encoder | params (M) | forward GFLOPs / audio s | fwd+bwd ms / audio s | peak mem fwd+bwd (MB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params_M']:.2f} | {r['gflops_per_audio_s']:.2f} | {r['ms_per_audio_s']:.1f} "
              f"| {r['peak_mem_MB']:.0f} |")
    sq, co = rows
    print(f"Squeezeformer/Conformer: forward FLOPs x{sq['gflops_fwd'] / co['gflops_fwd']:.2f}, "
          f"time x{sq['ms_per_audio_s'] / co['ms_per_audio_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
