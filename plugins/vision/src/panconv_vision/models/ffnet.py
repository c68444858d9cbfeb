"""MetaMixer / FFNet: "MetaMixer Is All You Need" (Yun, Lee and Ro, 2024), arXiv:2406.02021.

Reference code: https://github.com/ysj9909/FFNet (``models/ffnet.py``; numerical parity checked,
tests/test_ffnet.py).

MetaMixer is the query-key-value view of a mixer: attention computes ``softmax(Q K^T) V``; an FFN
computes ``W_2 act(W_1 x)``, the same "key-value memory" form with the keys and values as weights.
**FFNification** turns self-attention into an FFN-like convolutional mixer: the query-key interaction
becomes a large-kernel depthwise convolution (keys = the kernel), the softmax a GELU, and the
coefficient-value product a 1x1 (or depthwise) convolution. An FFNet block is two such mixers:

* token mixer ``x + ls * DW_{k2}(GELU(DW_{k1}(ConvBN_1x1(x))))`` (the FFNified attention: key/value
  projections, large-kernel depthwise "query-key" conv, GELU, depthwise "coefficient-value" conv);
* channel mixer ``x + ls * fc2(GELU(fc1(DW_k(x))))`` (the FFN with a depthwise conv in front).

7x7 depthwise convs are ``RepVGGDW`` (a 7x7 conv-BN plus a parallel 3x3 conv-BN, merged by
:meth:`FFNet.reparameterize`) and run through ``vision.dwconv2d_large``; other sizes are plain
depthwise convs (token mixer) or conv-BN (channel mixer). A convolutional stem (two 3x3/2 conv-BN
with a GELU, stride 4) and patch merging (a 7x7/2 RepVGGDW widening the channels, then a
``x + 1x1conv(BN(x))`` skip) between four stages; BatchNorm, pooling and a linear head on top
(``FFNet.paper_head``).

Sizes (official ``ffnet_1`` ... ``ffnet_4``, README table, ImageNet-1k): FFNet-1 13.7 M, FFNet-2 26.9 M,
FFNet-3 48.3 M, FFNet-4 79.2 M parameters with the ImageNet-1k head: the deploy form (branches merged,
BatchNorms folded; ours 13.66 / 26.91 / 48.33 / 79.20 M). The training form has 13.78 / 27.21 / 48.82 /
79.87 M, equal to the official module's.
"""

from __future__ import annotations

import re
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import FeatureInfo

from ..kernels.dwconv_large import large_depthwise_conv
from .layers import HierarchicalBackbone, check_out_indices, drop_path, drop_path_rates
from .reparam import ConvBN, conv_from, pad_kernel_to

__all__ = ["FFNet", "FFNetBlock", "RepVGGDW", "map_official_state_dict"]


class RepVGGDW(nn.Module):
    """A k x k (depthwise) conv-BN plus a parallel (k // 2) x (k // 2) conv-BN; one biased conv after merging."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 7, stride: int = 1):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        small = kernel_size // 2
        self.conv = ConvBN(in_dim, out_dim, kernel_size, stride=stride, groups=in_dim)
        self.conv1: ConvBN | None = ConvBN(in_dim, out_dim, small, stride=stride, groups=in_dim,
                                           padding=small // 2)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return large_depthwise_conv(self.fused, x)
        return self.conv.bn(large_depthwise_conv(self.conv.conv, x)) + self.conv1(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        w, b = self.conv.fused_kernel_bias()
        w1, b1 = self.conv1.fused_kernel_bias()
        self.fused = conv_from(self.conv.conv, w + pad_kernel_to(w1, self.kernel_size), b + b1)
        del self.conv, self.conv1


class _BNConv(nn.Module):
    """``x + Conv1x1(BN(x))`` (the patch-merging skip); ``reparameterize`` folds it into one biased 1x1 conv."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.conv(self.bn(x)) + x

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        shift = self.bn.bias - self.bn.running_mean * scale
        w = self.conv.weight[:, :, 0, 0]
        eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        self.fused = conv_from(self.conv, (w * scale[None, :] + eye)[:, :, None, None], w @ shift,
                               keep_geometry=True)
        del self.bn, self.conv


def _dw(dim: int, k: int, bn: bool) -> nn.Module:
    if k == 7:
        return RepVGGDW(dim, dim, 7)
    if bn:
        return ConvBN(dim, dim, k, groups=dim)
    return nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)


class _Residual(nn.Module):
    """``x + DropPath(layer_scale * main(x))`` (layer scale optional)."""

    def __init__(self, main: nn.Module, dim: int, drop: float, layer_scale: float | None):
        super().__init__()
        self.main = main
        self.layer_scale = nn.Parameter(layer_scale * torch.ones(dim, 1, 1)) if layer_scale is not None else None
        self.drop_path = drop_path(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        if self.layer_scale is not None:
            y = y * self.layer_scale
        return x + self.drop_path(y)


class _TokenMixer(nn.Module):
    """FFNified attention: 1x1 conv-BN, depthwise k1 (query-key), GELU (softmax), depthwise k2 (coefficient-value)."""

    def __init__(self, dim: int, k1: int, k2: int):
        super().__init__()
        self.fc = ConvBN(dim, dim, 1)
        self.conv1 = _dw(dim, k1, bn=False)
        self.act = nn.GELU()
        self.conv2 = _dw(dim, k2, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a plain depthwise conv runs through vision.dwconv2d_large (RepVGGDW routes its own 7x7)
        return large_depthwise_conv(self.conv2, self.act(large_depthwise_conv(self.conv1, self.fc(x))))


class _ChannelMixer(nn.Module):
    """Depthwise k x k (conv-BN or RepVGGDW), then the FFN ``fc2(GELU(fc1(.)))``."""

    def __init__(self, dim: int, k: int, expansion: float):
        super().__init__()
        hidden = int(dim * expansion)
        self.conv = _dw(dim, k, bn=True)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class FFNetBlock(nn.Module):
    """An FFNet block: the FFNified-attention token mixer, then the channel mixer, both residual."""

    def __init__(self, dim: int, kernel_size: int, k1: int, k2: int, expansion: float, drop: float,
                 layer_scale: float | None):
        super().__init__()
        self.token_mixer = _Residual(_TokenMixer(dim, k1, k2), dim, drop, layer_scale)
        self.channel_mixer = _Residual(_ChannelMixer(dim, kernel_size, expansion), dim, drop, layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class FFNet(HierarchicalBackbone):
    """FFNet backbone (head-less; ``FFNet.paper_head`` is the official BatchNorm + pool + linear classifier).

    Args:
        depths: blocks per stage.
        dims: channels per stage (each a multiple of the previous: patch merging is a grouped conv).
        in_dim: stem width.
        kernel_sizes: channel-mixer depthwise kernel per stage (7: RepVGGDW; else conv-BN).
        kernel_sizes1, kernel_sizes2: the token mixer's two depthwise kernels per stage.
        expansion_ratios: channel-mixer expansion per stage.
        layer_scale: initial layer scale (None: no layer scale, as FFNet-1/2).
        in_channels: input channels.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        out_indices: stages whose outputs ``forward`` returns (None: all).
    """

    metadata_inputs = ("in_channels",)
    paper_head = {"neck": {"type": "vision.PoolNorm", "norm": "batch"},
                  "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(
        self,
        depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (2, 2, 8, 2),
        dims: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (80, 160, 320, 640),
        in_dim: Annotated[int, Ge(1)] = 64,
        kernel_sizes: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 3, 3, 3),
        kernel_sizes1: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 3, 7, 7),
        kernel_sizes2: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 3, 7, 7),
        expansion_ratios: Annotated[tuple[Annotated[float, Gt(0)], ...], MinLen(1)] = (3, 3, 3, 3),
        layer_scale: Annotated[float, Gt(0)] | None = None,
        in_channels: Annotated[int, Ge(1)] = 3,
        drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        out_indices: tuple[int, ...] | None = None,
    ):
        super().__init__()
        n = len(depths)
        if not all(len(t) == n for t in (dims, kernel_sizes, kernel_sizes1, kernel_sizes2, expansion_ratios)):
            raise ValueError("FFNet: depths, dims, kernel_sizes, kernel_sizes1, kernel_sizes2 and expansion_ratios "
                             "must have one entry per stage")
        if any(k % 2 == 0 for k in (*kernel_sizes, *kernel_sizes1, *kernel_sizes2)):
            raise ValueError("FFNet: kernel sizes must be odd")
        if any(b % a for a, b in zip(dims, dims[1:])):
            raise ValueError(f"FFNet: each stage width must be a multiple of the previous one (grouped patch "
                             f"merging), got {tuple(dims)}")
        self.out_indices = check_out_indices(out_indices, n)
        self.stem = nn.Sequential(ConvBN(in_channels, in_dim, 3, stride=2), nn.GELU(),
                                  ConvBN(in_dim, dims[0], 3, stride=2))
        rates = drop_path_rates(depths, drop_path_rate)
        self.stages = nn.ModuleList()
        for i in range(max(self.out_indices) + 1):
            blocks: list[nn.Module] = []
            if i > 0:
                blocks.append(nn.Sequential(RepVGGDW(dims[i - 1], dims[i], 7, 2), _BNConv(dims[i])))
            blocks += [FFNetBlock(dims[i], kernel_sizes[i], kernel_sizes1[i], kernel_sizes2[i], expansion_ratios[i],
                                  r, layer_scale) for r in rates[i]]
            self.stages.append(nn.Sequential(*blocks))
        self.feature_info = [FeatureInfo(dims[i], 4 * 2 ** i, f"stages.{i}") for i in self.out_indices]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.stem[0].conv.in_channels, 32, 32)

    @torch.no_grad()
    def reparameterize(self) -> FFNet:
        """Merge RepVGGDW branches, fold conv-BN pairs and the merging skip, in place; returns self."""
        for m in list(self.modules()):
            if isinstance(m, (RepVGGDW, _BNConv)):
                m.reparameterize()
        for m in self.modules():
            if isinstance(m, ConvBN):
                m.fuse()
        return self

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": (1, 1), "dims": (8, 16), "in_dim": 8, "kernel_sizes": (7, 3), "kernel_sizes1": (3, 7),
                "kernel_sizes2": (7, 3), "expansion_ratios": (2, 2), "layer_scale": 1e-5}


# ---- weights from the official code -------------------------------------------------------------
#: official (ysj9909/FFNet ``models/ffnet.py``) keys without a counterpart in the composed classifier: none (the
#: final BatchNorm and the linear head map to the neck and head)
OFFICIAL_DROPPED: tuple[str, ...] = ()
_OFFICIAL_STEM = re.compile(r"patch_embed\.([02])\.(c|bn)\.(.+)")
_OFFICIAL_MERGE_DW = re.compile(r"stages\.(\d+)\.0\.proj\.0\.(conv|conv1)\.(c|bn)\.(.+)")
_OFFICIAL_MERGE_SKIP = re.compile(r"stages\.(\d+)\.0\.proj\.1\.conv\.(c|bn)\.(.+)")
_OFFICIAL_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.(token_mixer\.0|channel_mixer)\.(.+)")
#: what a block's mixer may hold (official names): layer scale, the token mixer's 1x1 ``Conv2d_BN`` ``fc`` and
#: depthwise ``conv1`` / ``conv2`` (a plain conv, or a 7x7 ``RepVGGDW`` of two ``Conv2d_BN``), the channel mixer's
#: depthwise ``conv`` (``Conv2d_BN`` or ``RepVGGDW``) and its ``fc1`` / ``fc2``
_OFFICIAL_MIXER_PART = re.compile(
    r"layer_scale|main\.(fc|conv)\.(c|bn)\.\w+|main\.(conv1|conv2|fc1|fc2)\.(weight|bias)"
    r"|main\.(conv|conv1|conv2)\.(conv|conv1)\.(c|bn)\.\w+")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv_bn(part: str, rest: str) -> str | None:
    """An official ``Conv2d_BN`` / ``BN_Conv2d`` entry (``c`` = the conv, ``bn``) -> our ``ConvBN`` names."""
    if part == "c" and rest == "weight":
        return "conv.weight"
    if part == "bn" and rest in _BN_KEYS:
        return f"bn.{rest}"
    return None


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official FFNet weights (ysj9909/FFNet ``models/ffnet.py``, the released ImageNet ``ffnet_*.pth.tar``) ->
    a composed classifier's keys: ``backbone.*`` (:class:`FFNet`), ``neck.norm.*`` (the final BatchNorm:
    ``vision.PoolNorm`` with ``norm: batch`` of :attr:`FFNet.paper_head`) and ``head.fc.*``
    (``core.LinearClsHead``); a head-less official model (``num_classes=0``) gives no ``head.fc.*``.

    The official code trains and releases one form, the training form (its conv-BN fusion is for the Core ML
    export only); load it into a model built as usual and call :meth:`FFNet.reparameterize` afterwards for the
    deploy form. Pass the state dict (the released file holds it under ``"state_dict"`` or ``"model"``); a
    ``module.`` prefix is stripped. ``patch_embed.{0,2}`` becomes ``stem.{0,2}``, a ``Conv2d_BN``'s ``c`` / ``bn``
    our ``ConvBN``'s ``conv`` / ``bn``, patch merging ``stages.{i}.0.proj.{0,1}`` ``stages.{i}.0.{0,1}`` (its skip
    ``conv.{bn,c}`` ``bn`` / ``conv``), and a block's ``token_mixer.0`` (the residual; ``token_mixer.1`` would be
    the squeeze-excite, off in every released model and not built by ours) ``token_mixer``. Build ours with the
    same sizes (``vision.ffnet_1`` ... ``ffnet_4`` + ``FFNet.paper_head``). Shapes are the same on both sides. A key
    the official model does not have (a squeeze-excite's, for one) raises a KeyError naming it
    (:data:`OFFICIAL_DROPPED`: none is left out).
    """
    out = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name.startswith(OFFICIAL_DROPPED):
            continue
        parts, new = name.split("."), None
        if parts[0] == "norm" and len(parts) == 2:
            out["neck." + name] = value
            continue
        if parts[0] == "head" and len(parts) == 2:
            out["head.fc." + parts[1]] = value
            continue
        if m := _OFFICIAL_STEM.fullmatch(name):
            rest = _conv_bn(m.group(2), m.group(3))
            new = rest and f"stem.{m.group(1)}.{rest}"
        elif m := _OFFICIAL_MERGE_DW.fullmatch(name):
            rest = _conv_bn(m.group(3), m.group(4))
            new = rest and f"stages.{m.group(1)}.0.0.{m.group(2)}.{rest}"
        elif m := _OFFICIAL_MERGE_SKIP.fullmatch(name):
            rest = _conv_bn(m.group(2), m.group(3))
            new = rest and f"stages.{m.group(1)}.0.1.{rest}"  # our _BNConv: bn, conv
        elif (m := _OFFICIAL_BLOCK.fullmatch(name)) and _OFFICIAL_MIXER_PART.fullmatch(m.group(4)):
            mixer = m.group(3).split(".")[0]
            rest = ".".join("conv" if p == "c" else p for p in m.group(4).split("."))
            new = f"stages.{m.group(1)}.{m.group(2)}.{mixer}.{rest}"
        if new is None:
            raise KeyError(f"unexpected key in an official FFNet state dict: {key}")
        out["backbone." + new] = value
    return out
