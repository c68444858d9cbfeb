"""VOLO (Yuan, Hou, Jiang, Feng and Yan, "VOLO: Vision Outlooker for Visual Recognition", TPAMI 2022).

Outlook attention (Sec. 3.1, Eq. 2-5): at each location a linear layer on the centre token predicts the
``K^2 x K^2`` aggregation weights of its ``K x K`` neighbourhood (no query-key products); the values
of every window are aggregated with them (unfold -> weighted sum) and the overlapping results summed
back onto the map (fold). VOLO runs Outlookers on 1/8-scale tokens (stage 1; the attention weights
are predicted on 2x2-pooled tokens, stride 2), then transformer blocks on 1/16-scale tokens with a
learned position embedding, then two class-attention blocks (CaiT) on a class token. The classifier
adds to the class-token logits half the per-class maximum of a linear layer on every patch token (the
token-labelling auxiliary head, Sec. 3.2). ``mix_token=True`` adds MixToken (token-level CutMix,
Jiang et al. 2021, "All Tokens Matter") in training.

Outputs: the final-normed 1/16 patch tokens as a map and the normed class token ``(N, C)``.
Classifier: ``VOLO -> vision.VOLOClsHead``.

Sizes (Table 2, registered in plugin.py): blocks per stage (Outlooker, Transformer x 3), widths, heads
    D1: 4/4/8/2, 192/384, 6/12, MLP 3 (27M)        D2: 6/4/10/4, 256/512, 8/16, MLP 3 (59M)
    D3: 8/8/16/4, 256/512, 8/16, MLP 3 (86M)       D4: 8/8/16/4, 384/768, 12/16, MLP 3 (193M)
    D5: 12/12/20/4, 384/768, 12/16, MLP 4, stem width 128 (296M)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import FeatureInfo

from .attention import (
    Attention,
    ClassBlock,
    FixedSizeBackbone,
    Mlp,
    TokenClsHead,
    as_pair,
    tokens_to_map,
    trunc_normal_init,
)
from .layers import drop_path


class OutlookAttention(nn.Module):
    """Outlook attention on ``(N, H, W, C)`` tokens (Eq. 2-5): weights ``softmax(W_A x_centre)`` of
    shape ``K^2 x K^2`` per head, predicted on ``stride``-pooled tokens, aggregate unfolded values;
    fold sums the windows back."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 2,
                 qkv_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"OutlookAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn = nn.Linear(dim, kernel_size ** 4 * num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        k2 = self.kernel_size ** 2
        oh, ow = math.ceil(h / self.stride), math.ceil(w / self.stride)
        v = F.unfold(self.v(x).permute(0, 3, 1, 2), self.kernel_size, padding=self.padding, stride=self.stride)
        v = v.reshape(n, self.num_heads, self.head_dim, k2, oh * ow).permute(0, 1, 4, 3, 2)  # N, h, L, K^2, d
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), self.stride, self.stride, ceil_mode=True).permute(0, 2, 3, 1)
        attn = self.attn(pooled).reshape(n, oh * ow, self.num_heads, k2, k2).transpose(1, 2)
        attn = (attn * self.head_dim ** -0.5).softmax(-1)
        out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(n, c * k2, oh * ow)
        out = F.fold(out, (h, w), self.kernel_size, padding=self.padding, stride=self.stride)
        return self.proj(out.permute(0, 2, 3, 1))


class GridAttention(Attention):
    """Multi-head self-attention over all ``H*W`` tokens of an ``(N, H, W, C)`` grid."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x.flatten(1, 2), bias).reshape(x.shape)


class GridBlock(nn.Module):
    """Pre-norm block on ``(N, H, W, C)`` tokens: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``; the
    Outlooker (outlook attention) and the transformer block of VOLO (self-attention over H*W)."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvStemEmbed(nn.Module):
    """VOLO's patch embedding: three convolutions with BatchNorm + ReLU (7x7/2, 3x3, 3x3; width
    ``hidden``), then a ``patch/2`` x ``patch/2`` strided projection (1/8 scale for patch 8)."""

    def __init__(self, in_channels: int, hidden: int, dim: int, patch_size: int = 8):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.proj = nn.Conv2d(hidden, dim, patch_size // 2, stride=patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))


class VOLO(FixedSizeBackbone):
    """VOLO backbone: conv stem (1/8), Outlookers, 2x2 patch merge (1/16), position embedding,
    transformer blocks, class token + class-attention blocks, final LayerNorm.

    ``layers``/``embed_dims``/``num_heads``: per stage (the first stage Outlookers at 1/8, the rest
    transformer blocks at 1/16; the widths after the first must be equal). ``drop_path_rate`` rises
    linearly over all blocks and applies to the transformer blocks, as in the reference code.

    ``mix_token``: MixToken in training mode (Jiang et al. 2021, "All Tokens Matter"; VOLO trains with it): after the
    patch embedding, the tokens inside a CutMix box are replaced by those of the batch's reversed order
    (sample ``i`` takes them from sample ``N-1-i``). The box is drawn on the output (1/16) token grid with area
    fraction ``1 - lam``, ``lam ~ Beta(mix_alpha, mix_alpha)`` (CutMix's rule: side ratio ``sqrt(1 - lam)``,
    uniform centre, clipped), and covers the matching 2x2 blocks of 1/8 tokens, so the embedded patch under
    every output token comes wholly from one image (the attention layers after it mix as they do). The box
    then travels to the head as a third output, a ``(4,)`` long tensor ``(y1, x1, y2, x2)`` on the output grid
    (empty when the draw is), which ``vision.VOLOClsHead`` (``token_labeling=True``) uses to mix the targets
    the same way. Evaluation mode never mixes and returns the two declared outputs.
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: class-token linear head + the auxiliary token head
    paper_head = {"head": {"type": "vision.VOLOClsHead", "num_classes": 1000}}

    def __init__(self, layers: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(2)] = (4, 4, 8, 2),
                 embed_dims: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(2)] = (192, 384, 384, 384),
                 num_heads: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(2)] = (6, 12, 12, 12),
                 mlp_ratio: Annotated[float, Gt(0)] = 3.0, stem_hidden_dim: Annotated[int, Ge(1)] = 64,
                 post_layers: Annotated[int, Ge(0)] = 2, img_size: Annotated[int, Ge(1)] = 224,
                 patch_size: Annotated[int, Ge(2)] = 8, outlook_kernel: Annotated[int, Ge(1)] = 3,
                 in_channels: Annotated[int, Ge(1)] = 3, qkv_bias: bool = False,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0, mix_token: bool = False,
                 mix_alpha: Annotated[float, Gt(0)] = 1.0):
        super().__init__()
        if mix_alpha <= 0:
            raise ValueError(f"VOLO: mix_alpha must be > 0, got {mix_alpha}")
        self.mix_token, self.mix_alpha = mix_token, mix_alpha
        if not len(layers) == len(embed_dims) == len(num_heads):
            raise ValueError("VOLO: layers, embed_dims and num_heads need one entry per stage")
        if len(set(embed_dims[1:])) != 1:
            raise ValueError(f"VOLO: the stages after the Outlookers share one width, got {tuple(embed_dims)}")
        if patch_size % 2:
            raise ValueError(f"VOLO: patch_size must be even (a stride-2 stem, then patch/2), got {patch_size}")
        self.img_size, self.in_channels = as_pair(img_size), in_channels
        self.grid = (self.img_size[0] // patch_size // 2, self.img_size[1] // patch_size // 2)
        if min(self.grid) < 1:
            raise ValueError(f"VOLO: img_size {img_size} is too small for patch_size {patch_size} (x2 merge)")
        self.patch_embed = ConvStemEmbed(in_channels, stem_hidden_dim, embed_dims[0], patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid, embed_dims[-1]))
        total = sum(layers)
        network: list[nn.Module] = [nn.Sequential(*(
            GridBlock(embed_dims[0], OutlookAttention(embed_dims[0], num_heads[0], outlook_kernel,
                                                      outlook_kernel // 2, 2, qkv_bias), mlp_ratio)
            for _ in range(layers[0])))]
        network.append(_PatchMerge(embed_dims[0], embed_dims[1]))
        start = layers[0]
        for i in range(1, len(layers)):
            network.append(nn.Sequential(*(
                GridBlock(embed_dims[i], GridAttention(embed_dims[i], num_heads[i], qkv_bias), mlp_ratio,
                          drop_path_rate * (start + j) / (total - 1))
                for j in range(layers[i]))))
            start += layers[i]
        self.network = nn.ModuleList(network)
        dim = embed_dims[-1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.post_network = nn.ModuleList(ClassBlock(dim, num_heads[-1], mlp_ratio, qkv_bias)
                                          for _ in range(post_layers))
        self.norm = nn.LayerNorm(dim)
        self.feature_info = [FeatureInfo(dim, 2 * patch_size, "norm"), FeatureInfo(dim, 2 * patch_size, "cls_token")]
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(trunc_normal_init)

    def forward(self, x: torch.Tensor, mix_box: tuple[int, int, int, int] | None = None) -> list[torch.Tensor]:
        """``[patch-token map, class token]``; in training with ``mix_token`` (or given an explicit
        ``mix_box`` on the output token grid) also the MixToken box, see the class doc."""
        self.check_input(x)
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # N, H/8, W/8, C
        if mix_box is None and self.mix_token and self.training:
            lam = float(torch.distributions.Beta(self.mix_alpha, self.mix_alpha).sample())
            mix_box = mix_token_box(self.grid, lam)
        if mix_box is not None:
            x = mix_tokens(x, tuple(2 * b for b in mix_box))  # the 1/8 grid: 2x2 tokens per output token
        x = self.network[1](self.network[0](x)) + self.pos_embed
        for stage in self.network[2:]:
            x = stage(x)
        x = x.flatten(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.post_network:
            x = block(x)
        x = self.norm(x)
        out = [tokens_to_map(x[:, 1:], self.grid), x[:, 0]]
        if mix_box is not None:
            out.append(torch.tensor(mix_box, dtype=torch.long, device=x.device))
        return out

    @classmethod
    def example_config(cls) -> dict:
        return {"layers": [1, 1], "embed_dims": [8, 16], "num_heads": [2, 4], "stem_hidden_dim": 8, "img_size": 32}


def mix_token_box(grid: tuple[int, int], lam: float, generator: torch.Generator | None = None
                  ) -> tuple[int, int, int, int]:
    """CutMix's box ``(y1, x1, y2, x2)`` on an ``h x w`` token grid for mixing ratio ``lam``: side lengths
    ``int(side * sqrt(1 - lam))``, a uniform centre, ``centre -+ length // 2`` clipped to the grid (the
    reference ``rand_bbox``; the box's real area fraction, not ``1 - lam``, then mixes the labels)."""
    h, w = grid
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    y1, y2 = min(max(cy - cut_h // 2, 0), h), min(max(cy + cut_h // 2, 0), h)
    x1, x2 = min(max(cx - cut_w // 2, 0), w), min(max(cx + cut_w // 2, 0), w)
    return y1, x1, y2, x2


def mix_tokens(x: torch.Tensor, box: Sequence[int], channels_last: bool = True) -> torch.Tensor:
    """MixToken's swap: inside ``box = (y1, x1, y2, x2)`` every sample takes the batch-reversed sample's
    values (``x.flip(0)``); ``x`` is ``(N, H, W, C)`` (``channels_last``) or ``(N, C, H, W)``. A new tensor."""
    y1, x1, y2, x2 = (int(b) for b in box)
    out = x.clone()
    if channels_last:
        out[:, y1:y2, x1:x2] = x.flip(0)[:, y1:y2, x1:x2]
    else:
        out[:, :, y1:y2, x1:x2] = x.flip(0)[:, :, y1:y2, x1:x2]
    return out


class _PatchMerge(nn.Module):
    """2x2 strided convolution between the Outlooker and transformer stages, on ``(N, H, W, C)``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class VOLOClsHead(TokenClsHead):
    """VOLO's classifier: ``fc(class token) + 0.5 * max over patch tokens of aux_fc(token)`` (the
    token-labelling head, Sec. 3.2, as the reference code evaluates). Reads the backbone's last two
    outputs: the patch-token map and the class token.

    Training: by default cross-entropy on these combined logits with the image label. With
    ``token_labeling=True``, the token-labelling objective (Jiang et al. 2021, "All Tokens Matter", as
    VOLO trains): ``cls_weight * H(fc(class token), y) + dense_weight * mean_i H(aux_fc(token_i), t_i)``,
    ``H`` the (soft-target) cross-entropy, ``t_i`` token i's target distribution from
    ``batch["token_labels"]``: ``(N, C, h, w)`` soft maps (the annotator's dense scores) or ``(N, h, w)``
    class indices, resampled to the token grid (area average for soft maps, nearest for indices); without
    that key every token's target is the image label (the reference loss's fallback). ``vision.MNISTTokenLabels``
    serves an annotator's maps (``panconv_vision.tools.token_labels`` writes them). Defaults 1.0/0.5
    are the reference training script's ``--cls-weight``/``--dense-weight``. The outputs are then a dict
    (``logits``: the combined evaluation logits; ``cls_logits``; ``token_logits`` ``(N, C, h, w)``).

    MixToken: when the backbone (``VOLO(mix_token=True)``, training mode) appends its box ``(y1, x1, y2, x2)``
    after the two declared outputs, the loss mixes the targets as the tokens were mixed: inside the box the
    token targets are the batch-reversed sample's (``t.flip(0)``), and the class target is
    ``lam * y + (1 - lam) * y.flip(0)`` with ``lam = 1 - box area / (h * w)``, the exact token-area share
    (the reference loss's rule). MixToken needs ``token_labeling=True``.
    """

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(1)] = 2,
                 aux_weight: Annotated[float, Ge(0)] = 0.5,
                 label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0, token_labeling: bool = False,
                 cls_weight: Annotated[float, Ge(0)] = 1.0, dense_weight: Annotated[float, Ge(0)] = 0.5):
        super().__init__(in_features, num_classes, label_smoothing)
        if len(self.in_features) < 2:
            raise ValueError("VOLOClsHead: needs the patch-token map and the class token (two inputs)")
        if token_labeling and cls_weight + dense_weight <= 0:
            raise ValueError("VOLOClsHead: cls_weight + dense_weight must be > 0 with token_labeling")
        self.aux_weight, self.token_labeling = aux_weight, token_labeling
        self.cls_weight, self.dense_weight = cls_weight, dense_weight
        self.fc = nn.Linear(self.in_features[-1].channels, num_classes)
        self.aux_fc = nn.Linear(self.in_features[-2].channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        declared = len(self.in_features)
        mix_box = features[declared] if len(features) > declared else None  # VOLO's MixToken box (training)
        fmap, cls = features[declared - 2], features[declared - 1]
        if mix_box is not None and not self.token_labeling:
            raise ValueError("VOLOClsHead: the backbone mixes tokens (VOLO mix_token=true), which needs "
                             "token_labeling=true on the head")
        token_logits = self.aux_fc(fmap.flatten(2).transpose(1, 2))  # N, h*w, classes
        cls_logits = self.fc(cls)
        logits = cls_logits + self.aux_weight * token_logits.amax(1)
        if not self.token_labeling:
            return logits
        token_logits = token_logits.transpose(1, 2).reshape(fmap.shape[0], -1, *fmap.shape[2:])
        out = {"logits": logits, "cls_logits": cls_logits, "token_logits": token_logits}
        if mix_box is not None:
            out["mix_box"] = mix_box
        return out

    def token_targets(self, batch: dict, grid: tuple[int, int]) -> torch.Tensor:
        """Per-token target distributions ``(N, C, h, w)`` on the token grid (see the class doc)."""
        labels = batch.get("token_labels")
        if labels is None:  # every token carries the image label
            labels = batch["labels"]
            if labels.dim() == 1:
                labels = F.one_hot(labels, self.num_classes).float()
            return labels[:, :, None, None].expand(-1, -1, *grid)
        if labels.dim() == 3:  # class indices
            if tuple(labels.shape[1:]) != grid:
                labels = F.interpolate(labels[:, None].float(), size=grid, mode="nearest")[:, 0].long()
            return F.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()
        if labels.dim() != 4 or labels.shape[1] != self.num_classes:
            raise ValueError(f"VOLOClsHead: token_labels must be (N, {self.num_classes}, h, w) scores or (N, h, w) "
                             f"class indices, got shape {tuple(labels.shape)}")
        return labels.float() if tuple(labels.shape[2:]) == grid else F.adaptive_avg_pool2d(labels.float(), grid)

    def loss(self, outputs, batch: dict) -> dict[str, torch.Tensor]:
        if not self.token_labeling:
            return super().loss(outputs, batch)
        token_logits = outputs["token_logits"]
        grid = tuple(token_logits.shape[2:])
        targets = self.token_targets(batch, grid)
        box = outputs.get("mix_box")
        if box is None:
            cls = super().loss(outputs["cls_logits"], batch)["loss"]
        else:  # MixToken: the token targets swapped inside the box, the class target mixed by token area
            y1, x1, y2, x2 = (int(b) for b in box)
            lam = 1.0 - (y2 - y1) * (x2 - x1) / (grid[0] * grid[1])
            targets = mix_tokens(targets.contiguous(), (y1, x1, y2, x2), channels_last=False)
            labels = batch["labels"]
            if labels.dim() == 1:
                labels = F.one_hot(labels, self.num_classes).float()
                if self.label_smoothing:
                    labels = labels * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
            mixed = lam * labels + (1.0 - lam) * labels.flip(0)
            cls = torch.sum(-mixed * F.log_softmax(outputs["cls_logits"], dim=-1), dim=-1).mean()
        dense = torch.sum(-targets * F.log_softmax(token_logits, dim=1), dim=1).mean()
        return {"loss_cls": self.cls_weight * cls, "loss_dense": self.dense_weight * dense}

    def predict(self, outputs, batch: dict | None = None) -> torch.Tensor:
        return super().predict(outputs["logits"] if isinstance(outputs, dict) else outputs, batch)

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(16, 16, "norm"), FeatureInfo(16, 16, "cls_token")]

    def example_inputs(self, batch_size: int = 2):
        features = [torch.randn(batch_size, self.in_features[-2].channels, 3, 3),
                    torch.randn(batch_size, self.in_features[-1].channels)]
        return features, {"labels": torch.randint(self.num_classes, (batch_size,))}


# ---- weights from timm ------------------------------------------------------------------------

def map_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``volo_*`` weights -> the keys of ``VOLO -> vision.VOLOClsHead``."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out["head.fc." + key[len("head."):]] = value
        elif key.startswith("aux_head."):
            out["head.aux_fc." + key[len("aux_head."):]] = value
        else:
            out["backbone." + key] = value
    return out
