"""A CNN surrogate of a wave simulator, full or a-priori compressed into one-dimensional filters.

Paper: "A priori compression of convolutional neural networks for wave simulators" (2023). A U-Net-like
encoder-decoder CNN learns to advance a 2-D acoustic wave field: from the fields at snapshots ``t-1`` and
``t`` it predicts ``t+1`` (``vision.WaveFields``); applied to its own output it rolls out further.
The paper's compression is decided **before training** ("a priori", no pre-trained full model, no
pruning or post-hoc decomposition): every ``k x k`` convolution is replaced by a composition of
one-dimensional filters, a ``k x 1`` convolution followed by a ``1 x k`` convolution (the "one-way"
factorisation), and the factorised network is trained from scratch.

:class:`OneWayConv2d` (``factorization="one_way"``, ``rank=r``): a depthwise ``k x 1`` convolution giving
each input channel ``r`` vertical filters, then a dense ``1 x k`` convolution to the output channels. The
composition is a single ``k x k`` convolution whose kernel between input ``i`` and output ``o`` is
``W[o, i] = sum_j v[i, j] h[o, i, j]^T``: a sum of ``r`` outer products, a matrix of rank at most ``r``
(:meth:`OneWayConv2d.equivalent_kernel`; tests/test_wave.py checks the identity). Parameters per layer:
``C_in r k + C_out C_in r k`` instead of ``C_out C_in k^2``, i.e. about ``k / r`` times fewer.

:class:`WaveCNN`: ``levels`` resolution levels with ``channels[l]`` channels, two convolutions + GELU per
level on the way down (2x2 average pooling between levels) and up (nearest up-sampling, concatenation
with the skip, two convolutions), a 1x1 output convolution; the prediction is a residual on the latest
field (``u_{t+1} = u_t + f(u_{t-1}, u_t)``). The output convolution and the 1x1 layers are not
factorised (nothing to factor). ``forward`` rolls out ``batch["targets"].shape[1]`` frames (1 when the
batch has no targets), feeding each prediction back; ``loss`` is the MSE over the rolled-out frames.

Registered sizes (input 2 fields, 64x64 or any side divisible by ``2^(levels-1)``; the paper's exact
network sizes are not reproduced: the paper's tables are for its own 3-D/2-D simulators):
``wave_cnn_full``: channels (16, 32, 64), 5x5 kernels, 327,537 params;
``wave_cnn_compressed``: the same network with one-way rank-1 factorisation, 67,547 params (4.85x fewer).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, MinLen
from torch import nn

from panconv.api import Model

__all__ = ["OneWayConv2d", "WaveCNN", "make_conv"]


class OneWayConv2d(nn.Module):
    """``k x k`` convolution factorised as a depthwise ``k x 1`` (``rank`` filters per input channel) followed
    by a dense ``1 x k`` convolution: every (output, input) kernel is a rank-``rank`` ``k x k`` matrix."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, rank: int = 1, bias: bool = True):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"OneWayConv2d: kernel_size must be odd and positive, got {kernel_size}")
        if rank < 1:
            raise ValueError(f"OneWayConv2d: rank must be >= 1, got {rank}")
        pad = kernel_size // 2
        self.in_channels, self.out_channels, self.kernel_size, self.rank = in_channels, out_channels, kernel_size, rank
        self.vertical = nn.Conv2d(in_channels, in_channels * rank, (kernel_size, 1), padding=(pad, 0),
                                  groups=in_channels, bias=False)
        self.horizontal = nn.Conv2d(in_channels * rank, out_channels, (1, kernel_size), padding=(0, pad), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(x))

    def equivalent_kernel(self) -> torch.Tensor:
        """The ``(C_out, C_in, k, k)`` kernel of the single convolution this composition equals:
        ``W[o, i, a, b] = sum_j v[i r + j, a] h[o, i r + j, b]``."""
        k, r = self.kernel_size, self.rank
        v = self.vertical.weight.reshape(self.in_channels, r, k)                       # (C_in, r, k)
        h = self.horizontal.weight.reshape(self.out_channels, self.in_channels, r, k)  # (C_out, C_in, r, k)
        return torch.einsum("ija,oijb->oiab", v, h)


def make_conv(in_channels: int, out_channels: int, kernel_size: int, factorization: str, rank: int) -> nn.Module:
    """A same-padded ``kernel_size`` convolution, full (``"none"``) or one-way factorised."""
    if factorization == "none" or kernel_size == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    if factorization == "one_way":
        return OneWayConv2d(in_channels, out_channels, kernel_size, rank)
    raise ValueError(f"factorization must be 'none' or 'one_way', got {factorization!r}")


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, factorization: str, rank: int):
        super().__init__(make_conv(cin, cout, k, factorization, rank), nn.GELU(),
                         make_conv(cout, cout, k, factorization, rank), nn.GELU())


class WaveCNN(Model):
    """U-Net-like wave-field surrogate ``(u_{t-1}, u_t) -> u_{t+1}`` with optional one-way factorisation.

    Args:
        in_channels: fields in the input (2: ``t-1`` and ``t``); filled from the data set.
        channels: channels of each resolution level (its length is the number of levels).
        kernel_size: side of the spatial convolutions (odd).
        factorization: "none" (full ``k x k``) or "one_way" (``k x 1`` then ``1 x k``, before training).
        rank: one-way filters per input channel (the rank of each equivalent ``k x k`` kernel).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 2,
                 channels: Annotated[tuple[int, ...], MinLen(1)] = (16, 32, 64),
                 kernel_size: Annotated[int, Ge(1)] = 5, factorization: Literal["none", "one_way"] = "none",
                 rank: Annotated[int, Ge(1)] = 1):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"WaveCNN: kernel_size must be odd, got {kernel_size}")
        if factorization not in ("none", "one_way"):
            raise ValueError(f"WaveCNN: factorization must be 'none' or 'one_way', got {factorization!r}")
        if any(c < 1 for c in channels):
            raise ValueError(f"WaveCNN: channels must be positive, got {tuple(channels)}")
        channels = tuple(int(c) for c in channels)
        self.in_channels, self.channels, self.factorization, self.rank = in_channels, channels, factorization, rank
        args = (kernel_size, factorization, rank)
        self.down = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.down.append(_DoubleConv(prev, c, *args))
            prev = c
        self.up = nn.ModuleList(_DoubleConv(channels[i + 1] + channels[i], channels[i], *args)
                                for i in reversed(range(len(channels) - 1)))
        self.out = nn.Conv2d(channels[0], 1, 1)
        nn.init.normal_(self.out.weight, std=1e-3)  # start near persistence (u_{t+1} = u_t)
        nn.init.zeros_(self.out.bias)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One surrogate step: ``(B, in_channels, H, W)`` -> ``(B, 1, H, W)``, the field one snapshot ahead."""
        h, w = x.shape[-2:]
        m = 2 ** (len(self.channels) - 1)
        padded = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        skips, z = [], padded
        for i, block in enumerate(self.down):
            if i:
                z = F.avg_pool2d(z, 2)
            z = block(z)
            skips.append(z)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            z = block(torch.cat([F.interpolate(z, scale_factor=2.0, mode="nearest"), skip], dim=1))
        return x[:, -1:] + self.out(z)[..., :h, :w]

    def forward(self, batch: dict | torch.Tensor) -> torch.Tensor:
        """``(B, R, H, W)``: ``R`` rolled-out frames (``R = batch["targets"].shape[1]``, else 1)."""
        x = batch["inputs"] if isinstance(batch, dict) else batch
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"WaveCNN: expected inputs (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        steps = batch["targets"].shape[1] if isinstance(batch, dict) and "targets" in batch else 1
        frames = []
        for _ in range(steps):
            nxt = self.step(x)
            frames.append(nxt)
            x = torch.cat([x[:, 1:], nxt], dim=1)
        return torch.cat(frames, dim=1)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["targets"]
        if outputs.shape != target.shape:
            raise ValueError(f"WaveCNN: output shape {tuple(outputs.shape)} != target shape {tuple(target.shape)}")
        return {"loss": F.mse_loss(outputs, target)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs

    @classmethod
    def example_config(cls) -> dict:
        return {"channels": [4, 8], "kernel_size": 3}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        return {"inputs": torch.randn(batch_size, self.in_channels, 12, 12, generator=g),
                "targets": torch.randn(batch_size, 2, 12, 12, generator=g)}
