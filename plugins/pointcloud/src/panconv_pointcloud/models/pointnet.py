"""PointNet-style per-point MLP (Qi et al., CVPR 2017, segmentation network without the T-Nets).

The baseline FlatFormer's segmentation is compared with: every point through a shared MLP
(Linear-BN-ReLU, ``local_channels``), the sample's max over its real points as a global feature
(through ``global_channels``), and each point's local feature concatenated with the global one
(the PointNet segmentation head's input). No neighbourhoods, no attention: what a per-point model
reaches on the same data at the same training budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from annotated_types import Ge
from torch import nn

from panconv.api import Backbone, FeatureInfo

from .layers import example_point_batch


def _mlp(c_in: int, widths: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers = []
    for c in widths:
        layers += [nn.Conv1d(c_in, c, 1, bias=False), nn.BatchNorm1d(c), nn.ReLU()]
        c_in = c
    return nn.Sequential(*layers), c_in


class PointMLP(Backbone):
    """``{"points": (B, N, C), "mask": (B, N)}`` -> ``[(B, local + global, N)]``.

    Args:
        in_channels: per-point channels (``x, y, z`` first).
        local_channels: widths of the shared per-point MLP (PointNet: 64, 64).
        global_channels: widths applied before the max-pool (PointNet: 64, 128, 1024).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 4,
                 local_channels: Sequence[Annotated[int, Ge(1)]] = (64, 64),
                 global_channels: Sequence[Annotated[int, Ge(1)]] = (64, 128, 1024)):
        super().__init__()
        if not local_channels or not global_channels:
            raise ValueError("PointMLP: local_channels and global_channels need at least one width each")
        self.local, c_local = _mlp(in_channels, local_channels)
        self.globl, c_global = _mlp(c_local, global_channels)
        self.feature_info = [FeatureInfo(c_local + c_global, 1, "points")]

    def forward(self, inputs: dict) -> list[torch.Tensor]:
        points, mask = inputs["points"], inputs.get("mask")
        if mask is None:
            mask = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
        # BatchNorm statistics from the real points only: run the MLPs on them as one (1, C, P) sequence
        flat = points[mask].t()[None]
        local = self.local(flat)
        pooled = self.globl(local)[0].t()
        batch_idx = torch.arange(points.shape[0], device=points.device)[:, None].expand_as(mask)[mask]
        glob = pooled.new_full((points.shape[0], pooled.shape[1]), float("-inf"))
        glob = glob.scatter_reduce(0, batch_idx[:, None].expand_as(pooled), pooled, "amax")
        glob = torch.where(torch.isinf(glob), torch.zeros_like(glob), glob)
        per_point = torch.cat([local[0].t(), glob[batch_idx]], dim=1)
        out = per_point.new_zeros((*points.shape[:2], per_point.shape[1]))
        out[mask] = per_point
        return [out.transpose(1, 2)]

    @classmethod
    def example_config(cls) -> dict:
        return dict(in_channels=4, local_channels=[8], global_channels=[16])

    def example_inputs(self, batch_size: int = 2) -> dict:
        return example_point_batch(batch_size, channels=self.local[0].in_channels)["inputs"]


__all__ = ["PointMLP"]
