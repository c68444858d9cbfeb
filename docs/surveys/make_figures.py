"""Regenerate the figures of the survey guides from the work dirs of their example runs.

    PANCONV_DATA=/work/shared/data .venv/bin/python docs/surveys/make_figures.py [pixelcnn] [slot] [ssmunet]

Reads ``work_dirs/vision_pixelcnn_mnist``, ``work_dirs/vision_slot_scenes``, ``work_dirs/vision_ssmunet_shapes``
and ``work_dirs/vision_ssmunet_cnn_shapes`` (written by the ``core-run`` commands in the guides) and writes
PNGs next to this file: PixelCNN samples and completions, Slot Attention reconstructions and masks next to
the ground truth and k-means, and the two U-Nets' segmentations next to the ground truth.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import panconv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PALETTE = np.array([[0.1, 0.1, 0.1], [0.9, 0.3, 0.2], [0.2, 0.7, 0.3], [0.2, 0.4, 0.9], [0.9, 0.8, 0.2],
                    [0.7, 0.3, 0.8], [0.3, 0.8, 0.8], [0.9, 0.6, 0.7]])


def _save(rows: list[list[np.ndarray]], path: Path, labels: list[str], scale: int = 4) -> None:
    """A grid of (H, W, 3) images in [0, 1], one labelled row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = rows[0][0].shape[:2]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * w * scale / 100 + 1.5, n_rows * h * scale / 100),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(np.clip(row[j], 0, 1), interpolation="nearest")
        axes[i][0].set_title(labels[i], loc="left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")


def _grey(x: torch.Tensor) -> np.ndarray:
    return np.repeat(x.float().numpy()[..., None], 3, -1)


def _labels(mask: torch.Tensor) -> np.ndarray:
    return PALETTE[mask.numpy() % len(PALETTE)]


def pixelcnn() -> None:
    model = panconv.load_model(ROOT / "work_dirs/vision_pixelcnn_mnist")
    generator = torch.Generator().manual_seed(0)
    samples = model.sample(8, 28, 28, generator=generator)
    from panconv_vision.datasets.digits import MNIST
    from panconv_vision.models.pixelcnn import quantise

    test = MNIST(split="test", normalize=False, limit=8).inputs
    truth = quantise(test, 2, model.binarize)
    completions = truth.clone()
    completions[:, 14:] = 0
    with torch.no_grad():                                          # complete the bottom half pixel by pixel
        for r in range(14, 28):
            for c in range(28):
                probs = model.logits_of(model.scale(completions))[:, :, r, c].softmax(-1)
                completions[:, r, c] = torch.multinomial(probs, 1, generator=generator)[:, 0]
    occluded = truth.float().clone()
    occluded[:, 14:] = 0.5
    _save([[_grey(s) for s in samples], [_grey(t) for t in truth.float()], [_grey(o) for o in occluded],
           [_grey(c) for c in completions.float()]], HERE / "pixelcnn_mnist.png",
          ["samples", "test digits (binarised)", "bottom half hidden", "completed by PixelCNN"])


def slot() -> None:
    from panconv_vision.datasets.scenes import ShapeScenes
    from panconv_vision.evaluators.segmentation import kmeans_segments

    model = panconv.load_model(ROOT / "work_dirs/vision_slot_scenes")
    cfg = panconv.load_config(ROOT / "examples/vision_slot_scenes.yaml")["data"]
    data = ShapeScenes(split="test", num_images=8, image_size=cfg["image_size"], min_objects=cfg["min_objects"],
                       max_objects=cfg["max_objects"], min_radius=cfg["min_radius"], max_radius=cfg["max_radius"])
    batch = data.collate([data[i] for i in range(8)])
    with torch.no_grad():
        out = model(batch)
    masks = model.predict(out)["masks"]
    km = kmeans_segments(batch["inputs"], model.slot_attention.num_slots, 0.5)
    rows = [[x.permute(1, 2, 0).numpy() for x in batch["inputs"]],
            [x.permute(1, 2, 0).numpy() for x in out["recon"]],
            [_labels(m) for m in batch["masks"]], [_labels(m) for m in masks], [_labels(m) for m in km]]
    _save(rows, HERE / "slot_scenes.png", ["scenes", "reconstruction", "true instances", "slots (argmax alpha)",
                                           "k-means (colour + position)"])


def ssmunet() -> None:
    from panconv_vision.datasets.medical_shapes import MedicalShapes

    data = MedicalShapes(split="test", num_images=8, image_size=32)
    batch = data.collate([data[i] for i in range(8)])
    rows = [[_grey(x[0] / x.max()) for x in batch["inputs"]], [_labels(m) for m in batch["masks"]]]
    for name in ("vision_ssmunet_shapes", "vision_ssmunet_cnn_shapes"):
        model = panconv.load_model(ROOT / "work_dirs" / name)
        with torch.no_grad():
            rows.append([_labels(m) for m in model.predict(model(batch))["masks"]])
    _save(rows, HERE / "ssmunet_shapes.png", ["images", "truth (organ red, lesion green)", "SSM U-Net", "CNN U-Net"])


if __name__ == "__main__":
    torch.manual_seed(0)
    for name in sys.argv[1:] or ["pixelcnn", "slot", "ssmunet"]:
        {"pixelcnn": pixelcnn, "slot": slot, "ssmunet": ssmunet}[name]()
