"""HRVMamba (Zhang et al., "HRVMamba: High-Resolution Visual State Space Model for Dense Prediction").

The DVSS block (Dynamic Visual State Space) inside HRNet-style parallel branches with repeated
multi-resolution fusion. Channel-first ``(N, C, H, W)`` throughout, as the official pose code.

**DVSS block** (pre-norm; LN = LayerNorm over channels):

    x = x + GELU(shuffle(concat_i dwconv_{k_i}(split_i(LN(x)))))     # ESInB: 4 channel groups, k = 3, 5, 7, 9
    x = x + DropPath(DSS2D(LN(x)))                                    # deformable 2-D selective scan
    x = x + DropPath(MLP(LN(x)))                                      # 1x1 convs, ratio 2, GELU

**DSS2D** (the official ``SS2D`` with ``forward_type="v05_noz"``: no ``z`` gate; ``d_state = 1``)::

    u = in_proj(x)                                      # C -> d_inner = ssm_ratio * C, no bias
    u = SiLU(DeformableAggregation(u))                  # DCNv4 in place of SS2D's depthwise conv
    y = LN(cross_selective_scan(u; Δ, B, C from x_proj/dt_proj per direction))
    out = out_proj(y)                                   # d_inner -> C, no bias

**DeformableAggregation** (DCNv4's operator, Xiong et al. 2024): ``v = value_proj(u)`` (optional); from
``u`` (through a 3x3 depthwise conv when ``dw_kernel_size`` is set: the official code sets it when
``C % 80 == 0``, i.e. the Base size) a linear layer predicts, per pixel, group ``g`` and kernel
point ``k``, an offset ``Δp_gk`` and an unnormalised modulation ``m_gk``; then
``out_c(p) = sum_k m_gk(p) · v_c(p + p_k + Δp_gk)`` (bilinear, zero outside) for the channels ``c``
of group ``g``; ``output_proj`` (optional, no bias). Groups = ``dt_rank`` as the official code (32
channels each for every registered size). The two pointwise projections: the released code builds
DCNv4 with its default ``without_pointwise=False`` (value and output projections, d_inner^2 each),
which gives 3.22M / 12.29M / 73.64M for Tiny / Small / Base with the pose head; without them the
counts are 2.15M / 8.03M / 47.10M = the paper's table (2M / 8M / 47M). The registered sizes follow the
table (``dcn_pointwise=False``); ``dcn_pointwise=True`` builds the released code's layout.
Where this differs from the paper's DCNv4 CUDA op:

* the sampling runs through ``F.grid_sample`` (all ``G K`` bilinear samples in one call), checked
  against ``torchvision.ops.deform_conv2d`` with a fixed all-ones depthwise kernel (``groups = C``,
  ``offset_groups = G``, the modulation as ``mask``; ``aggregate(backend="torchvision")``): the same
  function, not DCNv4's fused memory-bound CUDA kernel (any device; autograd backward);
* layout of the predicted ``offset_mask`` vector: per group ``[2K offsets (dy, dx) per point, K masks]``,
  kernel points in row-major order (torchvision's order). DCNv4's CUDA op (which does not build here,
  so its order is not checked) may order the points and the ``(x, y)`` pair differently: at most a
  fixed permutation of the linear layer's rows (a checkpoint maps by re-indexing; the function class
  is identical). The official
  padding of the offset_mask width to a multiple of 8 is kept (unused rows) so the parameter
  counts match;
* DCNv4's init: offset_mask weight and bias zero (zero offsets, zero modulation at start),
  value/output projections Xavier-uniform: kept.

Defining identity (tests/test_hrvmamba.py): with zero offsets, the modulations set to a depthwise
kernel (``group = d_inner``) and no pointwise projections, DSS2D (with VMamba's ``z`` gate on) equals the plain SS2D
(``models/vmamba_blocks.SS2D``) with that depthwise conv; an offset of exactly one pixel shifts the
sampled map by one pixel.

**Network** (the mmpose HRNet skeleton of the official code): stem (two 3x3 stride-2 conv-BN-ReLU,
64 channels; stride 4), stage 1 (Bottleneck x2, width ``stage1_channels`` x4 expansion), then stages 2-4
with 2, 3, 4 parallel branches (strides 4, 8, 16, 32; widths ``channels``), built of
``modules[s]`` HR modules of ``blocks`` DVSS blocks per branch; each module ends with the
multi-resolution fusion: higher resolution -> lower through (depthwise 3x3 stride-2 + BN + 1x1 + BN)
steps, lower -> higher through 1x1 + BN + bilinear upsampling, summed then ReLU. Upsampling goes to the
target map's size (the official ``scale_factor = 2^k`` fails on odd sizes such as 28/4 = 7; both
agree when sizes divide). ``block="basic"`` builds the plain HRNet (BasicBlocks, 3x3 stride-2 conv
fusion): the equal-budget conv baseline.

Sizes (official pose configs, COCO 256x192, 17-keypoint heat-map head = a 1x1 conv on branch 0, ``HRHeatmapHead``;
stage 4's last module fusing into branch 0 only): Tiny 16/32/64/128 (stage 1 width 32), Small
32/64/128/256, Base 80/160/320/640 (stage 1 width 64); modules (1, 4, 2); 2 blocks; mlp ratio 2.

**ImageNet classifier** (:class:`HRClsHead`, HRNet's classification head, the ``paper_head`` of
:class:`HRVMambaCls`): all four branches out (``multiscale_output=True``), one Bottleneck per branch to
128/256/512/1024 channels, merged high to low by 3x3 stride-2 conv-BN-ReLU steps, 1x1 conv to 2048, global
pooling, linear to 1000 classes. The same backbones with it: 13,898,920 / 20,105,816 / 60,552,360 params = the
paper's ImageNet 14M / 20M / 61M (tests/test_hrvmamba_cls.py; the head alone, 11,709,544 params on Tiny's
16/32/64/128 branches, equals timm's ``hrnet_w18_small`` head in count and output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, Len
from torch import nn
from torchvision.ops import deform_conv2d

from panconv.api import Backbone, FeatureInfo, Head
from panconv_vision.kernels.selective_scan import cross_scan, cross_selective_scan
from panconv_vision.models.layers import LayerNorm2d, drop_path
from panconv_vision.models.ssm_unet import soft_dice_loss
from panconv_vision.models.vmamba_blocks import add_ssm_parameters, init_ssm_parameters_

DIRECTIONS = 4


# ----------------------------------------------------------------------------- DSS2D
class DeformableAggregation(nn.Module):
    """DCNv4's deformable aggregation (see the module docstring) on ``(N, C, H, W)``."""

    def __init__(self, channels: int, group: int, kernel_size: int = 3, dw_kernel_size: int | None = None,
                 offset_scale: float = 1.0, output_bias: bool = False, pointwise: bool = True):
        super().__init__()
        if channels < 1 or group < 1 or channels % group or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"DeformableAggregation: channels ({channels}) must be divisible by group ({group}) "
                             f"and kernel_size ({kernel_size}) odd")
        self.channels, self.group, self.kernel_size, self.offset_scale = channels, group, kernel_size, offset_scale
        self.points = kernel_size * kernel_size
        self.offset_mask_dw = (nn.Conv2d(channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2,
                                         groups=channels) if dw_kernel_size else None)
        width = group * self.points * 3
        self.offset_mask = nn.Linear(channels, int(math.ceil(width / 8) * 8))   # DCNv4 pads to a multiple of 8
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        self.value_proj = self.output_proj = None
        if pointwise:                                  # DCNv4's without_pointwise=False
            self.value_proj = nn.Linear(channels, channels)
            self.output_proj = nn.Linear(channels, channels, bias=output_bias)
            nn.init.xavier_uniform_(self.value_proj.weight)
            nn.init.zeros_(self.value_proj.bias)
            nn.init.xavier_uniform_(self.output_proj.weight)
            if self.output_proj.bias is not None:
                nn.init.zeros_(self.output_proj.bias)

    def offsets_and_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision's ``offset`` ``(N, 2 G K, H, W)`` and ``mask`` ``(N, G K, H, W)`` predicted from ``x``."""
        n, _, h, w = x.shape
        src = self.offset_mask_dw(x) if self.offset_mask_dw is not None else x
        om = self.offset_mask(src.permute(0, 2, 3, 1))[..., : self.group * self.points * 3]
        om = om.reshape(n, h, w, self.group, 3 * self.points)
        offset = om[..., : 2 * self.points] * self.offset_scale            # (.., G, 2K): (dy, dx) per point
        mask = om[..., 2 * self.points:]                                    # (.., G, K)
        return offset.flatten(3).permute(0, 3, 1, 2), mask.flatten(3).permute(0, 3, 1, 2)

    def aggregate(self, value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  backend: Literal["grid_sample", "torchvision"] = "grid_sample") -> torch.Tensor:
        """``out_c(p) = sum_k m_gk(p) v_c(p + p_k + Δp_gk)``. ``torchvision``: ``deform_conv2d`` with an all-ones
        depthwise kernel (the reference); ``grid_sample`` (default, same values, ~10x faster on a CPU): all
        ``G K`` bilinear samples in one call."""
        k = self.kernel_size
        if backend == "torchvision":
            ones = value.new_ones(self.channels, 1, k, k)
            return deform_conv2d(value.contiguous(), offset.contiguous(), ones, padding=k // 2, mask=mask.contiguous())
        n, c, h, w = value.shape
        g, pts = self.group, self.points
        off = offset.view(n, g, pts, 2, h, w)
        r = torch.arange(k, device=value.device, dtype=value.dtype) - k // 2
        ky, kx = r.repeat_interleave(k), r.repeat(k)                                  # row-major kernel points
        ys = torch.arange(h, device=value.device, dtype=value.dtype).view(1, 1, 1, h, 1) + ky.view(1, 1, pts, 1, 1)
        xs = torch.arange(w, device=value.device, dtype=value.dtype).view(1, 1, 1, 1, w) + kx.view(1, 1, pts, 1, 1)
        ys, xs = ys + off[:, :, :, 0], xs + off[:, :, :, 1]                            # (N, G, K, H, W)
        grid = torch.stack(((2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1), dim=-1)     # align_corners=False coords
        grid = grid.permute(0, 1, 3, 4, 2, 5).reshape(n * g, h, w * pts, 2)
        sampled = F.grid_sample(value.reshape(n * g, c // g, h, w), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False).view(n, g, c // g, h, w, pts)
        weights = mask.view(n, g, pts, h, w).permute(0, 1, 3, 4, 2)[:, :, None]      # (N, G, 1, H, W, K)
        return (sampled * weights).sum(-1).reshape(n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = x if self.value_proj is None else self.value_proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = self.aggregate(value, *self.offsets_and_masks(x))
        return out if self.output_proj is None else self.output_proj(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DSS2D(nn.Module):
    """The deformable 2-D selective scan (module docstring). ``deformable=False``: a ``d_conv`` depthwise conv
    instead (VMamba's SS2D); ``gate=True``: VMamba's ``SiLU(z)`` output gate (the official blocks use none)."""

    def __init__(self, dim: Annotated[int, Ge(1)], d_state: Annotated[int, Ge(1)] = 1,
                 ssm_ratio: Annotated[float, Gt(0)] = 2.0, dt_rank: Annotated[int, Ge(1)] | None = None,
                 group: Annotated[int, Ge(1)] | None = None, dw_kernel_size: Annotated[int, Ge(1)] | None = None,
                 deformable: bool = True, gate: bool = False, d_conv: Annotated[int, Ge(1)] = 3,
                 dcn_pointwise: bool = False, dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        if dim < 1 or d_state < 1 or ssm_ratio <= 0:
            raise ValueError("DSS2D: dim and d_state must be >= 1 and ssm_ratio > 0")
        inner = int(ssm_ratio * dim)
        self.dim, self.inner, self.d_state, self.gate = dim, inner, d_state, gate
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, inner * (2 if gate else 1), bias=False)
        if deformable:
            self.conv = DeformableAggregation(inner, group or self.dt_rank, dw_kernel_size=dw_kernel_size,
                                              pointwise=dcn_pointwise)
        else:
            self.conv = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        add_ssm_parameters(self, inner, d_state, self.dt_rank, DIRECTIONS)
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        init_ssm_parameters_(self, dt_min, dt_max)       # Mamba/VMamba init, as models/vmamba_blocks.SS2D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"DSS2D: expected (N, {self.dim}, H, W), got {tuple(x.shape)}")
        u = self.in_proj(x.permute(0, 2, 3, 1))
        z = None
        if self.gate:
            u, z = u.chunk(2, dim=-1)
        u = F.silu(self.conv(u.permute(0, 3, 1, 2).contiguous()))
        xs = cross_scan(u)                                                           # (N, 4, D, H*W)
        x_dbl = torch.einsum("nkdl,kcd->nkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("nkrl,kdr->nkdl", dts, self.dt_projs_weight)
        y = cross_selective_scan(u, dts.contiguous(), -torch.exp(self.A_logs.float()), Bs.contiguous(),
                                 Cs.contiguous(), self.Ds.float(), delta_bias=self.dt_projs_bias.flatten().float())
        y = self.out_norm(y.permute(0, 2, 3, 1))
        if z is not None:
            y = y * F.silu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- blocks
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def split_channels(channels: int, groups: int) -> list[int]:
    """The official split: equal parts, the remainder to the first."""
    parts = [channels // groups] * groups
    parts[0] += channels - sum(parts)
    return parts


class DVSSBlock(nn.Module):
    """ESInB (multi-scale depthwise convs) + DSS2D + MLP, each residual and pre-norm (module docstring)."""

    expansion = 1

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 2.0, mlp_ratio: float = 2.0,
                 drop_path_rate: float = 0.0, deformable: bool = True, dcn_pointwise: bool = False,
                 num_groups: int = 4):
        super().__init__()
        self.splits = split_channels(dim, num_groups)
        self.num_groups = num_groups
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 2 * i + 3, padding=i + 1, groups=c)
                                   for i, c in enumerate(self.splits))
        self.norm0 = LayerNorm2d(dim)
        self.norm = LayerNorm2d(dim)
        self.op = DSS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, deformable=deformable,
                        dw_kernel_size=3 if dim % 80 == 0 else None, dcn_pointwise=dcn_pointwise)
        self.norm2 = LayerNorm2d(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(self.norm0(x), self.splits, dim=1)
        local = torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)
        x = x + F.gelu(channel_shuffle(local, self.num_groups))
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck (HRNet's stage 1): 1x1 - 3x3 - 1x1 (x4), BN, projection shortcut when widths differ."""

    expansion = 4

    def __init__(self, cin: int, planes: int):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(conv_bn(cin, planes, 1), conv_bn(planes, planes, 3),
                                  conv_bn(planes, cout, 1, relu=False))
        self.shortcut = conv_bn(cin, cout, 1, relu=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    """HRNet's branch block (the plain-conv baseline): two 3x3 conv-BN, residual, ReLU."""

    expansion = 1

    def __init__(self, dim: int, **_):
        super().__init__()
        self.body = nn.Sequential(conv_bn(dim, dim), conv_bn(dim, dim, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class FuseUp(nn.Module):
    """Lower resolution -> higher: 1x1 conv + BN, bilinear upsampling to the target size."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = conv_bn(cin, cout, 1, relu=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.proj(x), size=size, mode="bilinear", align_corners=False)


def fuse_down(cin: int, cout: int, steps: int, separable: bool) -> nn.Sequential:
    """Higher resolution -> lower in ``steps`` stride-2 steps (ReLU between, none after the last).
    ``separable``: depthwise 3x3 + BN + 1x1 + BN (HRVMamba); else 3x3 conv + BN (HRNet)."""
    layers = []
    for s in range(steps):
        last = s == steps - 1
        out = cout if last else cin
        if separable:
            step = [nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                    nn.Conv2d(cin, out, 1, bias=False), nn.BatchNorm2d(out)]
        else:
            step = [nn.Conv2d(cin, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out)]
        if not last:
            step.append(nn.ReLU(inplace=True))
        layers.append(nn.Sequential(*step))
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """Parallel branches of blocks, then the multi-resolution fusion (sum + ReLU) into ``outputs`` branches."""

    def __init__(self, channels: Sequence[int], make_block, blocks: int, rates: Sequence[float], separable: bool,
                 outputs: int):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[make_block(c, rates[b]) for b in range(blocks)])
                                      for c in channels)
        n = len(channels)
        self.fuse = nn.ModuleList()
        if n > 1:
            for i in range(outputs):
                row = nn.ModuleList()
                for j in range(n):
                    if j > i:
                        row.append(FuseUp(channels[j], channels[i]))
                    elif j < i:
                        row.append(fuse_down(channels[j], channels[i], i - j, separable))
                    else:
                        row.append(nn.Identity())
                self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if not len(self.fuse):
            return xs
        out = []
        for i, row in enumerate(self.fuse):
            y = xs[i]
            for j, layer in enumerate(row):
                if j > i:
                    y = y + layer(xs[j], xs[i].shape[-2:])
                elif j < i:
                    y = y + layer(xs[j])
            out.append(F.relu(y))
        return out


# ----------------------------------------------------------------------------- the network
class HRVMamba(Backbone):
    """HRVMamba backbone (module docstring): returns the branch maps (strides 4, 8, 16, 32) in ``out_indices``.

    ``block="dvss"`` (default) or ``"basic"`` (the plain HRNet baseline). ``multiscale_output=False``:
    stage 4's last module fuses into branch 0 only (the pose configuration the paper counts; then only
    branch 0 is an output). Sizes: ``vision.hrvmamba_tiny/_small/_base`` (plugin.py).
    """

    metadata_inputs = ("in_channels",)
    #: the light classifier composed here (global pool + LayerNorm of the stride-32 branch, linear). The paper's
    #: ImageNet counts (Tiny 14M, Small 20M, Base 61M) use HRNet's classification head: ``HRClsHead``, the
    #: ``paper_head`` of ``HRVMambaCls`` (``vision.hrvmamba_{tiny,small,base}_cls``).
    paper_head = {"neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}
    #: the paper's COCO pose head: a 1x1 conv to 17 keypoint heat maps on branch 0 (mmpose HeatmapHead,
    #: no deconvolutions), with ``multiscale_output=False``
    paper_head_keypoints = 17

    def __init__(self, channels: Annotated[Sequence[Annotated[int, Ge(1)]], Len(4, 4)] = (32, 64, 128, 256),
                 stage1_channels: Annotated[int, Ge(1)] = 64, stem_channels: Annotated[int, Ge(1)] = 64,
                 modules: Annotated[Sequence[Annotated[int, Ge(1)]], Len(3, 3)] = (1, 4, 2),
                 blocks: Annotated[int, Ge(1)] = 2, in_channels: Annotated[int, Ge(1)] = 3,
                 block: Literal["dvss", "basic"] = "dvss", d_state: Annotated[int, Ge(1)] = 1,
                 ssm_ratio: Annotated[float, Gt(0)] = 2.0, mlp_ratio: Annotated[float, Gt(0)] = 2.0,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0, deformable: bool = True,
                 dcn_pointwise: bool = False, multiscale_output: bool = True, out_indices: Sequence[int] | None = None):
        super().__init__()
        channels, modules = tuple(int(c) for c in channels), tuple(int(m) for m in modules)
        if len(channels) != 4 or len(modules) != 3 or min(channels + modules) < 1 or blocks < 1:
            raise ValueError(f"HRVMamba: channels must be 4 widths and modules 3 counts, all >= 1; got "
                             f"{channels}, {modules}")
        if block not in ("dvss", "basic"):
            raise ValueError(f"HRVMamba: block must be 'dvss' or 'basic', got {block!r}")
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f"HRVMamba: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        n_out = 4 if multiscale_output else 1
        out_indices = tuple(range(n_out)) if out_indices is None else tuple(int(i) for i in out_indices)
        if not out_indices or sorted(set(out_indices)) != list(out_indices) or not all(0 <= i < n_out
                                                                                      for i in out_indices):
            raise ValueError(f"HRVMamba: out_indices must be increasing branch indices in 0..{n_out - 1}, "
                             f"got {out_indices}")
        self.out_indices, self.in_channels = out_indices, in_channels
        self.stem = nn.Sequential(conv_bn(in_channels, stem_channels, 3, 2),
                                  conv_bn(stem_channels, stem_channels, 3, 2))
        self.layer1 = nn.Sequential(Bottleneck(stem_channels, stage1_channels),
                                    *[Bottleneck(stage1_channels * 4, stage1_channels) for _ in range(blocks - 1)])
        # drop path: linear over the stages' depth (blocks x modules), as the official code counts it
        depths = [blocks * m for m in modules]
        total = sum(depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        separable = block == "dvss"

        def make_block(dim: int, rate: float) -> nn.Module:
            if block == "basic":
                return BasicBlock(dim)
            return DVSSBlock(dim, d_state, ssm_ratio, mlp_ratio, rate, deformable, dcn_pointwise)

        self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
        prev, start = [stage1_channels * Bottleneck.expansion], 0
        for s, n_modules in enumerate(modules):
            cur = list(channels[: s + 2])
            self.transitions.append(nn.ModuleList(
                (conv_bn(prev[i], cur[i]) if cur[i] != prev[i] else nn.Identity()) if i < len(prev)
                else conv_bn(prev[-1], cur[i], 3, 2) for i in range(len(cur))))
            stage_rates = rates[start:start + depths[s]]
            start += depths[s]
            stage = []
            for m in range(n_modules):
                last = s == 2 and m == n_modules - 1
                stage.append(HRModule(cur, make_block, blocks, stage_rates[m * blocks:(m + 1) * blocks], separable,
                                      outputs=n_out if last else len(cur)))
            self.stages.append(nn.Sequential(*stage))
            prev = cur
        self.feature_info = [FeatureInfo(channels[i], 4 * 2 ** i, f"branches.{i}") for i in out_indices]

    @classmethod
    def example_config(cls) -> dict:
        return {"channels": [8, 16, 24, 32], "stage1_channels": 8, "stem_channels": 16, "modules": [1, 1, 1],
                "blocks": 1}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, 64, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"HRVMamba: expected images (N, C, H, W), got {tuple(x.shape)}")
        xs = [self.layer1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            xs = stage(xs)
        return [xs[i] for i in self.out_indices]


# ----------------------------------------------------------------------------- dense prediction
class HRSegHead(Head):
    """HRNetV2's dense head (the segmentation head of HRNet/HRFormer/HRVMamba): every branch upsampled to the
    highest resolution, concatenated, 1x1 conv-BN-ReLU, 1x1 classifier, bilinear upsampling to the input size
    (branch 0's reduction). ``loss``: pixel cross-entropy on ``batch["masks"]`` (+ ``dice_weight`` x soft Dice over
    the foreground classes, as ``vision.SSMUNet``); ``predict``: ``{"masks"}``."""

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(2)] = 2,
                 dice_weight: Annotated[float, Ge(0)] = 0.0):
        super().__init__(in_features)
        if num_classes < 2 or dice_weight < 0:
            raise ValueError(f"HRSegHead: num_classes must be >= 2 and dice_weight >= 0, got {num_classes}, "
                             f"{dice_weight}")
        self.dice_weight = dice_weight
        if not self.in_features or any(not isinstance(f.reduction, int) for f in self.in_features):
            raise ValueError("HRSegHead: needs the backbone's feature maps (feature_info with integer reductions)")
        width = sum(f.channels for f in self.in_features)
        self.fuse = conv_bn(width, width, 1)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.scale = self.in_features[0].reduction

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in features[1:]], dim=1)
        logits = self.classifier(self.fuse(x))
        return F.interpolate(logits, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["masks"]
        if outputs.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"HRSegHead: logits {tuple(outputs.shape[-2:])} and batch['masks'] "
                             f"{tuple(target.shape[-2:])} differ in size (input side not a multiple of "
                             f"{self.scale}?)")
        losses = {"loss_ce": F.cross_entropy(outputs, target)}
        if self.dice_weight > 0:
            losses["loss_dice"] = self.dice_weight * soft_dice_loss(outputs, target)
        return losses

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> dict:
        return {"masks": outputs.argmax(1)}

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(8, 4, "branches.0"), FeatureInfo(16, 8, "branches.1")]

    def example_inputs(self, batch_size: int = 2) -> tuple[list[torch.Tensor], dict]:
        side = 32
        features = [torch.randn(batch_size, f.channels, side // f.reduction, side // f.reduction)
                    for f in self.in_features]
        return features, {"masks": torch.randint(0, self.classifier.out_channels, (batch_size, side, side))}


class HRHeatmapHead(Head):
    """The paper's pose head (mmpose ``HeatmapHead`` without deconvolutions, as the official HRVMamba configs): a
    1x1 conv from branch 0 (stride 4; the backbone with ``multiscale_output=False``) to one heat map per keypoint.

    ``loss``: mean squared error against Gaussian heat maps (σ = ``sigma`` heat-map pixels) centred at
    ``batch["keypoints"] / stride`` (``(N, K, 2)`` as ``(x, y)`` in input pixels; mmpose's ``KeypointMSELoss``,
    ``loss_weight`` 1; unlike MSRAHeatmap the centre is not rounded to a heat-map pixel); ``predict``:
    ``{"keypoints": (N, K, 2)}`` in input pixels: the arg-max of each map moved a quarter pixel towards the
    higher neighbour (mmpose's MSRAHeatmap decoding), times the stride."""

    metadata_inputs = ("num_keypoints",)

    def __init__(self, in_features: list[FeatureInfo], num_keypoints: Annotated[int, Ge(1)] = 17,
                 sigma: Annotated[float, Gt(0)] = 2.0):
        super().__init__(in_features)
        if num_keypoints < 1 or sigma <= 0:
            raise ValueError(f"HRHeatmapHead: num_keypoints must be >= 1 and sigma > 0, got {num_keypoints}, {sigma}")
        if not self.in_features or not isinstance(self.in_features[0].reduction, int):
            raise ValueError("HRHeatmapHead: needs the backbone's branch-0 feature map (an integer reduction)")
        self.num_keypoints, self.sigma, self.stride = num_keypoints, sigma, self.in_features[0].reduction
        self.final_layer = nn.Conv2d(self.in_features[0].channels, num_keypoints, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.final_layer(features[0])

    def target(self, keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Gaussian heat maps ``(N, K, h, w)`` for ``keypoints`` ``(N, K, 2)`` (x, y in input pixels)."""
        h, w = size
        centre = keypoints.float() / self.stride
        ys = torch.arange(h, dtype=torch.float32, device=keypoints.device).view(1, 1, h, 1)
        xs = torch.arange(w, dtype=torch.float32, device=keypoints.device).view(1, 1, 1, w)
        d2 = (xs - centre[..., 0, None, None]) ** 2 + (ys - centre[..., 1, None, None]) ** 2
        return torch.exp(-d2 / (2 * self.sigma ** 2))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        keypoints = batch["keypoints"]
        if keypoints.shape[1:] != (self.num_keypoints, 2):
            raise ValueError(f"HRHeatmapHead: batch['keypoints'] must be (N, {self.num_keypoints}, 2), got "
                             f"{tuple(keypoints.shape)}")
        return {"loss_heatmap": F.mse_loss(outputs, self.target(keypoints, outputs.shape[-2:]))}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> dict[str, torch.Tensor]:
        maps = outputs.detach()
        n, k, h, w = maps.shape
        flat = maps.flatten(2).argmax(-1)                                          # (N, K)
        y, x = flat // w, flat % w
        padded = F.pad(maps, (1, 1, 1, 1))
        ni, ki = torch.arange(n, device=maps.device)[:, None], torch.arange(k, device=maps.device)[None]

        def at(dy: int, dx: int) -> torch.Tensor:
            return padded[ni, ki, y + 1 + dy, x + 1 + dx]

        shift_x = torch.sign(at(0, 1) - at(0, -1)) * ((x > 0) & (x < w - 1))      # no shift on the border
        shift_y = torch.sign(at(1, 0) - at(-1, 0)) * ((y > 0) & (y < h - 1))
        coords = torch.stack([x + 0.25 * shift_x, y + 0.25 * shift_y], -1)
        return {"keypoints": coords * self.stride}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_keypoints": 3}

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(8, 4, "branches.0")]

    def example_inputs(self, batch_size: int = 2) -> tuple[list[torch.Tensor], dict]:
        features = [torch.randn(batch_size, self.in_features[0].channels, 8, 8)]
        return features, {"keypoints": torch.rand(batch_size, self.num_keypoints, 2) * 32}


# ----------------------------------------------------------------------------- ImageNet classification
class HRClsHead(Head):
    """HRNet's ImageNet classification head (Wang et al., HRNet-Image-Classification; HRFormer and HRVMamba
    reuse it), on the branch maps (high to low resolution, each half the previous side):

        y = incre_0(x_0);  y = incre_i(x_i) + downsamp_{i-1}(y)  for i = 1..n-1     # x_i: branch i
        logits = classifier(pool(final_layer(y)))

    ``incre_i``: one Bottleneck from branch ``i``'s width to ``4 * head_channels[i]`` (128/256/512/1024 with
    the default 32/64/128/256); ``downsamp_i``: 3x3 stride-2 conv (with bias) + BN + ReLU, ``4 head_channels[i]``
    -> ``4 head_channels[i+1]``; ``final_layer``: 1x1 conv (with bias) to ``final_channels`` (2048) + BN + ReLU;
    global average pooling; ``classifier``: linear to ``num_classes``. Module names are timm's ``hrnet_w*``
    (its ``incre_modules`` / ``downsamp_modules`` / ``final_layer`` / ``classifier``). ``loss``: cross-entropy on
    ``batch["labels"]`` (``label_smoothing``); ``predict``: class probabilities (as ``core.LinearClsHead``).
    """

    metadata_inputs = ("num_classes",)

    def __init__(self, in_features: list[FeatureInfo], num_classes: Annotated[int, Ge(1)] = 1000,
                 head_channels: Sequence[Annotated[int, Ge(1)]] | None = None,
                 final_channels: Annotated[int, Ge(1)] = 2048,
                 label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0):
        super().__init__(in_features)
        n = len(self.in_features)
        head_channels = tuple(32 * 2 ** i for i in range(n)) if head_channels is None else tuple(
            int(c) for c in head_channels)
        if n < 1 or len(head_channels) != n:
            raise ValueError(f"HRClsHead: needs one head width per branch; got {n} branches and head_channels "
                             f"{head_channels}")
        if num_classes < 1 or final_channels < 1 or min(head_channels) < 1 or not 0 <= label_smoothing <= 1:
            raise ValueError(f"HRClsHead: num_classes, final_channels and head_channels must be >= 1 and "
                             f"label_smoothing in [0, 1]; got {num_classes}, {final_channels}, {head_channels}, "
                             f"{label_smoothing}")
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        wide = [c * Bottleneck.expansion for c in head_channels]
        self.incre_modules = nn.ModuleList(Bottleneck(f.channels, c) for f, c in zip(self.in_features, head_channels))
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(wide[i], wide[i + 1], 3, 2, 1), nn.BatchNorm2d(wide[i + 1]), nn.ReLU(inplace=True))
            for i in range(n - 1))
        self.final_layer = nn.Sequential(nn.Conv2d(wide[-1], final_channels, 1), nn.BatchNorm2d(final_channels),
                                         nn.ReLU(inplace=True))
        self.classifier = nn.Linear(final_channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.incre_modules):
            raise ValueError(f"HRClsHead: expected {len(self.incre_modules)} branch maps (high to low resolution), "
                             f"got {len(features)}; the backbone needs multiscale_output=True and every branch in "
                             f"out_indices")
        y = self.incre_modules[0](features[0])
        for incre, down, x in zip(self.incre_modules[1:], self.downsamp_modules, features[1:]):
            y = incre(x) + down(y)
        return self.classifier(self.final_layer(y).mean((2, 3)))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"], label_smoothing=self.label_smoothing)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(dim=-1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "head_channels": [4, 8], "final_channels": 16}

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(8, 4, "branches.0"), FeatureInfo(16, 8, "branches.1")]

    def example_inputs(self, batch_size: int = 2) -> tuple[list[torch.Tensor], dict]:
        side = 8
        features = [torch.randn(batch_size, f.channels, side // 2 ** i, side // 2 ** i)
                    for i, f in enumerate(self.in_features)]
        return features, {"labels": torch.randint(0, self.num_classes, (batch_size,))}


class HRVMambaCls(HRVMamba):
    """HRVMamba as the paper's ImageNet classifier counts it: the same backbone (all four branches out, same
    state dict as :class:`HRVMamba`) whose ``paper_head`` is HRNet's classification head (:class:`HRClsHead`,
    1000 classes). With it: Tiny 13,898,920 / Small 20,105,816 / Base 60,552,360 params = the paper's 14M / 20M /
    61M (the pose-form backbone, stage 4 fused into branch 0 only, cannot feed this head; DCNv4's pointwise
    projections would give 15M for Tiny). ``vision.hrvmamba_{tiny,small,base}_cls`` (plugin.py)."""

    paper_head = {"head": {"type": "vision.HRClsHead", "num_classes": 1000}}


__all__ = ["DSS2D", "DVSSBlock", "DeformableAggregation", "HRClsHead", "HRHeatmapHead", "HRModule", "HRSegHead",
           "HRVMamba", "HRVMambaCls"]
