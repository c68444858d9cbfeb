"""Skeleton gesture sequences for word-level sign recognition (the input of Pose-TGCN / Pose-GRU).

**No real pose data ships offline.** WLASL's keypoints come from running OpenPose on its videos,
which are downloaded from the web; none of that is available here. So by default this data set
is a *seeded synthetic generator* of sign-like gestures, documented below; it exercises the models
and the training pipeline, and says nothing about accuracy on WLASL. Real keypoints can be read
from ``.npz`` files (``file:``) when a user has them.

**Layout** (as WLASL's Pose-TGCN input): 55 keypoints per frame, 13 upper-body points of OpenPose's
BODY_25 (nose, neck, shoulders, elbows, wrists, mid-hip, eyes, ears: :data:`BODY`), then the 21
points of the left hand and the 21 of the right hand (wrist, then four joints per finger from thumb to
little finger), coordinates in about ``[-1, 1]``; ``num_frames`` frames. An item's ``inputs`` is
``(55, 2 * num_frames)``: each node's trajectory ``x_0, y_0, x_1, y_1, ...``, the node features of the
official code (``sign_dataset.py`` concatenates the per-frame ``(55, 2)`` poses along features).

**The generator** (``seed`` fixes the classes; the split decides the samples). Each class is a sign:
the right (dominant) wrist follows a Lissajous path ``(a_x sin(2 pi f_x s + p_x), a_y sin(2 pi f_y s +
p_y))`` around a class-specific centre in front of the chest (frequencies from {0.5, 1, 1.5, 2},
amplitudes 0.1-0.3, random phases); the left hand either rests, mirrors the right one or follows its own
path (drawn per class); each hand has a class-specific finger curl that opens or closes over the sign
and a rotation rate. Elbows follow the wrists, the head and torso sway slightly. Each sample varies:
speed (the sign's time ``s = u^gamma`` with ``gamma`` in [0.7, 1.4] and a random start/end trim, so
the same path is traversed at a different pace), amplitude (x 0.85-1.15), position (+-0.08) and size
(x 0.9-1.1) of the whole body, and Gaussian noise on every coordinate (``noise``, default 0.02).

**Files** (``file: poses_{split}.npz``, relative to ``root``; ``{split}`` is replaced by the split):
arrays ``poses`` ``(N, T, K, 2)`` float and ``labels`` ``(N,)`` integers in ``0..num_classes-1``. A missing
array, a wrong shape, a non-finite coordinate or a label out of range raises a one-line ``DataError``
naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

BODY = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "mid_hip",
        "r_eye", "l_eye", "r_ear", "l_ear")
HAND = 21
NUM_KEYPOINTS = len(BODY) + 2 * HAND  # 55
LEFT_HAND, RIGHT_HAND = len(BODY), len(BODY) + HAND
#: rest positions of the body points (x to the viewer's right, y down; the neck at the origin)
_BODY_REST = np.array([[0.0, -0.35], [0.0, 0.0], [-0.25, 0.0], [-0.32, 0.3], [-0.3, 0.6], [0.25, 0.0], [0.32, 0.3],
                       [0.3, 0.6], [0.0, 0.75], [-0.05, -0.4], [0.05, -0.4], [-0.1, -0.37], [0.1, -0.37]])
_SPLIT_OFFSET = {"train": 1, "val": 2, "test": 3}


def _hand(wrist: np.ndarray, angle: np.ndarray, curl: np.ndarray, side: float) -> np.ndarray:
    """``(..., 21, 2)`` hand points: the wrist and 5 fingers of 4 joints fanned around ``angle``."""
    out = np.empty(wrist.shape[:-1] + (HAND, 2))
    out[..., 0, :] = wrist
    spread = np.array([-0.9, -0.35, 0.0, 0.3, 0.6]) * side
    lengths = np.array([0.025, 0.035, 0.038, 0.035, 0.028])
    for f in range(5):
        direction = angle + spread[f]
        for j in range(4):
            bend = direction + curl[..., f] * (j + 1) * 0.45 * side
            step = lengths[f] * (1.0 - 0.35 * curl[..., f] * j / 3)
            prev = out[..., 0, :] if j == 0 else out[..., 1 + 4 * f + j - 1, :]
            out[..., 1 + 4 * f + j, 0] = prev[..., 0] + step * np.sin(bend)
            out[..., 1 + 4 * f + j, 1] = prev[..., 1] - step * np.cos(bend)
    return out


def class_parameters(num_classes: int, seed: int) -> list[dict]:
    """The sign of each class (drawn from ``seed``)."""
    rng = np.random.default_rng((seed, 0))
    freqs = np.array([0.5, 1.0, 1.5, 2.0])
    classes = []
    for _ in range(num_classes):
        classes.append({
            "centre": np.array([rng.uniform(-0.25, 0.05), rng.uniform(0.0, 0.45)]),
            "amp": rng.uniform(0.1, 0.3, 2), "freq": rng.choice(freqs, 2), "phase": rng.uniform(0, 2 * np.pi, 2),
            "left_mode": int(rng.integers(3)),  # 0 rest, 1 mirror, 2 own path
            "left_amp": rng.uniform(0.08, 0.2, 2), "left_freq": rng.choice(freqs, 2),
            "left_phase": rng.uniform(0, 2 * np.pi, 2),
            "curl_start": rng.uniform(0, 1, 5), "curl_end": rng.uniform(0, 1, 5),
            "rotation": rng.uniform(-1.5, 1.5), "angle": rng.uniform(-0.6, 0.6),
        })
    return classes


def generate_gestures(labels: np.ndarray, classes: list[dict], num_frames: int, noise: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``(N, num_frames, 55, 2)`` float32 poses of the given class labels (see the module docstring)."""
    n = len(labels)
    u = np.linspace(0.0, 1.0, num_frames)
    gamma = rng.uniform(0.7, 1.4, (n, 1))
    start, end = rng.uniform(0.0, 0.1, (n, 1)), rng.uniform(0.9, 1.0, (n, 1))
    s = start + (end - start) * u[None] ** gamma  # (N, T): the sign's own time, at each sample's pace
    amp_jitter = rng.uniform(0.85, 1.15, (n, 1, 2))
    poses = np.zeros((n, num_frames, NUM_KEYPOINTS, 2))
    for i, c in enumerate(labels):
        p = classes[int(c)]
        si = s[i][:, None]
        right = p["centre"] + amp_jitter[i] * p["amp"] * np.sin(2 * np.pi * p["freq"] * si + p["phase"])
        if p["left_mode"] == 0:
            left = np.broadcast_to(_BODY_REST[7] + [0.0, 0.05], right.shape).copy()
        elif p["left_mode"] == 1:
            left = right * [-1.0, 1.0]
        else:
            left = [-p["centre"][0], p["centre"][1]] + p["left_amp"] * np.sin(
                2 * np.pi * p["left_freq"] * si + p["left_phase"])
        body = np.broadcast_to(_BODY_REST, (num_frames, len(BODY), 2)).copy()
        body[:, [0, 9, 10, 11, 12]] += 0.02 * np.sin(2 * np.pi * si[:, :, None] + i)  # head sway
        body[:, 4], body[:, 7] = right, left
        body[:, 3] = (body[:, 2] + right) / 2 + [-0.08, 0.05]
        body[:, 6] = (body[:, 5] + left) / 2 + [0.08, 0.05]
        curl = p["curl_start"] + (p["curl_end"] - p["curl_start"]) * si
        angle = p["angle"] + p["rotation"] * si[:, 0]
        poses[i, :, :len(BODY)] = body
        poses[i, :, LEFT_HAND:RIGHT_HAND] = _hand(left, -angle, curl, -1.0)
        poses[i, :, RIGHT_HAND:] = _hand(right, angle, curl, 1.0)
    poses = poses * rng.uniform(0.9, 1.1, (n, 1, 1, 1)) + rng.uniform(-0.08, 0.08, (n, 1, 1, 2))
    poses += noise * rng.standard_normal(poses.shape)
    return poses.astype(np.float32)


def node_features(poses: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N, T, K, 2)`` poses -> ``(N, K, 2T)``: each keypoint's trajectory ``x_0, y_0, x_1, y_1, ...``."""
    poses = torch.as_tensor(poses, dtype=torch.float32)
    n, t, k, c = poses.shape
    return poses.permute(0, 2, 1, 3).reshape(n, k, t * c).contiguous()


class SkeletonGestures(Dataset):
    """Skeleton gestures: generated (default) or read from ``.npz`` keypoint files (module docstring)."""

    metadata_keys = ("num_classes", "num_keypoints", "num_frames")

    def __init__(self, root=None, split: str = "train", num_classes: Annotated[int, Ge(2)] = 20,
                 num_frames: Annotated[int, Ge(2)] = 50,
                 samples_per_class: Annotated[int, Ge(1)] = 40,
                 eval_samples_per_class: Annotated[int, Ge(1)] = 15,
                 noise: Annotated[float, Interval(ge=0, le=1)] = 0.02,
                 seed: Annotated[int, Interval(ge=0, le=2**32 - 1)] = 0,
                 file: str | None = None):
        super().__init__(root, split)
        for key, value, low in (("num_classes", num_classes, 2), ("num_frames", num_frames, 2),
                                ("samples_per_class", samples_per_class, 1),
                                ("eval_samples_per_class", eval_samples_per_class, 1)):
            if value < low:
                raise ValueError(f"SkeletonGestures: {key} must be >= {low}, got {value}")
        if not 0 <= noise <= 1:
            raise ValueError(f"SkeletonGestures: noise must be in [0, 1], got {noise}")
        self.num_classes, self.num_frames = int(num_classes), int(num_frames)
        if file is not None:
            path = Path(file.replace("{split}", {"val": "valid"}.get(split, split)))
            poses, labels = self._read(path if path.is_absolute() else self.root / path)
        else:
            per_class = samples_per_class if split == "train" else eval_samples_per_class
            rng = np.random.default_rng((seed, _SPLIT_OFFSET[split]))
            labels = rng.permutation(np.repeat(np.arange(self.num_classes), per_class))
            poses = generate_gestures(labels, class_parameters(self.num_classes, seed), self.num_frames,
                                      float(noise), rng)
        self.num_keypoints = poses.shape[2]
        self.inputs = node_features(poses)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("poses", "labels") if k in data.files}
        except FileNotFoundError:
            raise DataError(f"{path}: no such file (expected an .npz with poses (N, T, K, 2), labels (N,))") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0][:80]})") from None
        missing = [k for k in ("poses", "labels") if k not in arrays]
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(missing)}; expected poses (N, T, K, 2), labels (N,)")
        poses, labels = arrays["poses"], arrays["labels"]
        if poses.ndim != 4 or poses.shape[-1] != 2 or poses.shape[1] != self.num_frames or labels.ndim != 1 \
                or len(labels) != len(poses) or len(poses) == 0:
            raise DataError(f"{path}: poses {poses.shape} / labels {labels.shape} do not fit (N, {self.num_frames}, "
                            f"K, 2) / (N,) with N > 0")
        if not np.issubdtype(poses.dtype, np.floating) or not np.isfinite(poses).all():
            raise DataError(f"{path}: poses must be finite floats")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"{path}: labels must be integers in 0..{self.num_classes - 1}")
        return poses.astype(np.float32), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}

    @property
    def metadata(self) -> dict:
        return {"num_classes": self.num_classes, "num_keypoints": self.num_keypoints, "num_frames": self.num_frames}

    # ---- conformance-kit examples
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"root": tmp_dir, "num_classes": 3, "num_frames": 8, "samples_per_class": 2}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "poses_train.npz"
        np.savez(path, poses=np.zeros((4, 8, 55, 2), dtype=np.float32), labels=np.array([0, 1, 2, 7]))
        return {"root": tmp_dir, "num_classes": 3, "num_frames": 8, "file": "poses_{split}.npz"}
