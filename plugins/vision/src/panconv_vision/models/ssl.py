"""Building blocks of the self-supervised systems (issue 20): momentum teacher, masking, views.

- :class:`EMATeacher` — a frozen copy of a network updated as an exponential moving average of the
  student (BYOL/DINO/OBoW): ``theta_t <- m theta_t + (1 - m) theta_s``; buffers (BatchNorm running
  statistics) are copied. Its forward runs under ``no_grad``.
- :func:`cosine_momentum` — BYOL's schedule ``m_k = final - (final - base) (cos(pi k / K) + 1) / 2``.
- :func:`random_patch_mask` — exactly ``round(ratio * gh * gw)`` masked cells per image (SparK/MAE).
- :func:`rotate4` — the four rotations of RotNet (Gidaris et al. 2018): 0, 90, 180, 270 degrees
  counter-clockwise, image-major order (``out[4 i + r]`` is image ``i`` rotated by ``r * 90``).
- :func:`multi_crop` — batched random-resized crops (torchvision's box sampling, one box per image),
  ``n_global`` large views then ``n_local`` small ones (SwAV/DINO multi-crop).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EMATeacher", "cosine_momentum", "multi_crop", "random_patch_mask", "rotate4"]


class EMATeacher(nn.Module):
    """A frozen copy of ``module`` that follows it by exponential moving average.

    ``update(module, momentum=None)`` moves every parameter towards the student's (``momentum``
    defaults to the constructor's) and, with ``copy_buffers`` (the default), copies the student's buffers
    (batch-norm statistics follow the student). ``copy_buffers=False`` leaves the teacher its own buffers,
    which its own forward passes in train mode update (OBoW's official teacher: only parameters are averaged).
    The teacher's parameters never require gradients; it is part of the owner's ``state_dict`` (under the
    attribute name the owner gives it).
    """

    def __init__(self, module: nn.Module, momentum: float = 0.99, copy_buffers: bool = True):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMATeacher: momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.copy_buffers = bool(copy_buffers)
        self.module = copy.deepcopy(module)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, momentum: float | None = None) -> None:
        m = self.momentum if momentum is None else float(momentum)
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"EMATeacher.update: momentum must be in [0, 1], got {m}")
        teacher, student = dict(self.module.named_parameters()), dict(module.named_parameters())
        if teacher.keys() != student.keys():
            raise ValueError("EMATeacher.update: the student's parameters are not the teacher's")
        for name, p in teacher.items():
            p.mul_(m).add_(student[name].detach(), alpha=1.0 - m)
        if self.copy_buffers:
            student_buffers = dict(module.named_buffers())
            for name, b in self.module.named_buffers():
                b.copy_(student_buffers[name])

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)


def cosine_momentum(step: int, total: int, base: float, final: float = 1.0) -> float:
    """BYOL's momentum schedule: ``base`` at step 0, ``final`` at ``total`` (cosine in between)."""
    if total <= 0:
        raise ValueError(f"cosine_momentum: total must be > 0, got {total}")
    t = min(max(step, 0), total) / total
    return final - (final - base) * (math.cos(math.pi * t) + 1) / 2


def random_patch_mask(batch: int, grid: int | Sequence[int], ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """``(batch, gh, gw)`` bool, True = masked; exactly ``round(ratio * gh * gw)`` True per image."""
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if batch < 1 or gh < 1 or gw < 1:
        raise ValueError(f"random_patch_mask: batch and grid must be >= 1, got {batch}, {(gh, gw)}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"random_patch_mask: ratio must be in [0, 1], got {ratio}")
    n = gh * gw
    n_masked = int(round(ratio * n))
    noise = torch.rand(batch, n, generator=generator, device=generator.device if generator is not None else device)
    rank = noise.argsort(1).argsort(1)             # a uniformly random permutation per image
    return (rank < n_masked).reshape(batch, gh, gw).to(device)


def rotate4(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` -> ``(4B, C, H, W)`` rotated by 0/90/180/270 degrees and labels ``0..3``."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotate4: expected square images (B, C, S, S), got {tuple(images.shape)}")
    out = torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)], dim=1)
    labels = torch.arange(4, device=images.device).repeat(images.shape[0])
    return out.flatten(0, 1), labels


def _crop_boxes(n: int, scale: tuple[float, float], ratio: tuple[float, float], generator, device):
    """Box width/height (fractions of the side) and centres (normalised to [-1, 1]), torchvision-style."""
    u = torch.rand(n, 4, generator=generator, device=device)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)              # centre in [-(1 - w), 1 - w]: the box stays inside
    cy = (1 - h) * (2 * u[:, 3] - 1)
    return w, h, cx, cy


def multi_crop(images: torch.Tensor, n_global: int, n_local: int, global_size: int, local_size: int,
               generator: torch.Generator | None = None, global_scale: tuple[float, float] = (0.4, 1.0),
               local_scale: tuple[float, float] = (0.05, 0.4), ratio: tuple[float, float] = (3 / 4, 4 / 3),
               flip: bool = True) -> list[torch.Tensor]:
    """Random resized crops of every image: ``n_global`` views ``(B, C, global_size, global_size)`` then
    ``n_local`` views ``(B, C, local_size, local_size)``; each view draws its own box (area fraction in
    ``*_scale``, aspect ratio log-uniform in ``ratio``) and, with ``flip``, a horizontal flip per image.
    Bilinear resampling (``grid_sample``, ``align_corners=False``)."""
    if images.dim() != 4:
        raise ValueError(f"multi_crop: expected (B, C, H, W) images, got {tuple(images.shape)}")
    if n_global < 0 or n_local < 0 or global_size < 1 or local_size < 1:
        raise ValueError("multi_crop: view counts must be >= 0 and sizes >= 1")
    b, c = images.shape[:2]
    device = images.device
    gen_device = generator.device if generator is not None else device
    views = []
    for size, scale, count in ((global_size, global_scale, n_global), (local_size, local_scale, n_local)):
        for _ in range(count):
            w, h, cx, cy = _crop_boxes(b, scale, ratio, generator, gen_device)
            sign = torch.ones(b, device=gen_device)
            if flip:
                sign = torch.where(torch.rand(b, generator=generator, device=gen_device) < 0.5, -sign, sign)
            theta = torch.zeros(b, 2, 3, device=gen_device)
            theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
            theta[:, 1, 1], theta[:, 1, 2] = h, cy
            grid = F.affine_grid(theta.to(device, images.dtype), [b, c, size, size], align_corners=False)
            views.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return views
