"""``vision.ShapeScenes``: generated multi-object scenes with ground-truth instance masks (object discovery).

Each image (``image_size`` square, RGB in [0, 1]) is drawn from its own seed (``seed``, the split and the
index), so a split is the same on every machine and the splits never share a scene:

* ``n`` objects, ``n`` uniform in ``min_objects..max_objects``; each one a circle, a square (axis-aligned)
  or an upward triangle, uniform; radius (half side) uniform in ``[min_radius, max_radius] * image_size``;
  centre uniform inside the image; a colour of its own: hue uniform, saturation and value in [0.6, 1];
* painted in order on a constant dark background (0.1 grey), later objects over earlier ones (occlusion);
* ``masks`` ``(H, W)`` long: the index ``1..n`` of the visible object at each pixel, 0 = background.
  An object fully hidden by later ones leaves no pixel (it is then not counted as an object).

Batches: ``{"inputs": (B, 3, H, W), "masks": (B, H, W)}``. Metadata ``max_objects`` (a slot-count hint:
Slot Attention uses ``max_objects + 1`` slots, one for the background). Generated in memory; reads no file.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

BACKGROUND = 0.1
SHAPES = ("circle", "square", "triangle")


def shape_mask(kind: str, cy: float, cx: float, radius: float, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` coverage of one shape (pixel centres at integer + 0.5)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = ys - cy, xs - cx
    if kind == "circle":
        return dy ** 2 + dx ** 2 <= radius ** 2
    if kind == "square":
        return (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
    if kind == "triangle":   # apex up, base at cy + radius, half-width radius at the base
        t = (dy + radius) / (2 * radius)                     # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * radius)
    raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(SHAPES)}")


def render_scene(rng: np.random.Generator, size: int, min_objects: int, max_objects: int,
                 min_radius: float, max_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image (3, H, W) float32, masks (H, W) int64)``."""
    image = np.full((3, size, size), BACKGROUND, dtype=np.float32)
    masks = np.zeros((size, size), dtype=np.int64)
    for index in range(1, int(rng.integers(min_objects, max_objects + 1)) + 1):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        radius = rng.uniform(min_radius, max_radius) * size
        cy, cx = rng.uniform(0, size, 2)
        colour = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        cover = shape_mask(kind, cy, cx, radius, size)
        image[:, cover] = np.asarray(colour, dtype=np.float32)[:, None]
        masks[cover] = index
    return image, masks


class ShapeScenes(Dataset):
    """Seeded coloured circles, squares and triangles with occlusion and instance masks (module docstring).

    ``num_images``: scenes per split (the test split has as many); ``image_size``: side in pixels;
    ``min_objects``/``max_objects``: objects per scene; ``min_radius``/``max_radius``: object size as a
    fraction of the side; ``seed``: the generator's seed.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("max_objects",)
    conformance_skips = {"malformed_file": "generated in memory from a seed: reads no file"}

    def __init__(self, root=None, split: str = "train", num_images: Annotated[int, Ge(1)] = 2000,
                 image_size: Annotated[int, Ge(8)] = 32, min_objects: Annotated[int, Ge(1)] = 2,
                 max_objects: Annotated[int, Ge(1)] = 4, min_radius: Annotated[float, Interval(gt=0, le=0.5)] = 0.12,
                 max_radius: Annotated[float, Interval(gt=0, le=0.5)] = 0.22,
                 seed: Annotated[int, Interval(ge=0, lt=2**31)] = 0):
        super().__init__(root, split)
        if num_images < 1 or image_size < 8 or not 1 <= min_objects <= max_objects:
            raise ValueError("ShapeScenes: num_images >= 1, image_size >= 8 and 1 <= min_objects <= max_objects")
        if not 0 < min_radius <= max_radius <= 0.5:
            raise ValueError("ShapeScenes: 0 < min_radius <= max_radius <= 0.5")
        self.image_size, self.max_objects = image_size, max_objects
        split_id = self.splits.index(split)
        images, masks = [], []
        for i in range(num_images):
            rng = np.random.default_rng([seed, split_id, i])
            image, mask = render_scene(rng, image_size, min_objects, max_objects, min_radius, max_radius)
            images.append(image)
            masks.append(mask)
        self.images = torch.from_numpy(np.stack(images))
        self.masks = torch.from_numpy(np.stack(masks))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.images[index], "masks": self.masks[index]}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"max_objects": self.max_objects}

    def collate(self, samples: list[dict]) -> dict:
        return {"inputs": torch.stack([s["inputs"] for s in samples]),
                "masks": torch.stack([s["masks"] for s in samples])}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"num_images": 4, "image_size": 16}


__all__ = ["ShapeScenes", "render_scene", "shape_mask"]
