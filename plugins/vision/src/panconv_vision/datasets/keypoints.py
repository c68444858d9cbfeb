"""Generated keypoint data: one filled isosceles triangle per image, its three corners as keypoints.

A small, faithful stand-in for pose estimation's heat-map task (the HRVMamba paper's COCO keypoints): each image
is a ``size`` x ``size`` gray canvas with Gaussian noise and one filled isosceles triangle of a seeded height,
apex angle (25°-45°, so the apex is always the sharpest corner), rotation (any) and position. The keypoints are
its corners, ``(x, y)`` in pixels (pixel ``i`` centred at ``i``), in a fixed anatomical order: the apex, then the
next corner clockwise on the screen, then the last one; telling the two base corners apart needs the triangle's
orientation, as telling a left wrist from a right one needs the body's. Item ``i`` of a split is a pure function
of ``(seed, split, i)``.

Items: ``inputs`` ``(1, S, S)`` float in [0, 1], ``keypoints`` ``(3, 2)`` float.
"""

from __future__ import annotations

import math
import zlib
from typing import Annotated, Any

import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

__all__ = ["TriangleKeypoints", "triangle_corners"]


def triangle_corners(height: float, apex_degrees: float, angle: float, centre: tuple[float, float]) -> torch.Tensor:
    """Corners ``(3, 2)`` (x, y; y down) of an isosceles triangle: apex, then clockwise on the screen.

    The apex points up before the rotation by ``angle`` (radians, counter-clockwise on the screen); ``centre`` is
    the centroid."""
    half = height * math.tan(math.radians(apex_degrees) / 2)
    local = torch.tensor([[0.0, -2 * height / 3], [half, height / 3], [-half, height / 3]], dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)       # counter-clockwise with y pointing down
    return local @ rotation.T + torch.tensor(centre, dtype=torch.float64)


def _fill(corners: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean ``(size, size)`` mask of the pixel centres inside the triangle."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    sides = []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        (ax, ay), (bx, by) = corners[a].tolist(), corners[b].tolist()
        sides.append((bx - ax) * (ys - ay) - (by - ay) * (xs - ax))
    sides = torch.stack(sides)
    return (sides >= 0).all(0) | (sides <= 0).all(0)


class TriangleKeypoints(Dataset):
    """Generated triangles with three corner keypoints (see the module docstring).

    Args:
        length: images in the split (``eval_length``: in val/test, if given); ``size``: canvas side.
        min_height / max_height: the triangle's height as a fraction of ``size``; ``noise``: std of the
            Gaussian pixel noise. ``seed``: item ``i`` of a split is a function of ``(seed, split, i)``.
    """

    metadata_keys = ("num_keypoints", "in_channels")
    num_keypoints = 3
    conformance_skips = {"malformed_file": "generated in memory from a seed: reads no file"}

    def __init__(self, root=None, split: str = "train", length: Annotated[int, Ge(1)] = 1000,
                 size: Annotated[int, Ge(16)] = 48, min_height: Annotated[float, Interval(gt=0, le=1)] = 0.35,
                 max_height: Annotated[float, Interval(gt=0, le=1)] = 0.6,
                 noise: Annotated[float, Ge(0)] = 0.05, eval_length: Annotated[int, Ge(1)] | None = None,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if split != "train" and eval_length is not None:
            length = eval_length
        if length < 1 or size < 16 or not 0 < min_height <= max_height <= 1 or noise < 0:
            raise ValueError(f"TriangleKeypoints: length >= 1, size >= 16, 0 < min_height <= max_height <= 1 and "
                             f"noise >= 0; got {length}, {size}, {min_height}, {max_height}, {noise}")
        self.length, self.size, self.noise, self.seed = length, size, noise, seed
        self.heights = (min_height, max_height)

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"TriangleKeypoints: index {index} out of range for {self.length} images")
        return torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/triangles/{self.split}/{index}".encode()))

    def __getitem__(self, index: int) -> dict:
        g = self._generator(index)
        u = torch.rand(6, generator=g, dtype=torch.float64).tolist()
        height = self.size * (self.heights[0] + (self.heights[1] - self.heights[0]) * u[0])
        apex = 25 + 20 * u[1]
        angle = 2 * math.pi * u[2]
        corners = triangle_corners(height, apex, angle, (0.0, 0.0))
        low, high = 1.0 - corners.min(0).values, self.size - 2.0 - corners.max(0).values   # the corners inside
        centre = low + (high - low) * torch.tensor(u[3:5], dtype=torch.float64)
        corners = corners + centre
        image = torch.randn(self.size, self.size, generator=g) * self.noise
        image[_fill(corners, self.size)] += 0.6 + 0.4 * u[5]
        return {"inputs": image.clamp(0, 1)[None], "keypoints": corners.float()}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_keypoints": self.num_keypoints, "in_channels": 1}

    @classmethod
    def example(cls, tmp_dir) -> dict:
        return {"length": 4, "size": 32}
