"""Building blocks the model files of panconv-lenet share."""

import torch
from torch import nn


class ConvTanhPool(nn.Module):
    """Convolution, tanh, then 2x2 average pooling (LeNet-5's C-S pairs; ``pool=False`` for C5)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, padding: int = 0, pool: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.tanh(self.conv(x)))
