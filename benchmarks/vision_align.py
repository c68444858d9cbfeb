"""Time and peak memory of panconv-vision's ALIGN beside transformers' AlignModel, same configuration.

    python benchmarks/vision_align.py                         # EfficientNet-B0 + 4-layer BERT, batch 8 at 224^2
    python benchmarks/vision_align.py --batch 4 --size 128 --iters 3 --threads 1    # a quick CPU run
    python benchmarks/vision_align.py --device cuda --width 2.0 --depth 3.1 --text-layers 12 --text-hidden 768

Both models get the same random weights (transformers' state dict mapped into ours by
``panconv_vision.models.align.hf_to_panconv``), so the work is the same; transformers' text pooler is
built but never used by its forward. Forward: eval mode under ``no_grad``; train step: train mode,
the contrastive loss of each (transformers' ``return_loss=True``, label smoothing 0.1; ours the same
smoothing), backward, no optimizer step. Seconds are the median of ``--iters`` timed iterations after
``--warmup`` untimed ones. Each model and mode runs in its own subprocess so that peak memory is its
own: on CUDA the peak allocated memory, on CPU the growth of the process's peak RSS (VmHWM, reset
after building) over the iterations. Prints a table and the ratios ours / transformers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def build(args):
    import torch
    from transformers import AlignConfig, AlignModel
    from transformers.models.align.configuration_align import AlignTextConfig, AlignVisionConfig

    from panconv_vision.models.align import ALIGN, hf_to_panconv

    torch.manual_seed(0)
    heads = max(1, args.text_hidden // 64)
    ours = ALIGN(vocab_size=30522, max_caption_length=args.tokens, in_channels=3, width_coefficient=args.width,
                 depth_coefficient=args.depth, text_hidden=args.text_hidden, text_layers=args.text_layers,
                 text_heads=heads, text_intermediate=4 * args.text_hidden, label_smoothing=0.1)
    text = AlignTextConfig(hidden_size=args.text_hidden, num_hidden_layers=args.text_layers, num_attention_heads=heads,
                           intermediate_size=4 * args.text_hidden, max_position_embeddings=args.tokens)
    vision = AlignVisionConfig(image_size=args.size, width_coefficient=args.width, depth_coefficient=args.depth)
    hf = AlignModel(AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                projection_dim=ours.embed_dim))
    mapped = {hf_to_panconv(k): v for k, v in hf.state_dict().items() if hf_to_panconv(k)}
    ours.load_state_dict(mapped, strict=False)
    return ours if args.which == "panconv" else hf


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args).to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    ids = torch.randint(1000, 30000, (args.batch, args.tokens), device=device)
    ids[:, 0] = 101

    def step():
        if args.which == "panconv":
            batch = {"inputs": images, "captions": ids}
            out = model(batch)
            return model.loss(out, batch)["loss"] if args.mode == "train" else out
        out = model(input_ids=ids, pixel_values=images, return_loss=args.mode == "train")
        return out.loss if args.mode == "train" else out

    model.train(args.mode == "train")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as fh:   # resets VmHWM to the current RSS
            fh.write("5")
        base = _vm("VmHWM")
    times = []
    for i in range(args.warmup + args.iters):
        start = time.perf_counter()
        if args.mode == "train":
            model.zero_grad(set_to_none=True)
            step().backward()
        else:
            with torch.no_grad():
                step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else (_vm("VmHWM") - base)
    return {"seconds": statistics.median(times), "peak_mib": peak / 2**20,
            "params": sum(p.numel() for p in model.parameters())}


def _vm(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--depth", type=float, default=1.0)
    parser.add_argument("--text-hidden", type=int, default=256)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--which", choices=("panconv", "transformers"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("forward", "train"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.which:
        print(json.dumps(worker(args)))
        return
    results = {}
    for mode in ("forward", "train"):
        for which in ("panconv", "transformers"):
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--which", which,
                   "--mode", mode]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{which} {mode} failed: {done.stderr.strip().splitlines()[-1]}")
            results[which, mode] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"ALIGN, EfficientNet width {args.width} depth {args.depth} + BERT {args.text_layers}x{args.text_hidden}, "
          f"batch {args.batch} at {args.size}^2, {args.tokens} tokens, {args.device}, {args.threads} thread(s)")
    print(f"{'model':<14}{'mode':<9}{'params':>12}{'seconds':>10}{'peak MiB':>10}")
    for (which, mode), r in results.items():
        print(f"{which:<14}{mode:<9}{r['params']:>12,}{r['seconds']:>10.3f}{r['peak_mib']:>10.1f}")
    for mode in ("forward", "train"):
        a, b = results["panconv", mode], results["transformers", mode]
        print(f"ratio panconv / transformers, {mode}: time {a['seconds'] / b['seconds']:.2f}x, "
              f"peak memory {a['peak_mib'] / max(b['peak_mib'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
