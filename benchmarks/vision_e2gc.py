"""E2GC against fixed-number-of-groups convolution: analytic compute / data movement / energy, measured latency.

    python benchmarks/vision_e2gc.py --threads 1                  # CPU, 1 image at 224^2
    python benchmarks/vision_e2gc.py --device cuda --batch 64     # on a GPU (energy from NVML when present)

For each network (MobileNet-V1: depthwise = fixed g = C; ResNeXt-50 32x4d: fixed g = 32) and its E2GC
variants (constant group size G), printed as ratios to the baseline measured in the same run: the
analytic model of ``panconv_vision.models.e2gc`` (multiply-accumulates, words moved, arithmetic
intensity, modelled energy with 45 nm costs) and the measured latency of a forward pass (median of
``--iters``). Measured energy: the GPU's NVML energy counter when ``pynvml`` and a GPU are there, the
CPU's RAPL counter (/sys/class/powercap/intel-rapl:0/energy_uj) when readable; otherwise "n/a".
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
NETWORKS = {
    "MobileNet-V1": ["vision.mobilenet_v1", "vision.mobilenet_v1_e2gc_g2", "vision.mobilenet_v1_e2gc_g4",
                     "vision.mobilenet_v1_e2gc_g8"],
    "ResNeXt-50": ["vision.resnext50_32x4d", "vision.resnext50_e2gc_g4", "vision.resnext50_e2gc_g8",
                   "vision.resnext50_e2gc_g16"],
}


def energy_counter(device: str):
    """A function returning joules consumed so far, or None."""
    if device == "cuda":
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3
        except Exception:  # no pynvml or no energy counter
            return None
    try:
        RAPL.read_text()
        return lambda: int(RAPL.read_text()) / 1e6
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import panconv
    from panconv_vision.models.e2gc import energy, network_cost

    counter = energy_counter(args.device)
    print(f"device {args.device}, batch {args.batch}, {args.size}^2; measured energy: "
          f"{'available' if counter else 'n/a (no RAPL/NVML counter here)'}")
    print(f"{'model':<30} {'MMACs':>9} {'Mwords':>8} {'AI':>6} {'MACs':>6} {'moved':>6} {'E model':>8} "
          f"{'latency ms':>11} {'lat.':>6} {'E meas.':>8}")
    for family, names in NETWORKS.items():
        base = None
        for name in names:
            model = panconv.create_model({"backbone": {"type": name}, "neck": {"type": "core.GlobalAvgPool"},
                                          "head": {"type": "core.LinearClsHead", "num_classes": 1000}})
            model.eval().to(args.device)
            x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
            cost, _ = network_cost(model.backbone, x)

            def run(model=model, x=x):
                with torch.no_grad():
                    model({"inputs": x})
                if args.device == "cuda":
                    torch.cuda.synchronize()

            for _ in range(args.warmup):
                run()
            times, joules = [], []
            for _ in range(args.iters):
                e0 = counter() if counter else None
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
                if counter:
                    joules.append(counter() - e0)
            row = (cost.macs, cost.data_movement, energy(cost), statistics.median(times),
                   statistics.median(joules) if joules else None)
            base = base or row
            e_meas = f"{row[4] / base[4]:8.2f}" if row[4] is not None and base[4] else f"{'n/a':>8}"
            print(f"{name.removeprefix('vision.'):<30} {row[0] / 1e6:9.0f} {row[1] / 1e6:8.1f} "
                  f"{cost.arithmetic_intensity:6.1f} {row[0] / base[0]:6.2f} {row[1] / base[1]:6.2f} "
                  f"{row[2] / base[2]:8.2f} {row[3] * 1e3:11.1f} {row[3] / base[3]:6.2f} {e_meas}")
        print(f"  ({family}: ratios to {names[0].removeprefix('vision.')})")


if __name__ == "__main__":
    main()
