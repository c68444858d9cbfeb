"""Conditional Cross Attention network (Song et al., "Conditional Cross Attention Network for Multi-Space
Embedding without Entanglement in Only a SINGLE Network", ICCV 2023).

One ViT gives one embedding space per attribute (condition). The image goes once through the shared
ViT blocks; a *condition token* (the learned embedding of the attribute index, Sec. 3: one-hot condition
-> linear layer) then replaces the query of the attention in the last ``cond_depth`` blocks: it attends to
the image tokens (keys and values), the attended vector joins the tokens through the block's skip
connection, then the block's MLP; the normed class token goes through a linear layer to the
attribute-specific embedding (L2-normalised).
Switching the condition changes only those last blocks' output: everything before them is shared, which
is the paper's point (one backbone, no entanglement between spaces).

A conditional block has exactly the parameters of a ViT block (``qkv`` split into ``q`` and ``kv``), so the
network is a ViT (timm-compatible parameter names in the shared part: ``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``) plus the condition table and
the embedding layer. Training: a triplet loss per attribute (``panconv_vision.losses.triplet_loss``):
for each attribute, every anchor in the batch gets a random positive (same value of that attribute) and a
random negative (another value), in that attribute's space; the mean over attributes is the loss.

No official code was found (searched the code index and GitHub mirrors): ``tests/test_cca.py`` tests the
defining identity instead (shared tokens identical whatever the condition; only the conditional blocks'
output moves; the shared trunk equals timm's ViT on the same weights).

:class:`PerAttributeViT` is the paper's baseline (Fig. 1a): one network per attribute, each a ViT whose
class token gives the embedding, trained with the same triplet loss on its own attribute.

Sizes: ``cca_vit_base_patch16_224`` is the paper's ViT-B/16 (224^2, 12 blocks, 768 wide, 12 heads), the last
block conditional, 8 conditions (FashionAI's 8 attributes), 1024-d embeddings (registered in plugin.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Model

from .attention import Mlp, TransformerBlock, as_pair, linear_rates, trunc_normal_init
from .layers import drop_path

__all__ = ["ConditionalBlock", "ConditionalCrossAttentionNet", "PerAttributeViT", "ViTTrunk",
           "attribute_triplet_loss"]


class ViTTrunk(nn.Module):
    """Patch embedding + class token + learned positions + ``depth`` pre-norm blocks (ViT, timm names)."""

    def __init__(self, in_channels: int, img_size: int, patch_size: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, drop_path_rates: list[float]):
        super().__init__()
        h, w = as_pair(img_size)
        if h % patch_size or w % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.img_size, self.in_channels = (h, w), in_channels
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (h // patch_size) * (w // patch_size), dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio, qkv_bias=True, drop_path_rate=r,
                                                     eps=1e-6) for r in drop_path_rates[:depth])
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected images (N, {self.in_channels}, {self.img_size[0]}, {self.img_size[1]}) "
                             f"(img_size fixes the position embedding), got {tuple(x.shape)}")
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


class ConditionalCrossAttention(nn.Module):
    """Cross-attention whose query is the condition token: ``softmax(q(c) k(x)^T / sqrt(d)) v(x)`` -> ``(N, 1, C)``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, 2 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        k, v = self.kv(x).reshape(n, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q(c).reshape(n, c.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class ConditionalBlock(nn.Module):
    """A ViT block whose attention query is the condition: ``x <- x + CCA(norm1(c), norm1(x))`` (the condition
    token queries the image tokens; the attended vector is added to every token, the skip path carries the
    image), then ``x <- x + MLP(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ConditionalCrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, c: torch.Tensor, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``last``: only the class token (position 0) is needed afterwards: the MLP runs on it alone."""
        x = x + self.drop_path(self.attn(self.norm1(c), self.norm1(x)))
        if last:
            x = x[:, :1]
        return x + self.drop_path(self.mlp(self.norm2(x)))


def attribute_triplet_loss(embeddings: torch.Tensor, attributes: torch.Tensor, margin: float = 0.2,
                           distance: str = "euclidean") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean over attributes of the triplet loss in that attribute's space.

    ``embeddings`` ``(B, K, E)``, ``attributes`` ``(B, K)`` values. For attribute ``k`` every anchor with at least
    one positive (same value, another item) and one negative (another value) draws one of each uniformly
    (torch's global generator). Returns ``(mean loss, per-attribute losses)``; an attribute without any valid
    anchor contributes ``0 * embeddings.sum()`` (keeps the graph, no gradient).
    """
    from ..losses import triplet_loss

    if embeddings.dim() != 3 or attributes.shape != embeddings.shape[:2]:
        raise ValueError(f"attribute_triplet_loss: embeddings (B, K, E) and attributes (B, K) expected, got "
                         f"{tuple(embeddings.shape)} and {tuple(attributes.shape)}")
    b = len(embeddings)
    off = ~torch.eye(b, dtype=torch.bool, device=embeddings.device)
    losses = []
    for k in range(embeddings.shape[1]):
        values = attributes[:, k]
        same = (values[:, None] == values[None, :]) & off
        diff = values[:, None] != values[None, :]
        valid = same.any(1) & diff.any(1)
        if not bool(valid.any()):
            losses.append(embeddings[:, k].sum() * 0.0)
            continue
        pos = torch.multinomial(same[valid].float(), 1).squeeze(1)
        neg = torch.multinomial(diff[valid].float(), 1).squeeze(1)
        e = embeddings[:, k]
        losses.append(triplet_loss(e[valid], e[pos], e[neg], margin=margin, distance=distance))
    return torch.stack(losses).mean(), losses


class _AttributeEmbedder(Model):
    """Shared ``loss``/``predict``/``example_inputs`` of the per-attribute embedding models."""

    metadata_inputs = ("num_attributes", "in_channels")
    num_attributes: int
    in_channels: int
    img_size: tuple[int, int]

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        attributes = batch["attributes"]
        if attributes.dim() != 2 or attributes.shape[1] != self.num_attributes:
            raise ValueError(f"{type(self).__name__}: batch['attributes'] must be (B, {self.num_attributes}), got "
                             f"{tuple(attributes.shape)}")
        total, per = attribute_triplet_loss(outputs["attribute_features"], attributes, self.margin, self.distance)
        out = {"loss": total}
        out.update({f"triplet_{k}": v.detach() for k, v in enumerate(per)})
        return out

    def predict(self, outputs: dict, batch: dict | None = None) -> dict:
        emb = outputs["attribute_features"]
        return {"attribute_features": emb, "features": emb.flatten(1)}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        return {"inputs": torch.randn(batch_size, self.in_channels, *self.img_size, generator=g),
                "attributes": torch.randint(0, 2, (batch_size, self.num_attributes), generator=g)}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_attributes": 3, "in_channels": 1, "img_size": 16, "patch_size": 4, "dim": 32, "depth": 2,
                "num_heads": 2, "embed_dim": 16}


class ConditionalCrossAttentionNet(_AttributeEmbedder):
    """CCA network (see the module docstring): ``forward(batch) -> {"attribute_features": (B, K, E)}``, one
    embedding per attribute (condition) for every image; ``embed(x, condition)`` gives one condition's.

    Args:
        num_attributes: number of conditions K (filled from the data set's ``num_attributes``).
        in_channels / img_size / patch_size: the input (filled from the data set) and the patch grid.
        dim / depth / num_heads / mlp_ratio: the ViT; the last ``cond_depth`` of the ``depth`` blocks are
            conditional cross-attention blocks (the paper: the last one).
        embed_dim: size of each attribute-specific embedding. normalize: L2-normalise the embeddings.
        margin / distance: the triplet loss.
    """

    def __init__(self, num_attributes: Annotated[int, Ge(1)] = 3, in_channels: Annotated[int, Ge(1)] = 1,
                 img_size: Annotated[int, Ge(1)] = 28, patch_size: Annotated[int, Ge(1)] = 4,
                 dim: Annotated[int, Ge(1)] = 64, depth: Annotated[int, Ge(1)] = 4,
                 num_heads: Annotated[int, Ge(1)] = 4, cond_depth: Annotated[int, Ge(1)] = 1,
                 mlp_ratio: Annotated[float, Gt(0)] = 4.0, embed_dim: Annotated[int, Ge(1)] = 64,
                 normalize: bool = True, margin: Annotated[float, Ge(0)] = 0.2,
                 distance: Literal["euclidean", "cosine"] = "euclidean",
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if not 1 <= cond_depth <= depth:
            raise ValueError(f"ConditionalCrossAttentionNet: cond_depth must be in [1, depth={depth}], got "
                             f"{cond_depth}")
        if num_attributes < 1 or embed_dim < 1 or margin < 0 or distance not in ("euclidean", "cosine"):
            raise ValueError("ConditionalCrossAttentionNet: needs num_attributes >= 1, embed_dim >= 1, margin >= 0 "
                             f"and distance euclidean|cosine (got {num_attributes}, {embed_dim}, {margin}, "
                             f"{distance!r})")
        rates = linear_rates(depth, drop_path_rate)
        self.trunk = ViTTrunk(in_channels, img_size, patch_size, dim, depth - cond_depth, num_heads, mlp_ratio,
                              rates)
        self.condition_embed = nn.Embedding(num_attributes, dim)       # one-hot condition -> linear (Sec. 3)
        self.cond_blocks = nn.ModuleList(ConditionalBlock(dim, num_heads, mlp_ratio, r)
                                         for r in rates[depth - cond_depth:])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, embed_dim)
        self.num_attributes, self.in_channels, self.img_size = num_attributes, in_channels, self.trunk.img_size
        self.normalize, self.margin, self.distance = normalize, margin, distance
        self.apply(trunc_normal_init)
        nn.init.trunc_normal_(self.condition_embed.weight, std=0.02)

    def condition(self, tokens: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Shared ``tokens`` ``(N, L, C)`` and condition indices ``(N,)`` -> embeddings ``(N, E)``."""
        c = self.condition_embed(conditions)[:, None]
        for i, block in enumerate(self.cond_blocks):
            tokens = block(c, tokens, last=i == len(self.cond_blocks) - 1)
        e = self.head(self.norm(tokens[:, 0]))
        return F.normalize(e, dim=-1) if self.normalize else e

    def embed(self, x: torch.Tensor, condition: int | torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> their embeddings ``(N, E)`` in the space of ``condition`` (int or ``(N,)``)."""
        tokens = self.trunk(x)
        conditions = torch.as_tensor(condition, device=x.device).long().expand(len(x))
        return self.condition(tokens, conditions)

    def forward(self, batch: dict) -> dict:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        tokens = self.trunk(x)                                          # once per image, shared by all conditions
        n, k = len(x), self.num_attributes
        conditions = torch.arange(k, device=x.device).repeat(n)         # image-major: (i, 0), (i, 1), ...
        emb = self.condition(tokens.repeat_interleave(k, dim=0), conditions)
        return {"attribute_features": emb.reshape(n, k, -1)}


class PerAttributeViT(_AttributeEmbedder):
    """The baseline: ``num_attributes`` independent ViTs, the class token of attribute k's network -> norm ->
    linear -> its embedding. Same arguments as :class:`ConditionalCrossAttentionNet` (no ``cond_depth``):
    each network has ``depth`` self-attention blocks of width ``dim``."""

    def __init__(self, num_attributes: Annotated[int, Ge(1)] = 3, in_channels: Annotated[int, Ge(1)] = 1,
                 img_size: Annotated[int, Ge(1)] = 28, patch_size: Annotated[int, Ge(1)] = 4,
                 dim: Annotated[int, Ge(1)] = 64, depth: Annotated[int, Ge(1)] = 4,
                 num_heads: Annotated[int, Ge(1)] = 4, mlp_ratio: Annotated[float, Gt(0)] = 4.0,
                 embed_dim: Annotated[int, Ge(1)] = 64, normalize: bool = True,
                 margin: Annotated[float, Ge(0)] = 0.2, distance: Literal["euclidean", "cosine"] = "euclidean",
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if num_attributes < 1 or embed_dim < 1 or margin < 0 or distance not in ("euclidean", "cosine"):
            raise ValueError("PerAttributeViT: needs num_attributes >= 1, embed_dim >= 1, margin >= 0 and distance "
                             f"euclidean|cosine (got {num_attributes}, {embed_dim}, {margin}, {distance!r})")
        rates = linear_rates(depth, drop_path_rate)
        self.nets = nn.ModuleList(ViTTrunk(in_channels, img_size, patch_size, dim, depth, num_heads, mlp_ratio, rates)
                                  for _ in range(num_attributes))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(num_attributes))
        self.heads = nn.ModuleList(nn.Linear(dim, embed_dim) for _ in range(num_attributes))
        self.num_attributes, self.in_channels, self.img_size = num_attributes, in_channels, self.nets[0].img_size
        self.normalize, self.margin, self.distance = normalize, margin, distance
        self.apply(trunc_normal_init)

    def forward(self, batch: dict) -> dict:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        emb = torch.stack([head(norm(net(x)[:, 0])) for net, norm, head in zip(self.nets, self.norms, self.heads)],
                          dim=1)
        return {"attribute_features": F.normalize(emb, dim=-1) if self.normalize else emb}
