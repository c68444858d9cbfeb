"""PixelCNN (van den Oord, Kalchbrenner, Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016, Sec. 3.4),
with the factorised (independent-pixel) model it is compared against.

An image ``x`` of ``D = H x W`` discrete pixels (one channel; ``levels`` values each: 2 for binarised
MNIST, 256 for the 8-bit images) gets the exact likelihood of the raster-order chain rule (paper Eq. 1)::

    p(x) = prod_i p(x_i | x_1, ..., x_{i-1}),      each factor a ``levels``-way softmax (paper Sec. 2.2)

The conditionals are computed for every pixel at once by convolutions whose kernels are *masked* so that
the output at pixel ``i`` sees only pixels before ``i`` (paper Sec. 3.4, Fig. 2): mask ``A`` (first layer:
the centre tap is masked too, so pixel ``i`` never sees itself) and mask ``B`` (later layers: the centre
tap is kept, it carries features that already only depend on pixels ``< i``). The network, as the paper's
Table 1 / Fig. 5: a 7x7 mask-A convolution to ``2h`` features, ``layers`` residual blocks
(ReLU, 1x1 ``2h -> h``, ReLU, 3x3 mask B, ReLU, 1x1 ``h -> 2h``, + skip), then ReLU, 1x1 mask B, ReLU,
1x1 to ``levels`` logits per pixel. 1x1 convolutions need no mask (a one-channel image has no colour
ordering to respect). The receptive field of the plain PixelCNN has a blind spot (pixels up and to
the right of the stack are never seen); :class:`PixelCNN` keeps it, as the 2016 paper.

:class:`PixelFactorized` is the baseline with no context at all: ``p(x) = prod_i p(x_i)``, one
learnt ``levels``-way distribution per pixel (its maximum-likelihood fit is the per-pixel histogram).

Both are whole models (``batch["inputs"]``: ``(B, 1, H, W)`` floats in ``[0, 1]``, e.g. ``vision.MNIST``
with ``normalize: false``; quantised here to ``levels`` values: ``levels == 2`` thresholds at 0.5 or, with
``binarize: sample``, draws each pixel from a Bernoulli of its intensity once per image (a fixed stochastically
binarised MNIST, the data of the paper's Table 4; see :func:`quantise`); ``levels == 256`` takes
``floor(256 x)``, which is exactly MNIST's ``k / 256`` grey levels). The loss is
the mean negative log-likelihood per pixel in nats; ``predict`` gives each image's NLL in nats and its
number of dimensions, which ``vision.BitsPerDim`` turns into bits/dim = NLL / (D ln 2).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Model


def quantise(images: torch.Tensor, levels: int, binarize: str = "threshold") -> torch.Tensor:
    """``(B, 1, H, W)`` floats in ``[0, 1]`` -> ``(B, H, W)`` integer pixel values in ``0..levels-1``.

    ``levels == 2``: ``binarize="threshold"`` sets a pixel on when its intensity is >= 0.5;
    ``binarize="sample"`` draws it on with probability equal to its intensity (the stochastic binarisation of
    Salakhutdinov & Murray 2008), from a generator seeded by the image's content, so an image is binarised
    the same way in every batch and every epoch (a fixed binarised data set, as the benchmark's).
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected one-channel images (B, 1, H, W), got {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("expected pixel values in [0, 1] (vision.MNIST with normalize: false), "
                         f"got the range [{images.min().item():.3g}, {images.max().item():.3g}]")
    if binarize not in ("threshold", "sample"):
        raise ValueError(f"binarize must be 'threshold' or 'sample', got {binarize!r}")
    x = images[:, 0]
    if levels == 2 and binarize == "sample":
        return fixed_bernoulli(x)
    if levels == 2:
        return (x >= 0.5).long()
    return (x * levels).floor().clamp(0, levels - 1).long()


def fixed_bernoulli(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` probabilities -> a 0/1 sample per image from a generator seeded by the image itself."""
    flat = x.detach().flatten(1).double().cpu()
    keys = (flat * torch.arange(1, flat.shape[1] + 1, dtype=torch.float64).sqrt()).sum(1)
    out = torch.empty(x.shape, dtype=torch.long)
    for i, key in enumerate(keys.tolist()):
        generator = torch.Generator().manual_seed(int(key * 1e6) % (2 ** 63))
        out[i] = (torch.rand(x.shape[1:], generator=generator, dtype=torch.float64) < flat[i].view(x.shape[1:])).long()
    return out.to(x.device)


def spatial_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """The ``(k, k)`` 0/1 mask of a causal raster-order convolution (paper Fig. 2): rows above the centre,
    the centre row left of the centre, and (mask B only) the centre itself."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    mask = torch.zeros(kernel_size, kernel_size)
    c = kernel_size // 2
    mask[:c] = 1
    mask[c, :c + (mask_type == "B")] = 1
    return mask


def _check_binarize(binarize: str) -> None:
    if binarize not in ("threshold", "sample"):
        raise ValueError(f"binarize must be 'threshold' or 'sample', got {binarize!r}")


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution whose kernel is multiplied by :func:`spatial_mask` at every forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str):
        if kernel_size % 2 == 0:
            raise ValueError(f"MaskedConv2d: kernel_size must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        with torch.device("cpu"):
            mask = spatial_mask(kernel_size, mask_type)
        self.mask_type = mask_type
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    """PixelCNN's residual block (paper Fig. 5): 1x1 down to ``h``, 3x3 mask B, 1x1 back up to ``2h``."""

    def __init__(self, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.down = nn.Conv2d(2 * hidden, hidden, 1)
        self.conv = MaskedConv2d(hidden, hidden, kernel_size, "B")
        self.up = nn.Conv2d(hidden, 2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.conv(F.relu(self.down(F.relu(x))))))


class _DiscreteImageModel(Model):
    """Shared loss / predict / sampling of the pixel-likelihood models (``logits_of`` differs)."""

    levels: int
    binarize: str = "threshold"

    def logits_of(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - per model
        """``(B, 1, H, W)`` floats (pixel values scaled to [-1, 1]) -> ``(B, levels, H, W)`` logits."""
        raise NotImplementedError

    def scale(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` integers -> the network's ``(B, 1, H, W)`` input in ``[-1, 1]``."""
        return (2.0 * pixels.float() / (self.levels - 1) - 1.0)[:, None]

    def forward(self, batch: dict) -> dict:
        pixels = quantise(batch["inputs"], self.levels, self.binarize)
        return {"logits": self.logits_of(self.scale(pixels)), "pixels": pixels}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        nll = F.cross_entropy(outputs["logits"], outputs["pixels"])          # mean nats per pixel
        return {"loss": nll, "bits_per_dim": nll.detach() / math.log(2)}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict:
        """Per image: ``nll`` (nats, summed over its pixels) and ``dims`` (its number of pixels)."""
        nll = F.cross_entropy(outputs["logits"], outputs["pixels"], reduction="none").flatten(1).sum(1)
        dims = torch.full_like(nll, outputs["pixels"][0].numel())
        return {"nll": nll, "dims": dims}

    @torch.no_grad()
    def log_prob(self, pixels: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` in nats of ``(B, H, W)`` integer images."""
        logits = self.logits_of(self.scale(pixels))
        return -F.cross_entropy(logits, pixels, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, height: int = 28, width: int = 28, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, H, W)`` drawn pixel by pixel in raster order (``H x W`` network evaluations)."""
        device = next(self.parameters()).device
        pixels = torch.zeros(n, height, width, dtype=torch.long, device=device)
        for r in range(height):
            for c in range(width):
                logits = self.logits_of(self.scale(pixels))[:, :, r, c] / temperature
                probs = logits.softmax(-1)
                pixels[:, r, c] = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(device)
        return pixels

    def example_inputs(self, batch_size: int = 2) -> dict:
        size = getattr(self, "image_size", 8)
        return {"inputs": torch.rand(batch_size, 1, size, size)}


class PixelCNN(_DiscreteImageModel):
    """PixelCNN with a ``levels``-way softmax per pixel (see the module docstring).

    ``hidden``: ``h`` (the residual stream has ``2h`` channels); ``layers``: residual blocks;
    ``first_kernel``: the mask-A convolution's size (paper: 7); ``out_hidden``: channels of the output
    1x1 layers.
    """

    def __init__(self, levels: Annotated[int, Interval(ge=2, le=256)] = 2, hidden: Annotated[int, Ge(1)] = 32,
                 layers: Annotated[int, Ge(0)] = 6, first_kernel: Annotated[int, Ge(1)] = 7,
                 kernel_size: Annotated[int, Ge(1)] = 3, out_hidden: Annotated[int, Ge(1)] = 64,
                 binarize: Literal["threshold", "sample"] = "threshold"):
        super().__init__()
        _check_binarize(binarize)
        if not 2 <= levels <= 256 or hidden < 1 or layers < 0 or out_hidden < 1:
            raise ValueError("PixelCNN: levels must be in 2..256, hidden and out_hidden >= 1, layers >= 0")
        if first_kernel % 2 == 0 or kernel_size % 2 == 0 or first_kernel < 1 or kernel_size < 1:
            raise ValueError(f"PixelCNN: kernel sizes must be odd, got first_kernel={first_kernel}, "
                             f"kernel_size={kernel_size}")
        self.levels, self.binarize = levels, binarize
        self.stem = MaskedConv2d(1, 2 * hidden, first_kernel, "A")
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, kernel_size) for _ in range(layers)])
        self.out1 = MaskedConv2d(2 * hidden, out_hidden, 1, "B")
        self.out2 = nn.Conv2d(out_hidden, levels, 1)

    def logits_of(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.out2(F.relu(self.out1(F.relu(h))))

    @classmethod
    def example_config(cls) -> dict:
        return {"levels": 4, "hidden": 4, "layers": 1, "out_hidden": 8}


class GatedLayer(nn.Module):
    """One layer of the gated PixelCNN (van den Oord et al., NeurIPS 2016, Fig. 2), channels ``2p`` -> gates -> ``p``.

    Vertical stack: a ``(k//2 + 1) x k`` convolution whose output at row ``r`` covers input rows
    ``r - k//2 .. r`` and every column within ``k//2``: the whole neighbourhood above, no blind spot.
    Horizontal stack: a ``1 x (k//2 + 1)`` convolution over columns ``c - k//2 .. c`` of the same row (the first
    layer shifts it one column right so that pixel ``c`` is excluded: mask A). The vertical features enter
    the horizontal stack shifted down one row (row ``r`` receives rows ``< r``) through a 1x1 convolution.
    Both stacks end in the gate ``tanh(a) * sigmoid(b)``; the horizontal stack has a 1x1 output and a
    residual connection after the first layer.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool):
        super().__init__()
        self.k, self.first = kernel_size, first
        half = kernel_size // 2
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (half + 1, kernel_size))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, half + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half, height, width = self.k // 2, v.shape[-2], v.shape[-1]
        v_pre = self.v_conv(F.pad(v, (half, half, half, 0)))                   # rows r-half..r
        h_in = F.pad(h, (half + 1, 0, 0, 0))[..., :width + half] if self.first else F.pad(h, (half, 0, 0, 0))
        h_pre = self.h_conv(h_in)                                               # columns < c (A) or <= c (B)
        shifted = F.pad(v_pre, (0, 0, 1, 0))[..., :height, :]                   # row r gets rows < r
        h_new = self.h_out(self._gate(h_pre + self.v_to_h(shifted)))
        return self._gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(_DiscreteImageModel):
    """Gated PixelCNN (van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu, *Conditional Image
    Generation with PixelCNN Decoders*, NeurIPS 2016) without conditioning: a ``first_kernel`` layer then
    ``layers`` gated layers of :class:`GatedLayer`, ReLU, 1x1 to ``out_hidden``, ReLU, 1x1 to ``levels`` logits.
    Unlike :class:`PixelCNN`, every pixel above and to the left within the receptive field is seen (no blind spot).
    """

    def __init__(self, levels: Annotated[int, Interval(ge=2, le=256)] = 2, hidden: Annotated[int, Ge(1)] = 32,
                 layers: Annotated[int, Ge(0)] = 6, first_kernel: Annotated[int, Ge(1)] = 7,
                 kernel_size: Annotated[int, Ge(1)] = 3, out_hidden: Annotated[int, Ge(1)] = 64,
                 binarize: Literal["threshold", "sample"] = "threshold"):
        super().__init__()
        _check_binarize(binarize)
        if not 2 <= levels <= 256 or hidden < 1 or layers < 0 or out_hidden < 1:
            raise ValueError("GatedPixelCNN: levels must be in 2..256, hidden and out_hidden >= 1, layers >= 0")
        if first_kernel % 2 == 0 or kernel_size % 2 == 0 or first_kernel < 1 or kernel_size < 1:
            raise ValueError(f"GatedPixelCNN: kernel sizes must be odd, got first_kernel={first_kernel}, "
                             f"kernel_size={kernel_size}")
        self.levels, self.binarize = levels, binarize
        self.first = GatedLayer(1, hidden, first_kernel, first=True)
        self.layers = nn.ModuleList(GatedLayer(hidden, hidden, kernel_size, first=False) for _ in range(layers))
        self.out1 = nn.Conv2d(hidden, out_hidden, 1)
        self.out2 = nn.Conv2d(out_hidden, levels, 1)

    def logits_of(self, x: torch.Tensor) -> torch.Tensor:
        v, h = self.first(x, x)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.out2(F.relu(self.out1(F.relu(h))))

    @classmethod
    def example_config(cls) -> dict:
        return {"levels": 4, "hidden": 4, "layers": 1, "out_hidden": 8}


class PixelFactorized(_DiscreteImageModel):
    """The no-context baseline: one learnt ``levels``-way distribution per pixel, ``p(x) = prod_i p(x_i)``."""

    def __init__(self, levels: Annotated[int, Interval(ge=2, le=256)] = 2, image_size: Annotated[int, Ge(1)] = 28,
                 binarize: Literal["threshold", "sample"] = "threshold"):
        super().__init__()
        _check_binarize(binarize)
        if not 2 <= levels <= 256 or image_size < 1:
            raise ValueError("PixelFactorized: levels must be in 2..256 and image_size >= 1")
        self.levels, self.image_size, self.binarize = levels, image_size, binarize
        self.logits = nn.Parameter(torch.zeros(levels, image_size, image_size))

    def logits_of(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.logits.shape[-2:]:
            raise ValueError(f"PixelFactorized: images must be {self.image_size}x{self.image_size}, "
                             f"got {tuple(x.shape[-2:])}")
        return self.logits[None].expand(x.shape[0], -1, -1, -1)

    @classmethod
    def example_config(cls) -> dict:
        return {"levels": 4, "image_size": 8}


__all__ = ["GatedPixelCNN", "MaskedConv2d", "PixelCNN", "PixelFactorized", "quantise", "spatial_mask"]
