"""A two-stage detection toolkit on ``torchvision.ops``: Faster / Mask R-CNN and Cascade (Mask) R-CNN.

Read top to bottom: box coder, anchors, IoU assigner, random sampler, the RPN head, the RoI feature
extractor, the box and mask heads, the (cascade) RoI head, and the detector that composes a
backbone + neck with them. Conventions follow mmdetection 2.x (the framework of the CascadeTabNet
config): boxes are ``x0, y0, x1, y1`` in input pixels with width ``x1 - x0``; class ``num_classes`` is
the background of the box heads; a Faster/Mask R-CNN is the cascade with one stage.

Batches: ``{"inputs": (N, 3, H, W) in [0, 1], "boxes": [(K_i, 4)], "labels": [(K_i,)]}`` and optionally
``"masks": [(K_i, H, W)]`` (without masks the mask targets are the boxes' rectangles, exact for tables
and cells). ``forward`` returns the losses in train mode and the detections in eval mode; ``predict``
turns the latter into one :class:`Detections` per image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn
from torchvision import ops

from panconv.api import Model

from .layers import HRFPN, HRNET_VARIANTS, HRNetV2p

# ----------------------------------------------------------------------------- box coder


class BoxCoder:
    """mmdetection's DeltaXYWHBBoxCoder: ``(dx, dy, dw, dh)`` normalised by ``means``/``stds``."""

    def __init__(self, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0), wh_ratio_clip: float = 16 / 1000):
        self.means, self.stds = tuple(float(m) for m in means), tuple(float(s) for s in stds)
        self.max_ratio = abs(math.log(wh_ratio_clip))

    def encode(self, boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        px, py = boxes[:, 0] + 0.5 * pw, boxes[:, 1] + 0.5 * ph
        gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
        gx, gy = targets[:, 0] + 0.5 * gw, targets[:, 1] + 0.5 * gh
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, boxes: torch.Tensor, deltas: torch.Tensor, max_shape: tuple[int, int] | None = None):
        d = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        dw, dh = d[:, 2].clamp(-self.max_ratio, self.max_ratio), d[:, 3].clamp(-self.max_ratio, self.max_ratio)
        pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        px, py = boxes[:, 0] + 0.5 * pw, boxes[:, 1] + 0.5 * ph
        gx, gy, gw, gh = px + pw * d[:, 0], py + ph * d[:, 1], pw * dw.exp(), ph * dh.exp()
        out = torch.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], dim=1)
        if max_shape is not None:
            out = torch.stack([out[:, 0].clamp(0, max_shape[1]), out[:, 1].clamp(0, max_shape[0]),
                               out[:, 2].clamp(0, max_shape[1]), out[:, 3].clamp(0, max_shape[0])], dim=1)
        return out


# ----------------------------------------------------------------------------- anchors


class AnchorGenerator:
    """Anchors per level: ``scales x ratios`` boxes of side ``stride * scale`` centred on each cell corner
    (mmdetection 2.x, ``center_offset=0``); ratio = height / width."""

    def __init__(self, strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), scales=(8,)):
        self.strides, self.ratios, self.scales = tuple(strides), tuple(ratios), tuple(scales)

    @property
    def num_anchors(self) -> int:
        return len(self.ratios) * len(self.scales)

    def base_anchors(self, stride: int) -> torch.Tensor:
        h_ratios = torch.tensor(self.ratios, dtype=torch.float32).sqrt()
        w_ratios = 1 / h_ratios
        scales = torch.tensor(self.scales, dtype=torch.float32)
        ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
        return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)

    def grid_anchors(self, sizes: list[tuple[int, int]], device) -> list[torch.Tensor]:
        """One ``(H_l * W_l * A, 4)`` tensor per level, ordered (y, x, anchor)."""
        out = []
        for (h, w), stride in zip(sizes, self.strides):
            base = self.base_anchors(stride).to(device)
            ys, xs = torch.meshgrid(torch.arange(h, device=device) * stride, torch.arange(w, device=device) * stride,
                                    indexing="ij")
            shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).float()
            out.append((shifts + base[None]).reshape(-1, 4))
        return out


# ----------------------------------------------------------------------------- assigner and sampler


class MaxIoUAssigner:
    """Each box gets the ground truth it overlaps most: ``>= pos_iou`` positive (that gt's index),
    ``< neg_iou`` negative (-1), in between ignored (-2); then every gt claims the boxes it overlaps
    most if that IoU is ``>= min_pos_iou`` (mmdetection's ``match_low_quality``)."""

    def __init__(self, pos_iou: float, neg_iou: float, min_pos_iou: float):
        self.pos_iou, self.neg_iou, self.min_pos_iou = pos_iou, neg_iou, min_pos_iou

    def assign(self, boxes: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(assigned gt index per box: >= 0, -1 negative, -2 ignored; max IoU per box)."""
        assigned = torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device)
        if len(gt) == 0 or len(boxes) == 0:
            return assigned, boxes.new_zeros(len(boxes))
        iou = ops.box_iou(boxes, gt)  # (B, G)
        max_iou, argmax = iou.max(dim=1)
        assigned[(max_iou >= self.neg_iou) & (max_iou < self.pos_iou)] = -2
        pos = max_iou >= self.pos_iou
        assigned[pos] = argmax[pos]
        gt_max, _ = iou.max(dim=0)
        for g in range(len(gt)):
            if gt_max[g] >= self.min_pos_iou:
                assigned[iou[:, g] == gt_max[g]] = g
        return assigned, max_iou


class RandomSampler:
    """At most ``num * pos_fraction`` random positives, negatives filling up to ``num``."""

    def __init__(self, num: int, pos_fraction: float):
        self.num, self.pos_fraction = num, pos_fraction

    def sample(self, assigned: torch.Tensor, generator: torch.Generator | None = None):
        pos = torch.nonzero(assigned >= 0).flatten()
        neg = torch.nonzero(assigned == -1).flatten()
        n_pos = min(len(pos), int(self.num * self.pos_fraction))
        pos = pos[torch.randperm(len(pos), generator=generator, device="cpu")[:n_pos].to(pos.device)]
        n_neg = min(len(neg), self.num - n_pos)
        neg = neg[torch.randperm(len(neg), generator=generator, device="cpu")[:n_neg].to(neg.device)]
        return pos, neg


# ----------------------------------------------------------------------------- RPN


class RPNHead(nn.Module):
    """A shared 3x3 conv, then per anchor an objectness logit (sigmoid) and 4 box deltas."""

    def __init__(self, in_channels: int, feat_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for m in (self.conv, self.cls, self.reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]):
        """Per level ``(N, H*W*A)`` logits and ``(N, H*W*A, 4)`` deltas, ordered like the anchors."""
        logits, deltas = [], []
        for x in features:
            x = F.relu(self.conv(x))
            n = x.shape[0]
            logits.append(self.cls(x).permute(0, 2, 3, 1).reshape(n, -1))
            deltas.append(self.reg(x).permute(0, 2, 3, 1).reshape(n, -1, 4))
        return logits, deltas


# ----------------------------------------------------------------------------- RoI features and heads


class RoIExtractor(nn.Module):
    """RoIAlign from the level a box's scale maps to: ``floor(log2(sqrt(wh) / finest_scale))``, clamped
    (mmdetection's SingleRoIExtractor, finest scale 56)."""

    def __init__(self, out_size: int, strides, sampling_ratio: int = 2, finest_scale: int = 56):
        super().__init__()
        self.out_size, self.strides = out_size, tuple(strides)
        self.sampling_ratio, self.finest_scale = sampling_ratio, finest_scale

    def levels(self, rois: torch.Tensor) -> torch.Tensor:
        scale = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=0).sqrt()
        return torch.floor(torch.log2(scale / self.finest_scale + 1e-6)).clamp(0, len(self.strides) - 1).long()

    def forward(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """``rois``: ``(R, 5)`` = (image index, x0, y0, x1, y1) -> ``(R, C, out, out)``."""
        out = features[0].new_zeros(len(rois), features[0].shape[1], self.out_size, self.out_size)
        levels = self.levels(rois)
        for lvl, stride in enumerate(self.strides):
            idx = torch.nonzero(levels == lvl).flatten()
            pooled = ops.roi_align(features[lvl], rois[idx], self.out_size, 1.0 / stride, self.sampling_ratio,
                                   aligned=True)
            out = out.index_put((idx,), pooled)
        return out


class BoxHead(nn.Module):
    """Shared2FCBBoxHead: two FC layers, then class logits (``num_classes + 1``, background last) and
    class-agnostic box deltas."""

    def __init__(self, in_channels: int, roi_size: int, fc_channels: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * roi_size * roi_size, fc_channels)
        self.fc2 = nn.Linear(fc_channels, fc_channels)
        self.cls = nn.Linear(fc_channels, num_classes + 1)
        self.reg = nn.Linear(fc_channels, 4)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.reg.bias)

    def forward(self, x: torch.Tensor):
        x = F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))
        return self.cls(x), self.reg(x)


class MaskHead(nn.Module):
    """FCNMaskHead: ``num_convs`` 3x3 convs, a 2x deconvolution, one mask logit map per class."""

    def __init__(self, in_channels: int, conv_channels: int, num_classes: int, num_convs: int = 4):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, conv_channels, 3, padding=1), nn.ReLU(inplace=True)]
            c = conv_channels
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(conv_channels, conv_channels, 2, stride=2)
        self.logits = nn.Conv2d(conv_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(F.relu(self.upsample(self.convs(x))))


def mask_targets(rois: torch.Tensor, gt_boxes: torch.Tensor, gt_masks: torch.Tensor | None, size: int):
    """``(R, size, size)`` binary targets of each RoI's ground truth, resampled on the RoI's grid:
    the gt mask through RoIAlign, or (no masks) the gt box rasterised at the grid's cell centres."""
    if gt_masks is not None:
        index = torch.arange(len(rois), device=rois.device, dtype=rois.dtype)[:, None]
        sampled = ops.roi_align(gt_masks[:, None].float(), torch.cat([index, rois], 1), size, 1.0, 0, aligned=True)
        return (sampled[:, 0] >= 0.5).float()
    t = (torch.arange(size, device=rois.device, dtype=rois.dtype) + 0.5) / size
    xs = rois[:, 0:1] + t[None] * (rois[:, 2:3] - rois[:, 0:1])  # (R, size)
    ys = rois[:, 1:2] + t[None] * (rois[:, 3:4] - rois[:, 1:2])
    inside_x = (xs >= gt_boxes[:, 0:1]) & (xs <= gt_boxes[:, 2:3])
    inside_y = (ys >= gt_boxes[:, 1:2]) & (ys <= gt_boxes[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


# ----------------------------------------------------------------------------- the (cascade) RoI head


@dataclass
class Detections:
    """One image's detections: ``boxes (D, 4)`` xyxy pixels, ``scores (D,)``, ``labels (D,)`` and, with a
    mask head, ``masks (D, M, M)`` probabilities on each box's grid (paste with :func:`paste_masks`)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None


class CascadeRoIHead(nn.Module):
    """``len(stage_ious)`` box (and mask) heads; stage ``t`` is trained on the boxes stage ``t - 1`` refined,
    assigned at IoU ``stage_ious[t]``, and its loss weighted by ``stage_loss_weights[t]`` (Cai & Vasconcelos,
    "Cascade R-CNN", CVPR 2018). At test time the class scores of all stages are averaged and the boxes
    are the last stage's; mask probabilities are averaged over the stages' mask heads (mmdetection)."""

    def __init__(self, in_channels: int, strides, num_classes: int, stage_ious=(0.5, 0.6, 0.7),
                 stage_loss_weights=(1.0, 0.5, 0.25),
                 stage_stds=((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)),
                 fc_channels: int = 1024, roi_size: int = 7, with_mask: bool = True, mask_roi_size: int = 14,
                 mask_channels: int = 256, num_samples: int = 512, pos_fraction: float = 0.25,
                 score_thr: float = 0.05, nms_iou: float = 0.5, max_per_img: int = 100):
        super().__init__()
        if not len(stage_ious) == len(stage_loss_weights) == len(stage_stds):
            raise ValueError("stage_ious, stage_loss_weights and stage_stds need one entry per stage")
        self.num_classes = num_classes
        self.stage_ious, self.stage_loss_weights = tuple(stage_ious), tuple(stage_loss_weights)
        self.coders = [BoxCoder(stds=s) for s in stage_stds]
        self.assigners = [MaxIoUAssigner(iou, iou, iou) for iou in stage_ious]
        self.sampler = RandomSampler(num_samples, pos_fraction)
        self.box_roi = RoIExtractor(roi_size, strides)
        self.box_heads = nn.ModuleList(BoxHead(in_channels, roi_size, fc_channels, num_classes) for _ in stage_ious)
        self.with_mask = with_mask
        if with_mask:
            self.mask_roi = RoIExtractor(mask_roi_size, strides)
            self.mask_heads = nn.ModuleList(MaskHead(in_channels, mask_channels, num_classes) for _ in stage_ious)
        self.score_thr, self.nms_iou, self.max_per_img = score_thr, nms_iou, max_per_img

    @property
    def num_stages(self) -> int:
        return len(self.stage_ious)

    # ---- training
    def loss(self, features, proposals: list[torch.Tensor], batch: dict, generator=None) -> dict:
        gt_boxes, gt_labels = batch["boxes"], batch["labels"]
        gt_masks = batch.get("masks")
        losses = {}
        rois_per_image = [p.detach() for p in proposals]
        for t in range(self.num_stages):
            w = self.stage_loss_weights[t]
            samples = self.sample(t, rois_per_image, gt_boxes, generator)
            rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, (b, *_) in enumerate(samples)])
            cls_logits, deltas = self.box_heads[t](self.box_roi(features, rois))
            labels, targets, pos_mask = [], [], []
            for i, (boxes, assigned, _, n_pos) in enumerate(samples):
                lab = torch.full((len(boxes),), self.num_classes, dtype=torch.long, device=boxes.device)
                lab[:n_pos] = gt_labels[i][assigned[:n_pos]]
                labels.append(lab)
                tgt = boxes.new_zeros(len(boxes), 4)
                if n_pos:
                    tgt[:n_pos] = self.coders[t].encode(boxes[:n_pos], gt_boxes[i][assigned[:n_pos]])
                targets.append(tgt)
                pm = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
                pm[:n_pos] = True
                pos_mask.append(pm)
            labels, targets, pos_mask = torch.cat(labels), torch.cat(targets), torch.cat(pos_mask)
            n = max(len(labels), 1)
            losses[f"s{t}.loss_cls"] = w * F.cross_entropy(cls_logits, labels, reduction="sum") / n
            losses[f"s{t}.loss_bbox"] = w * F.smooth_l1_loss(deltas[pos_mask], targets[pos_mask], beta=1.0,
                                                             reduction="sum") / n
            losses[f"s{t}.acc"] = (cls_logits.argmax(1) == labels).float().mean().detach()
            if self.with_mask:
                losses[f"s{t}.loss_mask"] = w * self._mask_loss(t, features, samples, gt_boxes, gt_labels, gt_masks)
            if t + 1 < self.num_stages:  # refine the sampled non-gt boxes for the next stage
                refined = self.coders[t].decode(rois[:, 1:], deltas.detach(), batch["inputs"].shape[-2:])
                rois_per_image = []
                start = 0
                for boxes, _, is_gt, _ in samples:
                    part = refined[start:start + len(boxes)]
                    rois_per_image.append(part[~is_gt])
                    start += len(boxes)
        return losses

    def sample(self, t: int, rois_per_image: list[torch.Tensor], gt_boxes: list[torch.Tensor], generator=None):
        """Stage ``t``'s training RoIs per image: the gt boxes prepended (``add_gt_as_proposals``), assigned at
        IoU ``stage_ious[t]``, randomly sampled. Per image ``(boxes, assigned gt or -1, is_gt, n_pos)`` with the
        ``n_pos`` positives first."""
        samples = []
        for boxes, gt in zip(rois_per_image, gt_boxes):
            boxes = torch.cat([gt, boxes])
            is_gt = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
            is_gt[: len(gt)] = True
            assigned, _ = self.assigners[t].assign(boxes, gt)
            pos, neg = self.sampler.sample(assigned, generator)
            keep = torch.cat([pos, neg])
            samples.append((boxes[keep], assigned[keep].clamp(min=-1), is_gt[keep], len(pos)))
        return samples

    def _mask_loss(self, t, features, samples, gt_boxes, gt_labels, gt_masks):
        rois, targets, labels = [], [], []
        for i, (boxes, assigned, _, n_pos) in enumerate(samples):
            pos_boxes, idx = boxes[:n_pos], assigned[:n_pos]
            rois.append(torch.cat([torch.full_like(pos_boxes[:, :1], i), pos_boxes], 1))
            m = gt_masks[i][idx] if gt_masks is not None else None
            targets.append(mask_targets(pos_boxes, gt_boxes[i][idx], m, 2 * self.mask_roi.out_size))
            labels.append(gt_labels[i][idx])
        rois, targets, labels = torch.cat(rois), torch.cat(targets), torch.cat(labels)
        logits = self.mask_heads[t](self.mask_roi(features, rois))
        if len(rois) == 0:
            return logits.sum() * 0.0
        logits = logits[torch.arange(len(rois), device=rois.device), labels]
        return F.binary_cross_entropy_with_logits(logits, targets)

    # ---- inference
    @torch.no_grad()
    def detect(self, features, proposals: list[torch.Tensor], image_shape) -> list[Detections]:
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], 1) for i, p in enumerate(proposals)])
        scores = []
        for t in range(self.num_stages):
            cls_logits, deltas = self.box_heads[t](self.box_roi(features, rois))
            scores.append(F.softmax(cls_logits, dim=1))
            boxes = self.coders[t].decode(rois[:, 1:], deltas, image_shape)
            if t + 1 < self.num_stages:
                rois = torch.cat([rois[:, :1], boxes], 1)
        score = torch.stack(scores).mean(0)[:, : self.num_classes]
        out = []
        for i in range(len(proposals)):
            sel = rois[:, 0] == i
            out.append(self._nms(boxes[sel], score[sel]))
        if self.with_mask:
            self._add_masks(features, out)
        return out

    def _nms(self, boxes: torch.Tensor, scores: torch.Tensor) -> Detections:
        """mmdetection's multiclass NMS: every (box, class) over ``score_thr``, NMS per class, top ``max_per_img``."""
        cand, cls = torch.nonzero(scores > self.score_thr, as_tuple=True)
        b, s = boxes[cand], scores[cand, cls]
        keep = ops.batched_nms(b, s, cls, self.nms_iou)[: self.max_per_img]
        return Detections(b[keep], s[keep], cls[keep])

    def _add_masks(self, features, detections: list[Detections]) -> None:
        rois = torch.cat([torch.cat([torch.full_like(d.boxes[:, :1], i), d.boxes], 1)
                          for i, d in enumerate(detections)])
        feats = self.mask_roi(features, rois)
        labels = torch.cat([d.labels for d in detections])
        index = torch.arange(len(rois), device=rois.device)
        probs = torch.stack([head(feats)[index, labels].sigmoid() for head in self.mask_heads]).mean(0)
        start = 0
        for d in detections:
            d.masks = probs[start:start + len(d.boxes)]
            start += len(d.boxes)


def paste_masks(detections: Detections, height: int, width: int, threshold: float = 0.5) -> torch.Tensor:
    """``(D, H, W)`` boolean image masks from the per-box mask probabilities."""
    out = torch.zeros(len(detections.boxes), height, width, dtype=torch.bool)
    for k, (box, m) in enumerate(zip(detections.boxes.round().long().tolist(), detections.masks)):
        x0, y0 = max(box[0], 0), max(box[1], 0)
        x1, y1 = min(max(box[2], x0 + 1), width), min(max(box[3], y0 + 1), height)
        if x1 <= x0 or y1 <= y0:
            continue
        resized = F.interpolate(m[None, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
        out[k, y0:y1, x0:x1] = resized[0, 0] >= threshold
    return out


# ----------------------------------------------------------------------------- the detector


class TwoStageDetector(nn.Module):
    """backbone -> neck (a list of levels) -> RPN proposals -> (cascade) RoI head.

    ``rpn``: anchors (``anchor_scales``, ``anchor_ratios`` on the neck's strides), IoU 0.7/0.3 assignment,
    256 samples at half positives, objectness BCE + smooth-L1 (beta 1/9); proposals: ``nms_pre`` per level,
    NMS 0.7 per level (``nms_across_levels=False``), ``max_proposals`` kept.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, roi_head: CascadeRoIHead, *, anchor_scales=(8,),
                 anchor_ratios=(0.5, 1.0, 2.0), rpn_channels: int = 256, rpn_num_samples: int = 256,
                 rpn_pos_fraction: float = 0.5, train_proposals: int = 2000, test_proposals: int = 1000,
                 rpn_nms_iou: float = 0.7, pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375),
                 size_divisor: int = 32, sampling_seed: int | None = None):
        super().__init__()
        self.backbone, self.neck, self.roi_head = backbone, neck, roi_head
        strides = [f.reduction for f in neck.feature_info]
        self.anchors = AnchorGenerator(strides, anchor_ratios, anchor_scales)
        self.rpn_head = RPNHead(neck.feature_info[0].channels, rpn_channels, self.anchors.num_anchors)
        self.rpn_coder = BoxCoder()
        self.rpn_assigner = MaxIoUAssigner(0.7, 0.3, 0.3)
        self.rpn_sampler = RandomSampler(rpn_num_samples, rpn_pos_fraction)
        self.train_proposals, self.test_proposals, self.rpn_nms_iou = train_proposals, test_proposals, rpn_nms_iou
        self.size_divisor = size_divisor
        self.sampling_seed = sampling_seed
        with torch.device("cpu"):  # constants: computed on the CPU even when built on the meta device
            self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1) / 255.0, persistent=False)
            self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1) / 255.0, persistent=False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        d = self.size_divisor
        x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d))
        return self.neck(self.backbone(x))

    def proposals(self, logits, deltas, anchors, image_shape, top_n: int) -> list[torch.Tensor]:
        out = []
        nms_pre = top_n
        for i in range(logits[0].shape[0]):
            boxes, scores, levels = [], [], []
            for lvl, (lg, dl, an) in enumerate(zip(logits, deltas, anchors)):
                s = lg[i].detach().sigmoid()
                k = min(nms_pre, len(s))
                s, idx = s.topk(k)
                boxes.append(self.rpn_coder.decode(an[idx], dl[i, idx].detach(), image_shape))
                scores.append(s)
                levels.append(torch.full_like(s, lvl, dtype=torch.long))
            boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            valid = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
            keep = ops.batched_nms(boxes, scores, levels, self.rpn_nms_iou)[:top_n]
            out.append(boxes[keep])
        return out

    def rpn_loss(self, logits, deltas, anchors, batch, generator) -> dict:
        all_anchors = torch.cat(anchors)
        logits, deltas = torch.cat(logits, 1), torch.cat(deltas, 1)
        cls_terms, box_terms, count = [], [], 0
        for i, gt in enumerate(batch["boxes"]):
            assigned, _ = self.rpn_assigner.assign(all_anchors, gt)
            pos, neg = self.rpn_sampler.sample(assigned, generator)
            target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(logits)
            cls_terms.append(F.binary_cross_entropy_with_logits(logits[i, torch.cat([pos, neg])], target,
                                                                reduction="sum"))
            if len(pos):
                enc = self.rpn_coder.encode(all_anchors[pos], gt[assigned[pos]])
                box_terms.append(F.smooth_l1_loss(deltas[i, pos], enc, beta=1.0 / 9, reduction="sum"))
            count += len(pos) + len(neg)
        count = max(count, 1)
        box = sum(box_terms) if box_terms else deltas.sum() * 0.0
        return {"rpn.loss_cls": sum(cls_terms) / count, "rpn.loss_bbox": box / count}

    def forward(self, batch: dict):
        images = batch["inputs"]
        features = self.features(images)
        image_shape = tuple(images.shape[-2:])
        logits, deltas = self.rpn_head(features)
        anchors = self.anchors.grid_anchors([f.shape[-2:] for f in features], images.device)
        if self.training:
            generator = None
            if self.sampling_seed is not None:
                generator = torch.Generator().manual_seed(self.sampling_seed)
            losses = self.rpn_loss(logits, deltas, anchors, batch, generator)
            proposals = self.proposals(logits, deltas, anchors, image_shape, self.train_proposals)
            losses.update(self.roi_head.loss(features[: len(self.roi_head.box_roi.strides)], proposals, batch,
                                             generator))
            return losses
        proposals = self.proposals(logits, deltas, anchors, image_shape, self.test_proposals)
        detections = self.roi_head.detect(features[: len(self.roi_head.box_roi.strides)], proposals, image_shape)
        out = {"boxes": [d.boxes for d in detections], "scores": [d.scores for d in detections],
               "labels": [d.labels for d in detections]}
        if self.roi_head.with_mask:
            out["masks"] = [d.masks for d in detections]
        return out


# ----------------------------------------------------------------------------- the registered model

_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))


class RCNN(Model):
    """Faster / Mask / Cascade (Mask) R-CNN on HRNetV2p + HRFPN, configured like mmdetection's configs.

    One stage (``stage_ious=(0.5,)``) is Faster R-CNN (``with_mask=False``) or Mask R-CNN; three stages
    (IoU 0.5/0.6/0.7, loss weights 1/0.5/0.25, target stds 0.1/0.2, 0.05/0.1, 0.033/0.067) is Cascade
    (Mask) R-CNN. ``forward`` returns the losses in train mode and the detections in eval mode.
    """

    metadata_inputs = ("num_classes",)

    def __init__(self, num_classes: Annotated[int, Ge(1)] = 80, backbone: Literal[HRNET_VARIANTS] = "hrnet_w32",
                 neck_channels: Annotated[int, Ge(1)] = 256, fc_channels: Annotated[int, Ge(1)] = 1024,
                 mask_channels: Annotated[int, Ge(1)] = 256, with_mask: bool = True,
                 stage_ious: tuple[float, ...] = (0.5, 0.6, 0.7),
                 stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25),
                 stage_stds: tuple[tuple[float, float, float, float], ...] = _STDS,
                 anchor_scales: tuple[float, ...] = (8,), anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                 rpn_num_samples: Annotated[int, Ge(1)] = 256, rcnn_num_samples: Annotated[int, Ge(1)] = 512,
                 train_proposals: Annotated[int, Ge(1)] = 2000, test_proposals: Annotated[int, Ge(1)] = 1000,
                 score_thr: Annotated[float, Interval(ge=0, le=1)] = 0.05,
                 max_per_img: Annotated[int, Ge(1)] = 100, init_from: str | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for name, values in (("stage_ious", stage_ious), ("stage_loss_weights", stage_loss_weights)):
            if not values:
                raise ValueError(f"{name} needs at least one stage")
        if not all(0 < v < 1 for v in stage_ious):
            raise ValueError(f"stage_ious must lie in (0, 1), got {tuple(stage_ious)}")
        stage_stds = tuple(tuple(s) for s in stage_stds)[: len(stage_ious)]
        self.num_classes = num_classes
        body = HRNetV2p(backbone)
        neck = HRFPN(body.feature_info, neck_channels, 5)
        roi = CascadeRoIHead(neck_channels, [f.reduction for f in neck.feature_info[:4]], num_classes,
                             tuple(stage_ious), tuple(stage_loss_weights), stage_stds, fc_channels=fc_channels,
                             with_mask=with_mask, mask_channels=mask_channels, num_samples=rcnn_num_samples,
                             score_thr=score_thr, max_per_img=max_per_img)
        self.detector = TwoStageDetector(body, neck, roi, anchor_scales=tuple(anchor_scales),
                                         anchor_ratios=tuple(anchor_ratios), rpn_channels=neck_channels,
                                         rpn_num_samples=rpn_num_samples, train_proposals=train_proposals,
                                         test_proposals=test_proposals)
        if init_from:
            self.skipped_at_init = self.init_from(init_from)

    def init_from(self, path: str) -> list[str]:
        """Transfer learning: load a checkpoint's weights (an engine checkpoint or a bare state_dict) except
        the entries whose shape differs here (the class-specific logits when the classes change, as
        mmdetection's ``load_from``); returns the names skipped. A missing or unreadable file is a
        one-line CheckpointError."""
        from panconv.errors import CheckpointError

        if next(self.parameters()).is_meta:  # a dry build (config validation): only check that the file is there
            if not os.path.isfile(path):
                raise CheckpointError(f"{path}: the init_from checkpoint does not exist")
            return []
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: cannot load the init_from checkpoint ({first})") from None
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: not a checkpoint or state_dict")
        state = {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}
        own = self.state_dict()
        usable = {k: v for k, v in state.items()
                  if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
        if not usable:
            raise CheckpointError(f"{path}: no entry fits this model (is it a checkpoint of a documents detector?)")
        self.load_state_dict(usable, strict=False)
        return sorted(set(own) - set(usable))

    def forward(self, batch: dict):
        return self.detector(batch)

    def loss(self, outputs: dict, batch: dict) -> dict:
        if not any("loss" in k for k in outputs):
            raise ValueError("RCNN.loss expects the train-mode forward output (the losses); call model.train()")
        return outputs

    def predict(self, outputs: dict, batch: dict | None = None) -> list[Detections]:
        n = len(outputs["boxes"])
        masks = outputs.get("masks", [None] * n)
        return [Detections(outputs["boxes"][i], outputs["scores"][i], outputs["labels"][i], masks[i])
                for i in range(n)]

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "backbone": "hrnet_w18_small", "neck_channels": 16, "fc_channels": 32,
                "mask_channels": 16, "rpn_num_samples": 4096, "rcnn_num_samples": 64, "train_proposals": 64,
                "test_proposals": 32}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0], [10.0, 36.0, 60.0, 60.0]]) for _ in range(batch_size)]
        labels = [torch.tensor([i % self.num_classes, (i + 1) % self.num_classes]) for i in range(batch_size)]
        return {"inputs": torch.rand(batch_size, 3, 64, 64, generator=g), "boxes": boxes, "labels": labels}
