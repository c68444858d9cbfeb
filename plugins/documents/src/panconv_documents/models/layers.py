"""Building blocks the model files of panconv-documents share: the HRNetV2p backbone and its neck.

``HRNetV2p`` is timm's HRNet architecture built without weights (``features_only``, the four branch
outputs at strides 4, 8, 16, 32: 32/64/128/256 channels for W32), and ``HRFPN`` is the HRNetV2p
neck (Wang et al., "Deep High-Resolution Representation Learning", TPAMI 2020; mmdetection's HRFPN):
upsample every branch to the highest resolution, concatenate, reduce with a 1x1 convolution, then
average-pool into a pyramid and apply a 3x3 convolution per level.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Backbone, FeatureInfo, Neck

HRNET_VARIANTS = ("hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w32", "hrnet_w40", "hrnet_w48")


class HRNetV2p(Backbone):
    """timm's ``hrnet_*`` (no pretrained weights) returning its four parallel branches."""

    def __init__(self, variant: Literal[HRNET_VARIANTS] = "hrnet_w32", in_channels: Annotated[int, Ge(1)] = 3):
        super().__init__()
        if variant not in HRNET_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(HRNET_VARIANTS)}, got {variant!r}")
        import timm

        self.body = timm.create_model(variant, pretrained=False, features_only=True, feature_location="",
                                      out_indices=(1, 2, 3, 4), in_chans=in_channels)
        self.feature_info = [FeatureInfo(c, r, f"branch{i}") for i, (c, r) in
                             enumerate(zip(self.body.feature_info.channels(), self.body.feature_info.reduction()))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    @classmethod
    def example_config(cls) -> dict:
        return {"variant": "hrnet_w18_small"}


class HRFPN(Neck):
    """The HRNetV2p neck: concat of the upsampled branches -> 1x1 conv -> ``num_outs`` pooled levels -> 3x3 convs
    (levels from ``first_level`` on: 1 for a one-stage detector's strides 8-64)."""

    def __init__(self, in_features: list[FeatureInfo], out_channels: Annotated[int, Ge(1)] = 256,
                 num_outs: Annotated[int, Interval(ge=1, le=8)] = 5, first_level: Annotated[int, Ge(0)] = 0):
        super().__init__(in_features)
        if out_channels < 1 or num_outs < 1 or not 0 <= first_level < num_outs:
            raise ValueError("out_channels and num_outs must be >= 1, first_level in [0, num_outs)")
        self.first_level = first_level
        self.reduction = nn.Conv2d(sum(f.channels for f in in_features), out_channels, 1)
        self.convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                   for _ in range(first_level, num_outs))
        base = in_features[0].reduction
        self.feature_info = [FeatureInfo(out_channels, base * 2**i, f"p{i}") for i in range(first_level, num_outs)]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        size = features[0].shape[-2:]
        ups = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]]
        x = self.reduction(torch.cat(ups, dim=1))
        levels = [x if i == 0 else F.avg_pool2d(x, 2**i, 2**i, ceil_mode=True)
                  for i in range(self.first_level, self.first_level + len(self.convs))]
        return [conv(level) for conv, level in zip(self.convs, levels)]

    @classmethod
    def example_config(cls) -> dict:
        return {"out_channels": 16, "num_outs": 5}
