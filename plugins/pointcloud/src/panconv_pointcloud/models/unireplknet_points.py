"""UniRepLKNet's point-cloud pathway: points -> a 2-D embedding map -> panconv-vision's UniRepLKNet.

UniRepLKNet (Ding et al., CVPR 2024; journal version "Scaling Up Your Kernels") feeds non-image
modalities to the *same* large-kernel ConvNet by turning each sample into a C x H x W embedding map.
For point clouds the official code (its ``Point/`` directory) follows P2P's point-to-pixel
projection (Wang et al., NeurIPS 2022): :class:`UniRepLKNetP2P` implements that code's maths (views,
kNN edge-conv encoder, 3 x 3 footprint scatter, multi-view attention fusion, ImageNet-normalised image;
parity with the official modules in tests/test_unireplknet_p2p.py), with padding masks and per-point outputs.

:class:`UniRepLKNetPoints` is a simpler top-view form of that idea, not a port of that code: every
point is encoded by a shared MLP of its features and its height, the encodings are max-pooled into
the pixel of an ``map_size x map_size`` top view of ``[-extent, extent]^2`` (empty pixels zero), and
the map goes through ``panconv_vision``'s UniRepLKNet (dilated re-param blocks, SE, GRN FFN). For
per-point tasks each point reads every stage's map at its own position (bilinear) and concatenates
them with its encoding: output ``(B, C_point + sum(dims), N)``.

The other modalities of that section (audio spectrograms, time-series embeddings, video frames to
channels) belong to the audio, sequence and vision plugins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Backbone, FeatureInfo

from .layers import example_point_batch, flatten_points, scatter_max, unflatten_points


class UniRepLKNetPoints(Backbone):
    """``{"points": (B, N, C), "mask": (B, N)}`` -> ``[(B, point_channels + sum(dims), N)]`` (module docstring).

    Args:
        in_channels: per-point channels (``x, y, z`` first).
        map_size: pixels per side of the top-view map; ``extent``: half-width in metres it covers.
        z_scale: metres per unit of the height feature.
        point_channels: width of the per-point encoder (the map's channels).
        depths, dims, kernel_sizes: the UniRepLKNet (panconv-vision's ``vision.UniRepLKNet``).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(3)] = 3, map_size: Annotated[int, Ge(8)] = 64,
                 extent: Annotated[float, Gt(0)] = 9.6, z_scale: Annotated[float, Gt(0)] = 10.0,
                 point_channels: Annotated[int, Ge(4)] = 32,
                 depths: Sequence[Annotated[int, Ge(0)]] = (1, 1, 2, 1),
                 dims: Sequence[Annotated[int, Ge(4)]] = (32, 64, 96, 128),
                 kernel_sizes: Sequence[Sequence[int]] | None = ((5,), (7,), (13, 13), (3,))):
        super().__init__()
        from panconv_vision.models.unireplknet import UniRepLKNet

        if map_size % (4 * 2 ** (len(depths) - 1)):
            raise ValueError(f"UniRepLKNetPoints: map_size {map_size} must be a multiple of the last stage's stride "
                             f"{4 * 2 ** (len(depths) - 1)}")
        self.map_size, self.extent, self.z_scale = map_size, float(extent), float(z_scale)
        self.encoder = nn.Sequential(nn.Linear(in_channels + 1, point_channels), nn.LayerNorm(point_channels),
                                     nn.GELU(), nn.Linear(point_channels, point_channels))
        kernels = None if kernel_sizes is None else tuple(tuple(k) for k in kernel_sizes)
        self.backbone = UniRepLKNet(depths=tuple(depths), dims=tuple(dims), in_channels=point_channels,
                                    kernel_sizes=kernels)
        self.feature_info = [FeatureInfo(point_channels + sum(self.backbone.out_channels), 1, "points")]

    def project(self, flat: torch.Tensor, batch_idx: torch.Tensor, batch_size: int):
        """Per-point encodings, the top-view map ``(B, C, S, S)`` and each point's position in ``[-1, 1]^2``."""
        xy = flat[:, :2] / self.extent  # [-1, 1] inside the map
        enc = self.encoder(torch.cat([flat, flat[:, 2:3] / self.z_scale], dim=1))
        pix = ((xy + 1) / 2 * self.map_size).floor().long().clamp(0, self.map_size - 1)
        cell = (batch_idx * self.map_size + pix[:, 1]) * self.map_size + pix[:, 0]
        grid = scatter_max(enc, cell, batch_size * self.map_size ** 2)
        grid = grid.view(batch_size, self.map_size, self.map_size, -1).permute(0, 3, 1, 2)
        return enc, grid, xy.clamp(-1, 1)

    def forward(self, inputs: dict) -> list[torch.Tensor]:
        points, mask = inputs["points"], inputs.get("mask")
        batch_size, length = points.shape[:2]
        flat, batch_idx = flatten_points(points, mask)
        enc, grid, xy = self.project(flat, batch_idx, batch_size)
        per_point = [enc]
        for stage in self.backbone(grid):
            # each sample's points read its own map: one grid_sample with the points as a (B, 1, N) "image"
            padded = unflatten_points(xy, mask, (batch_size, length))
            sampled = F.grid_sample(stage, padded[:, None], mode="bilinear", align_corners=False)  # (B, C, 1, N)
            per_point.append(sampled[:, :, 0].transpose(1, 2)[mask] if mask is not None
                             else sampled[:, :, 0].transpose(1, 2).reshape(-1, stage.shape[1]))
        out = unflatten_points(torch.cat(per_point, dim=1), mask, (batch_size, length))
        return [out.transpose(1, 2)]

    @classmethod
    def example_config(cls) -> dict:
        return dict(in_channels=4, map_size=32, extent=6.0, point_channels=8, depths=[1, 1, 1, 1],
                    dims=[8, 16, 16, 16], kernel_sizes=[[3], [7], [5], [3]])

    def example_inputs(self, batch_size: int = 2) -> dict:
        return example_point_batch(batch_size, channels=self.encoder[0].in_features - 1)["inputs"]


# ---------------------------------------------------------------------------------------------------------------
# The official point pathway: P2P's multi-view point-to-pixel projection (AILab-CVC/UniRepLKNet, Point/)
# ---------------------------------------------------------------------------------------------------------------

_Q = math.pi / 4
#: the official view angles (Euler x, y, z; Point/models/p2p_adaptor_lk.py, in its order) and translation
P2P_VIEW_ANGLES = ((0.0, 0.0, 2 * _Q), (2 * _Q, 0.0, 2 * _Q), (4 * _Q, 0.0, 2 * _Q), (6 * _Q, 0.0, 2 * _Q),
                   (5 * _Q, -_Q, 2 * _Q), (5 * _Q, _Q, 2 * _Q), (7 * _Q, -_Q, 2 * _Q), (7 * _Q, _Q, 2 * _Q),
                   (0.0, -2 * _Q, 2 * _Q), (0.0, 2 * _Q, 2 * _Q))
P2P_TRANSLATION = (0.0, 0.0, -1.4)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: the 3 x 3 pixel footprint every point is scattered into (row offset, column offset)
FOOTPRINT = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1))


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``(V, 3)`` Euler angles (x, y, z) -> ``(V, 3, 3)`` rotations ``Rx(x) @ Ry(y) @ Rz(z)`` (P2P's euler2mat)."""
    x, y, z = angles.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], -1).view(-1, 3, 3)
    return rx @ ry @ rz


def knn_indices(xyz: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, N, 3)`` -> ``(B, N, k)`` indices of each point's k nearest valid points (itself included).

    Squared distances as P2P's ``square_distance`` (-2 q.p + |q|^2 + |p|^2); padded points are never neighbours.
    """
    dist = -2 * torch.matmul(xyz, xyz.transpose(1, 2))
    dist += (xyz ** 2).sum(-1)[:, :, None]
    dist += (xyz ** 2).sum(-1)[:, None, :]
    dist = dist.masked_fill(~mask[:, None, :], float("inf"))
    return dist.topk(k, dim=-1, largest=False, sorted=False).indices


def masked_group_norm(x: torch.Tensor, mask: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm of ``(B, C, N, k)`` with statistics over the valid points only (= ``norm(x)`` when all are valid)."""
    b, c, n, k = x.shape
    g = x.view(b, norm.num_groups, c // norm.num_groups, n, k)
    w = mask[:, None, None, :, None].to(x.dtype)
    count = w.sum((2, 3, 4), keepdim=True) * (c // norm.num_groups) * k
    mean = (g * w).sum((2, 3, 4), keepdim=True) / count
    var = ((g - mean) ** 2 * w).sum((2, 3, 4), keepdim=True) / count
    g = (g - mean) / torch.sqrt(var + norm.eps)
    return g.view(b, c, n, k) * norm.weight[:, None, None] + norm.bias[:, None, None]


class BasicBlock(nn.Module):
    """ResNet basic block (timm's ``BasicBlock(c, c)``): conv3x3 - BN - ReLU - conv3x3 - BN, + x, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + x)


class MultiViewFusion(nn.Module):
    """P2P's ``MultiViewFusionV2``: 7x7/7 patches of all views of a sample -> one pre-norm transformer layer
    (8 heads of 128, MLP 256) -> nearest upsampling -> conv3x3 + GELU, concatenated with the input -> 1x1 + GELU."""

    def __init__(self, channels: int, views: int, img_size: int, width: int = 128, heads: int = 8,
                 head_dim: int = 128, mlp_dim: int = 256, patch: int = 7):
        super().__init__()
        self.views, self.img_size, self.heads = views, img_size, heads
        self.patch_embed = nn.Conv2d(channels, width, patch, stride=patch, bias=False)
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.attn_out = nn.Linear(heads * head_dim, width)
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width))
        self.expand = nn.Sequential(nn.Conv2d(width, channels, 3, padding=1), nn.GELU())
        self.merge = nn.Sequential(nn.Conv2d(2 * channels, channels, 1), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x)
        bv, c, s, _ = t.shape
        # every view's patches of one sample form one sequence: (B, V * S^2, C)
        t = t.view(bv // self.views, self.views, c, s * s).transpose(2, 3).reshape(bv // self.views, -1, c)
        q, k, v = self.qkv(self.attn_norm(t)).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)  # scale head_dim^-0.5
        t = t + self.attn_out(att.transpose(1, 2).flatten(2))
        t = t + self.ffn(self.ffn_norm(t))
        t = t.view(bv // self.views, self.views, s * s, c).transpose(2, 3).reshape(bv, c, s, s)
        t = self.expand(F.interpolate(t, size=self.img_size))  # nearest
        return self.merge(torch.cat([t, x], dim=1))


class P2PEncoder(nn.Module):
    """P2P's ``ProjEnc``: per-point graph features scattered into a per-view image (the official names kept)."""

    def __init__(self, in_channels: int, views: int, local_size: int, trans_dim: int, graph_dim: int,
                 obj_size: int, img_size: int, atten_fusion: bool):
        super().__init__()
        self.local_size, self.obj_size, self.img_size = local_size, obj_size, img_size
        self.input_trans = nn.Conv1d(in_channels, trans_dim, 1)
        self.graph_layer = nn.Sequential(nn.Conv2d(2 * trans_dim, graph_dim, 1, bias=False), nn.GroupNorm(4, graph_dim),
                                         nn.LeakyReLU(0.2))
        self.proj_layer = nn.Conv1d(graph_dim, graph_dim, 1)
        self.img_block = nn.Sequential(BasicBlock(graph_dim), nn.Conv2d(graph_dim, graph_dim, 1))
        self.fusion = MultiViewFusion(graph_dim, views, img_size) if atten_fusion else None
        self.img_layer = nn.Conv2d(graph_dim, 3, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)
        self.register_buffer("footprint", torch.tensor(FOOTPRINT), persistent=False)

    def encode_points(self, points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, graph_dim)``: input_trans, kNN edge features (f_j - f_i, f_i), conv - GN -
        LeakyReLU, max over the k neighbours, proj_layer (the official ``get_graph_feature`` path)."""
        f = self.input_trans(points.transpose(1, 2))  # (B, T, N)
        idx = knn_indices(points[..., :3], mask, self.local_size)  # (B, N, k)
        neighbours = torch.gather(f[:, :, None].expand(-1, -1, idx.shape[1], -1), 3,
                                  idx[:, None].expand(-1, f.shape[1], -1, -1))  # (B, T, N, k)
        centre = f[..., None].expand_as(neighbours)
        e = self.graph_layer[0](torch.cat([neighbours - centre, centre], dim=1))
        e = self.graph_layer[2](masked_group_norm(e, mask, self.graph_layer[1]))
        return self.proj_layer(e.amax(-1)).transpose(1, 2)

    def pixels(self, xy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B', N, 2)`` view coordinates -> ``(B', N, 2)`` (row, column) of each point's pixel in the image.

        The official grid: cell = max(x range, y range) / (obj_size - 3) from the valid points' minimum, the
        3 x 3 footprints centred in the obj_size square by the official offset; row = x. (Before the padding.)"""
        inf = torch.tensor(float("inf"), dtype=xy.dtype, device=xy.device)
        lo = torch.where(mask[..., None], xy, inf).amin(1)
        hi = torch.where(mask[..., None], xy, -inf).amax(1)
        cell = (hi - lo).amax(-1) / (self.obj_size - 3)
        idx = torch.floor((xy - lo[:, None]) / cell[:, None, None]).long()
        big = torch.iinfo(idx.dtype).max
        # centre of the footprints' bounding box (+1: footprint offsets start at -1)
        first = torch.where(mask[..., None], idx, big).amin(1)
        last = torch.where(mask[..., None], idx, -big).amax(1)
        centre = torch.div(first + last + 2, 2, rounding_mode="floor")
        return idx + 1 + (self.obj_size // 2 - centre - 1)[:, None]

    def forward(self, features: torch.Tensor, xy: torch.Tensor, mask: torch.Tensor):
        """Per-point ``features (B', N, G)`` scattered (summed) into their pixels' 3 x 3 footprints of a
        ``(B', G, img, img)`` canvas -> img_block -> fusion -> img_layer -> sigmoid -> ImageNet normalisation.
        Returns the normalised image and each point's pixel."""
        bv, n, g = features.shape
        pix = self.pixels(xy, mask)
        pix = pix + (self.img_size - self.obj_size) // 2  # the zero padding to img_size
        foot = pix[:, :, None] + self.footprint  # (B', N, 9, 2)
        sample = torch.arange(bv, device=xy.device)[:, None, None]
        flat = (sample * self.img_size + foot[..., 0]) * self.img_size + foot[..., 1]
        keep = mask[..., None].expand_as(flat)
        canvas = features.new_zeros(bv * self.img_size ** 2, g)
        canvas.index_add_(0, flat[keep], features[:, :, None].expand(-1, -1, 9, -1)[keep])
        canvas = canvas.view(bv, self.img_size, self.img_size, g).permute(0, 3, 1, 2)
        feat = self.img_block(canvas)
        if self.fusion is not None:
            feat = self.fusion(feat)
        img = torch.sigmoid(self.img_layer(feat))
        return (img - self.mean) / self.std, pix


class PoolingClsHead(nn.Module):
    """P2P's ``PoolingClsHead``: the views' final maps concatenated along channels, global average pool,
    LayerNorm, linear (not a registered head: used by the parity test and the official parameter count)."""

    def __init__(self, channels: int, views: int, num_classes: int):
        super().__init__()
        self.views = views
        self.norm = nn.LayerNorm(channels * views)
        self.fc = nn.Linear(channels * views, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bv, c, h, w = x.shape
        return self.fc(self.norm(x.reshape(bv // self.views, self.views * c, h, w).mean((2, 3))))


class UniRepLKNetP2P(Backbone):
    """UniRepLKNet's official point pathway (P2P projection + panconv-vision's UniRepLKNet) for per-point tasks.

    The official ``Point/`` code (AILab-CVC/UniRepLKNet, P2P's projection): every sample is rotated into ``views``
    of the 10 official views (``P2P_VIEW_ANGLES``, Euler x-y-z as its ``euler2mat``, then translated); every point
    is encoded from its ``local_size`` nearest neighbours (untransformed coordinates, a DGCNN-style edge conv) and
    scattered, summed, into the 3 x 3 pixels around its cell of an ``obj_size`` grid fitted to the view's x/y range
    and zero-padded to ``img_size``; a ResNet basic block, the multi-view attention fusion (``atten_fusion``) and a
    1x1 conv make a 3-channel image, sigmoid then ImageNet-normalised, that goes through the UniRepLKNet.
    Padded points (``mask`` False) are neither neighbours, nor in the range, the group norm statistics or the
    scatter. For per-point tasks every stage's map is read (bilinear) at each point's pixel, averaged over the
    views, and concatenated with the point encoding: ``[(B, graph_dim + sum(dims), N)]``.
    :meth:`image_and_final_map` gives the official classification path's pieces (the image and the last map,
    which P2P's ``PoolingClsHead`` pools).

    Args:
        in_channels: per-point channels (``x, y, z`` first; the official 3). The kNN uses x, y, z.
        views: how many of the official views (1..10; the official ModelNet40 config 4).
        local_size: neighbours per point (k); trans_dim / graph_dim: the edge conv's input / output width.
        obj_size: the object grid (pixels per side, even as the official centring needs); img_size: the image after
            zero padding (img_size - obj_size even, so img_size is even too; with ``atten_fusion`` also a multiple of
            7, the fusion's 7 x 7 patches: 56, 70, ..., 224).
        atten_fusion: the multi-view attention fusion (official: true).
        depths, dims, kernel_sizes, drop_path_rate: the UniRepLKNet (panconv-vision's ``vision.UniRepLKNet``).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(3)] = 3, views: Annotated[int, Interval(ge=1, le=10)] = 4,
                 local_size: Annotated[int, Ge(1)] = 32, trans_dim: Annotated[int, Ge(1)] = 8,
                 graph_dim: Annotated[int, Ge(4)] = 64, obj_size: Annotated[int, Ge(4)] = 224,
                 img_size: Annotated[int, Ge(4)] = 224, atten_fusion: bool = True,
                 depths: Sequence[Annotated[int, Ge(0)]] = (3, 3, 27, 3),
                 dims: Sequence[Annotated[int, Ge(4)]] = (96, 192, 384, 768),
                 kernel_sizes: Sequence[Sequence[int]] | None = None,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        from panconv_vision.models.unireplknet import UniRepLKNet

        if obj_size > img_size or (img_size - obj_size) % 2:
            raise ValueError(f"UniRepLKNetP2P: obj_size {obj_size} must be <= img_size {img_size} with an even "
                             "difference (the image pads it equally on both sides)")
        if obj_size % 2:
            raise ValueError(f"UniRepLKNetP2P: obj_size {obj_size} must be even (the official centring offset "
                             "obj_size / 2 - centre - 1 puts an odd grid's footprints at -0.5, which it rejects)")
        if atten_fusion and img_size % 7:
            raise ValueError(f"UniRepLKNetP2P: img_size {img_size} must be a multiple of 7 with atten_fusion "
                             "(the fusion's 7 x 7 patches); use e.g. 56, 70 or 224, or atten_fusion: false")
        if graph_dim % 4:
            raise ValueError(f"UniRepLKNetP2P: graph_dim {graph_dim} must be a multiple of 4 (GroupNorm(4))")
        self.views = views
        self.register_buffer("rotation", euler_to_matrix(torch.tensor(P2P_VIEW_ANGLES[:views])), persistent=False)
        self.register_buffer("translation", torch.tensor(P2P_TRANSLATION), persistent=False)
        self.enc = P2PEncoder(in_channels, views, local_size, trans_dim, graph_dim, obj_size, img_size,
                              atten_fusion)
        kernels = None if kernel_sizes is None else tuple(tuple(k) for k in kernel_sizes)
        self.backbone = UniRepLKNet(depths=tuple(depths), dims=tuple(dims), in_channels=3, kernel_sizes=kernels,
                                    drop_path_rate=drop_path_rate)
        self.feature_info = [FeatureInfo(graph_dim + sum(self.backbone.out_channels), 1, "points")]

    def view_points(self, xyz: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` -> ``(B * V, N, 3)``: each sample in every view (sample-major), ``p R^T - t``."""
        rotated = torch.einsum("bnj,vij->bvni", xyz, self.rotation) - self.translation
        return rotated.flatten(0, 1)

    def encode(self, inputs: dict):
        """The point encodings ``(B, N, G)``, the normalised image ``(B * V, 3, img, img)`` and each point's pixel
        ``(B * V, N, 2)`` (row, column)."""
        points, mask = inputs["points"], inputs.get("mask")
        if mask is None:
            mask = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
        fewest = int(mask.sum(1).min())
        if fewest < self.enc.local_size:
            raise ValueError(f"UniRepLKNetP2P: a sample has {fewest} points, fewer than local_size "
                             f"{self.enc.local_size} (k of the kNN)")
        features = self.enc.encode_points(points, mask)
        view_mask = mask.repeat_interleave(self.views, 0)
        img, pix = self.enc(features.repeat_interleave(self.views, 0), self.view_points(points[..., :3])[..., :2],
                            view_mask)
        return features, img, pix

    def image_and_final_map(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The official classification path's pieces: the normalised image and the last stage's map."""
        _, img, _ = self.encode(inputs)
        return img, self.backbone(img)[-1]

    def forward(self, inputs: dict) -> list[torch.Tensor]:
        points, mask = inputs["points"], inputs.get("mask")
        b, n = points.shape[:2]
        features, img, pix = self.encode(inputs)
        size = self.enc.img_size
        where = ((pix.flip(-1).to(img.dtype) + 0.5) / size * 2 - 1)[:, None]  # grid_sample's (x = column, y = row)
        per_point = [features]
        for stage in self.backbone(img):
            sampled = F.grid_sample(stage, where, mode="bilinear", align_corners=False)[:, :, 0]  # (B*V, C, N)
            per_point.append(sampled.view(b, self.views, -1, n).mean(1).transpose(1, 2))
        out = torch.cat(per_point, dim=-1)
        if mask is not None:
            out = out.masked_fill(~mask[..., None], 0.0)
        return [out.transpose(1, 2)]

    @classmethod
    def example_config(cls) -> dict:
        return dict(in_channels=4, views=2, local_size=4, trans_dim=4, graph_dim=8, obj_size=12, img_size=14,
                    depths=[1, 1, 1, 1], dims=[8, 16, 16, 16], kernel_sizes=[[3], [3], [3], [3]])

    def example_inputs(self, batch_size: int = 2) -> dict:
        return example_point_batch(batch_size, channels=self.enc.input_trans.in_channels)["inputs"]


#: our multi-view fusion's sub-modules -> the official ``MultiViewFusionV2``'s (its one ``Transformer`` layer)
_FUSION_NAMES = (("patch_embed.", "conv1."), ("attn_norm.", "transformer.layers.0.0.norm."),
                 ("qkv.", "transformer.layers.0.0.fn.to_qkv."), ("attn_out.", "transformer.layers.0.0.fn.to_out.0."),
                 ("ffn_norm.", "transformer.layers.0.1.norm."), ("ffn.0.", "transformer.layers.0.1.fn.net.0."),
                 ("ffn.2.", "transformer.layers.0.1.fn.net.3."), ("expand.", "conv2."), ("merge.", "conv3."))
#: official P2P entries no module here holds: the fixed view table, the UniRepLKNet's unused ImageNet norm and head
P2P_UNUSED = ("views", "base_model.norm.weight", "base_model.norm.bias", "base_model.head.weight",
              "base_model.head.bias")


def map_official_p2p_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official P2P weights (UniRepLKNet's ``Point/models/p2p_adaptor_lk.py``) -> ``backbone.*``
    (:class:`UniRepLKNetP2P`: the encoder ``enc.*`` and the UniRepLKNet through panconv-vision's
    ``map_official_state_dict``) and ``head.*`` (:class:`PoolingClsHead`). :data:`P2P_UNUSED` entries are dropped;
    any other key the official model does not have raises a KeyError naming it."""
    from panconv_vision.models.unireplknet import map_official_state_dict

    out, base = {}, {}
    for key, value in state_dict.items():
        if key in P2P_UNUSED:
            continue
        if key.startswith("base_model."):
            base[key[len("base_model."):]] = value
        elif key.startswith("cls_head."):
            out["head." + key[len("cls_head."):].replace("cls_head.", "fc.")] = value
        elif key.startswith("enc.fusion."):
            rest = key[len("enc.fusion."):]
            for ours, theirs in _FUSION_NAMES:
                if rest.startswith(theirs):
                    out["backbone.enc.fusion." + ours + rest[len(theirs):]] = value
                    break
            else:
                raise KeyError(f"unexpected key in an official P2P state dict: {key}")
        elif key.startswith("enc."):
            out["backbone." + key] = value
        else:
            raise KeyError(f"unexpected key in an official P2P state dict: {key}")
    for key, value in map_official_state_dict(base).items():  # backbone.* only: norm and head were dropped
        out["backbone.backbone." + key[len("backbone."):]] = value
    return out


__all__ = ["P2P_UNUSED", "P2P_VIEW_ANGLES", "PoolingClsHead", "UniRepLKNetP2P", "UniRepLKNetPoints",
           "euler_to_matrix", "map_official_p2p_state_dict"]
