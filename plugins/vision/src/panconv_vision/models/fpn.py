"""Feature Pyramid Network (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017).

Lateral 1x1 convs bring every backbone level to ``out_channels``; a top-down pathway adds
the 2x-upsampled coarser map to each finer one (Fig. 3); a 3x3 conv smooths each merged map.
Extra coarser levels (P6, ...) come from stride-2 max pooling of the last output (as in the
paper's RPN) or from stride-2 3x3 convs (``extra="conv"``, RetinaNet style). Every size comes
from the input ``feature_info``. Convs are mmcv's ``ConvModule`` so that ``norm_cfg`` /
``act_cfg`` take OpenMMLab configs (``{type: GN, num_groups: 32}``), as in mmdet's FPN.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from panconv.api import FeatureInfo, Neck

from .layers import is_token_output


class FPN(Neck):
    """``in_features`` -> ``num_outs`` maps of ``out_channels`` channels (strides of the inputs,
    then x2 per extra level). ``start_level`` skips the finest inputs."""

    def __init__(self, in_features: list[FeatureInfo], out_channels: Annotated[int, Ge(1)] = 256,
                 num_outs: Annotated[int, Ge(1)] | None = None, start_level: Annotated[int, Ge(0)] = 0,
                 extra: Literal["maxpool", "conv"] = "maxpool", norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 upsample_mode: Literal["nearest", "nearest-exact", "bilinear", "bicubic", "area"] = "nearest"):
        super().__init__(in_features)
        from mmcv.cnn import ConvModule  # the cnn building blocks of mmcv-lite (no compiled ops)

        # class tokens ((N, C) outputs of ViT-style backbones) are not maps: the pyramid is built on the maps
        self.token_outputs = [i for i, f in enumerate(self.in_features) if is_token_output(f)]
        self.in_features = [f for f in self.in_features if not is_token_output(f)]

        used = self.in_features[start_level:]
        if not used:
            raise ValueError(f"FPN: start_level {start_level} leaves no input among {len(self.in_features)} features")
        num_outs = len(used) if num_outs is None else num_outs
        if num_outs < len(used):
            raise ValueError(f"FPN: num_outs {num_outs} < {len(used)} used input levels")
        if extra not in ("maxpool", "conv"):
            raise ValueError(f"FPN: extra must be 'maxpool' or 'conv', got {extra!r}")
        self.start_level, self.extra, self.upsample_mode = start_level, extra, upsample_mode

        def conv(cin, k, stride=1):
            return ConvModule(cin, out_channels, k, stride=stride, padding=k // 2, norm_cfg=norm_cfg, act_cfg=act_cfg,
                              inplace=False)

        self.lateral_convs = nn.ModuleList(conv(f.channels, 1) for f in used)
        self.fpn_convs = nn.ModuleList(conv(out_channels, 3) for _ in used)
        n_extra = num_outs - len(used)
        self.extra_convs = nn.ModuleList(conv(out_channels, 3, 2) for _ in range(n_extra)) if extra == "conv" \
            else nn.ModuleList()
        self.num_extra = n_extra
        reductions = [f.reduction for f in used]
        reductions += [reductions[-1] * 2 ** (k + 1) for k in range(n_extra)]
        self.feature_info = [FeatureInfo(out_channels, r, f"fpn.p{k}") for k, r in enumerate(reductions)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # Xavier-uniform, as the reference detectors initialise FPN
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.token_outputs and len(features) == len(self.in_features) + len(self.token_outputs):
            features = [f for i, f in enumerate(features) if i not in self.token_outputs]
        if len(features) != len(self.in_features):
            raise ValueError(f"FPN: expected {len(self.in_features)} feature maps, got {len(features)}")
        laterals = [lat(f) for lat, f in zip(self.lateral_convs, features[self.start_level:])]
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode=self.upsample_mode)
        outs = [smooth(x) for smooth, x in zip(self.fpn_convs, laterals)]
        for k in range(self.num_extra):
            if self.extra == "maxpool":
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                outs.append(self.extra_convs[k](outs[-1]))
        return outs

    @classmethod
    def example_config(cls) -> dict:
        return {"out_channels": 8, "num_outs": 5}

    def example_inputs(self, batch_size: int = 2, size: int = 64) -> list[torch.Tensor]:
        return [torch.randn(batch_size, f.channels, size // f.reduction, size // f.reduction)
                for f in self.in_features]
