"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019) with RelationNet++'s
BVR module (Chi et al., NeurIPS 2020) plugged in: the toolkit's anchor-free one-stage detector.

Every location ``(x + 0.5) * s`` of every pyramid level (strides 8-128 on HRNet + HRFPN) predicts, per class,
a focal-loss score, and, from the regression branch, the distances ``l, t, r, b`` to the four sides of its box
(``ReLU(scale_l * x) * s``: a learnable scale per level, distances normalised by the stride) and a centre-ness
logit. Training targets (:func:`fcos_targets`):

* a location is a candidate for a ground-truth box when it lies inside it (or, with ``center_sampling = r``,
  inside the box's centre region of radius ``r * s``, clipped to the box);
* FCOS's scale ranges: level ``i`` only regresses boxes with ``max(l, t, r, b)`` in ``regress_ranges[i]``
  (``(-1, 64), (64, 128), (128, 256), (256, 512), (512, inf)`` on P3-P7 in the paper);
* a location that is a candidate for several boxes takes the one of smallest area; none: background;
* centre-ness target ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

Losses (mmdetection's FCOS with the paper's improvements, which the RelationNet++ FCOS baselines use):
sigmoid focal loss (alpha 0.25, gamma 2) over all locations / number of positives, GIoU loss of the decoded
boxes on the positives weighted by their centre-ness targets / their sum, centre-ness BCE / number of positives.
At test time a location's class score is multiplied by its centre-ness, NMS per class.

BVR (``bvr=True``, :mod:`.bvr`): FCOS's main representation is the centre point, the location itself; its
classification features attend to sampled centre keys and its regression features (which also feed the
centre-ness) to sampled corner keys, with the shared location embedding; the attention's output projection
starts at zero, so an untrained BVR is the plain FCOS (``bvr=False``) exactly.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn
from torchvision import ops

from .bvr import (
    BVRAttention,
    OneStageBVRModel,
    PointHead,
    _conv_stack,
    make_geometry,
    point_losses,
    towers_with_bvr,
)
from .detection import Detections
from .layers import HRFPN, HRNET_VARIANTS, HRNetV2p

INF = 1e8
PAPER_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))


def locations(sizes: list[tuple[int, int]], strides, device=None) -> list[torch.Tensor]:
    """The FCOS locations of each level, ``(H_l * W_l, 2)`` as ``(x, y)`` pixels at ``(i + 0.5) * stride``,
    row-major (the order of a flattened feature map)."""
    out = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        out.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
    return out


def fcos_targets(points: list[torch.Tensor], strides, ranges, boxes: torch.Tensor, labels: torch.Tensor,
                 num_classes: int, center_sampling: float = 1.5):
    """One image's FCOS targets over all levels' ``points``: labels (P,) with ``num_classes`` = background,
    ``l, t, r, b`` distances (P, 4) in pixels and the assigned box index (P,) (-1: background)."""
    n_per_level = [len(p) for p in points]
    pts = torch.cat(points)  # (P, 2)
    device = pts.device
    stride = torch.cat([pts.new_full((n,), float(s)) for n, s in zip(n_per_level, strides)])
    rng = torch.cat([pts.new_tensor(r).expand(n, 2) for n, r in zip(n_per_level, ranges)])
    p = len(pts)
    if len(boxes) == 0:
        return (torch.full((p,), num_classes, dtype=torch.long, device=device), pts.new_zeros(p, 4),
                torch.full((p,), -1, dtype=torch.long, device=device))
    x, y = pts[:, 0:1], pts[:, 1:2]  # (P, 1)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]  # (G,)
    ltrb = torch.stack([x - x0, y - y0, x1 - x, y1 - y], -1)  # (P, G, 4)
    if center_sampling > 0:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        radius = stride[:, None] * center_sampling  # (P, 1)
        rx0, ry0 = torch.maximum(cx - radius, x0), torch.maximum(cy - radius, y0)
        rx1, ry1 = torch.minimum(cx + radius, x1), torch.minimum(cy + radius, y1)
        inside = torch.stack([x - rx0, y - ry0, rx1 - x, ry1 - y], -1).min(-1).values > 0
    else:
        inside = ltrb.min(-1).values > 0
    reach = ltrb.max(-1).values
    in_range = (reach >= rng[:, 0:1]) & (reach <= rng[:, 1:2])
    area = ((x1 - x0) * (y1 - y0))[None].expand(p, -1).clone()
    area[~(inside & in_range)] = INF
    min_area, assigned = area.min(1)
    assigned[min_area == INF] = -1
    pos = assigned >= 0
    out_labels = torch.full((p,), num_classes, dtype=torch.long, device=device)
    out_labels[pos] = labels[assigned[pos]]
    out_ltrb = ltrb[torch.arange(p, device=device), assigned.clamp(min=0)]
    out_ltrb[~pos] = 0
    return out_labels, out_ltrb, assigned


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of positive locations' distances (P, 4)."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt(lr.min(-1).values / lr.max(-1).values * tb.min(-1).values / tb.max(-1).values)


def distance_to_box(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Locations (P, 2) and distances (P, 4) -> boxes (P, 4) ``x0, y0, x1, y1``."""
    return torch.cat([points - ltrb[:, :2], points + ltrb[:, 2:]], -1)


class Scale(nn.Module):
    """FCOS's learnable scalar per level, multiplying the regression output."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return x * self.scale


class FCOSBVR(OneStageBVRModel):
    """FCOS on HRNet + HRFPN (strides 8-128), with or without BVR."""

    metadata_inputs = ("num_classes",)

    def __init__(self, num_classes: Annotated[int, Ge(1)] = 80, backbone: Literal[HRNET_VARIANTS] = "hrnet_w32",
                 channels: Annotated[int, Ge(8)] = 256, bvr: bool = True, num_keys: Annotated[int, Ge(1)] = 50,
                 heads: Annotated[int, Ge(1)] = 8, embed_dim: Annotated[int, Ge(4)] = 64,
                 regress_ranges: tuple[tuple[float, float], ...] = PAPER_RANGES,
                 center_sampling: Annotated[float, Ge(0)] = 1.5, score_thr: float = 0.05,
                 nms_iou: float = 0.5, max_per_img: Annotated[int, Ge(1)] = 100,
                 point_loss_weight: Annotated[float, Ge(0)] = 1.0):
        super().__init__()
        ranges = tuple(tuple(float(v) for v in r) for r in regress_ranges)
        if num_classes < 1 or channels % heads:
            raise ValueError(f"num_classes must be >= 1 and channels ({channels}) divisible by heads ({heads})")
        if not 1 <= len(ranges) <= 6 or any(len(r) != 2 or r[0] >= r[1] for r in ranges):
            raise ValueError(f"regress_ranges must be 1-6 (low, high) pairs with low < high, got {regress_ranges}")
        if center_sampling < 0:
            raise ValueError(f"center_sampling must be >= 0 (0: the whole box), got {center_sampling}")
        self.num_classes, self.bvr, self.num_keys = num_classes, bvr, num_keys
        self.regress_ranges, self.center_sampling = ranges, float(center_sampling)
        self.backbone = HRNetV2p(backbone)
        self.neck = HRFPN(self.backbone.feature_info, channels, len(ranges) + 1, first_level=1)
        self.strides = [f.reduction for f in self.neck.feature_info]  # 8, 16, 32, 64, 128
        self.cls_tower, self.reg_tower = _conv_stack(channels, 4), _conv_stack(channels, 4)
        self.cls_out = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness_out = nn.Conv2d(channels, 1, 3, padding=1)
        for conv in (self.cls_out, self.reg_out, self.centerness_out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_out.bias, -math.log(99))  # prior probability 0.01
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.score_thr, self.nms_iou, self.max_per_img = score_thr, nms_iou, max_per_img
        self.point_loss_weight = float(point_loss_weight)  # the heatmap term (official BVR configs: 0.25)
        if bvr:
            self.points = PointHead(channels)
            self.geometry = make_geometry(heads, embed_dim)
            self.cls_attention = BVRAttention(channels, heads, self.geometry)
            self.reg_attention = BVRAttention(channels, heads, self.geometry)

    # ---- forward
    def forward(self, batch: dict):
        images = batch["inputs"]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FCOSBVR expects inputs of shape (N, 3, H, W), got {tuple(images.shape)}")
        feats, cls_feats, reg_feats, out = towers_with_bvr(self, images, multiple=32)
        n = images.shape[0]
        out["cls"] = torch.cat([self.cls_out(f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes)
                                for f in cls_feats], 1)
        out["reg"] = torch.cat([(F.relu(scale(self.reg_out(f))) * s).permute(0, 2, 3, 1).reshape(n, -1, 4)
                                for f, scale, s in zip(reg_feats, self.scales, self.strides)], 1)
        out["centerness"] = torch.cat([self.centerness_out(f).permute(0, 2, 3, 1).reshape(n, -1)
                                       for f in reg_feats], 1)
        out["points"] = torch.cat(locations([f.shape[-2:] for f in feats], self.strides, images.device))
        out["level_sizes"] = torch.tensor([f.shape[-2] * f.shape[-1] for f in feats])
        out["image_shape"] = torch.tensor(images.shape[-2:])
        return out

    def _split_points(self, outputs: dict) -> list[torch.Tensor]:
        return list(outputs["points"].split(outputs["level_sizes"].tolist()))

    # ---- loss
    def loss(self, outputs: dict, batch: dict) -> dict:
        points = self._split_points(outputs)
        all_points = outputs["points"]
        cls_terms, box_terms, ctr_terms, n_pos, ctr_sum = [], [], [], 0, 0.0
        for i, (gt, labels) in enumerate(zip(batch["boxes"], batch["labels"])):
            target_labels, ltrb, _ = fcos_targets(points, self.strides, self.regress_ranges, gt.detach(), labels,
                                                  self.num_classes, self.center_sampling)
            onehot = F.one_hot(target_labels, self.num_classes + 1)[:, :self.num_classes].float()
            cls_terms.append(ops.sigmoid_focal_loss(outputs["cls"][i], onehot, 0.25, 2.0, reduction="sum"))
            pos = target_labels < self.num_classes
            if pos.any():
                ctr = centerness_target(ltrb[pos])
                pred_boxes = distance_to_box(all_points[pos], outputs["reg"][i][pos])
                true_boxes = distance_to_box(all_points[pos], ltrb[pos])
                giou = ops.generalized_box_iou_loss(pred_boxes, true_boxes, reduction="none")
                box_terms.append((giou * ctr).sum())
                ctr_terms.append(F.binary_cross_entropy_with_logits(outputs["centerness"][i][pos], ctr,
                                                                    reduction="sum"))
                ctr_sum += float(ctr.sum())
            n_pos += int(pos.sum())
        zero = outputs["reg"].sum() * 0 + outputs["centerness"].sum() * 0
        losses = {"loss_cls": sum(cls_terms) / max(n_pos, 1),
                  "loss_bbox": (sum(box_terms) if box_terms else zero) / max(ctr_sum, 1e-6),
                  "loss_centerness": (sum(ctr_terms) if ctr_terms else zero) / max(n_pos, 1)}
        if self.bvr:
            points = point_losses(outputs["heat"], outputs["offset"], batch["boxes"], self.strides[0])
            losses.update(loss_points=points["loss_points"] * self.point_loss_weight, loss_offset=points["loss_offset"])
        return losses

    # ---- predict
    @torch.no_grad()
    def predict(self, outputs: dict, batch: dict | None = None) -> list[Detections]:
        """Per level the 1000 best (location, class) pairs over ``score_thr`` ranked by score x centre-ness,
        boxes clipped to the image, NMS per class, the ``max_per_img`` best."""
        shape = tuple(outputs["image_shape"].tolist())
        sizes = outputs["level_sizes"].tolist()
        out = []
        for cls, reg, ctr in zip(outputs["cls"], outputs["reg"], outputs["centerness"]):
            boxes_l, scores_l, labels_l = [], [], []
            for c, r, t, pts in zip(cls.split(sizes), reg.split(sizes), ctr.split(sizes),
                                    outputs["points"].split(sizes)):
                raw = c.sigmoid()
                scores = raw * t.sigmoid()[:, None]
                scores = scores.masked_fill(raw <= self.score_thr, -1).flatten()
                top = scores.topk(min(1000, scores.numel())).indices
                top = top[scores[top] > 0]
                idx, labels = top // self.num_classes, top % self.num_classes
                boxes = distance_to_box(pts[idx], r[idx])
                boxes = torch.stack([boxes[:, 0].clamp(0, shape[1]), boxes[:, 1].clamp(0, shape[0]),
                                     boxes[:, 2].clamp(0, shape[1]), boxes[:, 3].clamp(0, shape[0])], 1)
                boxes_l.append(boxes)
                scores_l.append(scores[top])
                labels_l.append(labels)
            boxes, scores, labels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(labels_l)
            k = ops.batched_nms(boxes, scores, labels, self.nms_iou)[: self.max_per_img]
            out.append(Detections(boxes[k], scores[k], labels[k]))
        return out
