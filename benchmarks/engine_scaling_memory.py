"""Peak memory per process with and without sharding (FSDP2) and activation checkpointing.

Trains the same model for a few steps under four settings, each a real ``core-run`` under
``torchrun`` (2 processes, gloo on a CPU, NCCL on GPUs), and prints the peak memory of the busiest
process (``summary.json: peak_memory_mib``: the resident set on a CPU, allocated CUDA memory on a
GPU) as a ratio to plain DDP measured in the same run, with the training losses (which must agree).

    python benchmarks/engine_scaling_memory.py                      # a Swin V2 of ~100M parameters
    python benchmarks/engine_scaling_memory.py --embed-dim 64 --steps 2   # quick

On a CPU the resident set also holds the interpreter, torch and the data (~0.5 GB), so the
ratios understate the savings in model state; on a GPU the allocated memory is the model's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

BIN = Path(sys.executable).parent
SETTINGS = {
    "ddp": [],
    "ddp + checkpointing": ["--set", "train.activation_checkpointing=true"],
    "fsdp": ["--set", "run.strategy=fsdp"],
    "fsdp + checkpointing": ["--set", "run.strategy=fsdp", "--set", "train.activation_checkpointing=true"],
}


def config(tmp: Path, args) -> Path:
    path = tmp / "swinv2_memory.yaml"
    path.write_text(textwrap.dedent(f"""\
        model:
          backbone: {{type: vision.SwinV2, embed_dim: {args.embed_dim}, depths: [2, 2, {args.depth3}, 2],
                     num_heads: [4, 8, 16, 32], window_size: 8, patch_size: 4, in_channels: 3}}
          head: {{type: core.LinearClsHead}}
        data: {{type: vision.MNIST, size: {args.size}, channels: 3, batch_size: {args.batch},
                limit: {args.batch * args.steps}, splits: {{train: train, val: null, test: null}}}}
        train:
          epochs: 1
          optimizer: {{type: AdamW, lr: 0.0001}}
          checkpoint: {{interval: 1, max_keep: 1}}
        run: {{seed: 0, threads: 1}}
        """))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-dim", type=int, default=160, help="Swin V2 width (B: 128, L: 192)")
    parser.add_argument("--depth3", type=int, default=18, help="blocks of the third stage (T: 6, S/B/L: 18)")
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), args)
        for name, extra in SETTINGS.items():
            work = Path(tmp) / name.replace(" + ", "_")
            cmd = [str(BIN / "torchrun"), f"--nproc_per_node={args.nproc}", "--master_port=29611",
                   str(BIN / "core-run"), str(cfg), "--work-dir", str(work), "--quiet", *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                sys.exit(f"{name}: failed\n{proc.stderr[-2000:]}")
            summary = json.loads((work / "summary.json").read_text())
            loss = json.loads((work / "metrics.json").read_text())["train"][-1]["loss"]
            results[name] = (summary["peak_memory_mib"], loss, summary["parameters"], summary["device"])
    base = results["ddp"][0]
    params, device = results["ddp"][2], results["ddp"][3]
    print(f"Swin V2 (embed {args.embed_dim}, depths 2/2/{args.depth3}/2), {params / 1e6:.1f}M parameters, "
          f"{args.size}^2, global batch {args.batch}, {args.nproc} processes on {device}")
    print(f"{'setting':<24}{'peak MiB/process':>18}{'x DDP':>8}{'last loss':>12}")
    for name, (peak, loss, _, _) in results.items():
        print(f"{name:<24}{peak:>18.0f}{peak / base:>8.2f}{loss:>12.4f}")


if __name__ == "__main__":
    main()
