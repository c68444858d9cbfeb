"""Poincaré ResNet training step: the fused layers and the step-by-step definition, as ratios to the Euclidean twin.

    OMP_NUM_THREADS=1 python benchmarks/vision_poincare_speed.py --threads 1            # MNIST-shaped, ResNet-20 w8
    python benchmarks/vision_poincare_speed.py --depth 32 --width 16 --in-channels 3 --size 32   # CIFAR-shaped

Three models are built with the same seed and timed the same way in one run (``_timing.time_call``, median of
``--iters`` after ``--warmup``): the Euclidean ResNet (``vision.euclidean_resnet{depth}_w{width}``, the paper's
baseline: Conv2d, BatchNorm2d, additive residuals), the Poincaré ResNet as it runs by default (``fast``: the
convolution as a plain convolution plus a box sum of squared norms, the midpoint batch norm and the Möbius residual
through per-pixel scalars; ``tests/test_poincare_fast.py`` checks they equal the definition), and the Poincaré
ResNet with every layer's ``fast = False`` (``reference``: unfolded β-concatenated patches, the gyrovector
functions step by step; the code before the speed-up). Timed: one training step (forward, cross-entropy, backward,
Adam step) on a random batch, and an eval-mode forward under ``no_grad``. Printed: milliseconds and the ratio to
the Euclidean model (below 1 would be faster), and the fused path's speed-up over the reference.
"""

from __future__ import annotations

import argparse

import torch
from _timing import time_call


def build(name: str, args, fast: bool = True):
    import panconv

    torch.manual_seed(0)
    model = panconv.create_model({"type": name, "num_classes": args.classes, "in_channels": args.in_channels})
    for module in model.modules():
        if hasattr(module, "fast"):
            module.fast = fast
    return model


def timings(model, x, y, args) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        model.train()
        loss = model.loss(model({"inputs": x}), {"labels": y})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward():
        model.eval()
        with torch.no_grad():
            model({"inputs": x})

    return (time_call(step, iters=args.iters, warmup=args.warmup),
            time_call(forward, iters=args.iters, warmup=args.warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20, choices=[20, 32])
    parser.add_argument("--width", type=int, default=8, choices=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.in_channels, args.size, args.size, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    tag = f"resnet{args.depth}_w{args.width}"
    rows = [("Euclidean", build(f"vision.euclidean_{tag}", args)),
            ("Poincare fused", build(f"vision.poincare_{tag}", args, fast=True)),
            ("Poincare reference", build(f"vision.poincare_{tag}", args, fast=False))]
    print(f"ResNet-{args.depth} widths {args.width}/{2 * args.width}/{4 * args.width}, batch {args.batch} x "
          f"{args.in_channels} x {args.size}^2, threads {torch.get_num_threads()}, median of {args.iters}")
    print(f"{'model':<20} {'step ms':>9} {'x Euclid':>9} {'eval fwd ms':>12} {'x Euclid':>9}")
    results = {}
    for label, model in rows:
        results[label] = timings(model, x, y, args)
    base_step, base_fwd = results["Euclidean"]
    for label, (step, fwd) in results.items():
        print(f"{label:<20} {step * 1e3:>9.1f} {step / base_step:>9.2f} {fwd * 1e3:>12.1f} {fwd / base_fwd:>9.2f}")
    fused, ref = results["Poincare fused"], results["Poincare reference"]
    print(f"fused speed-up over the reference: step {ref[0] / fused[0]:.2f}x, eval forward {ref[1] / fused[1]:.2f}x")


if __name__ == "__main__":
    main()
