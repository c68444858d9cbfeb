"""Registered transforms of panconv-vision.

``Mixup`` is a batch transform (``level = "batch"``): the engine applies it to each collated
training batch when a config lists it, e.g.::

    data:
      transforms: [{type: vision.Mixup, splits: [train], alpha: 0.2}]

``num_classes`` comes from the data set's metadata (``metadata_inputs``) unless the config sets it.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval


class Mixup:
    """Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018).

    Mixes a batch with a shuffled copy of itself: ``x = lam*x + (1-lam)*x[perm]`` and the same for
    the one-hot labels (``lam ~ Beta(alpha, alpha)``), optionally label-smoothed. Called on a
    collated batch ``{"inputs": (N, ...), "labels": (N,)}``, it returns a new batch whose ``labels``
    are soft targets ``(N, num_classes)`` (also when the batch is left unmixed: with probability
    ``1 - prob``, or for a single sample). ``seed`` (default: drawn from torch's global generator,
    so a run's seed fixes it) makes it reproducible; ``set_epoch(e)`` reseeds with ``seed + e``.
    """

    level = "batch"
    metadata_inputs = ("num_classes",)

    def __init__(self, num_classes: Annotated[int, Ge(2)], alpha: Annotated[float, Gt(0)] = 0.2,
                 label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 prob: Annotated[float, Interval(ge=0, le=1)] = 1.0,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] | None = None):
        if num_classes < 2:
            raise ValueError(f"Mixup: num_classes must be >= 2, got {num_classes}")
        if alpha <= 0:
            raise ValueError(f"Mixup: alpha must be > 0, got {alpha}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Mixup: label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"Mixup: prob must be in [0, 1], got {prob}")
        self.num_classes, self.alpha, self.label_smoothing, self.prob = num_classes, alpha, label_smoothing, prob
        # no seed: one drawn from torch's global generator, so that a run's seed fixes it too
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)
        self.rng = np.random.default_rng(self.seed + epoch)

    def soft_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() == 2:
            return labels.float()
        off = self.label_smoothing / self.num_classes
        return F.one_hot(labels, self.num_classes).float() * (1 - self.label_smoothing) + off

    def __call__(self, batch: dict) -> dict:
        inputs, labels = batch["inputs"], self.soft_labels(batch["labels"])
        n = inputs.shape[0]
        if n < 2 or torch.rand((), generator=self.generator) >= self.prob:
            return {**batch, "labels": labels}
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(n, generator=self.generator)
        return {**batch, "inputs": lam * inputs + (1 - lam) * inputs[perm],
                "labels": lam * labels + (1 - lam) * labels[perm]}

    def __repr__(self) -> str:
        return (f"Mixup(num_classes={self.num_classes}, alpha={self.alpha}, label_smoothing={self.label_smoothing}, "
                f"prob={self.prob}, seed={self.seed})")


# --- large kernels and restoration (issue 18) ---
# Degradations that turn a clean image into the input of a restoration model. The functions work on
# float tensors in [0, 1] and take a ``torch.Generator`` (reproducible per sample); the classes are
# sample transforms (``{"targets": clean} -> {..., "inputs": degraded}``) for any data set of clean
# images, the restoration data sets (datasets/restoration.py) call the functions directly.


def smooth_random_field(shape: tuple[int, ...], generator: torch.Generator, grid: int = 4) -> torch.Tensor:
    """A smooth random field in [0, 1] of spatial ``shape`` (2-D): a ``grid x grid`` uniform lattice,
    bicubically up-sampled, rescaled to span [0, 1]."""
    coarse = torch.rand(1, 1, grid, grid, generator=generator)
    field = F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)[0, 0]
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo).clamp_min(1e-6)


def add_haze(clean: torch.Tensor, generator: torch.Generator, beta: tuple[float, float] = (0.6, 1.8),
             airlight: tuple[float, float] = (0.7, 1.0), depth_grid: int = 4) -> tuple[torch.Tensor, dict]:
    """Haze by the atmospheric scattering model (Koschmieder; RESIDE's synthesis, Li et al. 2019):

        I(x) = J(x) t(x) + A (1 - t(x)),   t(x) = exp(-beta d(x)),

    with a smooth random depth ``d`` in [0, 1] (a smooth field mixed with a top-to-bottom ramp: the
    upper part of a photo is usually farther), a scattering coefficient ``beta`` and a grey airlight
    ``A`` drawn uniformly from their ranges. ``clean`` is ``(C, H, W)`` in [0, 1]; returns the hazy
    image and ``{"transmission": t, "airlight": A, "beta": beta}``.
    """
    _, h, w = clean.shape
    ramp = torch.linspace(1.0, 0.0, h).view(h, 1).expand(h, w)
    depth = 0.5 * smooth_random_field((h, w), generator, depth_grid) + 0.5 * ramp
    b = beta[0] + (beta[1] - beta[0]) * float(torch.rand((), generator=generator))
    a = airlight[0] + (airlight[1] - airlight[0]) * float(torch.rand((), generator=generator))
    t = torch.exp(-b * depth)
    hazy = clean * t + a * (1 - t)
    return hazy.clamp(0, 1), {"transmission": t, "airlight": a, "beta": b}


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped to the image, ``(..., H, W)``, by integral images (O(HW))."""
    h, w = x.shape[-2:]

    def window_sums(t: torch.Tensor, axis: int, n: int) -> torch.Tensor:
        c = F.pad(t.cumsum(axis), [0, 0, 1, 0] if axis == -2 else [1, 0])
        idx = torch.arange(n)
        hi, lo = (idx + r + 1).clamp(max=n), (idx - r).clamp(min=0)
        return c.index_select(axis % c.dim(), hi) - c.index_select(axis % c.dim(), lo)

    s = window_sums(window_sums(x.double(), -2, h), -1, w)
    count = window_sums(window_sums(torch.ones(h, w, dtype=torch.float64), -2, h), -1, w)
    return (s / count).to(x.dtype)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int = 30, eps: float = 1e-3) -> torch.Tensor:
    """He et al.'s guided filter (gray guide ``(H, W)``, source ``(H, W)``), used to refine the DCP transmission."""
    mean_i, mean_p = _box(guide, radius), _box(src, radius)
    cov_ip = _box(guide * src, radius) - mean_i * mean_p
    var_i = _box(guide * guide, radius) - mean_i ** 2
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


def dark_channel_prior_dehaze(hazy: torch.Tensor, patch: int = 15, omega: float = 0.95, t0: float = 0.1,
                              refine: bool = True) -> torch.Tensor:
    """The dark channel prior baseline (He, Sun and Tang, CVPR 2009): dark channel = min over channels
    and a ``patch x patch`` window; airlight = the brightest input pixel among the 0.1 % haziest
    dark-channel pixels; ``t = 1 - omega * dark(I / A)`` (refined by the guided filter);
    ``J = (I - A) / max(t, t0) + A``. ``hazy`` is ``(3, H, W)`` in [0, 1]."""
    c, h, w = hazy.shape
    r = patch // 2
    dark = -F.max_pool2d(-hazy.min(0, keepdim=True).values[None], patch, stride=1, padding=r)[0, 0]
    n = max(1, int(h * w * 0.001))
    idx = dark.flatten().topk(n).indices
    candidates = hazy.reshape(c, -1)[:, idx]
    airlight = candidates[:, candidates.sum(0).argmax()].clamp_min(1e-3)
    norm = hazy / airlight.view(c, 1, 1)
    t = 1 - omega * (-F.max_pool2d(-norm.min(0, keepdim=True).values[None], patch, stride=1, padding=r)[0, 0])
    if refine:
        t = guided_filter(hazy.mean(0), t, radius=min(30, max(1, min(h, w) // 4)))
    t = t.clamp_min(t0)
    return ((hazy - airlight.view(c, 1, 1)) / t + airlight.view(c, 1, 1)).clamp(0, 1)


def bicubic_downsample(clean: torch.Tensor, scale: int) -> torch.Tensor:
    """``(..., C, H, W)`` -> ``(..., C, H/scale, W/scale)`` by anti-aliased bicubic resampling (MATLAB
    ``imresize``'s kernel widened by the scale, as the SR benchmarks' LR images), clamped to [0, 1]."""
    h, w = clean.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"bicubic_downsample: size {h}x{w} is not divisible by the scale {scale}")
    x = clean.reshape(-1, *clean.shape[-3:])
    lr = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    return lr.clamp(0, 1).reshape(*clean.shape[:-2], h // scale, w // scale)


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic up-sampling baseline of SR: ``(..., C, h, w)`` -> ``(..., C, h*scale, w*scale)``."""
    x = lr.reshape(-1, *lr.shape[-3:])
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(0, 1).reshape(*lr.shape[:-2], *up.shape[-2:])


def gaussian_blur3d(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, D, H, W)`` (replicate padding, truncated at 3 sigma)."""
    if sigma <= 0:
        return volume
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=volume.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = volume[:, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out[:, 0]


def mri_degrade(volume: torch.Tensor, generator: torch.Generator, scale: int = 2, blur_sigma: float = 1.0,
                noise_std: float = 0.02) -> torch.Tensor:
    """MRI low-resolution simulation: Gaussian blur (the k-space truncation's point spread, ``blur_sigma``
    in HR voxels), down-sampling by ``scale`` (averaging ``scale^3`` blocks) and Rician noise
    ``|x + n_1 + i n_2|`` with ``n_1, n_2 ~ N(0, noise_std^2)`` (magnitude images of complex Gaussian
    noise). ``volume`` is ``(C, D, H, W)`` in [0, 1]; the result is ``(C, D/s, H/s, W/s)``."""
    d, h, w = volume.shape[-3:]
    if d % scale or h % scale or w % scale:
        raise ValueError(f"mri_degrade: size {d}x{h}x{w} is not divisible by the scale {scale}")
    lr = F.avg_pool3d(gaussian_blur3d(volume, blur_sigma)[None], scale)[0]
    if noise_std > 0:
        n1 = torch.randn(lr.shape, generator=generator) * noise_std
        n2 = torch.randn(lr.shape, generator=generator) * noise_std
        lr = torch.sqrt((lr + n1) ** 2 + n2 ** 2)
    return lr.clamp(0, 1)


class _Degradation:
    """A sample transform: ``sample["inputs"] = degrade(sample["targets"])`` with a per-call seeded generator."""

    level = "sample"

    def __init__(self, seed: int | None = None):
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)

    def __call__(self, sample: dict) -> dict:
        if "targets" not in sample:
            raise ValueError(f"{type(self).__name__}: the sample has no 'targets' (the clean image), keys "
                             f"{sorted(sample)}")
        return {**sample, "inputs": self.degrade(sample["targets"])}


class Haze(_Degradation):
    """Synthetic haze (atmospheric scattering model, smooth random depth and airlight; see :func:`add_haze`)."""

    def __init__(self, beta_min: Annotated[float, Gt(0)] = 0.6, beta_max: Annotated[float, Gt(0)] = 1.8,
                 airlight_min: Annotated[float, Interval(ge=0, le=1)] = 0.7,
                 airlight_max: Annotated[float, Interval(ge=0, le=1)] = 1.0,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] | None = None):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"Haze: need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        if not 0 <= airlight_min <= airlight_max <= 1:
            raise ValueError(f"Haze: need 0 <= airlight_min <= airlight_max <= 1, got {airlight_min}, {airlight_max}")
        super().__init__(seed)
        self.beta, self.airlight = (beta_min, beta_max), (airlight_min, airlight_max)

    def degrade(self, clean: torch.Tensor) -> torch.Tensor:
        return add_haze(clean, self.generator, self.beta, self.airlight)[0]


class BicubicDownsample(_Degradation):
    """Anti-aliased bicubic down-sampling by ``scale`` (the SR benchmarks' LR images)."""

    def __init__(self, scale: Annotated[int, Ge(2)] = 4):
        if scale < 2:
            raise ValueError(f"BicubicDownsample: scale must be >= 2, got {scale}")
        super().__init__(0)
        self.scale = scale

    def degrade(self, clean: torch.Tensor) -> torch.Tensor:
        return bicubic_downsample(clean, self.scale)


class MRIDegradation(_Degradation):
    """MRI blur + down-sampling + Rician noise of a ``(C, D, H, W)`` volume (see :func:`mri_degrade`)."""

    def __init__(self, scale: Annotated[int, Ge(2)] = 2, blur_sigma: Annotated[float, Ge(0)] = 1.0,
                 noise_std: Annotated[float, Ge(0)] = 0.02,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] | None = None):
        if scale < 2 or blur_sigma < 0 or noise_std < 0:
            raise ValueError(f"MRIDegradation: need scale >= 2, blur_sigma >= 0, noise_std >= 0, got {scale}, "
                             f"{blur_sigma}, {noise_std}")
        super().__init__(seed)
        self.scale, self.blur_sigma, self.noise_std = scale, blur_sigma, noise_std

    def degrade(self, clean: torch.Tensor) -> torch.Tensor:
        return mri_degrade(clean, self.generator, self.scale, self.blur_sigma, self.noise_std)
