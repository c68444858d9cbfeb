"""Building blocks the point-cloud model files share.

Batches of point clouds are *padded*: ``points`` is ``(B, N, C)`` (``x, y, z`` then per-point
features), ``mask`` is ``(B, N)`` (True for real points). Models flatten the real points into one
``(P, C)`` list with a batch index (:func:`flatten_points`) and pad their per-point outputs back
(:func:`unflatten_points`), so predictions keep a leading batch axis.

* :func:`dynamic_pillars`: dynamic voxelisation (every point kept, no per-voxel cap; MVF /
  mmdet3d's ``DynamicVoxelization`` with ``max_num_points=-1``) into pillars (one voxel along z);
* :class:`DynamicVFE`: mmdet3d's dynamic voxel feature encoder as the FlatFormer configs use it
  (point features + offset to the pillar's point mean + offset to the pillar centre, then
  Linear-BN-ReLU layers with a per-pillar max between them);
* :func:`scatter_bev`: pillar features onto the dense bird's-eye-view canvas;
* :class:`SECONDFPN`: the SECOND 2-D backbone (residual variant of the FlatFormer repository)
  followed by SECOND's FPN neck (upsample every stage to stride 1, concatenate);
* :func:`scatter_max`, :func:`scatter_mean`: per-segment reductions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from annotated_types import Ge, Gt
from torch import nn

from panconv.api import FeatureInfo, Head, Neck


def flatten_points(points: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, N, C)`` padded points -> ``(P, C)`` real points and their ``(P,)`` batch index."""
    if points.dim() != 3:
        raise ValueError(f"points must be (B, N, C), got shape {tuple(points.shape)}")
    if mask is None:
        mask = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    if mask.shape != points.shape[:2]:
        raise ValueError(f"mask must be (B, N) = {tuple(points.shape[:2])}, got {tuple(mask.shape)}")
    batch_idx = torch.arange(points.shape[0], device=points.device)[:, None].expand_as(mask)
    return points[mask], batch_idx[mask]


def unflatten_points(values: torch.Tensor, mask: torch.Tensor | None, shape: Sequence[int]) -> torch.Tensor:
    """``(P, C)`` per-point values -> ``(B, N, C)`` (zeros at padding)."""
    out = values.new_zeros((*shape, values.shape[-1]))
    if mask is None:
        return values.view(*shape, values.shape[-1])
    out[mask] = values
    return out


def scatter_max(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[i] = max over rows r with index[r] == i of src[r]`` (rows of empty segments are 0)."""
    out = src.new_zeros((size, src.shape[-1]))
    return out.scatter_reduce(0, index[:, None].expand_as(src), src, "amax", include_self=False)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    out = src.new_zeros((size, src.shape[-1])).index_add(0, index, src)
    count = torch.bincount(index, minlength=size).clamp_min(1).to(src.dtype)
    return out / count[:, None]


def grid_shape(point_cloud_range: Sequence[float], voxel_size: Sequence[float]) -> tuple[int, int]:
    """``(nx, ny)`` pillars of the range ``(x0, y0, z0, x1, y1, z1)`` (Waymo: 149.76 m / 0.32 m = 468)."""
    nx = round((point_cloud_range[3] - point_cloud_range[0]) / voxel_size[0])
    ny = round((point_cloud_range[4] - point_cloud_range[1]) / voxel_size[1])
    return nx, ny


def dynamic_pillars(xyz: torch.Tensor, batch_idx: torch.Tensor, point_cloud_range: Sequence[float],
                    voxel_size: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic voxelisation into pillars.

    Returns ``(point_to_pillar, coords, inside)``: ``inside`` (P,) marks the points within the range;
    ``point_to_pillar`` (P,) is the pillar of each point (-1 outside); ``coords`` (V, 3) holds
    ``(batch, iy, ix)`` of each occupied pillar, sorted by batch then row-major position.
    """
    x0, y0, z0, x1, y1, z1 = point_cloud_range
    nx, ny = grid_shape(point_cloud_range, voxel_size)
    ix = torch.floor((xyz[:, 0] - x0) / voxel_size[0]).long()
    iy = torch.floor((xyz[:, 1] - y0) / voxel_size[1]).long()
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (xyz[:, 2] >= z0) & (xyz[:, 2] < z1)
    key = (batch_idx * ny + iy) * nx + ix
    unique, inverse = torch.unique(key[inside], return_inverse=True)
    point_to_pillar = torch.full_like(key, -1)
    point_to_pillar[inside] = inverse
    coords = torch.stack([unique // (nx * ny), (unique // nx) % ny, unique % nx], dim=1)
    return point_to_pillar, coords, inside


class DynamicVFE(nn.Module):
    """mmdet3d's ``DynamicVFE`` (``with_cluster_center`` and ``with_voxel_center``, no distance).

    Each point gets ``[features, xyz - mean(xyz of its pillar), xyz - pillar centre]``; every
    layer is Linear (no bias) -> BatchNorm1d(eps 1e-3, momentum 0.01) -> ReLU; between layers the
    per-pillar max is concatenated back onto each point; the pillar feature is the last max.
    ``forward`` returns ``(pillar features (V, C), first-layer point features (P_in, C0))``.
    """

    def __init__(self, in_channels: int, feat_channels: Sequence[int], voxel_size: Sequence[float],
                 point_cloud_range: Sequence[float]):
        super().__init__()
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        dims = [in_channels + 6, *feat_channels]
        self.layers = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
            self.layers.append(nn.Sequential(nn.Linear(c_in * (2 if i > 0 else 1), c_out, bias=False),
                                             nn.BatchNorm1d(c_out, eps=1e-3, momentum=0.01), nn.ReLU()))

    def forward(self, feats: torch.Tensor, point_to_pillar: torch.Tensor, coords: torch.Tensor):
        size = coords.shape[0]
        xyz = feats[:, :3]
        cluster = xyz - scatter_mean(xyz, point_to_pillar, size)[point_to_pillar]
        x0, y0, z0, _, _, z1 = self.point_cloud_range
        centre_x = (coords[point_to_pillar, 2].to(xyz.dtype) + 0.5) * self.voxel_size[0] + x0
        centre_y = (coords[point_to_pillar, 1].to(xyz.dtype) + 0.5) * self.voxel_size[1] + y0
        centre_z = (z0 + z1) / 2  # one voxel along z: its centre is the range's middle
        centre = torch.stack([xyz[:, 0] - centre_x, xyz[:, 1] - centre_y, xyz[:, 2] - centre_z], dim=1)
        x = torch.cat([feats, cluster, centre], dim=1)
        first = None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            first = x if i == 0 else first
            pooled = scatter_max(x, point_to_pillar, size)
            if i < len(self.layers) - 1:
                x = torch.cat([x, pooled[point_to_pillar]], dim=1)
        return pooled, first


def scatter_bev(features: torch.Tensor, coords: torch.Tensor, batch_size: int, nx: int, ny: int) -> torch.Tensor:
    """Pillar features ``(V, C)`` at ``coords`` ``(batch, iy, ix)`` -> canvas ``(B, C, ny, nx)`` (zeros elsewhere)."""
    canvas = features.new_zeros((batch_size * ny * nx, features.shape[-1]))
    flat = (coords[:, 0] * ny + coords[:, 1]) * nx + coords[:, 2]
    canvas = canvas.index_copy(0, flat, features)
    return canvas.view(batch_size, ny, nx, -1).permute(0, 3, 1, 2).contiguous()


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU())


class _ResidualConv(nn.Module):
    """conv3x3-BN (+ identity) -> ReLU: the ``residual=True`` SECOND layer of the FlatFormer repository."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

    def forward(self, x):
        return torch.relu(x + self.norm(self.conv(x)))


class SECONDFPN(Neck):
    """SECOND (2-D BEV backbone) + SECONDFPN: the detection trunk of FlatFormer's Waymo config.

    Stage ``i``: conv3x3 stride ``layer_strides[i]`` -> BN -> ReLU, then ``layer_nums[i]`` residual
    conv layers. Stage ``i``'s output is brought back to the first stage's resolution by a
    transposed conv of stride ``upsample_strides[i]`` (a 1x1 conv where that is 1), BN, ReLU; the
    results are concatenated (Waymo config: 64/128 channels, strides 1/2, 3 layers each,
    upsampled to 128 + 128 = 256 channels). Reads the last input feature (the BEV canvas).
    """

    def __init__(self, in_features: list[FeatureInfo],
                 out_channels: Sequence[Annotated[int, Ge(1)]] = (64, 128),
                 layer_nums: Sequence[Annotated[int, Ge(0)]] = (3, 3),
                 layer_strides: Sequence[Annotated[int, Ge(1)]] = (1, 2),
                 upsample_strides: Sequence[Annotated[int, Ge(1)]] = (1, 2),
                 upsample_channels: Sequence[Annotated[int, Ge(1)]] = (128, 128)):
        super().__init__(in_features)
        if not (len(out_channels) == len(layer_nums) == len(layer_strides) == len(upsample_strides)
                == len(upsample_channels)):
            raise ValueError("SECONDFPN: out_channels, layer_nums, layer_strides, upsample_strides and "
                             "upsample_channels must have the same length")
        c_in = self.in_features[-1].channels
        self.stages = nn.ModuleList()
        for c_out, n, s in zip(out_channels, layer_nums, layer_strides):
            self.stages.append(nn.Sequential(_conv_bn_relu(c_in, c_out, s), *[_ResidualConv(c_out) for _ in range(n)]))
            c_in = c_out
        self.ups = nn.ModuleList()
        stride = 1
        for c_stage, s, u, c_up in zip(out_channels, layer_strides, upsample_strides, upsample_channels):
            stride *= s
            if stride % u != 0 and u != stride:
                raise ValueError(f"SECONDFPN: upsample stride {u} does not divide the stage stride {stride}")
            up = (nn.ConvTranspose2d(c_stage, c_up, u, stride=u, bias=False) if u > 1
                  else nn.Conv2d(c_stage, c_up, 1, bias=False))
            self.ups.append(nn.Sequential(up, nn.BatchNorm2d(c_up, eps=1e-3, momentum=0.01), nn.ReLU()))
        self.out_stride = stride // upsample_strides[-1]
        reduction = self.in_features[-1].reduction * self.out_stride
        self.feature_info = [FeatureInfo(sum(upsample_channels), reduction, "fpn")]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = features[-1]
        outs = []
        for stage, up in zip(self.stages, self.ups):
            x = stage(x)
            outs.append(up(x))
        size = outs[0].shape[-2:]
        outs = [o if o.shape[-2:] == size else o[..., :size[0], :size[1]] for o in outs]
        return [torch.cat(outs, dim=1)]

    @classmethod
    def example_config(cls) -> dict:
        return dict(out_channels=[8, 16], layer_nums=[1, 1], layer_strides=[1, 2], upsample_strides=[1, 2],
                    upsample_channels=[8, 8])

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(8, 1, "points"), FeatureInfo(8, 1, "bev")]

    def example_inputs(self, batch_size: int = 2) -> list[torch.Tensor]:
        return [torch.randn(batch_size, f.channels, 16, 16) for f in self.in_features]


def example_point_batch(batch_size: int = 2, points: int = 60, channels: int = 4, extent: float = 6.0,
                        num_classes: int = 3, seed: int = 0) -> dict:
    """A tiny padded batch of random points in ``[-extent, extent]^2 x [0, 2]`` (the last sample shorter)."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(batch_size, points, 3, generator=g) * torch.tensor([2 * extent, 2 * extent, 2.0])
    xyz -= torch.tensor([extent, extent, 0.0])
    feats = torch.rand(batch_size, points, channels - 3, generator=g)
    mask = torch.ones(batch_size, points, dtype=torch.bool)
    if batch_size > 1:
        mask[-1, points * 2 // 3:] = False
    labels = torch.randint(0, num_classes, (batch_size, points), generator=g)
    labels[~mask] = -1
    return {"inputs": {"points": torch.cat([xyz, feats], dim=-1), "mask": mask}, "labels": labels}


class PointSegHead(Head):
    """Per-point classifier: shared MLP (1x1 convs, BN, ReLU) on a ``(B, C, N)`` feature -> logits ``(B, K, N)``.

    ``loss``: cross-entropy over the points whose ``batch["labels"]`` is not ``ignore_index``
    (unlabelled and padded points are -1), optionally class-weighted; ``predict``: class
    probabilities ``(B, N, K)``. ``in_index`` picks the input feature (a backbone's per-point one).
    """

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(2)],
                 hidden: Sequence[Annotated[int, Ge(1)]] = (64,), dropout: Annotated[float, Ge(0)] = 0.0,
                 in_index: int = 0, ignore_index: int = -1, class_weights: Sequence[float] | None = None):
        super().__init__(in_features)
        if not -len(self.in_features) <= in_index < len(self.in_features):
            raise ValueError(f"PointSegHead: in_index {in_index} out of range for {len(self.in_features)} features")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"PointSegHead: {len(class_weights)} class_weights for {num_classes} classes")
        self.in_index, self.ignore_index = in_index, ignore_index
        layers, c_in = [], self.in_features[in_index].channels
        for c in hidden:
            layers += [nn.Conv1d(c_in, c, 1, bias=False), nn.BatchNorm1d(c), nn.ReLU(), nn.Dropout(dropout)]
            c_in = c
        layers.append(nn.Conv1d(c_in, num_classes, 1))
        self.mlp = nn.Sequential(*layers)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.mlp(features[self.in_index])

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if labels.shape != (outputs.shape[0], outputs.shape[2]):
            raise ValueError(f"PointSegHead: labels must be (B, N) = ({outputs.shape[0]}, {outputs.shape[2]}), "
                             f"got {tuple(labels.shape)}")
        if not (labels != self.ignore_index).any():
            return {"loss_seg": outputs.sum() * 0.0}
        return {"loss_seg": nn.functional.cross_entropy(outputs, labels, weight=self.class_weights,
                                                        ignore_index=self.ignore_index)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(dim=1).transpose(1, 2)

    @classmethod
    def example_config(cls) -> dict:
        return dict(num_classes=3, hidden=[8])

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(6, 1, "points")]

    def example_inputs(self, batch_size: int = 2):
        batch = example_point_batch(batch_size, points=20, num_classes=self.mlp[-1].out_channels)
        features = [torch.randn(batch_size, f.channels, 20) for f in self.in_features]
        return features, batch


Positive = Annotated[float, Gt(0)]

__all__ = ["DynamicVFE", "PointSegHead", "Positive", "SECONDFPN", "dynamic_pillars", "example_point_batch",
           "flatten_points", "grid_shape", "scatter_bev", "scatter_max", "scatter_mean", "unflatten_points"]
