"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022).

A head-less backbone returning the four stage outputs (strides 4, 8, 16, 32). The ImageNet
classifier of the paper is a composition: ``ConvNeXt`` -> ``vision.PoolNorm`` (global average
pool + the final LayerNorm) -> ``core.LinearClsHead``.

Sizes (Sec. 3, "ConvNeXt variants"; registered as variants in plugin.py): C = channels per stage,
B = blocks per stage.
    T: C=(96, 192, 384, 768),   B=(3, 3, 9, 3)      S: C as T,                  B=(3, 3, 27, 3)
    B: C=(128, 256, 512, 1024), B=(3, 3, 27, 3)     L: C=(192, 384, 768, 1536), B=(3, 3, 27, 3)
    XL: C=(256, 512, 1024, 2048), B=(3, 3, 27, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from annotated_types import Ge, Interval, MinLen
from torch import nn

from .layers import (
    Downsample,
    HierarchicalBackbone,
    PatchifyStem,
    Stage,
    check_out_indices,
    drop_path,
    drop_path_rates,
    trunc_normal_init,
)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv -> LayerNorm -> 1x1 (4x expand) -> GELU -> 1x1 -> layer scale, residual (Fig. 4)."""

    def __init__(self, dim: int, drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-6,
                 kernel_size: int = 7, mlp_ratio: int = 4):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # pointwise convs as Linear layers on channels-last tensors (same maths, faster)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        # layer scale (Touvron et al. 2021), initialised to 1e-6 (Sec. 2.6 / appendix A.1)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class ConvNeXt(HierarchicalBackbone):
    """ConvNeXt backbone; ``forward`` returns the outputs of the stages in ``out_indices``.

    ``drop_path_rate`` rises linearly from 0 over all blocks; ``layer_scale_init_value`` 1e-6
    as in the paper (0 disables layer scale). Init: truncated normal (std 0.02), zero bias.
    ``patch_size``: stem stride (paper: 4; smaller for small images, like timm's ``patch_size``).
    ``kernel_size``: the depthwise kernel (odd). A stage of depth 0 is its downsampling layer alone.
    The paper's sizes are registered variants (``vision.convnext_tiny`` ... ``_xlarge``, plugin.py).
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts: global average pool + LayerNorm, linear
    paper_head = {"neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, depths: Annotated[Sequence[Annotated[int, Ge(0)]], MinLen(1)] = (3, 3, 9, 3),
                 dims: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (96, 192, 384, 768),
                 in_channels: Annotated[int, Ge(1)] = 3, drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 layer_scale_init_value: Annotated[float, Ge(0)] = 1e-6, kernel_size: Annotated[int, Ge(1)] = 7,
                 out_indices: Sequence[int] | None = None, patch_size: Annotated[int, Ge(1)] = 4):
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"ConvNeXt: depths {tuple(depths)} and dims {tuple(dims)} differ in length")
        if kernel_size % 2 == 0:  # "same" padding k // 2 keeps the map size (for the residual) only for odd k
            raise ValueError(f"ConvNeXt: kernel_size must be odd, got {kernel_size}")
        out_indices = check_out_indices(out_indices, len(dims))
        self.stem = PatchifyStem(in_channels, dims[0], patch_size)
        rates = drop_path_rates(depths, drop_path_rate)
        self.stages = nn.ModuleList(
            Stage(nn.Identity() if i == 0 else Downsample(dims[i - 1], dims[i]),
                  [ConvNeXtBlock(dims[i], r, layer_scale_init_value, kernel_size) for r in rates[i]])
            for i in range(max(out_indices) + 1)
        )
        self._build_feature_info(dims, out_indices, patch_size)
        self.apply(trunc_normal_init)

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}


# ---- weights from timm ------------------------------------------------------------------------
_TIMM_RENAMES = (
    ("stem.0.", "stem.conv."), ("stem.1.", "stem.norm."),
    ("downsample.0.", "downsample.norm."), ("downsample.1.", "downsample.conv."),
    (".conv_dw.", ".dwconv."), (".mlp.fc1.", ".pwconv1."), (".mlp.fc2.", ".pwconv2."),
)


def map_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``convnext_*`` weights -> a composed classifier's keys.

    Returns keys ``backbone.*`` (this module), ``neck.norm.*`` (:class:`PoolNorm`, timm's
    ``head.norm``) and ``head.fc.*`` (``core.LinearClsHead``, timm's ``head.fc``).
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head.norm."):
            out["neck.norm." + key[len("head.norm."):]] = value
        elif key.startswith("head.fc."):
            out[key] = value
        else:
            for old, new in _TIMM_RENAMES:
                key = key.replace(old, new)
            out["backbone." + key] = value
    return out
