"""CenterPoint's head (Yin et al., CVPR 2021) as FlatFormer's Waymo config uses it: ``CenterHead``.

On the BEV feature map: a shared conv3x3-BN-ReLU (64 channels), then one two-conv branch per
output (``final_kernel`` 3): a class heat map (bias -2.19: initial probability 0.1), the
sub-pixel centre offset (2), the centre height (1), the log box size (3, ``norm_bbox``) and the
yaw as (sin, cos). Targets: a Gaussian per box on its class's heat map, radius from CenterNet's
``gaussian_radius`` at ``gaussian_overlap`` 0.1 (at least ``min_radius``), regression targets at the
box centre's cell. Losses: the Gaussian focal loss (alpha 2, gamma 4) over the heat maps divided
by the number of boxes, and L1 on the regression at the centres x ``reg_weight`` (2 in the config),
divided by the number of boxes. Decoding: 3x3 max-pool peaks, top ``max_det``, score threshold.
Not kept from the Waymo config: the velocity and IoU branches (single frames, no IoU rectification)
and the rotated NMS after decoding (the max-pool peak selection stands in for it).

Boxes are ``(x, y, z, l, w, h, yaw)``, ``z`` the box centre, yaw about +z from the +x axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Le
from torch import nn

from panconv.api import FeatureInfo, Head

from .layers import Positive

#: the regression branches and their widths (CenterPoint's common_heads without vel / iou)
BRANCHES = {"reg": 2, "height": 1, "dim": 3, "rot": 2}


def gaussian_radius(length: float, width: float, min_overlap: float) -> float:
    """CenterNet's radius: the largest corner shift keeping IoU >= min_overlap (the three cases' minimum)."""
    h, w, m = length, width, min_overlap
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    """``heatmap = max(heatmap, exp(-d^2 / (2 sigma^2)))`` around ``(cx, cy)``, sigma = diameter / 6 (in place)."""
    sigma = (2 * radius + 1) / 6
    height, width = heatmap.shape
    x0, x1 = max(0, cx - radius), min(width, cx + radius + 1)
    y0, y1 = max(0, cy - radius), min(height, cy + radius + 1)
    if x0 >= x1 or y0 >= y1:
        return
    ys = torch.arange(y0, y1, dtype=heatmap.dtype, device=heatmap.device)[:, None] - cy
    xs = torch.arange(x0, x1, dtype=heatmap.dtype, device=heatmap.device)[None, :] - cx
    gauss = torch.exp(-(xs ** 2 + ys ** 2) / (2 * sigma ** 2))
    heatmap[y0:y1, x0:x1] = torch.maximum(heatmap[y0:y1, x0:x1], gauss)


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, gamma: float = 4.0):
    """CenterNet's focal loss on Gaussian targets (sum; the caller normalises)."""
    prob = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).to(logits.dtype)
    pos_loss = -torch.log(prob) * (1 - prob) ** alpha * pos
    neg_loss = -torch.log(1 - prob) * prob ** alpha * (1 - target) ** gamma * (1 - pos)
    return pos_loss.sum() + neg_loss.sum()


def _branch(c_in: int, c_mid: int, c_out: int, kernel: int, bias_init: float | None = None) -> nn.Sequential:
    last = nn.Conv2d(c_mid, c_out, kernel, padding=kernel // 2)
    if bias_init is not None:
        nn.init.constant_(last.bias, bias_init)
    return nn.Sequential(nn.Conv2d(c_in, c_mid, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_mid, eps=1e-3, momentum=0.01), nn.ReLU(), last)


class CenterHead(Head):
    """CenterPoint head on a BEV map (see the module docstring).

    Args:
        num_classes: heat-map classes.
        point_cloud_range, voxel_size: the BEV grid of the backbone (feature cell = voxel x the
            input feature's ``reduction``).
        share_channels, head_channels, final_kernel: conv widths and branch kernel.
        gaussian_overlap, min_radius: heat-map targets.
        reg_weight: weight of the regression L1.
        max_det, score_threshold: decoding.
        in_index: which input feature (default the last: the FPN output).
    """

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(1)] = 3,
                 point_cloud_range: Sequence[float] = (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0),
                 voxel_size: Sequence[Positive] = (0.32, 0.32, 6.0),
                 share_channels: Annotated[int, Ge(1)] = 64, head_channels: Annotated[int, Ge(1)] = 64,
                 final_kernel: Annotated[int, Ge(1)] = 3, gaussian_overlap: Annotated[float, Gt(0), Le(1)] = 0.1,
                 min_radius: Annotated[int, Ge(0)] = 1, reg_weight: Annotated[float, Ge(0)] = 2.0,
                 max_det: Annotated[int, Ge(1)] = 100, score_threshold: Annotated[float, Ge(0)] = 0.1,
                 in_index: int = -1):
        super().__init__(in_features)
        if final_kernel % 2 == 0:
            raise ValueError(f"CenterHead: final_kernel must be odd, got {final_kernel}")
        if len(point_cloud_range) != 6 or len(voxel_size) < 2:
            raise ValueError("CenterHead: point_cloud_range needs 6 values and voxel_size at least 2")
        feature = self.in_features[in_index]
        self.in_index, self.num_classes = in_index, num_classes
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        self.cell = (float(voxel_size[0]) * feature.reduction, float(voxel_size[1]) * feature.reduction)
        self.gaussian_overlap, self.min_radius = gaussian_overlap, min_radius
        self.reg_weight, self.max_det, self.score_threshold = reg_weight, max_det, score_threshold
        self.shared = nn.Sequential(nn.Conv2d(feature.channels, share_channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(share_channels, eps=1e-3, momentum=0.01), nn.ReLU())
        self.heatmap = _branch(share_channels, head_channels, num_classes, final_kernel, bias_init=-2.19)
        self.branches = nn.ModuleDict({name: _branch(share_channels, head_channels, width, final_kernel)
                                       for name, width in BRANCHES.items()})

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.shared(features[self.in_index])
        return {"heatmap": self.heatmap(x), **{name: branch(x) for name, branch in self.branches.items()}}

    # ---- targets and loss ----
    def targets(self, boxes: torch.Tensor, labels: torch.Tensor, size: Sequence[int]):
        """Heat maps ``(B, K, H, W)``, and per box: its index (b, iy, ix), regression target (8), validity."""
        batch, height, width = boxes.shape[0], *size
        heat = boxes.new_zeros((batch, self.num_classes, height, width))
        x0, y0 = self.point_cloud_range[:2]
        keep = labels >= 0
        cx = (boxes[..., 0] - x0) / self.cell[0]
        cy = (boxes[..., 1] - y0) / self.cell[1]
        ix, iy = cx.floor().long(), cy.floor().long()
        keep &= (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
        for b, m in keep.nonzero().tolist():
            radius = gaussian_radius(boxes[b, m, 3].item() / self.cell[0], boxes[b, m, 4].item() / self.cell[1],
                                     self.gaussian_overlap)
            draw_gaussian(heat[b, labels[b, m]], ix[b, m].item(), iy[b, m].item(), max(self.min_radius, int(radius)))
        reg = torch.stack([cx - ix, cy - iy, boxes[..., 2], *boxes[..., 3:6].clamp_min(1e-3).log().unbind(-1),
                           boxes[..., 6].sin(), boxes[..., 6].cos()], dim=-1)
        return heat, (ix, iy), reg, keep

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        boxes, labels = batch["gt_boxes"], batch["gt_labels"]
        heat, (ix, iy), target, keep = self.targets(boxes.float(), labels, outputs["heatmap"].shape[-2:])
        num = keep.sum().clamp_min(1).float()
        loss_heat = gaussian_focal_loss(outputs["heatmap"].float(), heat) / num
        pred = torch.cat([outputs[name] for name in BRANCHES], dim=1)  # (B, 8, H, W)
        b_idx = torch.arange(boxes.shape[0], device=boxes.device)[:, None].expand_as(keep)
        picked = pred[b_idx[keep], :, iy[keep].clamp(0, pred.shape[-2] - 1), ix[keep].clamp(0, pred.shape[-1] - 1)]
        loss_reg = (picked - target[keep]).abs().sum() / num * self.reg_weight if keep.any() else pred.sum() * 0
        return {"loss_heatmap": loss_heat, "loss_bbox": loss_reg}

    # ---- decoding ----
    def predict(self, outputs: dict, batch: dict | None = None) -> torch.Tensor:
        """Boxes ``(B, max_det, 9)``: ``x, y, z, l, w, h, yaw, score, label`` (label -1, score 0: no box)."""
        heat = outputs["heatmap"].sigmoid()
        batch_size, classes, height, width = heat.shape
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        k = min(self.max_det, classes * height * width)
        scores, index = peaks.view(batch_size, -1).topk(k)
        label, cell = index // (height * width), index % (height * width)
        iy, ix = cell // width, cell % width

        def at(name):
            value = outputs[name].flatten(2)
            return value.gather(2, cell[:, None, :].expand(-1, value.shape[1], -1)).transpose(1, 2)

        reg, z, dims, rot = at("reg"), at("height"), at("dim").exp(), at("rot")
        x = (ix + reg[..., 0]) * self.cell[0] + self.point_cloud_range[0]
        y = (iy + reg[..., 1]) * self.cell[1] + self.point_cloud_range[1]
        yaw = torch.atan2(rot[..., 0], rot[..., 1])
        boxes = torch.cat([x[..., None], y[..., None], z, dims, yaw[..., None], scores[..., None],
                           label[..., None].to(x.dtype)], dim=-1)
        if k < self.max_det:
            boxes = torch.cat([boxes, boxes.new_zeros((batch_size, self.max_det - k, 9))], dim=1)
            boxes[:, k:, 8] = -1
        off = boxes[..., 7] < self.score_threshold
        boxes[..., 8] = torch.where(off, torch.full_like(boxes[..., 8], -1), boxes[..., 8])
        boxes[..., 7] = torch.where(off, torch.zeros_like(boxes[..., 7]), boxes[..., 7])
        return boxes

    @classmethod
    def example_config(cls) -> dict:
        return dict(num_classes=3, point_cloud_range=[-8.0, -8.0, -1.0, 8.0, 8.0, 3.0], voxel_size=[1.0, 1.0, 4.0],
                    share_channels=8, head_channels=8, max_det=10)

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(16, 1, "fpn")]

    def example_inputs(self, batch_size: int = 2):
        g = torch.Generator().manual_seed(0)
        features = [torch.randn(batch_size, self.in_features[-1].channels, 16, 16, generator=g)]
        boxes = torch.zeros(batch_size, 3, 7)
        boxes[..., :2] = torch.rand(batch_size, 3, 2, generator=g) * 12 - 6
        boxes[..., 2] = 0.8
        boxes[..., 3:6] = torch.tensor([4.0, 2.0, 1.6])
        boxes[..., 6] = torch.rand(batch_size, 3, generator=g) * 3
        labels = torch.tensor([0, 1, -1]).repeat(batch_size, 1)
        return features, {"gt_boxes": boxes, "gt_labels": labels}


__all__ = ["BRANCHES", "CenterHead", "draw_gaussian", "gaussian_focal_loss", "gaussian_radius"]
