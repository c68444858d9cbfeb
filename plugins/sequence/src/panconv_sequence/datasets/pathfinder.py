"""Pathfinder (Linsley et al. 2018; Long Range Arena, Tay et al. 2021) at 32x32, as pixel sequences.

The LRA task: a grayscale image shows several dashed curved paths ("snakes") and two markers;
the label says whether the two markers lie on the same path. The images are flattened row by row
into a ``(1024,)`` sequence of pixel values (tokens 0-255, ``vocab_size`` 256), 2 classes.

This generator follows the rules of the original ``snakes`` generator, rescaled to 32x32:

* a snake is a chain of ``n_paddles`` straight *paddles* (``paddle_length`` px) separated by gaps
  of ``gap`` px (a dashed path); each paddle turns from the previous one by a uniform angle in
  ``[-max_turn, max_turn]`` (smooth contours);
* paths never touch: every pixel of a snake (markers included) is at Chebyshev distance >= 3 from
  every pixel of the other snakes, while consecutive paddles of one snake are within 2 px
  (``gap <= 1.5`` before rounding);
* two main snakes and ``n_distractors`` distractor snakes of the same length are drawn;
* positive (label 1, probability 1/2): the markers (3x3 squares) sit on both ends of main snake A;
  negative: on one end of snake A and one end of snake B. Two markers in both cases.

So the label is exactly the connectivity of the two markers when pixels within Chebyshev
distance 2 count as neighbours (the test flood-fills the drawn image to check it). Images whose
snakes cannot be placed after a few tries are redrawn. ``file``: an ``.npz`` of ``inputs``
(N, 1024) and ``labels`` instead.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Interval

from .synthetic import GeneratedTask, Seed

SIZE = 32
SEPARATION = 3  # Chebyshev distance kept between different snakes; paddles of one snake are within SEPARATION - 1


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Boolean dilation by a ``(2r+1)^2`` square (separable: rows, then columns)."""
    padded = np.pad(mask, radius)
    rows = np.zeros_like(padded)
    for d in range(2 * radius + 1):
        rows[:, radius:-radius] |= padded[:, d:d + mask.shape[1]]
    out = np.zeros(mask.shape, bool)
    for d in range(2 * radius + 1):
        out |= rows[d:d + mask.shape[0], radius:-radius]
    return out


_SQUARE = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # a 3x3 marker around its centre


def _square(center: np.ndarray) -> np.ndarray:
    return center[None] + _SQUARE


class Pathfinder(GeneratedTask):
    """Pathfinder-32 (see the module docstring): ``{"inputs": (1024,) pixel ids, "labels": 0/1}``.

    ``n_paddles``: paddles per snake (the contour length); ``paddle_length``, ``gap`` in pixels;
    ``max_turn``: largest turn between paddles (radians); ``n_distractors``: unmarked snakes.
    A generated split keeps the marker centres in ``markers`` ``(N, 2, 2)`` (row, column).
    """

    metadata_keys = ("num_classes", "vocab_size")
    num_classes, vocab_size = 2, 256

    def __init__(self, root=None, split: str = "train", n_paddles: Annotated[int, Ge(1)] = 5,
                 paddle_length: Annotated[int, Interval(ge=1, le=6)] = 2,
                 gap: Annotated[float, Interval(ge=0, le=1.5)] = 1.5,
                 max_turn: Annotated[float, Interval(ge=0, le=math.pi)] = math.pi / 4,
                 n_distractors: Annotated[int, Ge(0)] = 2, sizes: tuple[int, int, int] = (10000, 2000, 2000),
                 seed: Seed = 0, file: str | None = None):
        self.n_paddles, self.paddle_length, self.gap = n_paddles, paddle_length, gap
        self.max_turn, self.n_distractors = max_turn, n_distractors
        super().__init__(root, split, sizes, seed, file)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "vocab_size": self.vocab_size}

    def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        images = np.zeros((n, SIZE, SIZE), np.uint8)
        labels = (rng.random(n) < 0.5).astype(np.int64)
        self.markers = np.zeros((n, 2, 2), np.int64)  # (row, col) of both marker centres: for checks and plots
        for i in range(n):
            while (markers := self._draw(rng, images[i], bool(labels[i]))) is None:
                images[i] = 0
            self.markers[i] = markers
        return {"inputs": images.reshape(n, SIZE * SIZE).astype(np.int64), "labels": labels}

    def _snake(self, rng: np.random.Generator, blocked: np.ndarray, tries: int = 64):
        """Pixels ``(P, 2)`` and end points ``(2, 2)`` of one snake avoiding ``blocked``, or None.

        ``tries`` candidate snakes are drawn at once (vectorised); the first that fits is kept.
        """
        k, n, length = tries, self.n_paddles, self.paddle_length
        turns = rng.uniform(-self.max_turn, self.max_turn, (k, n))
        turns[:, 0] = rng.uniform(0, 2 * math.pi, k)
        angles = np.cumsum(turns, axis=1)  # (k, n)
        dirs = np.stack([np.cos(angles), np.sin(angles)], -1)  # (k, n, 2)
        steps = np.zeros((k, n, 2))
        steps[:, 1:] = length * dirs[:, :-1] + self.gap * dirs[:, 1:]
        starts = rng.uniform(2, SIZE - 3, (k, 1, 2)) + np.cumsum(steps, axis=1)  # paddle start points
        t = np.linspace(0.0, length, 2 * length + 1)
        pixels = np.rint(starts[:, :, None] + t[None, None, :, None] * dirs[:, :, None]).astype(np.int64)
        pixels = pixels.reshape(k, -1, 2)  # (k, P, 2)
        ends = pixels[:, [0, -1]]  # (k, 2, 2)
        body = np.concatenate([pixels, (ends[:, :, None] + _SQUARE[None, None]).reshape(k, -1, 2)], 1)
        inside = ((body >= 0) & (body < SIZE)).all(axis=(1, 2))
        clipped = body.clip(0, SIZE - 1)
        free = inside & ~blocked[clipped[..., 0], clipped[..., 1]].any(1)
        if not free.any():
            return None
        i = int(np.argmax(free))
        return pixels[i], ends[i]

    def _draw(self, rng: np.random.Generator, image: np.ndarray, positive: bool) -> np.ndarray | None:
        """Draw one image in place; the two marker centres ``(2, 2)``, or None when the snakes did not fit."""
        blocked = np.zeros((SIZE, SIZE), bool)
        snakes = []
        for _ in range(2 + self.n_distractors):
            snake = self._snake(rng, blocked)
            if snake is None:
                return None
            path, ends = snake
            body = np.concatenate([path, _square(ends[0]), _square(ends[1])])
            occupied = np.zeros((SIZE, SIZE), bool)
            occupied[body[:, 0], body[:, 1]] = True
            blocked |= _dilate(occupied, SEPARATION - 1)
            image[path[:, 0], path[:, 1]] = 255
            snakes.append(ends)
        markers = [snakes[0][0], snakes[0][1]] if positive else [snakes[0][0], snakes[1][0]]
        for center in markers:
            square = _square(center)
            image[square[:, 0], square[:, 1]] = 255
        return np.stack(markers)

    @classmethod
    def small_config(cls) -> dict:
        return {"n_distractors": 1}


__all__ = ["Pathfinder"]
