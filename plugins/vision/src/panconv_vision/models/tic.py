"""TiC (Zhang, Wang, Bian and Xiong, "TiC: Exploring Vision Transformer in Convolution", 2023).

MSA-Conv (Sec. 3.1) puts self-attention inside every window of a convolution: each pixel's query
attends to the keys of the ``k x k`` (dilated) window centred on it (the ``vision.msa_conv`` kernel), the
attended values plus the input then go through the convolution itself (a ``k x k`` conv, as the
official operator's ``mlp``; ``conv="depthwise"`` makes it depthwise + pointwise). Because nothing in
it depends on the image size, a TiC runs at any resolution without resampling position embeddings.
Two capacity strategies (Sec. 3.2-3.3):

* Multi-Directional Cyclic Shift: the heads are split into four groups whose key/value maps are rolled
  cyclically by ``cyclic_shift`` pixels up, down, left and right before the window attention (and the
  result is not rolled back), so a window reaches tokens far away, wrapping around the border.
* Inter-Pooling: a second window attention on ``inter_pool``-average-pooled queries, keys and values,
  upsampled (nearest) and added: the same window covers an ``inter_pool`` times larger area.

The official code publishes the operator (``MSA_Conv_2d``: 1x1 qkv, window attention, ``+ x``, k x k
conv, ReLU) but not the network; the exact form of the two strategies and the stage layout here are
our reading of the paper's text and are labelled as such.

Sizes: none registered. The official repository (github.com/zs670980918/MSA-Conv, also mirrored as
StriveZs/MSA-Conv; 5 commits) holds only the operator, its CUDA kernel and a gradient check: no network
definition, no configs, no size names. The paper's model table (widths, depths, heads, parameter counts)
was not readable in any copy available to us (arXiv 2310.04134 v1/v2 and its mirrors gave the abstract
and the opening of the introduction only), so no ``tic_*`` size is registered and no count is claimed:
the defaults below (Swin-T's ``(2, 2, 6, 2)`` x ``(64, 128, 256, 512)`` layout) are ours, not the paper's.

Outputs: the stage maps (strides 4, 8, 16, 32 for four stages). Classifier: ``TiC -> vision.PoolNorm ->
core.LinearClsHead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from ..kernels.msa_conv import msa_conv
from .layers import (
    Downsample,
    HierarchicalBackbone,
    PatchifyStem,
    Stage,
    check_out_indices,
    drop_path,
    drop_path_rates,
    trunc_normal_init,
)

#: the four roll directions of the Multi-Directional Cyclic Shift: (rows, columns) per head group
_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))


class MSAConv2d(nn.Module):
    """MSA-Conv: 1x1 qkv, multi-head window attention (``vision.msa_conv``), ``+ x``, then the
    convolution (``standard``: k x k; ``depthwise``: k x k depthwise + 1x1), both with ``dilation``."""

    def __init__(self, dim: int, out_dim: int, num_heads: int = 4, kernel_size: int = 3, dilation: int = 1,
                 conv: Literal["standard", "depthwise"] = "standard", cyclic_shift: int = 0, inter_pool: int = 0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MSAConv2d: dim {dim} is not divisible by num_heads {num_heads}")
        if cyclic_shift and num_heads % 4:
            raise ValueError(f"MSAConv2d: the cyclic shift splits the heads into 4 directions, got {num_heads} heads")
        self.num_heads, self.kernel_size, self.dilation = num_heads, kernel_size, dilation
        self.cyclic_shift, self.inter_pool = cyclic_shift, inter_pool
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        pad = dilation * (kernel_size - 1) // 2
        if conv == "standard":
            self.conv = nn.Conv2d(dim, out_dim, kernel_size, padding=pad, dilation=dilation)
        elif conv == "depthwise":
            self.conv = nn.Sequential(nn.Conv2d(dim, dim, kernel_size, padding=pad, dilation=dilation, groups=dim),
                                      nn.Conv2d(dim, out_dim, 1))
        else:
            raise ValueError(f"MSAConv2d: conv must be 'standard' or 'depthwise', got {conv!r}")

    def shift(self, t: torch.Tensor) -> torch.Tensor:
        """Roll each quarter of the heads of ``(N, heads, d, H, W)`` in its own direction."""
        groups = t.chunk(4, dim=1)
        return torch.cat([torch.roll(g, (dy * self.cyclic_shift, dx * self.cyclic_shift), dims=(-2, -1))
                          for g, (dy, dx) in zip(groups, _DIRECTIONS)], dim=1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, heads, d, h, w = q.shape
        out = msa_conv(q.reshape(n * heads, d, h, w), k.reshape(n * heads, d, h, w), v.reshape(n * heads, d, h, w),
                       kernel_size=self.kernel_size, dilation=self.dilation)
        return out.reshape(n, heads * d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(n, 3, self.num_heads, c // self.num_heads, h, w).unbind(1)
        if self.cyclic_shift:
            k, v = self.shift(k), self.shift(v)
        out = self.attend(q, k, v)
        if self.inter_pool > 1:
            p = self.inter_pool
            pooled = [F.avg_pool2d(t.flatten(1, 2), p, p, ceil_mode=True).unflatten(1, t.shape[1:3])
                      for t in (q, k, v)]
            out = out + F.interpolate(self.attend(*pooled), scale_factor=p, mode="nearest")[..., :h, :w]
        return self.conv(out + x)


class TiCBlock(nn.Module):
    """``x + MSA-Conv(BN(x))``, then ``x + FFN(BN(x))`` (1x1 expand, GELU, 1x1)."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dilation: int, conv: str, cyclic_shift: int,
                 inter_pool: int, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MSAConv2d(dim, dim, num_heads, kernel_size, dilation, conv, cyclic_shift, inter_pool)
        self.norm2 = nn.BatchNorm2d(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TiC(HierarchicalBackbone):
    """TiC backbone: patchify stem, stages of TiC blocks with ConvNeXt-style downsampling between them.

    ``dilations``: per stage (the dilated MSA-Conv); ``cyclic_shifts``/``inter_pools``: per stage (0 or 1
    switches a strategy off); ``conv``: ``standard`` or ``depthwise`` MSA-Conv.
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier: global average pool + LayerNorm, linear
    paper_head = {"neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, depths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (2, 2, 6, 2),
                 dims: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (64, 128, 256, 512),
                 num_heads: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (4, 4, 8, 16),
                 kernel_size: Annotated[int, Ge(1)] = 3,
                 dilations: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (1, 1, 1, 1),
                 cyclic_shifts: Annotated[Sequence[Annotated[int, Ge(0)]], MinLen(1)] = (0, 0, 0, 0),
                 inter_pools: Annotated[Sequence[Annotated[int, Ge(0)]], MinLen(1)] = (0, 0, 0, 0),
                 conv: Literal["standard", "depthwise"] = "depthwise", mlp_ratio: Annotated[float, Gt(0)] = 4.0,
                 in_channels: Annotated[int, Ge(1)] = 3, patch_size: Annotated[int, Ge(1)] = 4,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 out_indices: Sequence[int] | None = None):
        super().__init__()
        n = len(depths)
        if not all(len(s) == n for s in (dims, num_heads, dilations, cyclic_shifts, inter_pools)):
            raise ValueError("TiC: depths, dims, num_heads, dilations, cyclic_shifts and inter_pools need one "
                             "entry per stage")
        if kernel_size % 2 == 0:
            raise ValueError(f"TiC: kernel_size must be odd, got {kernel_size}")
        out_indices = check_out_indices(out_indices, n)
        self.stem = PatchifyStem(in_channels, dims[0], patch_size)
        rates = drop_path_rates(depths, drop_path_rate)
        self.stages = nn.ModuleList(
            Stage(nn.Identity() if i == 0 else Downsample(dims[i - 1], dims[i]),
                  [TiCBlock(dims[i], num_heads[i], kernel_size, dilations[i], conv, cyclic_shifts[i], inter_pools[i],
                            mlp_ratio, r) for r in rates[i]])
            for i in range(max(out_indices) + 1))
        self._build_feature_info(dims, out_indices, patch_size)
        self.apply(trunc_normal_init)

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": [1, 1], "dims": [8, 16], "num_heads": [4, 4], "dilations": [1, 2], "cyclic_shifts": [1, 0],
                "inter_pools": [0, 2]}
