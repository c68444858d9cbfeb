"""HaloNet (Vaswani, Ramachandran, Srinivas, Parmar, Hechtman and Shlens, "Scaling Local Self-Attention
for Parameter Efficient Visual Backbones", CVPR 2021).

Blocked local self-attention (Sec. 2.2, Fig. 2): the map is cut into non-overlapping ``b x b`` query
blocks; each block attends to its ``(b + 2h) x (b + 2h)`` neighbourhood (the block and a halo of ``h``
pixels; zero keys/values beyond the border), with factorised relative position embeddings
(``q . (r_row[a - i] + r_col[b' - j])``, Sec. 2.1). A strided attention layer (stride 2) queries every
other pixel of each block (Sec. 2.3). HaloNets are ResNet bottleneck networks whose 3x3 convolutions
are these attention layers (Sec. 4.1, Table 2): a 7x7/2 conv + max-pool stem, four stages, ReLU after
the residual sum.

Outputs: the four stage maps (strides 4, 8, 16, 32). Classifier: ``HaloNet -> core.LinearClsHead``.

Scaling rules (Sec. 4.1, Table 2). In stage ``i`` a block's inner width (the attention's query/key
width, ``inner_channels``) is ``64 * 2^i``; the value width (the attention's output) is ``r_v`` times
that (``value_ratio``); the block's output width is ``r_b`` times it (``channels = r_b * (64, 128, 256,
512)``); ``l_3`` blocks in the third stage (``depths = (3, 3, l_3, 3)``); H3-H7 add a final 1x1 conv
(BN, ReLU) to ``d_f`` channels before the pool (``final_channels``); each model grows the block size
``b`` (``block_size``), halo ``h`` (``halo_size``) and the input size with them. Registered H0-H7:

    name  b   h  r_v  r_b   l_3  d_f   size  paper  ours (ImageNet-1k head)
    H0    8   3  1.0  0.5    7   -     256   5.5M    5.50M
    H1    8   3  1.0  1.0   10   -     256   8.1M    8.10M (= timm halonet_h1)
    H2    8   3  1.0  1.25  11   -     256   9.4M    9.40M
    H3    10  3  1.0  1.5   12   1024  320   11.8M  11.84M
    H4    12  2  1.0  3.0   12   1280  384   19.1M  19.10M
    H5    14  2  2.5  2.0   23   1536  448   30.7M  30.72M
    H6    8   4  3.0  2.75  24   1536  512   43.4M  43.46M
    H7    10  3  4.0  3.5   26   2048  600   67.4M  67.43M

H7's 600^2 input leaves 75/38/19-pixel maps that 10 x 10 blocks do not divide: ``pad_to_blocks`` pads
such maps with zeros after the last row/column (more zero keys/values, as beyond any border) and crops
the output to ``ceil(side / stride)``, the size of the strided 1x1 shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import FeatureInfo

from .layers import HierarchicalBackbone, check_out_indices, drop_path, drop_path_rates


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def relative_logits(q: torch.Tensor, table: torch.Tensor, window: int) -> torch.Tensor:
    """``q`` ``(..., b, d)`` against a relative table ``(2 * window - 1, d)`` -> ``(..., b, window)``:
    entry ``[i, k]`` is ``q_i . table[k - i + window - 1]`` (key k of the window, query i of the block)."""
    b = q.shape[-2]
    with torch.device("cpu"):
        index = torch.arange(window)[None, :] - torch.arange(b)[:, None] + window - 1
    logits = q @ table.transpose(0, 1)  # (..., b, 2w - 1)
    return logits.gather(-1, index.to(q.device).expand(*logits.shape[:-1], window))


class HaloAttention(nn.Module):
    """Blocked local self-attention with a halo (Sec. 2.2) and relative embeddings; ``stride`` 2
    queries every other pixel of each block (strided self-attention, Sec. 2.3)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int = 8, block_size: int = 8, halo_size: int = 3,
                 stride: int = 1, qk_dim: int | None = None, pad_to_blocks: bool = False):
        super().__init__()
        qk_dim = qk_dim or dim_out
        if dim_out % num_heads or qk_dim % num_heads:
            raise ValueError(f"HaloAttention: widths {dim_out}/{qk_dim} not divisible by num_heads {num_heads}")
        if block_size % stride:
            raise ValueError(f"HaloAttention: block_size {block_size} not divisible by stride {stride}")
        self.num_heads, self.stride, self.pad_to_blocks = num_heads, stride, pad_to_blocks
        self.dim_qk, self.dim_v = qk_dim // num_heads, dim_out // num_heads
        self.block, self.halo, self.window = block_size, halo_size, block_size + 2 * halo_size
        self.q = nn.Conv2d(dim, qk_dim, 1, stride=stride, bias=False)
        self.kv = nn.Conv2d(dim, qk_dim + dim_out, 1, bias=False)
        scale = self.dim_qk ** -0.5
        self.rel_height = nn.Parameter(torch.randn(2 * self.window - 1, self.dim_qk) * scale)
        self.rel_width = nn.Parameter(torch.randn(2 * self.window - 1, self.dim_qk) * scale)
        nn.init.trunc_normal_(self.q.weight, std=dim ** -0.5)
        nn.init.trunc_normal_(self.kv.weight, std=dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h % self.block or w % self.block:
            if not self.pad_to_blocks:
                raise ValueError(f"HaloAttention: a {h}x{w} map is not divisible into {self.block}x{self.block} "
                                 "blocks (pad_to_blocks=True pads it with zeros)")
            # zero rows/columns after the map: more zero keys/values, as beyond any border; outputs cropped
            x = F.pad(x, [0, -w % self.block, 0, -h % self.block])
            out_h, out_w = -(-h // self.stride), -(-w // self.stride)  # ceil, as a strided 1x1 shortcut
            return self.forward(x)[..., :out_h, :out_w]
        nh, nw, bq = h // self.block, w // self.block, self.block // self.stride
        win, heads = self.window, self.num_heads
        # queries: (N*heads, blocks, bq*bq, d)
        q = self.q(x).reshape(n * heads, self.dim_qk, nh, bq, nw, bq).permute(0, 2, 4, 3, 5, 1)
        q = q.reshape(n * heads, nh * nw, bq, bq, self.dim_qk)
        # keys/values: each block's (b + 2h)^2 neighbourhood, zero-padded at the border
        kv = F.pad(self.kv(x), [self.halo] * 4).unfold(2, win, self.block).unfold(3, win, self.block)
        kv = kv.reshape(n * heads, self.dim_qk + self.dim_v, nh * nw, win * win).permute(0, 2, 3, 1)
        k, v = kv.split([self.dim_qk, self.dim_v], dim=-1)
        content = q.flatten(2, 3) @ k.transpose(-1, -2) * self.dim_qk ** -0.5  # (N*heads, blocks, bq^2, win^2)
        rel_w = relative_logits(q, self.rel_width, win)  # (.., i, j, kw)
        rel_h = relative_logits(q.transpose(2, 3), self.rel_height, win).transpose(2, 3)  # (.., i, j, kh)
        position = (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(content.shape)
        out = (content + position).softmax(-1) @ v  # (N*heads, blocks, bq^2, dv)
        out = out.reshape(n, heads, nh, nw, bq, bq, self.dim_v).permute(0, 1, 6, 2, 4, 3, 5)
        return out.reshape(n, heads * self.dim_v, nh * bq, nw * bq)


class HaloBlock(nn.Module):
    """Bottleneck block with halo attention in place of the 3x3 conv: 1x1 (BN, ReLU) -> attention ->
    BN, ReLU -> 1x1 (BN); ``ReLU(x + shortcut)``, the shortcut a strided 1x1 + BN when shapes change."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, mid: int, value_ratio: float,
                 num_heads: int, block_size: int, halo_size: int, drop_path_rate: float = 0.0,
                 pad_to_blocks: bool = False):
        super().__init__()
        attn_out = round(mid * value_ratio)
        self.shortcut = ConvBN(in_ch, out_ch, 1, stride, act=False) if stride != 1 or in_ch != out_ch else None
        self.conv1 = ConvBN(in_ch, mid)
        self.attn = HaloAttention(mid, attn_out, num_heads, block_size, halo_size, stride, qk_dim=mid,
                                  pad_to_blocks=pad_to_blocks)
        self.post_attn = nn.BatchNorm2d(attn_out)
        self.conv3 = ConvBN(attn_out, out_ch, act=False)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        y = self.conv3(F.relu(self.post_attn(self.attn(self.conv1(x)))))
        return F.relu(shortcut + self.drop_path(y))


class HaloNet(HierarchicalBackbone):
    """HaloNet backbone; ``forward`` returns the stages in ``out_indices``.

    The input side must be a multiple of ``4 * block_size * 2 ** (stages - 1)`` (every stage's map
    divides into blocks) unless ``pad_to_blocks``. ``num_heads`` 8 as in the paper. ``inner_channels``
    (default ``bottleneck_ratio * channels``) is each stage's inner width, ``final_channels`` (0: none)
    the width of the final 1x1 conv.
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: global average pool + linear
    paper_head = {"head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, depths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (3, 3, 10, 3),
                 channels: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (64, 128, 256, 512),
                 stem_channels: Annotated[int, Ge(1)] = 64, block_size: Annotated[int, Ge(1)] = 8,
                 halo_size: Annotated[int, Ge(0)] = 3, bottleneck_ratio: Annotated[float, Gt(0)] = 1.0,
                 value_ratio: Annotated[float, Gt(0)] = 1.0, num_heads: Annotated[int, Ge(1)] = 8,
                 in_channels: Annotated[int, Ge(1)] = 3, drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 final_channels: Annotated[int, Ge(0)] = 0, pad_to_blocks: bool = False,
                 inner_channels: Sequence[Annotated[int, Ge(1)]] | None = None,
                 out_indices: Sequence[int] | None = None):
        super().__init__()
        if len(depths) != len(channels):
            raise ValueError(f"HaloNet: depths {tuple(depths)} and channels {tuple(channels)} differ in length")
        if inner_channels is None:
            inner_channels = [round(c * bottleneck_ratio) for c in channels]
        elif len(inner_channels) != len(channels):
            raise ValueError(f"HaloNet: inner_channels {tuple(inner_channels)} and channels {tuple(channels)} "
                             "differ in length")
        out_indices = check_out_indices(out_indices, len(depths))
        self.out_indices, self.in_channels, self.block_size = tuple(out_indices), in_channels, block_size
        self.stem = nn.Sequential(ConvBN(in_channels, stem_channels, 7, 2), nn.MaxPool2d(3, 2, 1))
        rates = drop_path_rates(depths, drop_path_rate)
        stages, prev = [], stem_channels
        for i in range(max(out_indices) + 1):
            blocks = []
            for j in range(depths[i]):
                blocks.append(HaloBlock(prev, channels[i], 2 if i > 0 and j == 0 else 1, inner_channels[i],
                                        value_ratio, num_heads, block_size, halo_size, rates[i][j],
                                        pad_to_blocks))
                prev = channels[i]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        # the paper's d_f (H3-H7): a 1x1 conv (BN, ReLU) widening the last stage before the classifier's pool
        last = len(depths) - 1
        self.final_conv = ConvBN(channels[last], final_channels) if final_channels and last in out_indices else None
        self.feature_info = [FeatureInfo(final_channels if i == last and self.final_conv is not None else channels[i],
                                         4 * 2 ** i, "final_conv" if i == last and self.final_conv else f"stages.{i}")
                             for i in out_indices]
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in (b for s in self.stages for b in s):  # zero-init the last BN: blocks start as identity
            nn.init.zeros_(block.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = super().forward(x)
        if self.final_conv is not None:
            outs[-1] = self.final_conv(outs[-1])
        return outs

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        side = 4 * self.block_size * 2 ** (len(self.stages) - 1)
        return torch.randn(batch_size, self.in_channels, side, side)

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": [1, 1, 1, 1], "channels": [8, 16, 16, 32], "stem_channels": 8, "block_size": 2,
                "halo_size": 1, "num_heads": 2}


# ---- weights from timm ------------------------------------------------------------------------

_TIMM_RENAMES = ((".conv1_1x1.", ".conv1."), (".conv3_1x1.", ".conv3."),
                 (".self_attn.pos_embed.height_rel", ".attn.rel_height"),
                 (".self_attn.pos_embed.width_rel", ".attn.rel_width"), (".self_attn.", ".attn."),
                 ("stem.conv1.", "stem.0."))


def map_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``halonet_h1`` weights -> the keys of ``HaloNet -> core.LinearClsHead``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out[key] = value
            continue
        for old, new in _TIMM_RENAMES:
            key = key.replace(old, new)
        out["backbone." + key] = value
    return out
