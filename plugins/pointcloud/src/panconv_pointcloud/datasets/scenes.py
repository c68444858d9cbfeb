"""A seeded generator of 3-D detection scenes seen by a spinning LiDAR, with exact boxes.

Each scene (deterministic in ``seed``, the split and the index): a ground plane tilted by up to
``max_slope`` degrees, and 3 to ``max_objects`` boxes of three classes placed without overlap,
each with a random yaw and sizes jittered by +-10 % around KITTI/Waymo means (car 4.5 x 1.9 x 1.6 m,
pedestrian 0.8 x 0.7 x 1.75 m, cyclist 1.8 x 0.7 x 1.7 m), standing on the ground. A sensor at
``sensor_height`` casts ``beams`` rings (elevations evenly from -25 deg to +2 deg, as a 32-beam
spinning LiDAR) x ``azimuths`` rays; each ray returns its *first* hit (exact ray / oriented-box
slab intersection, ray / plane intersection), so near objects occlude far ones and the ground
behind them; range noise ``noise`` m (Gaussian along the ray). Points outside the square
``[-extent, extent]^2`` are dropped. Features: ``x, y, z`` and an intensity (ground darker than
objects, both noisy). Ground truth: the boxes ``(x, y, z_centre, l, w, h, yaw)`` hit by at least
``min_points`` rays (the others are invisible and dropped from the labels).
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Gt

from panconv.api import Dataset

from .batching import collate_point_clouds

CLASSES = ("car", "pedestrian", "cyclist")
MEAN_SIZES = np.array([[4.5, 1.9, 1.6], [0.8, 0.7, 1.75], [1.8, 0.7, 1.7]])
CLASS_PROBABILITIES = (0.5, 0.3, 0.2)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def ray_box_distance(origin: np.ndarray, dirs: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Distance along each unit ray to the oriented box ``(x, y, z, l, w, h, yaw)`` (inf: no hit; slab method)."""
    c, s = math.cos(box[6]), math.sin(box[6])
    rel = origin - box[:3]
    o = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])  # into the box frame
    d = np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], axis=1)
    half = box[3:6] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    near = np.nanmax(np.minimum(t1, t2), axis=1)
    far = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (near <= far) & (far > 0) & (near > 0)
    return np.where(hit, near, np.inf)


def generate_scene(rng: np.random.Generator, extent: float = 25.6, beams: int = 32, azimuths: int = 720,
                   sensor_height: float = 1.8, max_objects: int = 12, min_points: int = 5, noise: float = 0.02,
                   max_slope: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (n, 4), boxes (m, 7), labels (m,))`` of one scene (see the module docstring)."""
    slope = np.tan(np.radians(rng.uniform(-max_slope, max_slope, 2)))

    def ground(x, y):
        return slope[0] * x + slope[1] * y

    boxes, labels = [], []
    for _ in range(200):
        if len(boxes) >= rng.integers(3, max_objects + 1):
            break
        label = rng.choice(3, p=CLASS_PROBABILITIES)
        size = MEAN_SIZES[label] * rng.uniform(0.9, 1.1, 3)
        x, y = rng.uniform(-0.9 * extent, 0.9 * extent, 2)
        if math.hypot(x, y) < 3.0 or any(math.hypot(x - b[0], y - b[1]) < (math.hypot(*size[:2]) +
                                                                            math.hypot(*b[3:5])) / 2 + 0.3
                                         for b in boxes):
            continue
        boxes.append(np.array([x, y, ground(x, y) + size[2] / 2, *size, rng.uniform(-math.pi, math.pi)]))
        labels.append(label)
    boxes = np.array(boxes).reshape(-1, 7)
    elevation = np.radians(np.linspace(-25.0, 2.0, beams))
    azimuth = np.linspace(0, 2 * math.pi, azimuths, endpoint=False) + rng.uniform(0, 2 * math.pi / azimuths)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    origin = np.array([0.0, 0.0, sensor_height])
    # the ground: origin_z + t d_z = slope . (origin_xy + t d_xy)
    denom = dirs[:, 2] - dirs[:, 0] * slope[0] - dirs[:, 1] * slope[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = (ground(0.0, 0.0) - origin[2]) / denom
    distances = [np.where(t_ground > 0, t_ground, np.inf)] + [ray_box_distance(origin, dirs, b) for b in boxes]
    distances = np.stack(distances, axis=1)
    first = distances.argmin(axis=1)  # 0: ground, k: box k - 1
    t = distances[np.arange(len(dirs)), first]
    t = t + rng.normal(0, noise, t.shape)
    xyz = origin + t[:, None] * dirs
    keep = np.isfinite(t) & (np.abs(xyz[:, 0]) < extent) & (np.abs(xyz[:, 1]) < extent)
    intensity = np.where(first == 0, rng.uniform(0.05, 0.3, len(t)), rng.uniform(0.1, 0.9, len(t)))
    points = np.concatenate([xyz, intensity[:, None]], axis=1)[keep]
    hits = np.bincount(first[keep], minlength=len(boxes) + 1)[1:]
    visible = hits >= min_points
    return points.astype(np.float32), boxes[visible].astype(np.float32), np.array(labels, dtype=np.int64)[visible]


class DetectionScenes(Dataset):
    """Generated LiDAR detection scenes (module docstring); items ``{"inputs": {"points"}, "gt_boxes", "gt_labels"}``.

    ``num_scenes``: scenes per split: one number for every split, or ``{split: n}`` (default: train 400,
    val 50, test 100).
    """

    metadata_keys = ("num_classes", "in_channels")
    conformance_skips = {"malformed_file": "generated in memory from a seed: reads no file"}

    def __init__(self, root=None, split: str = "train",
                 num_scenes: Annotated[int, Ge(1)] | dict[str, Annotated[int, Ge(1)]] | None = None,
                 seed: int = 0, extent: Annotated[float, Gt(0)] = 25.6, beams: Annotated[int, Ge(2)] = 32,
                 azimuths: Annotated[int, Ge(8)] = 720, sensor_height: Annotated[float, Gt(0)] = 1.8,
                 max_objects: Annotated[int, Ge(3)] = 12, min_points: Annotated[int, Ge(1)] = 5,
                 noise: Annotated[float, Ge(0)] = 0.02):
        super().__init__(root, split)
        counts = {"train": 400, "val": 50, "test": 100}
        if isinstance(num_scenes, dict):
            unknown = sorted(set(num_scenes) - set(counts))
            if unknown:
                raise ValueError(f"DetectionScenes: num_scenes has unknown split(s) {unknown}")
            counts.update(num_scenes)
        elif num_scenes is not None:
            counts = dict.fromkeys(counts, num_scenes)
        self.num_scenes = counts[split]
        self.seed = seed
        self.options = dict(extent=extent, beams=beams, azimuths=azimuths, sensor_height=sensor_height,
                            max_objects=max_objects, min_points=min_points, noise=noise)

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_scenes:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        points, boxes, labels = generate_scene(rng, **self.options)
        return {"inputs": {"points": torch.from_numpy(points)}, "gt_boxes": torch.from_numpy(boxes),
                "gt_labels": torch.from_numpy(labels)}

    @property
    def metadata(self) -> dict:
        return {"num_classes": 3, "in_channels": 4, "class_names": list(CLASSES), "extent": self.options["extent"]}

    def collate(self, samples: list) -> dict:
        return collate_point_clouds(samples)

    @classmethod
    def example(cls, tmp_dir) -> dict:
        return {"num_scenes": 2, "extent": 8.0, "beams": 8, "azimuths": 64}


__all__ = ["CLASSES", "DetectionScenes", "MEAN_SIZES", "generate_scene", "ray_box_distance"]
