"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998), as a panconv backbone.

C1: 6 maps 5x5 (on a 32x32 input: the 28x28 digit padded by 2), S2: 2x2 average pooling,
C3: 16 maps 5x5, S4: 2x2 average pooling, C5: 120 maps 5x5 -> 1x1; tanh activations.
(The paper's sparse C3 connection table and RBF output layer are replaced by full
connections and a linear head, as is usual today.)
"""

import torch
from torch import nn

from panconv.api import Backbone, FeatureInfo


class LeNet5(Backbone):
    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.pool = nn.AvgPool2d(2)
        self.feature_info = [FeatureInfo(16, 4, "s4"), FeatureInfo(120, 28, "c5")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.pool(torch.tanh(self.c1(x)))
        s4 = self.pool(torch.tanh(self.c3(s2)))
        return [s4, torch.tanh(self.c5(s4))]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.c1.in_channels, 28, 28)
