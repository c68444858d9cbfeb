"""``panconv unlearnable``: a PNG of clean images, their CUDA unlearnable versions and the class
filters (the wrapper itself: :mod:`panconv_vision.datasets.unlearnable`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import panconv

from ..datasets.unlearnable import ClasswiseConvolution, Unlearnable  # noqa: F401  (re-exported)
from . import _common


def main(args: argparse.Namespace) -> int:
    cfg = panconv.load_config(args.config)
    clean = _common.build_data(cfg, "train", args.data_root)
    if clean is None:
        raise SystemExit("panconv unlearnable: the config has no train split")
    inner = getattr(clean, "inner", clean)  # a config that already wraps its data: show the clean images
    classes = (getattr(inner, "metadata", {}) or {}).get("num_classes")
    if classes is None:
        raise SystemExit("panconv unlearnable: the data set declares no num_classes")
    from panconv_vision.datasets.digits import MNIST_MEAN, MNIST_STD, _DigitImages

    mean, std = (MNIST_MEAN, MNIST_STD) if isinstance(inner, _DigitImages) and inner.normalize else (None, None)
    conv = ClasswiseConvolution(args.key, classes, args.blur, mean=mean, std=std)
    picked, seen = [], set()
    for i in range(len(inner)):
        label = int(inner[i]["labels"])
        if label not in seen:
            seen.add(label)
            picked.append(inner[i])
        if len(picked) >= min(args.count, classes):
            break
    fig, axes = _common.figure(3, len(picked), figsize=(1.3 * len(picked), 4), squeeze=False)
    for j, sample in enumerate(picked):
        x, label = sample["inputs"], int(sample["labels"])
        for row, image in ((0, x), (1, conv(x, label))):
            axes[row, j].imshow(image.float().mean(0).numpy(), cmap="gray")
        axes[2, j].imshow(conv.filters[label].numpy(), cmap="viridis", vmin=0, vmax=1)
        axes[0, j].set_title(f"class {label}", fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    out = Path(args.output) / "unlearnable.png"
    _common.save_figure(fig, out)
    print(f"wrote {out} (rows: clean, unlearnable with key {args.key} and blur {args.blur}, the class filter)")
    return 0
