"""UniRepLKNet's point-cloud pathway: points -> a 2-D embedding map -> panconv-vision's UniRepLKNet.

UniRepLKNet (Ding et al., CVPR 2024; journal version "Scaling Up Your Kernels") feeds non-image
modalities to the *same* large-kernel ConvNet by turning each sample into a C x H x W embedding map.
For point clouds the official code (its ``Point/`` directory) follows P2P's point-to-pixel
projection. This module implements a top-view form of that idea, not a port of that code: every
point is encoded by a shared MLP of its features and its height, the encodings are max-pooled into
the pixel of an ``map_size x map_size`` top view of ``[-extent, extent]^2`` (empty pixels zero), and
the map goes through ``panconv_vision``'s UniRepLKNet (dilated re-param blocks, SE, GRN FFN). For
per-point tasks each point reads every stage's map at its own position (bilinear) and concatenates
them with its encoding: output ``(B, C_point + sum(dims), N)``.

The other modalities of that section (audio spectrograms, time-series embeddings, video frames to
channels) belong to the audio, sequence and vision plugins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
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


__all__ = ["UniRepLKNetPoints"]
