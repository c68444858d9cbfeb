"""CascadeTabNet's training image transformations (paper Section 3.2, "Image transformation"), as sample
transforms on ``{"inputs": (3, H, W) in [0, 1], ...}`` (boxes are unchanged: neither moves the content).

* :class:`Dilation`: binarise (pixels <= 220 of 255 are ink), dilate the ink with a 2x2 kernel (thicker
  strokes, text blobs), write the binary page back (ink black, paper white).
* :class:`Smudge`: binarise, then the distance of every paper pixel to the nearest ink under the L2 (blue
  channel), L1 (green) and chessboard (red) metrics, each min-max normalised, merged to grey with the
  BGR->grey weights and min-max normalised again: ink spreads into smooth blobs.

The official scripts write a uint16 PNG of ``1800 * grey`` for Smudge; here the grey map stays a float in
[0, 1]. In the paper the transformed copies are added to the training set; here each one replaces a
training page with probability ``prob`` (the same mixture in expectation, without tripling the set).
"""

from __future__ import annotations

import random
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

#: ink threshold of the official scripts (``cv2.threshold(img, 220, 255, THRESH_BINARY_INV)``)
INK_THRESHOLD = 220


def ink_mask(gray255: torch.Tensor) -> torch.Tensor:
    """Boolean ink of a 0..255 grey image (``THRESH_BINARY_INV`` at 220: values > 220 are paper)."""
    return gray255 <= INK_THRESHOLD


def dilate_page(gray255: torch.Tensor) -> torch.Tensor:
    """The dilated binary page (0 ink, 255 paper) of an ``(H, W)`` 0..255 grey image; the 2x2 kernel is
    anchored at its bottom-right cell like OpenCV's default anchor for even kernels."""
    ink = ink_mask(gray255).float()[None, None]
    grown = F.max_pool2d(F.pad(ink, (1, 0, 1, 0)), kernel_size=2, stride=1)[0, 0]
    return 255.0 * (1.0 - grown)


def smudge_page(gray255: np.ndarray) -> np.ndarray:
    """The smudged page in [0, 1] of an ``(H, W)`` uint8 grey image (OpenCV distance transforms, mask 5)."""
    import cv2

    paper = np.where(gray255.astype(np.int32) > INK_THRESHOLD, 255, 0).astype(np.uint8)

    def norm(x):
        return cv2.normalize(x, None, 0, 1.0, cv2.NORM_MINMAX)

    b = norm(cv2.distanceTransform(paper, cv2.DIST_L2, 5))
    g = norm(cv2.distanceTransform(paper, cv2.DIST_L1, 5))
    r = norm(cv2.distanceTransform(paper, cv2.DIST_C, 5))
    merged = cv2.normalize(cv2.merge((b, g, r)), None, 0, 4.0, cv2.NORM_MINMAX)
    return cv2.cvtColor(merged, cv2.COLOR_BGR2GRAY).astype(np.float64) / 4.0


class _PageTransform:
    level = "sample"

    def __init__(self, prob: Annotated[float, Interval(ge=0, le=1)] = 0.33, seed: Annotated[int, Ge(0)] = 0):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob, self.seed = prob, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.rng = random.Random(self.seed + epoch)

    def __call__(self, sample: dict) -> dict:
        if self.rng.random() >= self.prob:
            return sample
        gray = sample["inputs"][0] * 255.0
        page = self.transform(gray)
        return {**sample, "inputs": page.expand(3, -1, -1).contiguous()}


class Dilation(_PageTransform):
    """CascadeTabNet's dilation transform (2x2 kernel, one iteration), applied with probability ``prob``."""

    def transform(self, gray255: torch.Tensor) -> torch.Tensor:
        return dilate_page(gray255) / 255.0


class Smudge(_PageTransform):
    """CascadeTabNet's smudge transform (distance transforms), applied with probability ``prob``."""

    def transform(self, gray255: torch.Tensor) -> torch.Tensor:
        page = smudge_page(gray255.round().clamp(0, 255).to(torch.uint8).numpy())
        return torch.from_numpy(page).float()
