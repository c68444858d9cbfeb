"""``vision.MedicalShapes``: generated medical-like grey images with organ and lesion masks (segmentation).

Each image (``image_size`` square, one channel, values about [0, 1]) is drawn from its own seed (``seed``,
split, index), so splits are reproducible and never share an image. The generative model, in order:

1. a *body*: a large ellipse (semi-axes 0.38-0.47 of the side, random rotation) of tissue intensity 0.35
   on a 0.05 background;
2. an *organ* (class 1): an ellipse inside the body (semi-axes 0.14-0.26 of the side, random centre
   within 0.12 of the image centre, random rotation) of intensity ``0.35 + organ_contrast``;
3. 0-``max_lesions`` *lesions* (class 2): small ellipses (semi-axes 0.04-0.09 of the side) centred inside
   the organ, of intensity ``organ - lesion_contrast`` (hypo-intense, as a cyst or a tumour on CT),
   clipped to the organ (the part of a lesion ellipse outside the organ is not drawn);
4. *texture*: Gaussian noise smoothed with a Gaussian of ``texture_scale`` pixels, amplitude ``texture``,
   inside the body (tissue grain);
5. *intensity inhomogeneity* (an MRI bias field): the image multiplied by ``exp(b)``, ``b`` a random
   second-order polynomial of the coordinates with amplitude ``bias``;
6. *acquisition noise*: additive white Gaussian noise of standard deviation ``noise``.

``masks`` ``(H, W)`` long: 0 background (and body), 1 organ, 2 lesion. Batches:
``{"inputs": (B, 1, H, W), "masks": (B, H, W)}``; metadata ``num_classes`` (3) and ``in_channels`` (1).
Generated in memory; reads no file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

BACKGROUND, TISSUE = 0.05, 0.35


def ellipse(size: int, cy: float, cx: float, ay: float, ax: float, angle: float) -> np.ndarray:
    """Boolean ``(size, size)`` coverage of a rotated ellipse (centre, semi-axes in pixels, angle in radians)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = ys - cy, xs - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing through the FFT (periodic boundary; the field is noise, so it does not matter)."""
    size = field.shape[0]
    freq = np.fft.fftfreq(size)
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    out = np.real(np.fft.ifft2(np.fft.fft2(field) * gain))
    return out / (out.std() + 1e-8)


def render_image(rng: np.random.Generator, size: int, organ_contrast: float, lesion_contrast: float,
                 max_lesions: int, texture: float, texture_scale: float, bias: float,
                 noise: float) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(1, H, W)`` float32 and its mask ``(H, W)`` int64 (module docstring, steps 1-6)."""
    centre = size / 2
    body = ellipse(size, centre + rng.uniform(-0.03, 0.03) * size, centre + rng.uniform(-0.03, 0.03) * size,
                   rng.uniform(0.38, 0.47) * size, rng.uniform(0.38, 0.47) * size, rng.uniform(0, np.pi))
    oy, ox = centre + rng.uniform(-0.12, 0.12, 2) * size
    organ = ellipse(size, oy, ox, rng.uniform(0.14, 0.26) * size, rng.uniform(0.14, 0.26) * size,
                    rng.uniform(0, np.pi)) & body
    mask = np.zeros((size, size), dtype=np.int64)
    mask[organ] = 1
    image = np.full((size, size), BACKGROUND)
    image[body] = TISSUE
    image[organ] = TISSUE + organ_contrast
    organ_pixels = np.argwhere(organ)
    for _ in range(int(rng.integers(0, max_lesions + 1))):
        if len(organ_pixels) == 0:
            break
        ly, lx = organ_pixels[rng.integers(len(organ_pixels))] + 0.5
        lesion = ellipse(size, ly, lx, rng.uniform(0.04, 0.09) * size, rng.uniform(0.04, 0.09) * size,
                         rng.uniform(0, np.pi)) & organ
        mask[lesion] = 2
        image[lesion] = TISSUE + organ_contrast - lesion_contrast
    image = image + texture * _smooth(rng.standard_normal((size, size)), texture_scale) * body
    ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    coefficients = rng.uniform(-1, 1, 5)
    field = np.tensordot(coefficients, np.stack([ys, xs, ys * xs, ys ** 2, xs ** 2]), axes=1)
    image = image * np.exp(bias * field / (np.abs(field).max() + 1e-8))
    image = image + noise * rng.standard_normal((size, size))
    return image[None].astype(np.float32), mask


class MedicalShapes(Dataset):
    """Seeded grey images of a body, an organ (class 1) and lesions (class 2) with texture, a bias field and
    noise (module docstring). ``num_images`` per split; ``image_size`` side; the other arguments set the
    contrasts, the number of lesions and the amplitude of each corruption."""

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "in_channels")
    num_classes = 3
    conformance_skips = {"malformed_file": "generated in memory from a seed: reads no file"}

    def __init__(self, root=None, split: str = "train", num_images: Annotated[int, Ge(1)] = 1000,
                 image_size: Annotated[int, Ge(8)] = 32, organ_contrast: Annotated[float, Ge(0)] = 0.15,
                 lesion_contrast: Annotated[float, Ge(0)] = 0.1, max_lesions: Annotated[int, Ge(0)] = 3,
                 texture: Annotated[float, Ge(0)] = 0.04, texture_scale: Annotated[float, Ge(0)] = 1.0,
                 bias: Annotated[float, Ge(0)] = 0.4, noise: Annotated[float, Ge(0)] = 0.04,
                 seed: Annotated[int, Interval(ge=0, lt=2**31)] = 0):
        super().__init__(root, split)
        if num_images < 1 or image_size < 8 or max_lesions < 0:
            raise ValueError("MedicalShapes: num_images >= 1, image_size >= 8, max_lesions >= 0")
        if min(organ_contrast, lesion_contrast, texture, texture_scale, bias, noise) < 0:
            raise ValueError("MedicalShapes: contrasts, texture, bias and noise must be >= 0")
        split_id = self.splits.index(split)
        images, masks = [], []
        for i in range(num_images):
            rng = np.random.default_rng([seed, 100 + split_id, i])
            image, mask = render_image(rng, image_size, organ_contrast, lesion_contrast, max_lesions, texture,
                                       texture_scale, bias, noise)
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
        return {"num_classes": self.num_classes, "in_channels": 1}

    def collate(self, samples: list[dict]) -> dict:
        return {"inputs": torch.stack([s["inputs"] for s in samples]),
                "masks": torch.stack([s["masks"] for s in samples])}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"num_images": 4, "image_size": 16}


__all__ = ["MedicalShapes", "ellipse", "render_image"]
