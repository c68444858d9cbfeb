"""RelationNet++ / BVR (Chi et al., "RelationNet++: Bridging Visual Representations for Object Detection via
Transformer Decoder", NeurIPS 2020) on the toolkit's one-stage detector (RetinaNet).

A RetinaNet head (four 3x3 convs per branch, focal loss, anchors of ``4 * 2^(i/3)`` strides x 3 ratios on
the pyramid's strides 8-64) whose *main* representation, the feature at every anchor position, attends to
*auxiliary* point representations:

* a point head on the stride-8 level predicts class-agnostic heatmaps of object centres and of top-left /
  bottom-right corners (penalty-reduced focal loss on Gaussian targets, as CenterNet) and their sub-pixel
  offsets (L1);
* key sampling: the ``num_keys`` highest-scoring positions of each heatmap per image are the keys (their
  point-head features and their refined positions);
* the BVR attention (a transformer-decoder-style block): per head, logit = appearance term
  ``(W_q f_q) . (W_k f_k) / sqrt(d)`` + geometry term ``MLP(cos/sin embedding of (p_k - p_q) / stride_q)``;
  the geometry MLP is *shared* across pyramid levels (the shared location embedding); softmax over keys,
  the values ``W_v f_k`` summed, projected and added to the query feature;
* the classification branch attends to the centre keys, the regression branch to the corner keys.

``bvr=False`` gives the plain RetinaNet of the same size (the with/without comparison).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn
from torchvision import ops

from panconv.api import Model

from .detection import AnchorGenerator, BoxCoder, Detections, MaxIoUAssigner
from .layers import HRFPN, HRNET_VARIANTS, HRNetV2p


def _conv_stack(channels: int, n: int) -> nn.Sequential:
    layers = []
    for _ in range(n):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(min(32, channels // 4 or 1), channels),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class PointHead(nn.Module):
    """Heatmap logits of centres, top-left and bottom-right corners (3 channels) and their offsets (6)."""

    def __init__(self, channels: int):
        super().__init__()
        self.tower = _conv_stack(channels, 2)
        self.heat = nn.Conv2d(channels, 3, 1)
        self.offset = nn.Conv2d(channels, 6, 1)
        nn.init.constant_(self.heat.bias, -4.6)  # prior probability 0.01

    def forward(self, x):
        f = self.tower(x)
        return f, self.heat(f), self.offset(f)


def point_targets(boxes: list[torch.Tensor], shape, stride: int, sigma: float = 1.0):
    """Gaussian heatmaps (N, 3, H, W) of centres / top-left / bottom-right corners, their integer cells and
    sub-pixel offsets per image."""
    n, (h, w) = len(boxes), shape
    device = boxes[0].device if boxes else "cpu"
    heat = torch.zeros(n, 3, h, w, device=device)
    ys, xs = torch.arange(h, device=device).float(), torch.arange(w, device=device).float()
    cells = []
    for i, b in enumerate(boxes):
        b = b.detach()
        pts = torch.stack([(b[:, :2] + b[:, 2:]) / 2, b[:, :2], b[:, 2:]], 0) / stride  # (3, K, 2)
        pts = pts.clamp(min=0)
        pts[..., 0] = pts[..., 0].clamp(max=w - 1e-3)
        pts[..., 1] = pts[..., 1].clamp(max=h - 1e-3)
        cell = pts.floor()
        for t in range(3):
            for (cx, cy) in cell[t].tolist():
                g = torch.exp(-((ys[:, None] - cy) ** 2 + (xs[None] - cx) ** 2) / (2 * sigma**2))
                heat[i, t] = torch.maximum(heat[i, t], g)
        cells.append((cell.long(), pts - cell))
    return heat, cells


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0):
    """CenterNet's penalty-reduced focal loss, normalised by the number of peaks."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -(1 - p) ** alpha * torch.log(p) * pos
    neg_loss = -(1 - target) ** beta * p**alpha * torch.log(1 - p) * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def position_embedding(delta: torch.Tensor, dim: int, wave: float = 1000.0) -> torch.Tensor:
    """cos/sin embedding of 2-D relative positions (..., 2) -> (..., dim)."""
    freqs = wave ** (-torch.arange(dim // 4, device=delta.device, dtype=delta.dtype) / (dim // 4))
    angles = delta[..., None] * freqs * 100.0  # (..., 2, dim/4)
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)


class BVRAttention(nn.Module):
    """Queries (B, Q, C) at positions (B, Q, 2) attend to keys (B, K, C) at positions (B, K, 2): appearance
    + geometry logits per head; ``geometry`` is the shared location-embedding MLP (passed in, shared)."""

    def __init__(self, channels: int, heads: int, geometry: nn.Module):
        super().__init__()
        self.heads, self.dim = heads, channels // heads
        self.q, self.k, self.v = (nn.Linear(channels, channels) for _ in range(3))
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts as the identity: the plain detector
        self.geometry = geometry

    def forward(self, query, q_pos, q_scale, key, k_pos):
        b, nq, c = query.shape
        nk = key.shape[1]
        q = self.q(query).view(b, nq, self.heads, self.dim).transpose(1, 2)
        k = self.k(key).view(b, nk, self.heads, self.dim).transpose(1, 2)
        v = self.v(key).view(b, nk, self.heads, self.dim).transpose(1, 2)
        appearance = q @ k.transpose(-1, -2) / math.sqrt(self.dim)  # (B, h, Q, K)
        delta = (k_pos[:, None] - q_pos[:, :, None]) / q_scale[None, :, None, None]  # (B, Q, K, 2)
        geometry = self.geometry(delta).permute(0, 3, 1, 2)  # (B, h, Q, K)
        attn = torch.softmax(appearance + geometry, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, nq, c)
        return query + self.out(out)


def sample_keys(feat, heat, offset, stride: int, num_keys: int):
    """Key sampling: the top-``num_keys`` positions of each of the three heatmaps (centre, top-left,
    bottom-right): their features (N, K, C) and refined positions (N, K, 2) in pixels."""
    n, c, h, w = feat.shape
    k = min(num_keys, h * w)
    flat = feat.flatten(2).transpose(1, 2)  # (N, HW, C)
    out = []
    for t in range(3):
        idx = heat[:, t].flatten(1).detach().topk(k, dim=1).indices  # (N, k)
        ys, xs = (idx // w).float(), (idx % w).float()
        off = offset[:, 2 * t:2 * t + 2].flatten(2).transpose(1, 2)  # (N, HW, 2)
        o = torch.gather(off, 1, idx[..., None].expand(-1, -1, 2))
        pos = (torch.stack([xs, ys], -1) + o) * stride
        out.append((torch.gather(flat, 1, idx[..., None].expand(-1, -1, c)), pos))
    return out  # centre, top-left, bottom-right


def attend(attention, feats: list[torch.Tensor], strides, keys):
    """Every position of every level (a query at the cell centre ``(x + 0.5) * stride``, the FCOS location and
    the anchors' centre) attends to ``keys = (features, positions)``; returns the updated maps."""
    out = []
    for f, stride in zip(feats, strides):
        n, c, h, w = f.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=f.device), torch.arange(w, device=f.device), indexing="ij")
        pos = (torch.stack([xs, ys], -1).reshape(1, -1, 2).float() + 0.5) * stride
        scale = torch.full((1,), float(stride), device=f.device)
        q = f.flatten(2).transpose(1, 2)
        y = attention(q, pos.expand(n, -1, -1), scale, keys[0], keys[1])
        out.append(torch.empty_like(f).copy_(y.transpose(1, 2).reshape(n, c, h, w)))  # f's layout: same kernels
    return out


def point_losses(heat, offset, boxes: list[torch.Tensor], stride: int) -> dict:
    """The point head's losses: heatmap focal loss on Gaussian targets and the L1 loss of the sub-pixel offsets
    at the true cells."""
    target, cells = point_targets(boxes, heat.shape[-2:], stride)
    off_terms = []
    for i, (cell, frac) in enumerate(cells):
        for t in range(3):
            pred = offset[i, 2 * t:2 * t + 2, cell[t, :, 1], cell[t, :, 0]].T
            off_terms.append(F.l1_loss(pred, frac[t], reduction="sum"))
    return {"loss_points": heatmap_focal_loss(heat, target),
            "loss_offset": sum(off_terms) / max(sum(len(c[0][0]) for c in cells) * 3, 1)}


def make_geometry(heads: int, embed_dim: int) -> _Geometry:
    """The shared location embedding module (cos/sin embedding -> MLP -> one logit per head)."""
    mlp = nn.Sequential(nn.Linear(2 * (embed_dim // 4) * 2, embed_dim), nn.ReLU(inplace=True),
                        nn.Linear(embed_dim, heads))
    return _Geometry(mlp, embed_dim)


class OneStageBVRModel(Model):
    """What the one-stage detectors with BVR (RetinaNet, FCOS) share as models: the conformance kit's tiny
    configuration and a seeded batch of 64 x 64 images with two boxes each."""

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "backbone": "hrnet_w18_small", "channels": 16, "heads": 2, "num_keys": 8,
                "embed_dim": 8}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0], [10.0, 36.0, 60.0, 60.0]]) for _ in range(batch_size)]
        labels = [torch.tensor([i % self.num_classes, (i + 1) % self.num_classes]) for i in range(batch_size)]
        return {"inputs": torch.rand(batch_size, 3, 64, 64, generator=g), "boxes": boxes, "labels": labels}


class RetinaNetBVR(OneStageBVRModel):
    """RetinaNet on HRNet + HRFPN (strides 8-64), with or without BVR."""

    metadata_inputs = ("num_classes",)

    def __init__(self, num_classes: Annotated[int, Ge(1)] = 80, backbone: Literal[HRNET_VARIANTS] = "hrnet_w32",
                 channels: Annotated[int, Ge(8)] = 256, bvr: bool = True, num_keys: Annotated[int, Ge(1)] = 50,
                 heads: Annotated[int, Ge(1)] = 8, embed_dim: Annotated[int, Ge(4)] = 64,
                 score_thr: float = 0.05, max_per_img: Annotated[int, Ge(1)] = 100):
        super().__init__()
        if num_classes < 1 or channels % heads:
            raise ValueError(f"num_classes must be >= 1 and channels ({channels}) divisible by heads ({heads})")
        self.num_classes, self.bvr, self.num_keys = num_classes, bvr, num_keys
        self.backbone = HRNetV2p(backbone)
        self.neck = HRFPN(self.backbone.feature_info, channels, 5, first_level=1)
        self.strides = [f.reduction for f in self.neck.feature_info]  # 8, 16, 32, 64
        self.anchors = AnchorGenerator(self.strides, (0.5, 1.0, 2.0), tuple(4 * 2 ** (i / 3) for i in range(3)))
        a = self.anchors.num_anchors
        self.cls_tower, self.reg_tower = _conv_stack(channels, 4), _conv_stack(channels, 4)
        self.cls_out = nn.Conv2d(channels, a * num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(channels, a * 4, 3, padding=1)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log(99))
        nn.init.normal_(self.reg_out.weight, std=0.01)
        nn.init.zeros_(self.reg_out.bias)
        self.coder = BoxCoder()
        self.assigner = MaxIoUAssigner(0.5, 0.4, 0.0)
        self.score_thr, self.max_per_img = score_thr, max_per_img
        if bvr:
            self.points = PointHead(channels)
            self.embed_dim = embed_dim
            self.geometry = make_geometry(heads, embed_dim)
            self.cls_attention = BVRAttention(channels, heads, self.geometry)
            self.reg_attention = BVRAttention(channels, heads, self.geometry)

    # ---- forward
    def _keys(self, feat, heat, offset, stride):
        return sample_keys(feat, heat, offset, stride, self.num_keys)

    def forward(self, batch: dict):
        images = batch["inputs"]
        feats, cls_feats, reg_feats, out = towers_with_bvr(self, images, multiple=64)
        n = images.shape[0]
        out["cls"] = torch.cat([self.cls_out(f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes)
                                for f in cls_feats], 1)
        out["reg"] = torch.cat([self.reg_out(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for f in reg_feats], 1)
        out["anchors"] = torch.cat(self.anchors.grid_anchors([f.shape[-2:] for f in feats], images.device))
        out["image_shape"] = torch.tensor(images.shape[-2:])
        return out

    # ---- loss
    def loss(self, outputs: dict, batch: dict) -> dict:
        anchors = outputs["anchors"]
        cls_terms, reg_terms, n_pos = [], [], 0
        for i, (gt, labels) in enumerate(zip(batch["boxes"], batch["labels"])):
            assigned, _ = self.assigner.assign(anchors, gt)
            target = torch.zeros_like(outputs["cls"][i])
            pos = assigned >= 0
            target[pos, labels[assigned[pos]]] = 1.0
            valid = assigned != -2
            cls_terms.append(ops.sigmoid_focal_loss(outputs["cls"][i][valid], target[valid], 0.25, 2.0,
                                                    reduction="sum"))
            if pos.any():
                enc = self.coder.encode(anchors[pos], gt[assigned[pos]])
                reg_terms.append(F.l1_loss(outputs["reg"][i][pos], enc, reduction="sum"))
            n_pos += int(pos.sum())
        norm = max(n_pos, 1)
        losses = {"loss_cls": sum(cls_terms) / norm,
                  "loss_bbox": (sum(reg_terms) if reg_terms else outputs["reg"].sum() * 0) / norm}
        if self.bvr:
            losses.update(point_losses(outputs["heat"], outputs["offset"], batch["boxes"], self.strides[0]))
        return losses

    # ---- predict
    @torch.no_grad()
    def predict(self, outputs: dict, batch: dict | None = None) -> list[Detections]:
        shape = tuple(outputs["image_shape"].tolist())
        out = []
        for cls, reg in zip(outputs["cls"], outputs["reg"]):
            scores = cls.sigmoid()
            top = scores.flatten().topk(min(1000, scores.numel())).indices
            anchor_idx, labels = top // self.num_classes, top % self.num_classes
            s = scores.flatten()[top]
            keep = s > self.score_thr
            anchor_idx, labels, s = anchor_idx[keep], labels[keep], s[keep]
            boxes = self.coder.decode(outputs["anchors"][anchor_idx], reg[anchor_idx], shape)
            k = ops.batched_nms(boxes, s, labels, 0.5)[: self.max_per_img]
            out.append(Detections(boxes[k], s[k], labels[k]))
        return out


def towers_with_bvr(model, images: torch.Tensor, multiple: int):
    """The shared front of the one-stage detectors with BVR: images normalised (ImageNet statistics) and padded to
    ``multiple``, the pyramid, the classification and regression towers on every level, and with ``model.bvr`` the
    classification tower attending to the centre keys and the regression tower to the corner keys, all sampled
    from the point head on the first level. Returns ``(feats, cls_feats, reg_feats, out)``; ``out`` holds the point
    head's ``heat`` / ``offset`` maps (for its loss) when BVR is on."""
    x = (images - images.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
        images.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.pad(x, (0, (-x.shape[-1]) % multiple, 0, (-x.shape[-2]) % multiple))
    feats = model.neck(model.backbone(x))
    cls_feats = [model.cls_tower(f) for f in feats]
    reg_feats = [model.reg_tower(f) for f in feats]
    out = {}
    if model.bvr:
        pf, heat, offset = model.points(feats[0])
        centre, tl, br = sample_keys(pf, heat, offset, model.strides[0], model.num_keys)
        cls_feats = attend(model.cls_attention, cls_feats, model.strides, centre)
        corners = (torch.cat([tl[0], br[0]], 1), torch.cat([tl[1], br[1]], 1))
        reg_feats = attend(model.reg_attention, reg_feats, model.strides, corners)
        out.update(heat=heat, offset=offset)
    return feats, cls_feats, reg_feats, out




class _Geometry(nn.Module):
    """The shared location embedding: relative position -> cos/sin embedding -> MLP -> a logit per head."""

    def __init__(self, mlp: nn.Module, dim: int):
        super().__init__()
        self.mlp, self.dim = mlp, dim

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        return self.mlp(position_embedding(delta, self.dim))
