"""The majority-class baseline of examples/pointcloud_flatformer_cgal.yaml: test mIoU when every point gets the
class most frequent among the training split's labelled points (the same tiles, split and metric).

    PANCONV_DATA=/work/shared/data .venv/bin/python benchmarks/pointcloud_cgal_majority.py
"""

from __future__ import annotations

import torch

from panconv.api import default_data_root
from panconv_pointcloud.datasets.cgal import CGALLiDAR
from panconv_pointcloud.evaluators.segmentation import MeanIoU


def main() -> None:
    root = default_data_root()
    options = dict(source="b9_training", tile_size=12.5, min_labelled=20, seed=0)  # as the example config
    train = CGALLiDAR(root, "train", augment=False, **options)
    labels = torch.cat([tile[1] for tile in train.tiles])
    majority = int(torch.bincount(labels[labels >= 0]).argmax())
    classes = train.metadata["class_names"]
    for split in ("val", "test"):
        data = CGALLiDAR(root, split, **options)
        evaluator = MeanIoU(class_names=classes)
        for _, tile_labels in data.tiles:
            probs = torch.nn.functional.one_hot(torch.full_like(tile_labels, majority), len(classes)).float()
            evaluator.process({"labels": tile_labels[None]}, probs[None])
        metrics = evaluator.compute()
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{split}: majority class '{classes[majority]}': {shown}")


if __name__ == "__main__":
    main()
