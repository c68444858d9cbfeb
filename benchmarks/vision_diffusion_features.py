"""The (block, t) study of "Diffusion Models Beat GANs on Image Classification" (Mukhopadhyay et al. 2023, Sec. 4)
at MNIST scale: a 5-fold linear probe (logistic regression, vision.LinearProbe's ``linear_probe``) on the globally
pooled output of every U-Net block at several noise steps, for the DDPM pre-trained by
``examples/vision_ddpm_mnist.yaml`` and for the same U-Net at its random initialisation (seed 0), beside the
probe on raw pixels.

    PANCONV_DATA=/work/shared/data core-run examples/vision_ddpm_mnist.yaml      # the pre-training (~9 min)
    PANCONV_DATA=/work/shared/data python benchmarks/vision_diffusion_features.py --threads 1

Blocks are numbered as in the paper's code (1 = the stem convolution, the middle block after the input blocks,
the decoder blocks last); features of the first ``--n`` images of MNIST's validation split, seeded noise.
"""

from __future__ import annotations

import argparse
import time

import torch

import panconv
from panconv.testing import shared_data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/vision_ddpm_mnist", help="the DDPM pre-training run")
    parser.add_argument("--n", type=int, default=1000, help="images of the validation split to probe")
    parser.add_argument("--steps", default="10,50,200", help="comma-separated noise steps t")
    parser.add_argument("--blocks", default="3,5,7,8,9,10,11,13", help="comma-separated block numbers "
                        "(empty: every block)")
    parser.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations of each probe")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from panconv_vision.datasets.digits import MNIST
    from panconv_vision.evaluators.representation import linear_probe
    from panconv_vision.models.diffusion_features import probe_grid

    trained = panconv.load_model(args.work_dir)
    cfg = panconv.load_config(f"{args.work_dir}/config.yaml")
    torch.manual_seed(0)
    random = panconv.create_model(cfg["model"]).eval()
    data = MNIST(root=shared_data_root(), split="val", size=cfg["data"].get("size", 28), limit=args.n)
    images, labels = data.inputs, data.labels
    steps = [int(s) for s in args.steps.split(",")]
    blocks = [int(b) for b in args.blocks.split(",")] if args.blocks else list(range(1, trained.unet.num_blocks + 1))
    probe = lambda x: linear_probe(x, labels, max_iter=args.max_iter)  # noqa: E731
    print(f"pixels: linear probe {probe(images.flatten(1)):.4f} ({images[0].numel()} dims)", flush=True)
    results = {}
    for name, model in (("DDPM", trained), ("random U-Net", random)):
        start = time.perf_counter()
        grid = probe_grid(model.unet, model.diffusion, images.split(250), blocks, steps)
        results[name] = {key: probe(feats) for key, feats in grid.items()}
        print(f"{name}: {len(grid)} probes in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\nlinear-probe accuracy, {args.n} MNIST val images, 5-fold; rows: block (channels, side), "
          f"columns: t; each cell 'DDPM / random U-Net'")
    side = images.shape[-1]
    print("| block | " + " | ".join(f"t={t}" for t in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for b in blocks:
        c, down = trained.unet.block_info[b - 1]
        cells = [f"{results['DDPM'][(b, t)]:.3f} / {results['random U-Net'][(b, t)]:.3f}" for t in steps]
        print(f"| {b} ({c}, {side // down}) | " + " | ".join(cells) + " |")
    for name, res in results.items():
        (b, t), acc = max(res.items(), key=lambda kv: kv[1])
        print(f"best {name}: block {b}, t = {t}: {acc:.4f}")


if __name__ == "__main__":
    main()
