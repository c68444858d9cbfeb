"""Swin Transformer V2 (Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022).

Swin (shifted-window attention over a 4-stage, stride-4..32 pyramid) with the three V2 changes
(Sec. 3.2-3.3, Fig. 1): res-post-norm (``x + LN(attn(x))``, ``x + LN(mlp(x))``, the norms' weights
initialised to 0), scaled cosine attention (``cos(q, k) / tau`` with a learned per-head ``1/tau``
clamped at 100, Eq. 2) and a log-spaced continuous position bias (Eq. 3-4): a 2-layer MLP maps the
log-spaced relative offset ``sign(d) log(1 + |d|)`` (offsets normalised by the pre-training window to
[-8, 8]) to a per-head bias, squashed by ``16 sigmoid``. Because the bias is a function of the offset,
the window may change between pre-training and fine-tuning (``window_size`` vs
``pretrained_window_size``): the same weights give the bias of any window (Sec. 3.3).

Windows are resolved at every forward from the actual map: a window larger than the map shrinks to it
(and then does not shift), the map is padded to a multiple of the window, and the shifted-window mask
is built for that size; any input size works.

Outputs: the stage maps ``(N, C, H, W)`` at strides 4, 8, 16, 32; the last one after the final
LayerNorm. Classifier: ``SwinV2 -> core.LinearClsHead`` (global average pool + linear).

Sizes (Table 1 / Sec. 4.1, registered in plugin.py): C = stage-1 width, blocks, heads
    T: 96, 2/2/6/2, 3/6/12/24 (28M)     S: 96, 2/2/18/2, 3/6/12/24 (50M)
    B: 128, 2/2/18/2, 4/8/16/32 (88M)   L: 192, 2/2/18/2, 6/12/24/48 (197M)
with windows 8 or 16 at 256^2 (T/S/B), 12 at 192^2 (B/L, ImageNet-22K pre-training), 12->16 at 256^2
and 12->24 at 384^2 (fine-tuned from the 12-window models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import Backbone, FeatureInfo

from .attention import (
    Mlp,
    as_pair,
    log_spaced,
    relative_position_index,
    shifted_window_mask,
    trunc_normal_init,
    window_partition,
    window_reverse,
)
from .layers import Stage, check_out_indices, drop_path, drop_path_rates


def log_spaced_coords(window: tuple[int, int], pretrained_window: tuple[int, int]) -> torch.Tensor:
    """``(2wh-1, 2ww-1, 2)``: relative offsets normalised by ``pretrained_window - 1`` (or ``window - 1``
    when 0), scaled to [-8, 8] and log-spaced (Eq. 4)."""
    with torch.device("cpu"):
        ref = pretrained_window if pretrained_window[0] > 0 else window
        dh = torch.arange(-(window[0] - 1), window[0], dtype=torch.float32) / max(ref[0] - 1, 1)
        dw = torch.arange(-(window[1] - 1), window[1], dtype=torch.float32) / max(ref[1] - 1, 1)
        coords = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1)
        return log_spaced(coords * 8)


class WindowAttentionV2(nn.Module):
    """Scaled cosine attention with continuous position bias inside (shifted) windows."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], pretrained_window: tuple[int, int],
                 qkv_bias: bool = True, cpb_hidden: int = 512):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SwinV2: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.window, self.pretrained_window = num_heads, window, pretrained_window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(), nn.Linear(cpb_hidden, num_heads, bias=False))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("coords_table", log_spaced_coords(window, pretrained_window), persistent=False)
        self.register_buffer("position_index", relative_position_index(window), persistent=False)

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """``(heads, wh*ww, wh*ww)``: ``16 sigmoid(MLP(log-spaced offset))`` for this window size."""
        if window == self.window:
            table, index = self.coords_table, self.position_index
        else:  # a window resolved smaller than configured (small maps): the same MLP, other offsets
            table = log_spaced_coords(window, self.pretrained_window).to(self.coords_table.device)
            index = relative_position_index(window).to(self.position_index.device)
        n = window[0] * window[1]
        bias = self.cpb_mlp(table.to(self.proj.weight.dtype)).reshape(-1, self.num_heads)[index.reshape(-1)]
        return 16 * torch.sigmoid(bias.reshape(n, n, -1).permute(2, 0, 1))

    def forward(self, x: torch.Tensor, window: tuple[int, int], mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # no key bias
        q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * scale
        attn = attn + self.position_bias(window).unsqueeze(0)
        if mask is not None:
            attn = attn.view(-1, mask.shape[0], self.num_heads, n, n) + mask.unsqueeze(1).to(attn.dtype)
            attn = attn.view(-1, self.num_heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class SwinV2Block(nn.Module):
    """Res-post-norm block on ``(N, H, W, C)``: ``x + LN(W-MSA(x))``, then ``x + LN(MLP(x))``; odd
    blocks shift the windows by half a window (cyclic roll + mask, Swin Sec. 3.2)."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], shift: bool,
                 pretrained_window: tuple[int, int], mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.window, self.shift = window, shift
        self.attn = WindowAttentionV2(dim, num_heads, window, pretrained_window, qkv_bias)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path = drop_path(drop_path_rate)
        for norm in (self.norm1, self.norm2):  # res-post-norm init: each block starts as the identity
            nn.init.zeros_(norm.weight)

    def resolve(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window and shift for an ``h x w`` map: a window no larger than the map, no shift if it
        covers the map."""
        window = (min(self.window[0], h), min(self.window[1], w))
        shift = tuple(0 if not self.shift or size <= win else win // 2 for size, win in zip((h, w), window))
        return window, shift  # type: ignore[return-value]

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        window, shift = self.resolve(h, w)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        pad_h, pad_w = (-h) % window[0], (-w) % window[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        mask = shifted_window_mask((hp, wp), window, shift).to(x.device) if any(shift) else None
        out = self.attn(window_partition(x, window), window, mask)
        x = window_reverse(out, window, (hp, wp))[:, :h, :w]
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.norm1(self.window_attention(x)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMergingV2(nn.Module):
    """2x2 neighbourhood concatenation -> Linear(4C, 2C) -> LayerNorm (V2 puts the norm after)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = x.shape[1], x.shape[2]
        # order (0,0), (1,0), (0,1), (1,1) of (row, column) offsets, as the reference implementation
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.norm(self.reduction(x))


class PatchEmbed(nn.Module):
    """p x p stride-p convolution, then LayerNorm over channels; returns ``(N, H/p, W/p, C)``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinV2(Backbone):
    """Swin Transformer V2 backbone; ``forward`` returns the stages in ``out_indices`` (channel-first).

    ``window_size``: an int or one per stage; ``pretrained_window_size``: the window(s) the position-bias
    MLP was trained with (0: this model's own), see the module docstring. ``embed_dim`` doubles per
    stage. Init: truncated normal (std 0.02) linears, post-norm weights 0.
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: final LayerNorm (in the backbone), average pool, linear
    paper_head = {"head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, embed_dim: Annotated[int, Ge(1)] = 96,
                 depths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (2, 2, 6, 2),
                 num_heads: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (3, 6, 12, 24),
                 window_size: Annotated[int, Ge(1)] | Sequence[Annotated[int, Ge(1)]] = 8,
                 pretrained_window_size: Annotated[int, Ge(0)] | Sequence[Annotated[int, Ge(0)]] = 0,
                 mlp_ratio: Annotated[float, Gt(0)] = 4.0, patch_size: Annotated[int, Ge(1)] = 4,
                 in_channels: Annotated[int, Ge(1)] = 3, qkv_bias: bool = True,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 out_indices: Sequence[int] | None = None):
        super().__init__()
        stages = len(depths)
        if len(num_heads) != stages:
            raise ValueError(f"SwinV2: depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        windows = [window_size] * stages if isinstance(window_size, int) else list(window_size)
        pretrained = [pretrained_window_size] * stages if isinstance(pretrained_window_size, int) \
            else list(pretrained_window_size)
        if len(windows) != stages or len(pretrained) != stages:
            raise ValueError(f"SwinV2: window_size/pretrained_window_size need one value or one per stage ({stages})")
        dims = [embed_dim * 2 ** i for i in range(stages)]
        out_indices = check_out_indices(out_indices, stages)
        self.out_indices, self.in_channels = tuple(out_indices), in_channels
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        rates = drop_path_rates(depths, drop_path_rate)
        self.layers = nn.ModuleList(
            Stage(nn.Identity() if i == 0 else PatchMergingV2(dims[i - 1], dims[i]),
                        [SwinV2Block(dims[i], num_heads[i], as_pair(windows[i]), j % 2 == 1, as_pair(pretrained[i]),
                                     mlp_ratio, qkv_bias, rates[i][j]) for j in range(depths[i])])
            for i in range(max(out_indices) + 1))
        self.norm = nn.LayerNorm(dims[-1]) if stages - 1 in out_indices else None
        self.feature_info = [FeatureInfo(dims[i], patch_size * 2 ** i, "norm" if i == stages - 1 else f"layers.{i}")
                             for i in out_indices]
        self.apply(trunc_normal_init)
        for layer in self.layers:  # trunc_normal_init reset the LayerNorms: restore the res-post-norm init
            for block in layer.blocks:
                nn.init.zeros_(block.norm1.weight)
                nn.init.zeros_(block.norm2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SwinV2: expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                y = self.norm(x) if self.norm is not None and i == len(self.layers) - 1 else x
                outs.append(y.permute(0, 3, 1, 2))
        return outs

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, 64, 64)

    @classmethod
    def example_config(cls) -> dict:
        return {"embed_dim": 8, "depths": [2, 2, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4}


# ---- weights from timm and torchvision --------------------------------------------------------

def map_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``swinv2_*`` weights -> the keys of ``SwinV2 -> core.LinearClsHead`` (timm's head is ``head.fc``)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out[key] = value
        elif not key.endswith(("relative_coords_table", "relative_position_index", "attn_mask", "k_bias")):
            out["backbone." + key] = value
    return out


def map_torchvision_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``swin_v2_*`` weights -> the keys of ``SwinV2 -> core.LinearClsHead``.

    torchvision holds the stem as ``features.0.{0,2}``, stage i's blocks as ``features.{2i+1}``, the
    merges as ``features.{2i}``, the MLP as ``mlp.{0,3}`` and one qkv bias (its key part unused)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_coords_table", "relative_position_index")):
            continue
        if key.startswith("head."):
            out["head.fc." + key[len("head."):]] = value
            continue
        if key.startswith("norm."):
            out["backbone." + key] = value
            continue
        parts = key.split(".")
        index = int(parts[1])
        if index == 0:
            new = "patch_embed." + {"0": "proj", "2": "norm"}[parts[2]] + "." + ".".join(parts[3:])
        elif index % 2 == 0:  # patch merging before stage index // 2
            new = f"layers.{index // 2}.downsample." + ".".join(parts[2:])
        else:
            rest = ".".join(parts[3:])
            if rest.startswith("mlp."):
                rest = rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            new = f"layers.{index // 2}.blocks.{parts[2]}.{rest}"
        if new.endswith("attn.qkv.bias"):
            dim = value.shape[0] // 3
            out["backbone." + new.replace("qkv.bias", "q_bias")] = value[:dim]
            out["backbone." + new.replace("qkv.bias", "v_bias")] = value[2 * dim:]
            continue
        out["backbone." + new] = value
    return out
