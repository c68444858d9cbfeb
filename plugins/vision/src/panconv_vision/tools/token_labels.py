"""Dense label maps from a trained classifier: the annotator of VOLO's token labelling.

Token labelling (Jiang et al. 2021, "All Tokens Matter") trains every token against the score map of a
stronger CNN (NFNet-F6 on ImageNet) applied densely, as ReLabel (Yun et al. 2021) does: the classifier's
linear layer is applied to every location of the last feature map instead of to its global average.
For a classifier ``backbone -> GlobalAvgPool | vision.PoolNorm(norm=batch) -> core.LinearClsHead`` that map
averages exactly to the image logits (pooling and the linear layer commute; BatchNorm in evaluation is a
per-channel affine map); with ``vision.PoolNorm(norm=layer)`` the LayerNorm is applied at every location.

    python -m panconv_vision.tools.token_labels --config examples/vision_volo_annotator_mnist.yaml \\
        --checkpoint work_dirs/vision_volo_annotator_mnist/epoch_4.pth \\
        --out work_dirs/vision_volo_annotator_mnist/token_labels_train.npz

writes the per-location logits of the config's training split (``data.limit`` applies; no augmentation) in the
format ``vision.MNISTTokenLabels`` reads (``datasets/token_labels.py``; like the reference, which stores the
annotator's raw top-5 scores and applies the softmax after resampling them to the token grid; with 10 classes
all are kept), and prints the annotator's image accuracy and how often a location's top class is the label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import panconv
from panconv.io import atomic_write

from ..models.classifier import PoolNorm
from . import _common


def dense_logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``(N, num_classes, h, w)``: the model's linear classifier on every location of its last feature map."""
    head, neck = getattr(model, "head", None), getattr(model, "neck", None)
    fc = getattr(head, "fc", None)
    if not isinstance(fc, nn.Linear) or not hasattr(model, "backbone"):
        raise ValueError("dense labels need a composed classifier backbone -> pooling -> a head with a linear "
                         f"layer 'fc' (core.LinearClsHead), got {type(model).__name__}")
    fmap = model.backbone(inputs)[-1]
    if fmap.dim() != 4:
        raise ValueError(f"dense labels need a (N, C, h, w) last feature map, got shape {tuple(fmap.shape)}")
    if isinstance(neck, PoolNorm):
        fmap = neck.norm(fmap) if neck.norm_first else neck.norm(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    elif neck is not None and type(neck).__name__ != "GlobalAvgPool":
        raise ValueError(f"dense labels: the pooling must be core.GlobalAvgPool or vision.PoolNorm (or none), "
                         f"got {type(neck).__name__}")
    return fc(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@torch.no_grad()
def token_label_arrays(model: nn.Module, dataset, batch_size: int = 500) -> dict[str, np.ndarray]:
    """``logits`` (N, C, h, w) float16 dense maps and ``labels`` (N,) of every image of ``dataset``, unaugmented
    (a ``shift`` augmentation is switched off), in order."""
    if hasattr(dataset, "shift"):
        dataset.shift = 0
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = _common.take(dataset, batch_size, offset=start)
        logits.append(dense_logits(model, batch["inputs"].to(device)).cpu())
        labels.append(batch["labels"].cpu())
    return {"logits": torch.cat(logits).half().numpy(), "labels": torch.cat(labels).numpy().astype(np.int64)}


def write_token_labels(config: str, checkpoint: str, out: str | Path, stage: str = "train",
                       data_root: str | None = None, batch_size: int = 500) -> dict[str, float]:
    """Write the token-label file of ``config``'s ``stage`` split; return summary figures."""
    cfg, model = _common.load(config, checkpoint, data_root=data_root)
    dataset = _common.build_data(cfg, stage, data_root)
    if dataset is None:
        raise ValueError(f"{config}: no data set for the {stage} stage")
    arrays = token_label_arrays(model, dataset, batch_size)
    split = str(getattr(dataset, "split", stage))
    out = Path(out)
    atomic_write(out, lambda handle: np.savez_compressed(handle, **arrays, split=np.array(split)))
    logits, labels = torch.from_numpy(arrays["logits"]).float(), torch.from_numpy(arrays["labels"])
    image = logits.mean((2, 3)).argmax(1)  # = the image prediction for the linear (GAP / BatchNorm) heads
    return {"images": len(labels), "grid": f"{logits.shape[2]}x{logits.shape[3]}",
            "image_accuracy": float((image == labels).float().mean()),
            "location_top1_is_label": float((logits.argmax(1) == labels[:, None, None]).float().mean()),
            "mean_location_max_prob": float(logits.softmax(1).amax(1).mean()), "split": split, "file": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m panconv_vision.tools.token_labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the annotator's experiment config")
    parser.add_argument("--checkpoint", required=True, help="its trained checkpoint (or work dir)")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--stage", default="train", help="which stage's split to label (default: train)")
    parser.add_argument("--data-root", help="data root (default: $PANCONV_DATA, ...)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    try:
        summary = write_token_labels(args.config, args.checkpoint, args.out, args.stage, args.data_root,
                                     args.batch_size)
    except (panconv.PanconvError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
