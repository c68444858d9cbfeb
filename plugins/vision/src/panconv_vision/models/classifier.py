"""Image classification as a composition: backbone -> ``PoolNorm`` -> ``core.LinearClsHead``.

``PoolNorm`` is the global average pooling and the final norm that the papers put before their
linear classifier: LayerNorm after pooling (ConvNeXt Fig. 2 / official ``forward_features``,
HorNet, UniRepLKNet) or BatchNorm before pooling (RepLKNet's official ``norm`` -> ``avgpool``).
Mixup, which ``core.LinearClsHead`` trains on with soft cross-entropy, is a batch transform
(``panconv_vision.transforms.Mixup``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Gt
from torch import nn

from panconv.api import FeatureInfo, Neck


class PoolNorm(Neck):
    """Global average pool of the last feature map and a norm: ``[N, C]``.

    ``norm="layer"`` (default): pool, then LayerNorm (``eps`` 1e-6). ``norm="batch"``: BatchNorm2d
    on the map, then pool (RepLKNet; BatchNorm keeps its default eps 1e-5).
    """

    def __init__(self, in_features: list[FeatureInfo], eps: Annotated[float, Gt(0)] = 1e-6,
                 norm: Literal["layer", "batch"] = "layer"):
        super().__init__(in_features)
        if norm not in ("layer", "batch"):
            raise ValueError(f"PoolNorm: norm must be 'layer' or 'batch', got {norm!r}")
        last = self.in_features[-1]
        self.norm_first = norm == "batch"
        self.norm = nn.BatchNorm2d(last.channels) if self.norm_first else nn.LayerNorm(last.channels, eps=eps)
        self.feature_info = [FeatureInfo(last.channels, last.reduction, f"pool_norm.{last.name}")]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.norm_first:
            return [self.norm(features[-1]).mean((-2, -1))]
        return [self.norm(features[-1].mean((-2, -1)))]

    def example_inputs(self, batch_size: int = 2) -> list[torch.Tensor]:
        return [torch.randn(batch_size, f.channels, 4, 4) for f in self.in_features]
