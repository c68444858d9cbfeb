"""CrossViT (Chen, Fan and Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", ICCV 2021).

Two ViT branches see the image at two patch sizes (S-branch: small patches, small width; L-branch:
large patches, large width). A multi-scale encoder (Fig. 2) runs each branch's transformer blocks, then
fuses them by cross-attention on the class tokens (Sec. 3.3, Eq. 7-9): each branch's class token is
projected to the other branch's width, queries the other branch's patch tokens (keys/values: that class
token and the patch tokens), and is projected back. The classifier averages a linear head per branch
on its class token (Sec. 3.1).

As in the reference code, the L-branch sees the image resized (bicubic) to ``img_scale[1] * img_size``
(224 of the 240 input), so both branches have 14x14/20x20 tokens. The † models replace the linear
patch embedding with three convolutions (Sec. 4.1, "a few convolutional layers").

Outputs: each branch's final-normed patch tokens as a map, then each branch's normed class token
``(N, C_b)``. Classifier: ``CrossViT -> vision.CrossViTClsHead``.

Sizes (Table 1, three multi-scale encoders, registered in plugin.py): patch 12/16, widths (S, L),
blocks per encoder (S, L), heads, MLP ratio:
    Ti: 96/192, 1/4, 3, 4 (6.9M)    S: 192/384, 1/4, 6, 4 (26.7M)   B: 384/768, 1/4, 12, 4 (104.7M)
    9: 128/256, 1/3, 4, 3 (8.6M)    15: 192/384, 1/5, 6, 3 (27.4M)  18: 224/448, 1/6, 7, 3 (43.3M)
    9†, 15†, 18†: as 9, 15, 18 with the convolutional patch embedding (8.8M, 28.2M, 44.3M)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import FeatureInfo

from .attention import (
    FixedSizeBackbone,
    TokenClsHead,
    TransformerBlock,
    as_pair,
    linear_rates,
    tokens_to_map,
    trunc_normal_init,
)
from .layers import drop_path


class ConvPatchEmbed(nn.Sequential):
    """The † models' patch embedding (Sec. 4.1): 7x7/4 conv, ReLU, 3x3 conv (stride 3 for 12-pixel
    patches, 2 for 16), ReLU, 3x3 conv (stride 1 for 12, 2 for 16); widths C/4, C/2, C."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        if patch_size not in (12, 16):
            raise ValueError(f"CrossViT: the convolutional patch embedding exists for patch 12 or 16, got {patch_size}")
        s2, s3, p2 = (3, 1, 0) if patch_size == 12 else (2, 2, 1)
        super().__init__(nn.Conv2d(in_channels, dim // 4, 7, stride=4, padding=3), nn.ReLU(),
                         nn.Conv2d(dim // 4, dim // 2, 3, stride=s2, padding=p2), nn.ReLU(),
                         nn.Conv2d(dim // 2, dim, 3, stride=s3, padding=1))


class CrossAttention(nn.Module):
    """Cross-attention (Eq. 7): the class token (position 0) queries all tokens of the other branch."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.wq, self.wk = nn.Linear(dim, dim, bias=qkv_bias), nn.Linear(dim, dim, bias=qkv_bias)
        self.wv, self.proj = nn.Linear(dim, dim, bias=qkv_bias), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        q = self.wq(x[:, :1]).reshape(n, 1, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, 1, c))


class CrossAttentionBlock(nn.Module):
    """``cls + CA(LN([cls, patches]))`` (Eq. 8, no MLP); returns the class token ``(N, 1, C)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads, qkv_bias)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.drop_path(self.attn(self.norm1(x)))


def _projection(in_dim: int, out_dim: int) -> nn.Sequential:
    """f(.) / g(.) of Eq. 7-9: LayerNorm -> GELU -> Linear between the branch widths."""
    return nn.Sequential(nn.LayerNorm(in_dim, eps=1e-6), nn.GELU(), nn.Linear(in_dim, out_dim))


class MultiScaleEncoder(nn.Module):
    """One multi-scale transformer encoder (Fig. 2): per-branch blocks, then class-token fusion."""

    def __init__(self, dims: Sequence[int], depths: Sequence[int], fusion_depth: int, num_heads: Sequence[int],
                 mlp_ratios: Sequence[float], qkv_bias: bool, rates: Sequence[float]):
        super().__init__()
        n = len(dims)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(TransformerBlock(dims[b], num_heads[b], mlp_ratios[b], qkv_bias, rates[i], eps=1e-6)
                            for i in range(depths[b])))
            for b in range(n))
        self.projs = nn.ModuleList(_projection(dims[b], dims[(b + 1) % n]) for b in range(n))
        self.fusion = nn.ModuleList(
            nn.Sequential(*(CrossAttentionBlock(dims[(b + 1) % n], num_heads[(b + 1) % n], qkv_bias, rates[-1])
                            for _ in range(max(1, fusion_depth))))
            for b in range(n))
        self.revert_projs = nn.ModuleList(_projection(dims[(b + 1) % n], dims[b]) for b in range(n))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [blocks(x) for blocks, x in zip(self.blocks, xs)]
        n, outs = len(xs), []
        for b in range(n):
            other = xs[(b + 1) % n]
            cls = self.projs[b](xs[b][:, :1])  # to the other branch's width
            for block in self.fusion[b]:  # the class token attends to the other branch's patch tokens
                cls = block(torch.cat([cls, other[:, 1:]], dim=1))
            outs.append(torch.cat([self.revert_projs[b](cls), xs[b][:, 1:]], dim=1))
        return outs


class CrossViT(FixedSizeBackbone):
    """CrossViT backbone (two branches by default; any number works as in the reference code).

    ``depth``: per multi-scale encoder, the blocks of each branch then the cross-attention blocks
    (0 means one, as the reference code's configs write it). ``mlp_ratio``: per branch (a trailing
    entry for the fusion is ignored: cross-attention blocks have no MLP). ``img_scale``: the factor each
    branch resizes the input by. ``conv_patch_embed``: the † models.
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: one linear layer per branch, logits averaged
    paper_head = {"head": {"type": "vision.CrossViTClsHead", "num_classes": 1000}}

    def __init__(self, embed_dim: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(2)] = (96, 192),
                 depth: Annotated[Sequence[Sequence[Annotated[int, Ge(0)]]], MinLen(1)] = ((1, 4, 0),) * 3,
                 num_heads: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(2)] = (3, 3),
                 mlp_ratio: Annotated[Sequence[Annotated[float, Gt(0)]], MinLen(2)] = (4.0, 4.0, 1.0),
                 patch_size: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(2)] = (12, 16),
                 img_size: Annotated[int, Ge(1)] = 240,
                 img_scale: Annotated[Sequence[Annotated[float, Gt(0)]], MinLen(2)] = (1.0, 224 / 240),
                 conv_patch_embed: bool = False, in_channels: Annotated[int, Ge(1)] = 3, qkv_bias: bool = True,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        n = len(embed_dim)
        if not len(num_heads) == len(patch_size) == len(img_scale) == n or len(mlp_ratio) < n:
            raise ValueError(f"CrossViT: embed_dim, num_heads, patch_size, img_scale (and mlp_ratio) need one entry "
                             f"per branch ({n})")
        if any(len(d) != n + 1 for d in depth):
            raise ValueError(f"CrossViT: each depth entry lists {n} branch depths and the fusion depth, got {depth}")
        if any(d % h for d, h in zip(embed_dim, num_heads)):
            raise ValueError(f"CrossViT: embed_dim {tuple(embed_dim)} not divisible by num_heads {tuple(num_heads)}")
        self.img_size, self.in_channels = as_pair(img_size), in_channels
        self.scaled_sizes = [(int(s * self.img_size[0]), int(s * self.img_size[1])) for s in img_scale]
        self.grids = [(h // p, w // p) for (h, w), p in zip(self.scaled_sizes, patch_size)]
        if min(min(g) for g in self.grids) < 1:
            raise ValueError(f"CrossViT: img_size {img_size} gives no patch for patch_size {tuple(patch_size)}")
        self.patch_embed = nn.ModuleList(
            ConvPatchEmbed(in_channels, d, p) if conv_patch_embed else nn.Conv2d(in_channels, d, p, stride=p)
            for d, p in zip(embed_dim, patch_size))
        self.cls_token = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, d)) for d in embed_dim)
        self.pos_embed = nn.ParameterList(nn.Parameter(torch.zeros(1, 1 + g[0] * g[1], d))
                                          for d, g in zip(embed_dim, self.grids))
        # stochastic depth: each encoder takes max(branch depth) + fusion depth rates of one schedule
        total = sum(sum(d[-2:]) for d in depth)
        rates, ptr = linear_rates(total, drop_path_rate), 0
        self.blocks = nn.ModuleList()
        for d in depth:
            span = max(d[:-1]) + d[-1]
            self.blocks.append(MultiScaleEncoder(embed_dim, d[:-1], d[-1], num_heads, mlp_ratio, qkv_bias,
                                                 rates[ptr:ptr + span] or [0.0]))
            ptr += span
        self.norm = nn.ModuleList(nn.LayerNorm(d, eps=1e-6) for d in embed_dim)
        self.feature_info = [FeatureInfo(d, round(p / s), f"norm.{b}")
                             for b, (d, p, s) in enumerate(zip(embed_dim, patch_size, img_scale))]
        self.feature_info += [FeatureInfo(d, round(p / s), f"cls_token.{b}")
                              for b, (d, p, s) in enumerate(zip(embed_dim, patch_size, img_scale))]
        for p in (*self.cls_token, *self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(trunc_normal_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        xs = []
        for b, embed in enumerate(self.patch_embed):
            image = x
            if tuple(x.shape[-2:]) != self.scaled_sizes[b]:
                image = F.interpolate(x, size=self.scaled_sizes[b], mode="bicubic", align_corners=False)
            tokens = embed(image).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.cls_token[b].expand(x.shape[0], -1, -1), tokens], dim=1)
            xs.append(tokens + self.pos_embed[b])
        for encoder in self.blocks:
            xs = encoder(xs)
        xs = [norm(t) for norm, t in zip(self.norm, xs)]
        return [tokens_to_map(t[:, 1:], g) for t, g in zip(xs, self.grids)] + [t[:, 0] for t in xs]

    @classmethod
    def example_config(cls) -> dict:
        return {"embed_dim": [8, 16], "depth": [[1, 2, 0], [1, 1, 1]], "num_heads": [2, 2], "mlp_ratio": [2, 2, 1],
                "patch_size": [4, 8], "img_size": 32, "img_scale": [1.0, 0.75]}


class CrossViTClsHead(TokenClsHead):
    """CrossViT's classifier (Sec. 3.1): a linear layer on each branch's class token (the last
    ``num_branches`` backbone outputs, ``(N, C_b)``), logits averaged."""

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(1)] = 2,
                 num_branches: Annotated[int, Ge(1)] = 2,
                 label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0):
        super().__init__(in_features, num_classes, label_smoothing)
        if num_branches > len(self.in_features):
            raise ValueError(f"CrossViTClsHead: {num_branches} branches but {len(self.in_features)} inputs")
        self.num_branches = num_branches
        self.fc = nn.ModuleList(nn.Linear(f.channels, num_classes) for f in self.in_features[-num_branches:])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        tokens = features[-self.num_branches:]
        return torch.stack([fc(t) for fc, t in zip(self.fc, tokens)]).mean(0)

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(8, 12, "cls_token.0"), FeatureInfo(16, 16, "cls_token.1")]

    def example_inputs(self, batch_size: int = 2):
        features = [torch.randn(batch_size, f.channels) for f in self.in_features]
        return features, {"labels": torch.randint(self.num_classes, (batch_size,))}


# ---- weights from timm ------------------------------------------------------------------------

def map_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``crossvit_*`` weights -> the keys of ``CrossViT -> vision.CrossViTClsHead``.

    timm names ``cls_token_0``/``pos_embed_0`` where we have parameter lists, keeps a lone fusion
    block unwrapped (we always hold a sequence) and its conv patch embedding under ``.proj``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out["head.fc." + key[len("head."):]] = value
            continue
        for name in ("cls_token", "pos_embed"):
            if key.startswith(name + "_"):
                key = f"{name}.{key[len(name) + 1:]}"
        parts = key.split(".")
        if len(parts) > 4 and parts[2] == "fusion" and not parts[4].isdigit():
            parts.insert(4, "0")
        key = ".".join(parts).replace(".proj.", ".", 1) if parts[0] == "patch_embed" else ".".join(parts)
        out["backbone." + key] = value
    return out
