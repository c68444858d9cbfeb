"""CUDA: convolution-based unlearnable data (Sadasivan, Soltanolkotabi & Feizi, "CUDA: Convolution-based
Unlearnable Datasets", CVPR 2023), as a wrapper any panconv image data set can take.

Each class ``c`` gets one random ``k x k`` filter drawn from a private key: weights uniform in
``[0, blur]`` (the paper's blur parameter ``p_b``) and one random tap set to ``center`` (1). Every
training image of class ``c`` (in [0, 1] pixel space) is convolved with its class's filter, the same
filter on every channel, zero padding ``k // 2``, divided by its maximum and stored as 8-bit pixels,
as the official code does. A network trained on such data learns the class-wise blur instead of the
digits, and its accuracy on clean test images collapses.

* ``vision.Unlearnable`` (a registered data set): ``data: {type: vision.Unlearnable, dataset: {type:
  vision.MNIST, ...}, key: 1234, blur: 0.3, mean: 0.1307, std: 0.3081}``; only the ``poison``
  splits (default: train) are changed; ``key: null`` changes nothing (the wrapper is the identity).
  ``mean``/``std``: the inner data set's input normalisation (to go to pixel space and back).
* :class:`ClasswiseConvolution`: the transformation itself, for data outside the engine.
* ``panconv unlearnable CONFIG --key K``: a PNG of clean images, their unlearnable versions and the
  class filters.

Differences from the official code: the filters come from ``torch.Generator(key)`` (not numpy's global
seed), and every sample is poisoned (the official ``mix`` = 1.0 default); adversarial training (the
paper's L-inf / L2 PGD rows) is not part of this wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval

import panconv
from panconv.api import Dataset


class ClasswiseConvolution:
    """The class-wise filters of ``key`` and their application to one image ``(C, H, W)`` of a class."""

    def __init__(self, key: int, num_classes: int, blur: float = 0.3, kernel_size: int = 3, center: float = 1.0,
                 mean: float | list[float] | None = None, std: float | list[float] | None = None,
                 quantize: bool = True):
        if num_classes < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ClasswiseConvolution: num_classes >= 1 and an odd kernel_size, got {num_classes}, "
                             f"{kernel_size}")
        if blur < 0:
            raise ValueError(f"ClasswiseConvolution: blur must be >= 0, got {blur}")
        g = torch.Generator().manual_seed(int(key))
        filters = torch.rand(num_classes, kernel_size, kernel_size, generator=g, dtype=torch.float64) * blur
        taps = torch.randint(0, kernel_size * kernel_size, (num_classes,), generator=g)
        filters.view(num_classes, -1)[torch.arange(num_classes), taps] = center
        self.filters = filters.float()
        self.kernel_size, self.quantize = kernel_size, quantize
        self.mean, self.std = mean, std

    def _stat(self, value, channels: int) -> torch.Tensor:
        t = torch.as_tensor(0.0 if value is None else value, dtype=torch.float32).flatten()
        return t.expand(channels).view(channels, 1, 1) if t.numel() == 1 else t.view(channels, 1, 1)

    def __call__(self, image: torch.Tensor, label: int) -> torch.Tensor:
        c = image.shape[0]
        mean, std = self._stat(self.mean, c), self._stat(1.0 if self.std is None else self.std, c)
        pixels = image.float() * std + mean
        weight = self.filters[int(label)].view(1, 1, self.kernel_size, self.kernel_size).expand(c, 1, -1, -1)
        out = F.conv2d(pixels[None], weight, padding=self.kernel_size // 2, groups=c)[0]
        out = out / out.max().clamp_min(1e-12)
        if self.quantize:
            out = (out * 255).round().clamp(0, 255) / 255
        return ((out - mean) / std).to(image.dtype)


class Unlearnable(Dataset):
    """Any image data set with the CUDA class-wise convolution applied to its ``poison`` splits.

    ``dataset``: the inner data set's config (``{type: vision.MNIST, ...}``; built with this root and
    split). ``key``: the private seed of the filters (``None``: nothing changes). ``blur``: the
    paper's ``p_b``. ``mean``/``std``: the inner inputs' normalisation. Samples are
    ``{"inputs": (C, H, W), "labels": int, ...}`` as the inner data set gives them.
    """

    metadata_keys = ("num_classes", "in_channels")

    def __init__(self, root=None, split: str = "train", dataset: dict | None = None,
                 key: Annotated[int, Interval(ge=0, lt=2**63)] | None = None,
                 blur: Annotated[float, Ge(0)] = 0.3, kernel_size: Annotated[int, Ge(1)] = 3,
                 center: Annotated[float, Gt(0)] = 1.0,
                 mean: Annotated[float, Interval(ge=0, le=1)] | list[Annotated[float, Interval(ge=0, le=1)]]
                 | None = None,
                 std: Annotated[float, Gt(0)] | list[Annotated[float, Gt(0)]] | None = None,
                 poison: tuple[str, ...] = ("train",),
                 num_classes: Annotated[int, Interval(ge=1)] | None = None):
        if not isinstance(dataset, dict) or "type" not in dataset:
            raise ValueError("Unlearnable: dataset must be the inner data set's config, e.g. {type: vision.MNIST}")
        spec = {k: v for k, v in dataset.items() if k != "type"}
        self.inner = panconv.build("dataset", dataset["type"], root=root, split=split, **spec)
        self.splits = tuple(getattr(self.inner, "splits", (split,)))
        super().__init__(root, split)
        classes = num_classes or (getattr(self.inner, "metadata", {}) or {}).get("num_classes")
        if key is not None and classes is None:
            raise ValueError("Unlearnable: the inner data set has no num_classes metadata; pass num_classes")
        self.key = key
        self.transform = None if key is None or split not in poison else \
            ClasswiseConvolution(key, classes, blur, kernel_size, center, mean, std)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict:
        sample = self.inner[index]
        if self.transform is None:
            return sample
        return {**sample, "inputs": self.transform(sample["inputs"], int(sample["labels"]))}

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(getattr(self.inner, "metadata", {}) or {})

    def collate(self, samples: list[dict]) -> Any:
        return self.inner.collate(samples)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __getattr__(self, attr: str):
        if attr in ("inner", "transform"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)  # e.g. preprocess

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        from panconv_vision.datasets.digits import MNIST

        return {"dataset": {"type": "vision.MNIST", **MNIST.example(tmp_dir)}, "key": 1}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        from panconv_vision.datasets.digits import MNIST

        return {"dataset": {"type": "vision.MNIST", **MNIST.broken_example(tmp_dir)}, "key": 1}


# ---- the `panconv unlearnable` command (a preview) --------------------------------------------------
