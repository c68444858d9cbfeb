"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998), as a panconv backbone.

C1: 6 maps 5x5 (on a 32x32 input: the 28x28 digit padded by 2), S2: 2x2 average pooling,
C3: 16 maps 5x5, S4: 2x2 average pooling, C5: 120 maps 5x5 -> 1x1; tanh activations.
(The paper's sparse C3 connection table and RBF output layer are replaced by full
connections and a linear head, as is usual today.)
"""

from typing import Annotated

import torch
from annotated_types import Ge

from panconv.api import Backbone, FeatureInfo

from .layers import ConvTanhPool


class LeNet5(Backbone):
    #: filled from the data set's metadata (SmallMNIST: 1) when the config leaves it unset
    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 1):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"LeNet5: in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        self.c1s2 = ConvTanhPool(in_channels, 6, padding=2)
        self.c3s4 = ConvTanhPool(6, 16)
        self.c5 = ConvTanhPool(16, 120, pool=False)
        self.feature_info = [FeatureInfo(16, 4, "s4"), FeatureInfo(120, 28, "c5")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s4 = self.c3s4(self.c1s2(x))
        return [s4, self.c5(s4)]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, 28, 28)
