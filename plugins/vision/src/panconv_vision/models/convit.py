"""ConViT (d'Ascoli et al., "ConViT: Improving Vision Transformers with Soft Convolutional Inductive
Biases", ICML 2021).

A DeiT whose first ``local_layers`` blocks use gated positional self-attention (GPSA, Eq. 5): each head
mixes content attention with a positional attention ``softmax(v_pos^T r_ij)`` over relative offsets
``r_ij = (dx, dy, dx^2 + dy^2)``, through a learned per-head gate ``sigma(lambda_h)``; the positional
part is initialised local (Sec. 3, "locality initialisation": head h attends to one offset of a
sqrt(heads) x sqrt(heads) grid, strength ``alpha``) and ``v`` to the identity. The class token joins after
the GPSA layers; the remaining blocks are plain self-attention (SA).

Outputs: the final-normed patch tokens as a ``(N, C, H/16, W/16)`` map, then the normed class token
``(N, C)``. The ImageNet classifier is ``ConViT -> core.LinearClsHead`` (on the class token).

Sizes (Table 1, 12 blocks, 10 GPSA, registered in plugin.py): heads x embedding
    Ti: 4 x 192 (6M)   Ti+: 4 x 256 (10M)   S: 9 x 432 (27M)   S+: 9 x 576 (48M)   B: 16 x 768 (86M)
    B+: 16 x 1024 (152M)
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import FeatureInfo

from .attention import (
    Attention,
    FixedSizeBackbone,
    TransformerBlock,
    as_pair,
    linear_rates,
    tokens_to_map,
    trunc_normal_init,
)


def relative_offsets(grid: tuple[int, int]) -> torch.Tensor:
    """``(L, L, 3)``: ``(dx, dy, dx^2 + dy^2)`` from query patch i to key patch j (row-major patches)."""
    with torch.device("cpu"):
        ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        ys, xs = ys.flatten().float(), xs.flatten().float()
        dx, dy = xs[None, :] - xs[:, None], ys[None, :] - ys[:, None]
        return torch.stack([dx, dy, dx ** 2 + dy ** 2], dim=-1)


class GPSA(nn.Module):
    """Gated positional self-attention (Eq. 5): ``(1 - sigma(lambda)) softmax(QK^T) + sigma(lambda)
    softmax(v_pos^T r)``, renormalised, times V."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int], qkv_bias: bool = False,
                 locality_strength: float = 1.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.register_buffer("rel_offsets", relative_offsets(grid), persistent=False)

    def local_init(self) -> None:
        """Locality initialisation (Sec. 3): v = identity; head h -> offset (h1 - c, h2 - c) on a
        sqrt(heads)-wide grid, ``v_pos = alpha * (-2 dx_h, -2 dy_h, -1)`` up to the sign convention
        of ``r``, so that head h's positional attention peaks at its offset."""
        with torch.no_grad():
            self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
            k = int(self.num_heads ** 0.5)
            centre = (k - 1) / 2 if k % 2 == 0 else k // 2
            for h1 in range(k):
                for h2 in range(k):
                    head = h1 + k * h2
                    self.pos_proj.weight[head] = torch.tensor([2.0 * (h2 - centre), 2.0 * (h1 - centre), -1.0])
            self.pos_proj.weight.mul_(self.locality_strength)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        q, k = self.qk(x).reshape(n, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        content = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(-1)
        position = self.pos_proj(self.rel_offsets.to(x.dtype)).permute(2, 0, 1).softmax(-1).unsqueeze(0)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gate) * content + gate * position
        return attn / attn.sum(-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        v = self.v(x).reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        return self.proj((self.attention(x) @ v).transpose(1, 2).reshape(n, length, c))


class ConViT(FixedSizeBackbone):
    """ConViT backbone: patch embedding + learned absolute position embedding, ``local_layers`` GPSA
    blocks, the class token, ``depth - local_layers`` SA blocks, final LayerNorm (eps 1e-6).

    ``embed_dim`` must divide by ``num_heads``; ``img_size`` fixes the position embedding (and the
    GPSA offsets); ``drop_path_rate`` rises linearly over the blocks (DeiT's rule).
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: a linear layer on the (normed) class token
    paper_head = {"head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, embed_dim: Annotated[int, Ge(1)] = 192, num_heads: Annotated[int, Ge(1)] = 4,
                 depth: Annotated[int, Ge(1)] = 12, local_layers: Annotated[int, Ge(0)] = 10,
                 mlp_ratio: Annotated[float, Gt(0)] = 4.0, locality_strength: Annotated[float, Ge(0)] = 1.0,
                 patch_size: Annotated[int, Ge(1)] = 16, img_size: Annotated[int, Ge(1)] = 224,
                 in_channels: Annotated[int, Ge(1)] = 3, qkv_bias: bool = False,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"ConViT: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if local_layers > depth:
            raise ValueError(f"ConViT: local_layers {local_layers} exceeds depth {depth}")
        self.img_size, self.in_channels = as_pair(img_size), in_channels
        self.grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        if min(self.grid) < 1:
            raise ValueError(f"ConViT: img_size {img_size} is smaller than patch_size {patch_size}")
        self.local_layers = local_layers
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        rates = linear_rates(depth, drop_path_rate)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio, drop_path_rate=rates[i], eps=1e-6,
                             attn=GPSA(embed_dim, num_heads, self.grid, qkv_bias, locality_strength)
                             if i < local_layers else Attention(embed_dim, num_heads, qkv_bias))
            for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.feature_info = [FeatureInfo(embed_dim, patch_size, "norm"),
                             FeatureInfo(embed_dim, patch_size, "cls_token")]
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)
        for block in self.blocks[:local_layers]:
            block.attn.local_init()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for i, block in enumerate(self.blocks):
            if i == self.local_layers:  # the class token joins after the GPSA layers (Sec. 3)
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = block(x)
        if self.local_layers == len(self.blocks):
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(x)
        return [tokens_to_map(x[:, 1:], self.grid), x[:, 0]]

    @classmethod
    def example_config(cls) -> dict:
        return {"embed_dim": 16, "num_heads": 4, "depth": 3, "local_layers": 2, "patch_size": 8, "img_size": 32}


# ---- weights from timm ------------------------------------------------------------------------

def map_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``convit_*`` weights -> the keys of ``ConViT -> core.LinearClsHead``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out["head.fc." + key[len("head."):]] = value
        else:
            out["backbone." + key.replace("patch_embed.proj.", "patch_embed.")] = value
    return out

