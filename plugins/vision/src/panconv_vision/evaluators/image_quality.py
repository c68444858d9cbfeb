"""PSNR and SSIM of restored images (and volumes) against their clean targets.

* PSNR: ``10 log10(L^2 / MSE)`` per image (``L`` the data range), averaged over images (the
  convention of the SR/dehazing literature: the mean of per-image PSNRs, not the PSNR of the mean MSE).
* SSIM (Wang et al., IEEE TIP 2004): local statistics under an isotropic Gaussian window
  (sigma 1.5, truncated at 3.5 sigma: an 11-tap window), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``,
  population (not sample) covariances, the SSIM map averaged over positions where the window lies
  inside the image and over channels. This is scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)`` (checked in
  tests/test_image_quality.py), for 2-D images ``(C, H, W)`` and 3-D volumes ``(C, D, H, W)``.

Options: ``crop_border`` pixels removed on every side before measuring (the SR convention: the
scale factor), ``y_channel``: measure the luma ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B)/255``
of RGB images in [0, 1] (ITU-R BT.601, MATLAB's ``rgb2ycbcr``), as SR papers report.

The evaluator reads ``outputs`` (the model's ``predict``: a batch of images) and ``batch["targets"]``;
when the batch carries ``batch["baseline"]`` (bicubic / dark-channel prior / trilinear result that the
restoration datasets attach) it reports ``psnr_baseline`` and ``ssim_baseline`` computed the same way,
so the model and its baseline are compared on the same images in the same run. When the model's input
``batch["inputs"]`` has the target's shape (dehazing, denoising: the degraded image itself), it also reports
``psnr_input`` and ``ssim_input``: the identity's score, the floor a restoration model has to beat.

``paired=True`` says how sure a model-vs-baseline difference is, from the per-image differences on the same
images: ``psnr_wins`` / ``ssim_wins``, the fraction of images on which the model scores higher than the baseline,
and ``psnr_gain_se`` / ``ssim_gain_se``, the standard error of the mean per-image gain (sample standard deviation
over sqrt(n)). Images cut from the same photo are correlated, so the standard error is a lower bound on the
uncertainty there.
"""

from __future__ import annotations

import math
import statistics
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt

from panconv.api import Evaluator

__all__ = ["ImageQuality", "gaussian_window", "psnr", "rgb_to_y", "ssim", "ssim_components"]


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB images in [0, 1] (channel axis 1): ``(N, 3, ...) -> (N, 1, ...)``."""
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y: expected 3 channels on axis 1, got shape {tuple(x.shape)}")
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, *([1] * (x.dim() - 2)))
    return (x * w).sum(1, keepdim=True) / 255.0 + 16.0 / 255.0


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (dB) of ``(N, ...)`` batches; an exact match gives ``inf``."""
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The normalised 1-D Gaussian taps of scipy's ``gaussian_filter`` (radius ``int(truncate*sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of ``(B, 1, *spatial)`` over every spatial axis."""
    spatial = x.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = window.numel()
        x = conv(x, window.view(shape))
    return x


def _ssim_stats(pred: torch.Tensor, target: torch.Tensor, data_range: float, sigma: float, name: str):
    if pred.shape != target.shape or pred.dim() not in (4, 5):
        raise ValueError(f"{name}: expected equal (N, C, H, W) or (N, C, D, H, W) shapes, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    window = gaussian_window(sigma).to(pred.device)
    if min(pred.shape[2:]) < window.numel():
        raise ValueError(f"{name}: images must be at least {window.numel()} pixels on every side, got "
                         f"{tuple(pred.shape[2:])}")
    n, c = pred.shape[:2]
    x = pred.double().reshape(n * c, 1, *pred.shape[2:])
    y = target.double().reshape(n * c, 1, *pred.shape[2:])
    mx, my = _filter(x, window), _filter(y, window)
    vx = _filter(x * x, window) - mx * mx
    vy = _filter(y * y, window) - my * my
    cxy = _filter(x * y, window) - mx * my
    return (n, c), (mx, my, vx, vy, cxy), ((0.01 * data_range) ** 2, (0.03 * data_range) ** 2)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of ``(N, C, *spatial)`` batches (2-D or 3-D), averaged over channels."""
    (n, c), (mx, my, vx, vy, cxy), (c1, c2) = _ssim_stats(pred, target, data_range, sigma, "ssim")
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).view(n, c).mean(1)


def ssim_components(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0,
                    sigma: float = 1.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SSIM's three factors (Wang et al. 2004, with their ``C3 = C2 / 2``), each averaged like :func:`ssim`.

    Per window: luminance ``l = (2 mx my + C1) / (mx^2 + my^2 + C1)``, contrast ``c = (2 sx sy + C2) /
    (sx^2 + sy^2 + C2)``, structure ``s = (sxy + C2/2) / (sx sy + C2/2)``; ``l c s`` is the SSIM map exactly.
    They say *how* a restoration differs from its target: a brightness or colour offset lowers ``l`` only, a
    smooth per-pixel gain (haze: ``I = J t + A (1 - t)`` with ``t`` smooth) lowers ``c`` and leaves ``s`` at
    about 1, blur and invented or lost detail lower ``s``. Returns three ``(N,)`` tensors.
    """
    (n, c), (mx, my, vx, vy, cxy), (c1, c2) = _ssim_stats(pred, target, data_range, sigma, "ssim_components")
    sx, sy = vx.clamp_min(0).sqrt(), vy.clamp_min(0).sqrt()
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    con = (2 * sx * sy + c2) / (vx + vy + c2)
    struct = (cxy + c2 / 2) / (sx * sy + c2 / 2)
    return tuple(t.flatten(1).mean(1).view(n, c).mean(1) for t in (lum, con, struct))


class ImageQuality(Evaluator):
    """PSNR (dB) and SSIM of ``predict`` outputs against ``batch["targets"]`` (and of ``batch["baseline"]``).

    Args:
        data_range: the value range of the images (1.0 for [0, 1]).
        crop_border: pixels (voxels) removed on every side before measuring.
        y_channel: measure the BT.601 luma of RGB images.
        compute_ssim: also compute SSIM (images need at least 11 + 2 crop_border pixels per side).
        components: also report SSIM's luminance, contrast and structure factors (:func:`ssim_components`) as
            ``ssim_l``, ``ssim_c``, ``ssim_s`` (and ``_baseline`` / ``_input`` of each): where a model loses
            SSIM to its baseline. Needs ``compute_ssim``.
        paired: also report, where batches carry a baseline, the fraction of images the model wins against it
            (``psnr_wins``, ``ssim_wins``) and the standard error of the mean per-image gain (``psnr_gain_se``,
            ``ssim_gain_se``; needs at least two images).
    """

    lower_is_better = ()

    def __init__(self, data_range: Annotated[float, Gt(0)] = 1.0, crop_border: Annotated[int, Ge(0)] = 0,
                 y_channel: bool = False, compute_ssim: bool = True, components: bool = False,
                 paired: bool = False):
        super().__init__()
        if data_range <= 0:
            raise ValueError(f"ImageQuality: data_range must be > 0, got {data_range}")
        if crop_border < 0:
            raise ValueError(f"ImageQuality: crop_border must be >= 0, got {crop_border}")
        self.data_range, self.crop_border = float(data_range), int(crop_border)
        if components and not compute_ssim:
            raise ValueError("ImageQuality: components=True needs compute_ssim=True")
        self.y_channel, self.compute_ssim, self.components = bool(y_channel), bool(compute_ssim), bool(components)
        self.paired = bool(paired)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach().float().cpu()
        if self.crop_border:
            b = self.crop_border
            images = images[(..., *([slice(b, -b)] * (images.dim() - 2)))]
        return rgb_to_y(images) if self.y_channel else images

    def _scores(self, pred: torch.Tensor, target: torch.Tensor) -> list[tuple[float, float]]:
        if pred.shape != target.shape:
            raise ValueError(f"ImageQuality: prediction shape {tuple(pred.shape)} != target shape "
                             f"{tuple(target.shape)}")
        p, t = self._prepare(pred), self._prepare(target)
        ps = psnr(p, t, self.data_range).tolist()
        ss = ssim(p, t, self.data_range).tolist() if self.compute_ssim else [math.nan] * len(ps)
        if self.components:
            return list(zip(ps, ss, *(f.tolist() for f in ssim_components(p, t, self.data_range))))
        return list(zip(ps, ss))

    def process(self, batch: dict, outputs: Any) -> None:
        target = batch["targets"]
        pred = outputs if isinstance(outputs, torch.Tensor) else outputs["images"]
        base, inputs = batch.get("baseline"), batch.get("inputs")
        scores = self._scores(pred, target)
        base_scores = self._scores(base, target) if base is not None else [None] * len(scores)
        same = isinstance(inputs, torch.Tensor) and inputs.shape == target.shape
        input_scores = self._scores(inputs, target) if same else [None] * len(scores)
        self.results.extend(zip(scores, base_scores, input_scores))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        metrics = {}
        for column, suffix in ((0, ""), (1, "_baseline"), (2, "_input")):
            scored = [r[column] for r in results if r[column] is not None]
            if scored:
                metrics["psnr" + suffix] = sum(s[0] for s in scored) / len(scored)
                if self.compute_ssim:
                    metrics["ssim" + suffix] = sum(s[1] for s in scored) / len(scored)
                if self.components:
                    for i, factor in enumerate("lcs", start=2):
                        metrics[f"ssim_{factor}{suffix}"] = sum(s[i] for s in scored) / len(scored)
        pairs = [(r[0], r[1]) for r in results if r[1] is not None]
        if self.paired and pairs:
            for i, name in enumerate(("psnr", "ssim")[:2 if self.compute_ssim else 1]):
                gains = [model[i] - base[i] for model, base in pairs]
                metrics[f"{name}_wins"] = sum(g > 0 for g in gains) / len(gains)
                if len(gains) > 1:
                    metrics[f"{name}_gain_se"] = statistics.stdev(gains) / math.sqrt(len(gains))
        return metrics

    @classmethod
    def example(cls):
        # known values: a constant error e on [0, 1] images gives PSNR = -20 log10(e)
        target = torch.full((2, 1, 12, 12), 0.5)
        batches = [({"targets": target[:1]}, target[:1] + 0.1),
                   ({"targets": target[1:]}, target[1:] + 0.01)]
        return {"compute_ssim": False}, batches, {"psnr": (20.0 + 40.0) / 2}
