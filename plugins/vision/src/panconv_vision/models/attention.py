"""Building blocks shared by the attention family (issue 17: VOLO, CrossViT, ConViT, Swin V2, HaloNet, MOAT, TiC).

Token tensors are ``(N, L, C)`` (or ``(N, H, W, C)`` where a block works on a grid); feature maps that
leave a backbone are channel-first ``(N, C, H, W)``. Parameter names follow the papers' reference code
(``qkv``, ``proj``, ``fc1``/``fc2``, ``norm1``/``norm2``) so that the weight maps beside each model stay
short.

Class-token backbones (ConViT, CrossViT, VOLO) return their class token(s) as extra ``(N, C)`` outputs
after the feature maps: a 2-D output is a class token, declared in ``feature_info`` with the name
``cls_token`` (``core.LinearClsHead`` reads the last output, so ``backbone -> LinearClsHead`` is the
paper's classifier).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import Backbone, FeatureInfo, Head, LinearClsHead

from .layers import drop_path


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """The ViT/DeiT init: linear weights ~ truncated N(0, std), zero bias; LayerNorm weight 1, bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (the transformer feed-forward network)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention on ``(..., L, C)`` tokens (Vaswani et al. 2017, Eq. 1), with an
    optional additive bias ``(heads, L, L)`` (relative position bias) passed to ``forward``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, head_dim: int | None = None):
        super().__init__()
        if head_dim is None and dim % num_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-2], shape[-1])
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).flatten(2)).reshape(*shape[:-1], -1)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (ViT)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop_path_rate: float = 0.0, eps: float = 1e-5, attn: nn.Module | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn if attn is not None else Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ClassAttention(nn.Module):
    """Class attention (CaiT, Touvron et al. 2021, Eq. 5): only the class token (position 0) queries;
    keys and values come from all tokens. Returns the updated class token ``(N, 1, C)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ClassAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        k, v = self.kv(x).reshape(n, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q(x[:, :1]).reshape(n, 1, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))


class ClassBlock(nn.Module):
    """A class-attention block: the class token is updated (attention, then MLP); patch tokens pass."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop_path_rate: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ClassAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = x[:, :1] + self.drop_path(self.attn(self.norm1(x)))
        cls = cls + self.drop_path(self.mlp(self.norm2(cls)))
        return torch.cat([cls, x[:, 1:]], dim=1)


# ---- windows ----------------------------------------------------------------------------------

def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``(N, H, W, C)`` -> ``(N * H/wh * W/ww, wh * ww, C)``: non-overlapping windows, row-major."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: windows -> ``(N, H, W, C)``."""
    h, w = size
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window[0], w // window[1], window[0], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """The additive mask of shifted-window attention (Swin, Sec. 3.2 "efficient batch computation"):
    ``(num_windows, wh*ww, wh*ww)``, 0 between tokens of the same region of the cyclically shifted map,
    -100 between tokens that were not neighbours before the shift."""
    with torch.device("cpu"):
        regions = torch.zeros(1, size[0], size[1], 1)
        label = 0
        for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
            for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
                regions[:, hs, ws, :] = label
                label += 1
        ids = window_partition(regions, window).squeeze(-1)
        diff = ids.unsqueeze(1) - ids.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0)


def relative_position_index(window: tuple[int, int]) -> torch.Tensor:
    """``(wh*ww, wh*ww)`` index into a ``(2wh-1)*(2ww-1)`` table of relative offsets (Swin Eq. 4)."""
    with torch.device("cpu"):
        coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        return (rel[..., 0] + window[0] - 1) * (2 * window[1] - 1) + rel[..., 1] + window[1] - 1


class RelativeBiasAttention(Attention):
    """Multi-head attention with a learned relative position bias table (Swin V1 / CoAtNet / MOAT):
    ``softmax(q k^T / sqrt(d) + B[rel(i, j)]) v`` over windows of ``window`` tokens."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], qkv_bias: bool = True,
                 head_dim: int | None = None):
        super().__init__(dim, num_heads, qkv_bias, head_dim)
        self.window = tuple(window)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window), persistent=False)

    def relative_bias(self) -> torch.Tensor:
        n = self.window[0] * self.window[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rel = self.relative_bias()
        return super().forward(x, rel if bias is None else rel + bias)


# ---- convolution pieces -----------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from the global average."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2 / EfficientNet MBConv) as CoAtNet and MOAT use it (MOAT Eq. 1-2):
    pre-norm BatchNorm -> 1x1 expand to ``expansion x out_dim`` -> BN -> GELU -> 3x3 depthwise (stride)
    -> BN -> GELU -> [squeeze-excite, SiLU, ``se_ratio x out_dim`` wide] -> 1x1 project; the shortcut is
    average-pooled (``pool_size``, stride) when the block strides and 1x1-projected when widths differ."""

    def __init__(self, in_dim: int, out_dim: int, expansion: float = 4.0, stride: int = 1, se_ratio: float = 0.25,
                 drop_path_rate: float = 0.0, pool_size: int = 2, eps: float = 1e-3):
        super().__init__()
        hidden = int(out_dim * expansion)
        self.norm = nn.BatchNorm2d(in_dim, eps=eps)
        self.expand = nn.Conv2d(in_dim, hidden, 1, bias=False)
        self.expand_norm = nn.BatchNorm2d(hidden, eps=eps)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.dw_norm = nn.BatchNorm2d(hidden, eps=eps)
        self.act = nn.GELU()
        self.se = SqueezeExcite(hidden, max(1, int(out_dim * se_ratio))) if se_ratio > 0 else nn.Identity()
        self.project = nn.Conv2d(hidden, out_dim, 1)
        self.pool = nn.AvgPool2d(pool_size, stride, padding=(pool_size - 1) // 2, ceil_mode=True,
                                 count_include_pad=False) if stride > 1 else nn.Identity()
        self.shortcut = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.expand_norm(self.expand(self.norm(x))))
        y = self.se(self.act(self.dw_norm(self.dwconv(y))))
        y = self.project(y)
        return self.shortcut(self.pool(x))[..., :y.shape[-2], :y.shape[-1]] + self.drop_path(y)


# ---- token backbones --------------------------------------------------------------------------

def tokens_to_map(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, H*W, C)`` or ``(N, H, W, C)`` tokens -> a channel-first ``(N, C, H, W)`` map."""
    n, c = tokens.shape[0], tokens.shape[-1]
    return tokens.reshape(n, size[0], size[1], c).permute(0, 3, 1, 2)


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected an int or a pair, got {value!r}")
    return pair  # type: ignore[return-value]


class FixedSizeBackbone(Backbone):
    """A backbone whose learned position embeddings fix the input size (``img_size``): ``forward``
    checks it and ``example_inputs`` uses it."""

    img_size: tuple[int, int]
    in_channels: int

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != tuple(self.img_size):
            raise ValueError(f"{type(self).__name__}: expected input (N, {self.in_channels}, {self.img_size[0]}, "
                             f"{self.img_size[1]}) (img_size fixes the position embedding), got {tuple(x.shape)}")

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, *self.img_size)


class TokenClsHead(Head):
    """Base of the class-token classifier heads (CrossViT's two-branch head, VOLO's head with its
    token-labelling auxiliary classifier): cross-entropy on ``batch["labels"]`` (soft targets
    ``(N, num_classes)`` from mixup too), softmax predictions."""

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: int = 2, label_smoothing: float = 0.0):
        super().__init__(in_features)
        if num_classes < 1:
            raise ValueError(f"{type(self).__name__}: num_classes must be >= 1, got {num_classes}")
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"{type(self).__name__}: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.num_classes, self.label_smoothing = num_classes, label_smoothing

    # the core classifier's cross-entropy (hard or soft targets, label smoothing) and softmax predictions
    loss = LinearClsHead.loss
    predict = LinearClsHead.predict

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3}


def linear_rates(total: int, rate: float) -> list[float]:
    """``torch.linspace(0, rate, total)`` as floats (the stochastic-depth decay rule)."""
    return [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]


def log_spaced(x: torch.Tensor) -> torch.Tensor:
    """Swin V2 Eq. 4: ``sign(x) * log(1 + |x|)`` (base 2, on coordinates scaled to [-8, 8], over log2 8)."""
    return torch.sign(x) * torch.log2(x.abs() + 1.0) / math.log2(8)
