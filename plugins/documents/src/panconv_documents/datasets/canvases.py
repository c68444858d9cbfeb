"""Generated detection canvases: seeded grey images with rectangles, ellipses and triangles (classes 0, 1, 2),
their exact boxes. Drawn in memory per index (PIL), nothing cached; splits use disjoint seeds. For the
one-stage detectors (RelationNet++ / BVR with and without) and for quick detector tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

CLASSES = ("rectangle", "ellipse", "triangle")
_SPLIT_SEED = {"train": 11, "val": 12, "test": 13}


def draw_canvas(seed: int, size: int, max_objects: int):
    """(grey uint8 image, boxes (K, 4) xyxy, labels (K,)) of one canvas."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    background = rng.randint(170, 255)
    im = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(im)
    boxes, labels = [], []
    for _ in range(rng.randint(1, max_objects)):
        w, h = rng.uniform(0.1, 0.45) * size, rng.uniform(0.1, 0.45) * size
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        x1, y1 = x0 + w, y0 + h
        label = rng.randrange(3)
        shade = rng.randint(0, max(background - 80, 1))
        if label == 0:
            draw.rectangle([x0, y0, x1, y1], fill=shade)
        elif label == 1:
            draw.ellipse([x0, y0, x1, y1], fill=shade)
        else:
            apex = rng.uniform(x0, x1)
            draw.polygon([(apex, y0), (x0, y1), (x1, y1)], fill=shade)
        boxes.append([x0, y0, x1, y1])
        labels.append(label)
    gray = np.asarray(im)
    noise = np.random.default_rng(seed).normal(0, 6, gray.shape)
    return np.clip(gray + noise, 0, 255).astype(np.uint8), boxes, labels


class DetectionCanvases(Dataset):
    """``n`` canvases of ``size`` x ``size`` with 1..``max_objects`` shapes (later shapes may occlude earlier)."""

    metadata_keys = ("num_classes",)
    conformance_skips = {"malformed_file": "generated in memory: there is no data file to be malformed"}

    def __init__(self, root=None, split: str = "train", n: Annotated[int, Ge(1)] = 512,
                 size: Annotated[int, Interval(ge=32, le=1024)] = 128, max_objects: Annotated[int, Ge(1)] = 4,
                 seed: Annotated[int, Ge(0)] = 0):
        super().__init__(root, split)
        if n < 1 or size < 32 or max_objects < 1:
            raise ValueError("n and max_objects must be >= 1, size >= 32")
        self.n, self.size, self.max_objects = n, size, max_objects
        self.seed = seed * 1_000_003 + _SPLIT_SEED[split] * 100_000

    @property
    def metadata(self) -> dict:
        return {"num_classes": 3, "class_names": list(CLASSES)}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        gray, boxes, labels = draw_canvas(self.seed + index, self.size, self.max_objects)
        x = torch.from_numpy(gray.copy()).float().div_(255)
        return {"inputs": x.expand(3, -1, -1).contiguous(), "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.long), "image_id": index}

    def collate(self, samples: list[dict]) -> dict:
        return {"inputs": torch.stack([s["inputs"] for s in samples]), "boxes": [s["boxes"] for s in samples],
                "labels": [s["labels"] for s in samples], "image_id": torch.tensor([s["image_id"] for s in samples])}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"n": 3, "size": 32}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        raise NotImplementedError("DetectionCanvases reads no file")
