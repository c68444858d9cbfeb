"""Throughput and peak memory of the panconv-vision backbones beside timm's same architectures.

    python benchmarks/vision_backbones.py                       # batch 32 at 224x224 (the reference setting)
    python benchmarks/vision_backbones.py --batch 8 --iters 3 --threads 1   # a quick CPU run
    python benchmarks/vision_backbones.py --device cuda --channels-last --bf16

Each model and mode runs in its own subprocess so that peak memory is its own: on CUDA the peak
allocated memory, on CPU the growth of the process's peak RSS (VmHWM) over its RSS once the
model and the batch are built (VmHWM reset), over warm-up and timed iterations. Forward: eval mode
under ``no_grad``; forward+backward: train mode, ``sum of outputs`` backward, no optimizer step.
Images/s is the median over ``--iters`` timed iterations after ``--warmup`` untimed ones.
Models whose plugin or module is missing are skipped. Models whose position embeddings or
attention blocks fix the input side (ConViT, CrossViT, VOLO, Swin V2, HaloNet) run at their paper
size (``FIXED_SIZES``), ours and timm's alike; each (panconv, timm) pair prints its ratios.

    python benchmarks/vision_backbones.py --batch 4 --iters 3 --models "ConViT-Ti (panconv)" "ConViT-Ti (timm)"
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODELS = {  # label -> (registered backbone "vision.name" or factory "module:attr", kwargs)
    # the last stage only, as timm's model without classifier returns (pooled) last-stage features
    "ConvNeXt-T (panconv)": ("vision.convnext_tiny", {"out_indices": [3]}),
    "ConvNeXt-T (timm)": ("timm:create_model", {"model_name": "convnext_tiny", "pretrained": False, "num_classes": 0}),
    "HorNet-T 7x7 (panconv)": ("vision.hornet_tiny_7x7", {}),
    "HorNet-T GF (panconv)": ("vision.hornet_tiny_gf", {}),
    "UniRepLKNet-T (panconv)": ("vision.unireplknet_t", {}),
    "RepLKNet-31B (panconv)": ("vision.replknet_31b", {}),
    # the attention family (issue 17), each beside timm's same architecture (timm without its classifier)
    "ConViT-Ti (panconv)": ("vision.convit_tiny", {}),
    "ConViT-Ti (timm)": ("timm:create_model", {"model_name": "convit_tiny", "pretrained": False, "num_classes": 0}),
    "CrossViT-9 (panconv)": ("vision.crossvit_9", {}),
    "CrossViT-9 (timm)": ("timm:create_model", {"model_name": "crossvit_9_240", "pretrained": False,
                                                "num_classes": 0}),
    "VOLO-D1 (panconv)": ("vision.volo_d1", {}),
    "VOLO-D1 (timm)": ("timm:create_model", {"model_name": "volo_d1_224", "pretrained": False, "num_classes": 0}),
    "SwinV2-T w8 (panconv)": ("vision.swinv2_tiny_window8", {"out_indices": [3]}),
    "SwinV2-T w8 (timm)": ("timm:create_model", {"model_name": "swinv2_tiny_window8_256", "pretrained": False,
                                                 "num_classes": 0}),
    "HaloNet-H1 (panconv)": ("vision.halonet_h1", {"out_indices": [3]}),
    "HaloNet-H1 (timm)": ("timm:create_model", {"model_name": "halonet_h1", "pretrained": False, "num_classes": 0}),
    "MOAT-0 (panconv)": ("vision.moat_0", {"out_indices": [3]}),
    "TiC (panconv)": ("vision.TiC", {"out_indices": [3]}),
}
#: models whose position embeddings (or windows/blocks) fix the input side; the others run at --size
FIXED_SIZES = {"ConViT-Ti": 224, "CrossViT-9": 240, "VOLO-D1": 224, "SwinV2-T w8": 256, "HaloNet-H1": 256}
#: (ours, peer) pairs whose ratio is printed
PAIRS = [("ConvNeXt-T (panconv)", "ConvNeXt-T (timm)")] + [
    (f"{name} (panconv)", f"{name} (timm)") for name in FIXED_SIZES]


def input_size(label: str, default: int) -> int:
    """The input side of a MODELS entry: its architecture's fixed size, else ``--size``."""
    return FIXED_SIZES.get(label.rsplit(" (", 1)[0], default)


def factory_of(target: str):
    """The factory behind a MODELS entry: a registered panconv backbone, or ``module:attr``."""
    import importlib

    if ":" not in target:
        import panconv

        return panconv.get_component("backbone", target)
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def run_one(label: str, args: argparse.Namespace) -> dict:
    import torch

    from panconv.errors import PanconvError

    torch.set_num_threads(args.threads)
    target, kwargs = MODELS[label]
    try:
        factory = factory_of(target)
    except (ModuleNotFoundError, AttributeError, PanconvError) as exc:
        return {"model": label, "skipped": f"{type(exc).__name__}: {exc}"}
    device = torch.device(args.device)
    model = factory(**kwargs).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    side = input_size(label, args.size)
    x = torch.randn(args.batch, 3, side, side, device=device).to(memory_format=fmt)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def outputs_sum(out):
        return sum(o.float().sum() for o in out) if isinstance(out, (list, tuple)) else out.float().sum()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def measure(step) -> tuple[float, float]:
        # peak memory over warm-up and timed iterations, from the state with model and batch built
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _reset_peak_rss()
        base = _memory_kib("VmRSS")
        for _ in range(args.warmup):
            step()
        sync()
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mib = max(0, _memory_kib("VmHWM") - base) / 1024
        return args.batch / statistics.median(times), peak_mib

    def forward():
        with torch.no_grad(), autocast:
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = outputs_sum(model(x))
        loss.backward()

    params = sum(p.numel() for p in model.parameters()) / 1e6
    if args.mode == "fwd":
        model.eval()
        fwd, fwd_mem = measure(forward)
        return {"model": label, "params_m": params, "size": side, "fwd_img_s": fwd, "fwd_peak_mib": fwd_mem}
    model.train()
    train, train_mem = measure(forward_backward)
    return {"model": label, "params_m": params, "size": side, "train_img_s": train, "train_peak_mib": train_mem}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="labels to run (default: all)")
    parser.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                        help="also time ConvNeXt-T panconv and timm alternately in one process, ROUNDS rounds "
                             "per mode: a ratio robust to other load on the machine")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model, print JSON
    parser.add_argument("--mode", default="fwd", help=argparse.SUPPRESS)  # internal: fwd | train
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    passthrough = [a for a in sys.argv[1:] if a not in args.models and a != "--models"]
    rows = []
    for label in args.models:
        row: dict = {"model": label}
        for mode in ("fwd", "train"):  # separate processes: each peak is its own
            proc = subprocess.run([sys.executable, __file__, *passthrough, "--one", label, "--mode", mode],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                row["skipped"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                break
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(f"done: {label}", file=sys.stderr, flush=True)
    mem = "peak MiB (CUDA alloc)" if args.device.startswith("cuda") else "peak RSS growth MiB"
    print(f"\nbatch {args.batch}, {args.size}x{args.size}, device {args.device}, threads {args.threads}, "
          f"channels_last {args.channels_last}, bf16 {args.bf16}, median of {args.iters} iterations\n")
    print(f"| model | params (M) | input | fwd img/s | fwd {mem} | fwd+bwd img/s | fwd+bwd {mem} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['model']} | skipped: {r['skipped']} ||||||")
        else:
            print(f"| {r['model']} | {r['params_m']:.1f} | {r['size']} | {r['fwd_img_s']:.2f} | "
                  f"{r['fwd_peak_mib']:.0f} | "
                  f"{r['train_img_s']:.2f} | {r['train_peak_mib']:.0f} |")
    done = {r["model"]: r for r in rows if "skipped" not in r}
    for ours_label, peer_label in PAIRS:
        ours, peer = done.get(ours_label), done.get(peer_label)
        if ours and peer:
            print(f"{ours_label.rsplit(' (', 1)[0]} panconv / timm at {ours['size']}x{ours['size']}: forward "
                  f"{ours['fwd_img_s'] / peer['fwd_img_s']:.2f}x, forward+backward "
                  f"{ours['train_img_s'] / peer['train_img_s']:.2f}x, peak memory forward "
                  f"{ours['fwd_peak_mib'] / max(peer['fwd_peak_mib'], 1e-9):.2f}x, forward+backward "
                  f"{ours['train_peak_mib'] / max(peer['train_peak_mib'], 1e-9):.2f}x")
    if args.paired:
        paired(args)


def paired(args: argparse.Namespace) -> None:
    """ConvNeXt-T panconv vs timm, same weights, timed alternately (A B A B ...) in one process."""
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    models = {}
    for label in ("ConvNeXt-T (panconv)", "ConvNeXt-T (timm)"):
        models[label] = factory_of(MODELS[label][0])(**MODELS[label][1])
    ours, peer = models.values()
    ours.load_state_dict(_timm_to_panconv(peer.state_dict()))
    for m in models.values():
        m.to(device, memory_format=fmt)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=fmt)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step(model, mode):
        if mode == "fwd":
            model.eval()
            with torch.no_grad(), autocast:
                model(x)
        else:
            model.train()
            model.zero_grad(set_to_none=True)
            with autocast:
                out = model(x)
            (sum(o.float().sum() for o in out) if isinstance(out, (list, tuple)) else out.float().sum()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"\npaired: ConvNeXt-T panconv vs timm, same weights, alternating, {args.paired} rounds per mode "
          f"after {args.warmup} warm-up rounds, batch {args.batch} at {args.size}x{args.size}, threads {args.threads}")
    for mode, name in (("fwd", "forward"), ("train", "forward+backward")):
        times = {label: [] for label in models}
        for r in range(args.warmup + args.paired):
            order = list(models.items()) if r % 2 == 0 else list(models.items())[::-1]
            for label, model in order:
                start = time.perf_counter()
                step(model, mode)
                if r >= args.warmup:
                    times[label].append(time.perf_counter() - start)
        med = {label: statistics.median(t) for label, t in times.items()}
        ratios = [b / a for a, b in zip(*times.values())]
        print(f"{name:17s} panconv {args.batch / med['ConvNeXt-T (panconv)']:.2f} img/s, "
              f"timm {args.batch / med['ConvNeXt-T (timm)']:.2f} img/s, panconv / timm "
              f"{med['ConvNeXt-T (timm)'] / med['ConvNeXt-T (panconv)']:.2f}x "
              f"(per-round ratios {min(ratios):.2f}-{max(ratios):.2f})")


def _timm_to_panconv(state: dict) -> dict:
    """timm convnext_* weights under the backbone's parameter names (the mapping the parity test uses)."""
    from panconv_vision.models.convnext import map_timm_state_dict

    prefix = "backbone."
    return {k[len(prefix):]: v for k, v in map_timm_state_dict(state).items() if k.startswith(prefix)}


if __name__ == "__main__":
    main()
