"""Video data: real clips decoded by OpenCV from the opencv-doc videos, and Moving-MNIST generated from MNIST.

Real videos (Debian ``opencv-doc``, ``/usr/share/doc/opencv-doc/examples/data``):

=================  =====================  ==========  =============================================
file               frames (decoded)       size, fps   content
=================  =====================  ==========  =============================================
``vtest.avi``      795                    768x576, 10  pedestrians, fixed camera (PETS 2009 style)
``Megamind.avi``   270                    720x528, 24  animated film excerpt, camera and object motion
``tree.avi``       68 (header says 444)   320x240, 15  a tree in the wind
=================  =====================  ==========  =============================================

:func:`read_video` decodes a file with ``cv2.VideoCapture`` into a ``(T, C, H, W)`` uint8 tensor
(frames centre-cropped to a square and resized with area interpolation, so long videos fit in
memory). A file OpenCV cannot open, one with no decodable frame, and — with ``strict`` — one that
decodes fewer frames than its header declares (a truncated or corrupt file) raise a one-line
:class:`panconv.errors.DataError` naming the file. ``tree.avi`` as Debian ships it decodes 68 of
the 444 frames its header declares, so it is read with ``strict=False``.

:func:`sample_clips`: seeded clip sampling (start frames of ``count`` clips of ``length`` frames,
``stride`` apart). :class:`VideoTriplets`: frame-interpolation triplets ``(f[t], f[t+g], f[t+2g])``,
split by time within each video (first 80 % train, next 10 % val, last 10 % test); inputs are the
outer frames, the target the middle one, and ``baseline`` the average of the outer frames (so the
``vision.ImageQuality`` evaluator reports frame averaging's PSNR/SSIM in the same run).

:class:`MovingMNIST`: clips of ``frames`` frames of ``num_digits`` MNIST digits (28x28) moving in
straight lines on a black ``size`` x ``size`` canvas, each at a seeded constant velocity: one of
8 directions (0 = right, then counter-clockwise in 45° steps: up-right, up, up-left, left,
down-left, down, down-right) at a speed in ``[speed_min, speed_max]`` pixels per frame, from a
start position drawn so the digit stays inside the canvas. The label (motion class) is the
direction of the first digit; the caption is templated ("the digit seven moves up and to the
left", joined with "and" for several digits), tokenised with a fixed vocabulary. Sample ``i`` of
a split is a pure function of ``(seed, split, i)``. Digits come from the vision plugin's MNIST
loader (train / val / test digits for the same splits), so a test clip shows unseen digits.
"""

from __future__ import annotations

import functools
import math
import zlib
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Gt, Interval

from panconv.api import Dataset
from panconv.errors import DataError

from .vocabulary import BOS, EOS, PAD, Vocabulary

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
#: the opencv-doc videos and whether their header's frame count is honest (strict decoding)
OPENCV_VIDEOS = {"vtest.avi": True, "Megamind.avi": True, "tree.avi": False}


# ---------------------------------------------------------------- decoding
def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is a dependency of the vision plugin's tools
        raise DataError("decoding videos needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


def read_video(path: str | Path, size: int | None = None, gray: bool = False, step: int = 1,
               max_frames: int | None = None, strict: bool = True) -> torch.Tensor:
    """Decode ``path`` into ``(T, C, H, W)`` uint8 (RGB, or one gray channel).

    ``size``: centre-crop each frame to a square and resize it to ``size`` x ``size`` (area
    interpolation); ``step``: keep every ``step``-th frame; ``max_frames``: stop after that many
    kept frames. Raises :class:`DataError` (one line, naming the file) for a missing or unreadable
    file, no decodable frame, or (``strict``) fewer decoded frames than the header declares.
    """
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video (unknown container/codec or a corrupt header)")
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames, index = [], 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(_prepare_frame(cv2, frame, size, gray))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise DataError(f"{path}: no frame could be decoded (corrupt or empty video)")
    complete = max_frames is not None and len(frames) >= max_frames
    if strict and not complete and declared > 0 and index < declared:
        raise DataError(f"{path}: truncated or corrupt video: decoded {index} of the {declared} frames its header "
                        f"declares")
    video = torch.from_numpy(np.stack(frames))
    return video[:, None] if gray else video.permute(0, 3, 1, 2).contiguous()


def _prepare_frame(cv2, frame: np.ndarray, size: int | None, gray: bool) -> np.ndarray:
    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if gray else cv2.COLOR_BGR2RGB)
    if size is not None:
        h, w = frame.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frame = cv2.resize(frame[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(frame)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, size: int | None, gray: bool, step: int, strict: bool) -> torch.Tensor:
    return read_video(path, size=size, gray=gray, step=step, strict=strict)


def sample_clips(num_frames: int, length: int, count: int, stride: int = 1, seed: int = 0,
                 start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Start indices of ``count`` clips of ``length`` frames ``stride`` apart inside ``[start, stop)``.

    Seeded (``seed`` alone decides them); drawn without replacement while there are enough
    distinct starts, with replacement otherwise. Raises ValueError when no clip fits.
    """
    stop = num_frames if stop is None else min(stop, num_frames)
    span = (length - 1) * stride + 1
    last = stop - span
    if length < 1 or stride < 1 or count < 0:
        raise ValueError(f"sample_clips: length and stride must be >= 1 and count >= 0, got {length}, {stride}, "
                         f"{count}")
    if last < start:
        raise ValueError(f"sample_clips: no clip of {length} frames (stride {stride}) fits in frames [{start}, {stop})")
    g = torch.Generator().manual_seed(seed)
    choices = last - start + 1
    picks = (torch.randperm(choices, generator=g)[:count] if count <= choices
             else torch.randint(0, choices, (count,), generator=g))
    return start + picks


# ---------------------------------------------------------------- frame triplets from real videos
_SPLIT_RANGES = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}


class VideoTriplets(Dataset):
    """Frame-interpolation triplets from real videos: predict ``f[t+g]`` from ``f[t]`` and ``f[t+2g]``.

    Args:
        videos: file names under ``directory`` (default: the three opencv-doc videos) or paths.
        directory: where the videos are (default: opencv-doc's examples/data).
        size: frames are centre-cropped to a square and resized to ``size`` x ``size``.
        gap: frames between the input and the target (``g``); ``step``: keep every ``step``-th frame.
        limit: keep ``limit`` triplets of the split (a seeded sample: ``seed``); ``gray``: one channel.

    Items: ``inputs`` ``(2, C, S, S)`` float in [0, 1] (the two outer frames), ``targets`` ``(C, S, S)``,
    ``baseline`` ``(C, S, S)`` (their average) and ``magnitude`` (mean absolute difference of the outer
    frames: a motion-magnitude score for a curriculum).
    """

    metadata_keys = ("in_channels",)

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        missing = [name for name in OPENCV_VIDEOS if not (OPENCV_DATA / name).is_file()]
        return [f"{OPENCV_DATA / name}: missing (apt-get install opencv-doc)" for name in missing]

    def __init__(self, root=None, split: str = "train", videos: list[str] | None = None,
                 directory: str | None = None, size: Annotated[int, Ge(8)] = 64, gap: Annotated[int, Ge(1)] = 1,
                 step: Annotated[int, Ge(1)] = 1, limit: Annotated[int, Ge(1)] | None = None, gray: bool = False,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if size < 8 or gap < 1 or step < 1:
            raise ValueError(f"VideoTriplets: size must be >= 8, gap and step >= 1 (got {size}, {gap}, {step})")
        folder = Path(directory) if directory is not None else OPENCV_DATA
        names = list(videos) if videos is not None else list(OPENCV_VIDEOS)
        self.size, self.gap, self.channels = size, gap, 1 if gray else 3
        self.clips: list[torch.Tensor] = []
        index: list[tuple[int, int]] = []
        lo, hi = _SPLIT_RANGES[split]
        for name in names:
            path = Path(name) if Path(name).is_absolute() else folder / name
            video = _read_cached(str(path), size, gray, step, OPENCV_VIDEOS.get(path.name, True))
            n = video.shape[0]
            start, stop = int(math.floor(lo * n)), int(math.floor(hi * n)) if hi < 1 else n
            self.clips.append(video)
            index.extend((len(self.clips) - 1, t) for t in range(start, stop - 2 * gap))
        if not index:
            raise DataError(f"VideoTriplets: the {split} split of {', '.join(names)} holds no triplet (videos too "
                            f"short for gap {gap})")
        if limit is not None and limit < len(index):
            keep = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
            index = [index[i] for i in keep.tolist()]
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        v, t = self.index[i]
        video = self.clips[v]
        first, middle, last = (video[t + k * self.gap].float() / 255.0 for k in range(3))
        return {"inputs": torch.stack([first, last]), "targets": middle, "baseline": (first + last) / 2,
                "magnitude": (first - last).abs().mean()}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"in_channels": self.channels}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        path = write_test_video(Path(tmp_dir) / "moving_square.avi", frames=40, side=32)
        return {"videos": [str(path)], "size": 16}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = write_test_video(Path(tmp_dir) / "moving_square.avi", frames=40, side=32)
        broken = Path(tmp_dir) / "truncated.avi"
        data = path.read_bytes()
        broken.write_bytes(data[:len(data) // 2])
        return {"videos": [str(broken)], "size": 16}


def write_test_video(path: Path, frames: int = 40, side: int = 32, fps: float = 10.0) -> Path:
    """A small MJPG AVI of a bright square moving diagonally (for examples and tests)."""
    cv2 = _cv2()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (side, side))
    if not writer.isOpened():  # pragma: no cover - depends on the OpenCV build
        raise RuntimeError("OpenCV cannot write MJPG AVI files here")
    for t in range(frames):
        img = np.zeros((side, side, 3), np.uint8)
        x = (t * 2) % (side - 8)
        img[x:x + 8, x:x + 8] = (40, 200, 255)
        writer.write(img)
    writer.release()
    return path


# ---------------------------------------------------------------- Moving-MNIST
DIRECTIONS = ("right", "up and to the right", "up", "up and to the left", "left", "down and to the left", "down",
              "down and to the right")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_VOCABULARY = Vocabulary(w for text in ("the digit moves and to", *DIRECTIONS, *DIGIT_WORDS) for w in text.split())
VOCAB = _VOCABULARY.tokens
TOKEN_ID = _VOCABULARY.token_id


def caption_of(digits: list[int], directions: list[int]) -> str:
    """The templated caption of a clip: "the digit <word> moves <direction>" joined with "and"."""
    return " and ".join(f"the digit {DIGIT_WORDS[d]} moves {DIRECTIONS[k]}" for d, k in zip(digits, directions))


tokenize = _VOCABULARY.tokenize  # (text, length) -> ids; ValueError for an unknown word or overflow
detokenize = _VOCABULARY.detokenize


class MovingMNIST(Dataset):
    """Moving-MNIST clips with motion-direction labels and templated captions (see the module docstring).

    Args:
        length: number of clips in the split (``eval_length``: in val/test, if given); ``frames``: frames
            per clip; ``size``: canvas side.
        num_digits: digits per clip; ``speed_min``/``speed_max``: pixels per frame.
        file: an MNIST ``mnist.pkl.gz`` (default: the MNIST data set's own lookup); ``digits_limit``:
            draw digits from the first ``digits_limit`` MNIST images of the split only.
        seed: clip ``i`` of a split is a function of ``(seed, split, i)``.

    Items: ``inputs`` ``(T, 1, S, S)`` float in [0, 1], ``labels`` (direction class of the first digit),
    ``captions`` ``(max_caption_length,)`` token ids, ``digits`` ``(num_digits,)``.
    """

    metadata_keys = ("num_classes", "in_channels", "vocab_size", "num_frames", "max_caption_length")
    num_classes = len(DIRECTIONS)

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        from .digits import MNIST

        return MNIST.check_prerequisites(root)

    def __init__(self, root=None, split: str = "train", length: Annotated[int, Ge(1)] = 2000,
                 frames: Annotated[int, Ge(2)] = 10, size: Annotated[int, Ge(28)] = 64,
                 num_digits: Annotated[int, Interval(ge=1, le=3)] = 1, speed_min: Annotated[float, Gt(0)] = 2.0,
                 speed_max: Annotated[float, Gt(0)] = 3.0, file: str | None = None,
                 digits_limit: Annotated[int, Ge(1)] | None = None, eval_length: Annotated[int, Ge(1)] | None = None,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if split != "train" and eval_length is not None:
            length = eval_length
        if speed_max < speed_min:
            raise ValueError(f"MovingMNIST: speed_max ({speed_max}) < speed_min ({speed_min})")
        if speed_max * (frames - 1) > size - 28:
            raise ValueError(f"MovingMNIST: a digit moving {speed_max} px/frame for {frames} frames leaves a "
                             f"{size}-pixel canvas; lower speed_max or frames, or raise size")
        from .digits import MNIST

        mnist = MNIST(self.root, split=split, file=file, normalize=False, limit=digits_limit)
        self.digit_images, self.digit_labels = mnist.inputs[:, 0], mnist.labels
        self.length, self.frames, self.size, self.num_digits = length, frames, size, num_digits
        self.speed = (float(speed_min), float(speed_max))
        self.seed = seed
        words = 4 + max(len(d.split()) for d in DIRECTIONS)          # "the digit <word> moves" + direction
        self.max_caption_length = num_digits * words + (num_digits - 1) + 2

    def __len__(self) -> int:
        return self.length

    def trajectory(self, index: int) -> dict:
        """The seeded draw of clip ``index``: digit indices, directions, speeds and start positions."""
        if not 0 <= index < self.length:
            raise IndexError(f"MovingMNIST: index {index} out of range for {self.length} clips")
        key = zlib.crc32(f"{self.seed}/{self.split}/{index}".encode())
        g = torch.Generator().manual_seed(key)
        n = self.num_digits
        which = torch.randint(0, len(self.digit_labels), (n,), generator=g)
        directions = torch.randint(0, len(DIRECTIONS), (n,), generator=g)
        speeds = self.speed[0] + (self.speed[1] - self.speed[0]) * torch.rand(n, generator=g)
        angle = directions.double() * (math.pi / 4)
        velocity = torch.stack([-torch.sin(angle), torch.cos(angle)], 1) * speeds[:, None].double()  # (dy, dx)
        travel = velocity * (self.frames - 1)
        room = self.size - 28
        low = (-travel).clamp(min=0)                    # the start must leave room for the whole trajectory
        high = room - travel.clamp(min=0)
        start = low + (high - low) * torch.rand(n, 2, generator=g, dtype=torch.float64)
        return {"digits": which, "directions": directions, "velocity": velocity, "start": start}

    def __getitem__(self, index: int) -> dict:
        draw = self.trajectory(index)
        canvas = torch.zeros(self.frames, 1, self.size, self.size)
        for k in range(self.num_digits):
            image = self.digit_images[draw["digits"][k]]
            for t in range(self.frames):
                y, x = (draw["start"][k] + t * draw["velocity"][k]).round().long().tolist()
                patch = canvas[t, 0, y:y + 28, x:x + 28]
                torch.maximum(patch, image, out=patch)
        labels = self.digit_labels[draw["digits"]].tolist()
        text = caption_of(labels, draw["directions"].tolist())
        return {"inputs": canvas, "labels": draw["directions"][0], "captions": tokenize(text, self.max_caption_length),
                "digits": torch.tensor(labels)}

    def caption(self, index: int) -> str:
        draw = self.trajectory(index)
        return caption_of(self.digit_labels[draw["digits"]].tolist(), draw["directions"].tolist())

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": 1, "vocab_size": len(VOCAB),
                "num_frames": self.frames, "max_caption_length": self.max_caption_length}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        from .digits import MNIST

        return {**MNIST.example(tmp_dir), "length": 4, "frames": 3, "size": 32, "speed_max": 2.0}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        from .digits import MNIST

        return {**MNIST.broken_example(tmp_dir), "length": 4, "frames": 3, "size": 32, "speed_max": 2.0}


__all__ = ["BOS", "DIRECTIONS", "EOS", "PAD", "MovingMNIST", "OPENCV_VIDEOS", "VOCAB", "VideoTriplets", "caption_of",
           "detokenize", "read_video", "sample_clips", "tokenize", "write_test_video"]
