"""HorNet (Rao et al., "HorNet: Efficient High-Order Spatial Interactions with Recursive Gated
Convolutions", NeurIPS 2022).

The ConvNeXt macro design (patchify stem, LN + 2x2 downsampling, 4 stages) with the spatial
mixing replaced by the recursive gated convolution g^nConv (Sec. 3.1, Eq. 3-4). The order n
grows 2, 3, 4, 5 across the stages and the depthwise features are scaled by s = 1/3 (Sec. 3.2).
The depthwise operator f is either a 7x7 depthwise conv or the Global Filter (GF) layer: half
the channels through a 3x3 depthwise conv, half through a learnable filter in the 2-D Fourier
domain (Sec. 3.2, "Implementation details"), used in stages 3 and 4.

Sizes (Sec. 4.1; registered as variants in plugin.py): C = (C0, 2C0, 4C0, 8C0), blocks
(2, 3, 18, 2); C0 = 64 / 96 / 128 / 192 for T / S / B / L. A GF layer's filter is sized for one
input resolution: the rfft2 spectrum of the stage-3 and stage-4 maps, 14x8 and 7x4 at 224x224,
24x13 and 12x7 at 384x384 (HorNet-L GF fine-tuned at 384^2). Another input size interpolates the
filter bilinearly at run time, as the official code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from ..kernels.dwconv_large import large_depthwise_conv
from .layers import (
    Downsample,
    HierarchicalBackbone,
    LayerNorm2d,
    PatchifyStem,
    Stage,
    check_out_indices,
    drop_path,
    drop_path_rates,
    trunc_normal_init,
)


class GlobalLocalFilter(nn.Module):
    """The GF layer: LN -> [3x3 depthwise conv on half the channels | global filter on the other
    half (rfft2 -> complex weight -> irfft2)] -> interleave the halves -> LN."""

    def __init__(self, dim: int, h: int = 14, w: int = 8):
        super().__init__()
        self.pre_norm = LayerNorm2d(dim, eps=1e-6)
        self.dw = nn.Conv2d(dim // 2, dim // 2, kernel_size=3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.empty(dim // 2, h, w, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.post_norm = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_norm(x)
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        n, c, h, w = glob.shape
        spectrum = torch.fft.rfft2(glob.float(), dim=(2, 3), norm="ortho")
        weight = self.complex_weight
        if weight.shape[1:3] != spectrum.shape[2:4]:  # another resolution: resize the filter
            weight = F.interpolate(weight.permute(3, 0, 1, 2), size=spectrum.shape[2:4], mode="bilinear",
                                   align_corners=True).permute(1, 2, 3, 0)
        glob = torch.fft.irfft2(spectrum * torch.view_as_complex(weight.contiguous()), s=(h, w), dim=(2, 3),
                                norm="ortho").to(local.dtype)
        # interleave: channel 2k from the local branch, 2k+1 from the global one
        x = torch.stack((local, glob), dim=2).reshape(n, 2 * c, h, w)
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution g^nConv (Eq. 3-4).

    ``proj_in`` (1x1) gives p0 (C/2^(n-1) channels) and q_0..q_{n-1} (C_k = C/2^(n-1-k)); the
    depthwise op f acts on all q at once, scaled by s; then p_{k+1} = g_k(p_k) * f(q_k) with
    1x1 convs g_k widening C_k -> C_{k+1}; ``proj_out`` (1x1) maps p_n back.
    """

    def __init__(self, dim: int, order: int = 5, scale: float = 1.0 / 3.0,
                 global_filter: tuple[int, int] | None = None):
        super().__init__()
        if dim % 2 ** (order - 1):
            raise ValueError(f"GnConv: dim {dim} must be divisible by 2^(order-1) = {2 ** (order - 1)}")
        self.order, self.scale = order, scale
        self.dims = [dim // 2 ** k for k in range(order - 1, -1, -1)]  # C_0 < C_1 < ... < C_{n-1} = C
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        if global_filter is None:
            self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), 7, padding=3, groups=sum(self.dims))
        else:
            self.dwconv = GlobalLocalFilter(sum(self.dims), *global_filter)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[k], self.dims[k + 1], 1) for k in range(order - 1))
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        # the 7x7 depthwise conv runs through the vision.dwconv2d_large kernel dispatch (the GF layer is called)
        gates = torch.split(large_depthwise_conv(self.dwconv, q) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for pw, gate in zip(self.pws, gates[1:]):
            p = pw(p) * gate
        return self.proj_out(p)


class HorNetBlock(nn.Module):
    """LN -> g^nConv -> layer scale (residual), then LN -> MLP (4x, GELU) -> layer scale (residual)."""

    def __init__(self, dim: int, order: int, scale: float, global_filter: tuple[int, int] | None = None,
                 drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-6, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order, scale, global_filter)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        use_ls = layer_scale_init_value > 0
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale_init_value)) if use_ls else None
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale_init_value)) if use_ls else None
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gnconv(self.norm1(x))
        if self.gamma1 is not None:
            y = y * self.gamma1[:, None, None]
        x = x + self.drop_path(y)
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        if self.gamma2 is not None:
            y = y * self.gamma2
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class HorNet(HierarchicalBackbone):
    """HorNet backbone; ``forward`` returns the outputs of the stages in ``out_indices``.

    ``orders``: g^nConv order per stage (paper: 2, 3, 4, 5). ``global_filters``: per stage,
    ``None`` for the 7x7 depthwise conv or ``[h, w]`` of the GF layer's frequency filter.
    ``patch_size``: stem stride (paper: 4; smaller for small images). A stage of depth 0 is its
    downsampling layer alone.
    The paper's sizes are registered variants (``vision.hornet_tiny_7x7`` ... , plugin.py).
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts (Table 1): global average pool + LayerNorm, linear
    paper_head = {"neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, depths: Annotated[Sequence[Annotated[int, Ge(0)]], MinLen(1)] = (2, 3, 18, 2),
                 dims: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (64, 128, 256, 512),
                 orders: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (2, 3, 4, 5),
                 scale: Annotated[float, Gt(0)] = 1.0 / 3.0,
                 global_filters: Sequence[tuple[Annotated[int, Ge(1)], Annotated[int, Ge(1)]] | None] | None = None,
                 in_channels: Annotated[int, Ge(1)] = 3, drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 layer_scale_init_value: Annotated[float, Ge(0)] = 1e-6, out_indices: Sequence[int] | None = None,
                 patch_size: Annotated[int, Ge(1)] = 4):
        super().__init__()
        global_filters = list(global_filters) if global_filters is not None else [None] * len(dims)
        if not len(depths) == len(dims) == len(orders) == len(global_filters):
            raise ValueError("HorNet: depths, dims, orders and global_filters need one entry per stage")
        out_indices = check_out_indices(out_indices, len(dims))
        self.stem = PatchifyStem(in_channels, dims[0], patch_size)
        rates = drop_path_rates(depths, drop_path_rate)
        stages = []
        for i in range(max(out_indices) + 1):
            gf = tuple(global_filters[i]) if global_filters[i] is not None else None
            block = partial(HorNetBlock, dims[i], orders[i], scale, gf, layer_scale_init_value=layer_scale_init_value)
            stages.append(Stage(nn.Identity() if i == 0 else Downsample(dims[i - 1], dims[i]),
                                [block(drop_path_rate=r) for r in rates[i]]))
        self.stages = nn.ModuleList(stages)
        self._build_feature_info(dims, out_indices, patch_size)
        self.apply(trunc_normal_init)

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "global_filters": [None, None, [4, 3], [2, 2]]}


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official HorNet (raoyongming/HorNet) weights -> a composed classifier's keys
    (``backbone.*``, ``neck.norm.*`` for the final LayerNorm, ``head.fc.*``)."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "downsample_layers":
            i, j = int(parts[1]), int(parts[2])
            if i == 0:
                new = f"stem.{('conv', 'norm')[j]}"
            else:
                new = f"stages.{i}.downsample.{('norm', 'conv')[j]}"
            out["backbone." + ".".join([new, *parts[3:]])] = value
        elif parts[0] == "stages":
            out["backbone." + ".".join(["stages", parts[1], "blocks", *parts[2:]])] = value
        elif parts[0] == "norm":
            out["neck." + key] = value
        elif parts[0] == "head":
            out["head.fc." + ".".join(parts[1:])] = value
        else:
            raise KeyError(f"unexpected key in an official HorNet state dict: {key}")
    return out
