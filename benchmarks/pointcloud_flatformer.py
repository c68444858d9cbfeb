"""FlatFormer's block against a padded equal-shape window-attention block (SST-style), on the same pillars.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pointcloud_flatformer.py [--points 10000 50000 ...] [--device cpu]

Both blocks are four post-norm attention layers of the same width (128 channels, 8 heads, FFN x2,
the same weights) over the same pillars of a 468 x 468 grid (Waymo's at 0.32 m), alternating
regular / shifted partitions; they differ only in how the pillars are partitioned:

* FlatFormer: window-based sort (x, x-shift, y, y-shift), groups of exactly 144 pillars
  (``pointcloud.flat_group_attention``: the fused Triton kernel on a GPU, SDPA per group on a CPU);
* SST-style: windows of equal *shape* (13 x 13 pillars, regular and shifted by half), every window
  padded to the most occupied one's count, attention with a key-padding mask (SST batches windows
  by occupancy buckets; one bucket padded to the largest is the issue's baseline).

Pillars (the attention tokens; not raw points) are drawn LiDAR-like (density falling with range, so
windows near the sensor are full and far ones nearly empty: the imbalance flattening removes). Drawing
is by rejection and slows down as the grid fills: keep ``--points`` well under the 219,024 cells.
Each (method, size) runs in its own process; latency is the median of ``--repeats`` forward passes
(no grad) after a warm-up, memory the process's peak resident-set growth (CPU) or
``max_memory_allocated`` (CUDA). The table prints FlatFormer / SST ratios measured in the same run
(< 1: FlatFormer is faster / smaller). The paper reports FlatFormer 4.6x faster than SST on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GRID = 468
WINDOW = 13
GROUP = 144
CHANNELS, HEADS = 128, 8


def lidar_pillars(n: int, seed: int = 0):
    """``n`` distinct pillars ``(batch=0, iy, ix)`` of the 468 x 468 grid, density ~ 1 / range."""
    import torch

    g = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(GRID * GRID, dtype=torch.bool)
    while int(chosen.sum()) < n:
        r = torch.rand(4 * n, generator=g) * (GRID / 2 - 1) + 1  # uniform range: density ~ 1/r per area
        a = torch.rand(4 * n, generator=g) * 2 * torch.pi
        ix = (GRID / 2 + r * torch.cos(a)).long().clamp(0, GRID - 1)
        iy = (GRID / 2 + r * torch.sin(a)).long().clamp(0, GRID - 1)
        cells = (iy * GRID + ix).unique()
        free = cells[~chosen[cells]]
        chosen[free[torch.randperm(len(free), generator=g)[: n - int(chosen.sum())]]] = True
    cells = chosen.nonzero()[:, 0]
    return torch.stack([torch.zeros_like(cells), cells // GRID, cells % GRID], 1)


def window_partition(coords, shifted: bool):
    """Equal-shape windows: ``(index (W, T) into the tokens, padding mask (W, T))``, T = the fullest window."""
    import torch

    iy, ix = coords[:, 1], coords[:, 2]
    if shifted:
        iy, ix = iy + WINDOW // 2, ix + WINDOW // 2
    per_row = GRID // WINDOW + 2
    window = (iy // WINDOW) * per_row + ix // WINDOW
    order = torch.argsort(window, stable=True)
    ids, counts = torch.unique_consecutive(window[order], return_counts=True)
    longest = int(counts.max())
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(order)) - torch.repeat_interleave(start, counts)
    row = torch.repeat_interleave(torch.arange(len(ids)), counts)
    index = torch.zeros(len(ids), longest, dtype=torch.long)
    valid = torch.zeros(len(ids), longest, dtype=torch.bool)
    index[row, slot] = order
    valid[row, slot] = True
    return index, valid


def padded_window_layer(layer, x, pe, index, valid):
    """``GroupAttentionLayer``'s computation over padded windows with a key mask (the SST baseline)."""
    import torch
    import torch.nn.functional as F

    tokens, channels = x.shape
    w_qk, w_v = layer.in_proj.weight.split([2 * channels, channels])
    b_qk, b_v = layer.in_proj.bias.split([2 * channels, channels])
    xw, pw = x[index], pe[index]  # (W, T, C), padding rows are copies, masked below
    q, k = F.linear(xw + pw, w_qk, b_qk).view(*index.shape, 2, layer.num_heads, -1).unbind(2)
    v = F.linear(xw, w_v, b_v).view(*index.shape, layer.num_heads, -1)
    mask = valid[:, None, None, :]  # keys of the window's real tokens only
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    out = out.transpose(1, 2).reshape(*index.shape, channels)
    attn = torch.zeros_like(x)
    attn[index[valid]] = out[valid]
    x = layer.norm1(x + layer.out_proj(attn))
    return layer.norm2(x + layer.fc2(layer.act(layer.fc1(x))))


def measure(method: str, n: int, repeats: int, device: str) -> dict:
    import torch

    from panconv_pointcloud.models.flatformer import FlatFormerBlock, FlatWindowMapping, sinusoidal_position

    torch.manual_seed(0)
    coords = lidar_pillars(n).to(device)
    block = FlatFormerBlock(CHANNELS, HEADS, GROUP).to(device).eval()
    x = torch.randn(n, CHANNELS, device=device)
    pe = sinusoidal_position(coords, CHANNELS)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run():
        with torch.no_grad():
            if method == "flatformer":
                groupings = FlatWindowMapping((WINDOW, WINDOW), (GRID, GRID), GROUP)(coords, 1)
                return block(x, pe, groupings)
            y = x
            for i, layer in enumerate(block.layers):
                index, valid = window_partition(coords, shifted=bool(i % 2))
                y = padded_window_layer(layer, y, pe, index.to(device), valid.to(device))
            return y

    run()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    if device == "cuda":
        memory = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        memory = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # KiB -> MiB
    index, valid = window_partition(coords.cpu(), False)
    return {"seconds": statistics.median(times), "memory_mib": memory,
            "pad_fraction": 1 - float(valid.float().mean()), "windows": int(index.shape[0]),
            "longest_window": int(index.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000, 50_000, 100_000],
                        help="pillars (tokens) per run, each < 468 * 468")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats, args.device)))
        return
    print(f"pillars  | FlatFormer ms | SST-style ms | time ratio | FF MiB | SST MiB | memory ratio | SST padding "
          f"({args.device}, {CHANNELS} ch, {HEADS} heads, group {GROUP}, window {WINDOW}x{WINDOW}, 4 layers)")
    for n in args.points:
        results = {}
        for method in ("flatformer", "sst"):
            proc = subprocess.run([sys.executable, __file__, "--child", method, str(n), "--repeats", str(args.repeats),
                                   "--device", args.device], capture_output=True, text=True, env=os.environ)
            if proc.returncode != 0:
                print(f"{n:>8} | {method} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
                break
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            ff, sst = results["flatformer"], results["sst"]
            print(f"{n:>8} | {ff['seconds'] * 1e3:13.1f} | {sst['seconds'] * 1e3:12.1f} | "
                  f"{ff['seconds'] / sst['seconds']:10.2f} | {ff['memory_mib']:6.0f} | {sst['memory_mib']:7.0f} | "
                  f"{ff['memory_mib'] / max(sst['memory_mib'], 1e-9):12.2f} | {sst['pad_fraction']:.0%} of "
                  f"{sst['windows']} x {sst['longest_window']}", flush=True)


if __name__ == "__main__":
    main()
