"""MOAT (Yang et al., "MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models",
ICLR 2023).

A MOAT block (Sec. 3.2, Fig. 2) puts an MBConv (inverted residual, 4x expansion, no squeeze-excite)
*before* multi-head self-attention and drops the transformer's MLP: ``x = x + MBConv(x)`` (strided
for the first block of a stage, so no separate downsampling layer), then ``x = x + Attn(LN(x))``.
The attention has per-head 2-D relative position embeddings (CoAtNet's), learned for a 14x14 (stride 16)
or 7x7 (stride 32) window and bilinearly resized to the window used. For classification the window is
the whole map (global attention); for dense tasks non-overlapping windows *without shift* (Sec. 3.3):
``window_size``. The network: a two-conv stem (3x3/2 -> BN -> GELU -> 3x3), two stages of MBConv blocks
(with squeeze-excite), two stages of MOAT blocks; strides 4, 8, 16, 32.

Strided layers pad as TensorFlow's ``"SAME"`` (the official code; forward parity on shared weights in
``tests/test_moat_parity.py``): the stride-2 stem conv and depthwise convs pad ``max((ceil(n/2)-1)*2 + k - n, 0)``
with the smaller half first (an even map: no pad before, one after; torch's ``padding=1`` would shift every window
by a pixel), and the strided shortcut's average pool pads the same way, excluding the padding from the mean.
The relative position bias is recomputed from its parameter at every forward. (The official TF2 code derives it
once, when Keras builds the attention layer, eagerly under ``init_scope``, so weights assigned after building, such
as the checkpoint ``get_model`` loads, never reach it; the parity fixture re-runs its ``build`` after assigning.)

Outputs: the four stage maps. Classifier: ``MOAT -> vision.PoolNorm (eps 1e-5) -> core.LinearClsHead``
(global average pool, LayerNorm, 1x1 logits conv == linear), as the official code.

Sizes (Table 1/3, registered in plugin.py; the official model zoo's configs): stem, widths, blocks
    MOAT-0: 64, 96/192/384/768, 2/3/7/2      MOAT-1: 64, 96/192/384/768, 2/6/14/2
    MOAT-2: 128, 128/256/512/1024, 2/6/14/2  MOAT-3: 160, 160/320/640/1280, 2/12/28/2
    MOAT-4: 256, 256/512/1024/2048, 2/12/28/2
    tiny-MOAT-0/1/2/3: stem = first width, 32/40/56/80 x (1, 2, 4, 8), 2/3/7/2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, MinLen
from torch import nn

from panconv.api import FeatureInfo

from .attention import MBConv, window_partition, window_reverse
from .layers import HierarchicalBackbone, check_out_indices, drop_path


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``"SAME"`` padding of one axis: ``(before, after)``, output ``ceil(size / stride)``."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``"SAME"`` padding (computed from the input size at each call)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "padding": 0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (same_padding(n, k, s) for n, k, s in
                                        zip(x.shape[-2:], self.kernel_size, self.stride))
        return super().forward(F.pad(x, (left, right, top, bottom)))


class SameAvgPool2d(nn.Module):
    """TensorFlow's ``AveragePooling2D(padding="same")``: ``"SAME"`` padding, padded entries not counted."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (same_padding(n, self.kernel_size, self.stride) for n in x.shape[-2:])
        if not (top or bottom or left or right):
            return F.avg_pool2d(x, self.kernel_size, self.stride)
        pad = (left, right, top, bottom)
        count = F.avg_pool2d(F.pad(x.new_ones(1, 1, *x.shape[-2:]), pad), self.kernel_size, self.stride)
        return F.avg_pool2d(F.pad(x, pad), self.kernel_size, self.stride) / count


class MOATMBConv(MBConv):
    """:class:`~panconv_vision.models.attention.MBConv` whose strided depthwise conv and shortcut pool pad as
    TensorFlow's ``"SAME"`` (the official MOAT); the same parameters and state-dict keys."""

    def __init__(self, in_dim: int, out_dim: int, expansion: float = 4.0, stride: int = 1, se_ratio: float = 0.25,
                 drop_path_rate: float = 0.0, pool_size: int = 2):
        super().__init__(in_dim, out_dim, expansion, stride, se_ratio, drop_path_rate, pool_size)
        if stride > 1:
            hidden = self.dwconv.in_channels
            self.dwconv = SameConv2d(hidden, hidden, 3, stride=stride, groups=hidden, bias=False)
            self.pool = SameAvgPool2d(pool_size, stride)


class RelativeAttention2d(nn.Module):
    """Multi-head self-attention over an ``(N, h, w, C)`` window with a learned per-head 2-D relative
    embedding ``(heads, 2P-1, 2P-1)`` (resized bilinearly to ``(2h-1, 2w-1)`` for other windows)."""

    def __init__(self, dim: int, head_dim: int = 32, position_size: int = 7):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"MOAT: width {dim} is not a multiple of the head width {head_dim}")
        self.num_heads, self.head_dim, self.position_size = dim // head_dim, head_dim, position_size
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.relative_position_embedding = nn.Parameter(
            torch.randn(self.num_heads, 2 * position_size - 1, 2 * position_size - 1) * 0.02)

    def position_bias(self, h: int, w: int) -> torch.Tensor:
        """``(heads, hw, hw)``: entry (query (y1, x1), key (y2, x2)) = table[y2 - y1, x2 - x1]."""
        table = self.relative_position_embedding
        if (2 * h - 1, 2 * w - 1) != tuple(table.shape[1:]):
            table = F.interpolate(table.unsqueeze(0), size=(2 * h - 1, 2 * w - 1), mode="bilinear",
                                  align_corners=False).squeeze(0)
        with torch.device("cpu"):
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            ys, xs = ys.flatten(), xs.flatten()
            dy = (ys[None, :] - ys[:, None] + h - 1).to(table.device)
            dx = (xs[None, :] - xs[:, None] + w - 1).to(table.device)
        return table[:, dy, dx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        tokens = x.reshape(n, h * w, c)
        q, k, v = (proj(tokens).reshape(n, h * w, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias(h, w).to(q.dtype))
        return self.o(out.transpose(1, 2).reshape(n, h, w, c))


class MOATBlock(nn.Module):
    """``x + MBConv(x)`` (no squeeze-excite; strided at a stage's start), then ``x + Attn(LN(x))`` over the
    whole map (``window_size`` None) or non-overlapping, unshifted windows."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, head_dim: int, position_size: int,
                 window_size: int | None, expansion: float = 4.0, drop_path_rate: float = 0.0, pool_size: int = 2):
        super().__init__()
        self.mbconv = MOATMBConv(in_dim, out_dim, expansion, stride, se_ratio=0.0, drop_path_rate=drop_path_rate,
                                 pool_size=pool_size)
        self.norm = nn.LayerNorm(out_dim, eps=1e-5)
        self.attn = RelativeAttention2d(out_dim, head_dim, position_size)
        self.window_size = window_size
        self.drop_path = drop_path(drop_path_rate)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        win = self.window_size
        if win is None or (win >= h and win >= w):
            return self.attn(x)
        if h % win or w % win:
            raise ValueError(f"MOAT: a {h}x{w} map does not divide into {win}x{win} windows")
        windows = window_partition(x, (win, win)).reshape(-1, win, win, c)
        return window_reverse(self.attn(windows).reshape(-1, win * win, c), (win, win), (h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attention(self.norm(x)))
        return x.permute(0, 3, 1, 2)


class MOAT(HierarchicalBackbone):
    """MOAT backbone; ``forward`` returns the stages in ``out_indices``.

    ``block_types``: per stage ``"mbconv"`` or ``"moat"``; ``window_size``: ``None`` (global attention,
    classification) or the side of the unshifted windows of the MOAT stages (dense tasks);
    ``position_sizes``: the learned relative-embedding window per stage (14 at stride 16, 7 at 32).
    Drop path rises linearly with the block index (``rate * i / total``, the official rule).
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: average pool, LayerNorm (eps 1e-5), linear
    paper_head = {"neck": {"type": "vision.PoolNorm", "eps": 1e-5},
                  "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, stem_dim: Annotated[int, Ge(1)] = 64,
                 dims: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (96, 192, 384, 768),
                 depths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (2, 3, 7, 2),
                 block_types: Sequence[Literal["mbconv", "moat"]] = ("mbconv", "mbconv", "moat", "moat"),
                 head_dim: Annotated[int, Ge(1)] = 32,
                 position_sizes: Sequence[Annotated[int, Ge(1)]] = (28, 28, 14, 7),
                 window_size: Annotated[int, Ge(1)] | None = None, expansion: Annotated[float, Ge(1)] = 4.0,
                 se_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.25, pool_size: Annotated[int, Ge(1)] = 2,
                 in_channels: Annotated[int, Ge(1)] = 3, drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 out_indices: Sequence[int] | None = None):
        super().__init__()
        n = len(dims)
        if not len(depths) == len(block_types) == len(position_sizes) == n:
            raise ValueError("MOAT: dims, depths, block_types and position_sizes need one entry per stage")
        if any(t not in ("mbconv", "moat") for t in block_types):
            raise ValueError(f"MOAT: block_types must be 'mbconv' or 'moat', got {tuple(block_types)}")
        out_indices = check_out_indices(out_indices, n)
        self.out_indices, self.in_channels = tuple(out_indices), in_channels
        self.stem = nn.Sequential(SameConv2d(in_channels, stem_dim, 3, stride=2),
                                  nn.BatchNorm2d(stem_dim, eps=1e-3), nn.GELU(),
                                  nn.Conv2d(stem_dim, stem_dim, 3, padding=1))
        total, index, prev = sum(depths), 0, stem_dim
        stages = []
        for i in range(max(out_indices) + 1):
            blocks = []
            for j in range(depths[i]):
                stride, rate = 2 if j == 0 else 1, drop_path_rate * index / total
                if block_types[i] == "mbconv":
                    blocks.append(MOATMBConv(prev, dims[i], expansion, stride, se_ratio, rate, pool_size))
                else:
                    blocks.append(MOATBlock(prev, dims[i], stride, head_dim, position_sizes[i], window_size,
                                            expansion, rate, pool_size))
                prev, index = dims[i], index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(dims[i], 2 ** (i + 2), f"stages.{i}") for i in out_indices]
        for m in self.modules():  # the official init: N(0, 0.02) kernels, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, 64, 64)

    @classmethod
    def example_config(cls) -> dict:
        return {"stem_dim": 8, "dims": [8, 16, 32, 32], "depths": [1, 1, 2, 1], "head_dim": 8,
                "position_sizes": [8, 8, 4, 2]}
