"""UniRepLKNet: a universal perception large-kernel ConvNet (Ding et al., CVPR 2024).

Paper: "UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point
Cloud, Time-Series and Image Recognition", arXiv:2311.15599; journal version: "Scaling Up Your
Kernels: Large Kernel Design in ConvNets towards Universal Representations" (Ding et al., IEEE
TPAMI 2025, arXiv:2410.08049). It builds on RepLKNet (``replknet.py``, CVPR 2022: "Scaling Up
Your Kernels to 31x31"). Reference code: https://github.com/AILab-CVC/UniRepLKNet (numerical
parity checked, see tests/test_unireplknet.py).

Layout (the paper's architecture figure): a 4x stem (two stride-2 3x3 convs), three stride-2
3x3 conv downsamplers and four stages of UniRepLKNet blocks. A block is

    y = x + DropPath(gamma * BN(Linear(GRN(GELU(Linear(SE(BN(DRB(x))))))))),

where DRB is the Dilated Reparam Block (paper Sec. 3, Eq. 1): a large depthwise kernel plus
parallel dilated small depthwise kernels, each followed by BN; at deploy time all branches, the
BNs, the GRN bias and the layer scale fold into one large kernel and two biased linear layers
(:meth:`UniRepLKNet.reparameterize`). Blocks with kernel 3 (or 5) use a plain depthwise conv.

The backbone is head-less: ``forward`` returns the outputs of the stages in ``out_indices``.
The paper's parameter counts (its ImageNet tables, = official README) are for the deploy form
with the final LayerNorm and the 1000-way classifier: ``UniRepLKNet.paper_head`` with
:meth:`UniRepLKNet.reparameterize` applied, which is how the tests (and ``panconv info``) count
ours. The paper's sizes are registered variants (``vision.unireplknet_a`` ... ``_xl``, plugin.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, MinLen
from torch import nn

from panconv.api import Backbone, FeatureInfo

from ..kernels.dwconv_large import large_depthwise_conv
from .layers import LayerNorm2d, check_out_indices, drop_path, drop_path_rates, trunc_normal_init
from .reparam import ConvBN, conv_from, dilate_kernel, fuse_conv_bn, pad_kernel_to

__all__ = ["DilatedReparamBlock", "UniRepLKNet", "UniRepLKNetBlock", "map_official_state_dict"]

#: Dilated Reparam Block settings (official defaults): large kernel K -> (small kernel sizes k,
#: dilation rates r) of the parallel branches; each is a sparse kernel of size r(k-1)+1 <= K.
DILATED_BRANCHES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}
#: the kernel sizes a block accepts: 0 (no token mixer), 3 and 5 (plain depthwise conv) and the
#: Dilated Reparam Block sizes >= 7 of ``DILATED_BRANCHES`` (a test keeps the two in step)
BlockKernel = Literal[0, 3, 5, 7, 9, 11, 13, 15, 17]


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2, Eq. 1-3) on channels-last input ``N, H, W, C``.

    ``y = (gamma * N(x) + 1) * x + beta`` with ``N(x) = ||x||_HW / mean_C ||x||_HW``. The deploy
    form has no ``beta`` (it is folded into the next linear layer).
    """

    def __init__(self, dim: int, use_bias: bool = True):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        out = (self.gamma * nx + 1) * x
        return out if self.beta is None else out + self.beta


class SEBlock(nn.Module):
    """Squeeze-and-Excitation (Hu et al.): global pool -> 1x1 (C/4) -> ReLU -> 1x1 (C) -> sigmoid gate."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Conv2d(dim, hidden, 1)
        self.up = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.up(F.relu(self.down(w))))


class DilatedReparamBlock(nn.Module):
    """Dilated Reparam Block (paper Sec. 3): ``BN(DW_K(x)) + sum_i BN_i(DW_{k_i, r_i}(x))``.

    After :meth:`reparameterize` (or with ``deploy=True``) it is one biased ``K x K`` depthwise
    conv ``lk``; the dilated branches are zero-inserted to ``r(k-1)+1`` and padded to ``K``.
    """

    def __init__(self, dim: int, kernel_size: int, deploy: bool = False):
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(
                f"DilatedReparamBlock: kernel_size {kernel_size} has no branch setting; "
                f"use one of {sorted(DILATED_BRANCHES)}"
            )
        self.kernel_size = kernel_size
        self.lk = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
        self.lk_bn: nn.Module | None = None
        self.branches = nn.ModuleList()
        if not deploy:
            self.lk_bn = nn.BatchNorm2d(dim)
            for k, r in zip(*DILATED_BRANCHES[kernel_size]):
                self.branches.append(ConvBN(dim, dim, k, groups=dim, dilation=r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the large depthwise conv runs through the vision.dwconv2d_large kernel dispatch
        if self.lk_bn is None:  # deploy form
            return large_depthwise_conv(self.lk, x)
        out = self.lk_bn(large_depthwise_conv(self.lk, x))
        for branch in self.branches:
            out = out + branch(x)
        return out

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lk_bn is None:
            return self.lk.weight, self.lk.bias
        kernel, bias = fuse_conv_bn(self.lk.weight, self.lk.bias, self.lk_bn)
        for branch in self.branches:
            k, b = branch.fused_kernel_bias()
            kernel = kernel + pad_kernel_to(dilate_kernel(k, branch.conv.dilation[0]), self.kernel_size)
            bias = bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.lk_bn is None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        self.lk = conv_from(self.lk, kernel, bias)
        self.lk_bn = None
        self.branches = nn.ModuleList()


class UniRepLKNetBlock(nn.Module):
    """One UniRepLKNet block (LarK/SmaK block): DW conv or DRB -> BN -> SE -> FFN with GRN -> BN.

    Layer scale and drop path on the residual branch.

    ``kernel_size`` >= 7: Dilated Reparam Block; 3 or 5: plain depthwise conv; 0: no token mixer.
    """

    def __init__(
        self, dim: int, kernel_size: int, drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-6, ffn_ratio: float = 4.0, deploy: bool = False,
    ):
        super().__init__()
        if kernel_size == 0:
            self.dwconv: nn.Module = nn.Identity()
        elif kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy)
        elif kernel_size in (3, 5):
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
        else:
            raise ValueError(f"UniRepLKNetBlock: kernel_size must be 0, 3, 5 or >= 7, got {kernel_size}")
        self.norm: nn.Module = nn.Identity() if deploy or kernel_size == 0 else nn.BatchNorm2d(dim)
        self.se = SEBlock(dim, dim // 4)
        hidden = int(ffn_ratio * dim)
        # FFN on channels-last tensors (1x1 convs as Linear), GRN after the activation.
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden, use_bias=not deploy)
        self.pwconv2 = nn.Linear(hidden, dim, bias=deploy)
        self.ffn_norm: nn.Module = nn.Identity() if deploy else nn.BatchNorm2d(dim)
        use_ls = not deploy and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if use_ls else None
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y.permute(0, 2, 3, 1)))))
        y = self.ffn_norm(y.permute(0, 3, 1, 2))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold branches, BNs, the GRN bias and the layer scale (eval-mode equivalent)."""
        # token mixer: one biased depthwise kernel, BN folded in
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
        if isinstance(self.norm, nn.BatchNorm2d):
            conv = self.dwconv.lk if isinstance(self.dwconv, DilatedReparamBlock) else self.dwconv
            kernel, bias = fuse_conv_bn(conv.weight, conv.bias, self.norm)
            fused = conv_from(conv, kernel, bias)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk = fused
            else:
                self.dwconv = fused
            self.norm = nn.Identity()
        # FFN tail: gamma * BN(W (z + beta) + b) = W' z + b'
        if isinstance(self.ffn_norm, nn.BatchNorm2d):
            bn = self.ffn_norm
            weight = self.pwconv2.weight
            bias = self.pwconv2.bias if self.pwconv2.bias is not None else weight.new_zeros(weight.shape[0])
            if self.grn.beta is not None:
                bias = bias + weight @ self.grn.beta
                self.grn.beta = None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            new_weight, new_bias = weight * scale[:, None], bn.bias + (bias - bn.running_mean) * scale
            if self.gamma is not None:
                new_weight, new_bias = new_weight * self.gamma[:, None], new_bias * self.gamma
                self.gamma = None
            linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
            linear.weight.copy_(new_weight)
            linear.bias.copy_(new_bias)
            self.pwconv2 = linear
            self.ffn_norm = nn.Identity()


class UniRepLKNet(Backbone):
    """UniRepLKNet backbone (head-less).

    Args:
        depths: blocks per stage (paper Sec. 4, architectural specifications); 0 leaves a stage
            without blocks.
        dims: channels per stage (at least 4: the SE block squeezes to ``dim // 4``).
        kernel_sizes: kernel size of every block, one tuple per stage (None: the paper's default
            for these depths: 3 in stage 1, 13 in stage 2 and 4, stage 3 interleaving 13 with 3s);
            0 (no token mixer), 3 or 5 (plain depthwise conv) or a Dilated Reparam Block size
            (``DILATED_BRANCHES``: 7 ... 17).
        in_channels: input channels.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        layer_scale_init_value: initial layer scale (None/0 disables it).
        out_indices: stages whose outputs ``forward`` returns (None: all four).
        norm_outputs: add a channels-first LayerNorm on each returned stage output (the official
            code does this for detection/segmentation backbones).
        deploy: build the re-parameterised inference form directly (to load deploy weights).
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts (deploy form): global average pool, LayerNorm,
    #: linear (official ``norm(x.mean([-2, -1]))`` -> ``head``)
    paper_head = {"neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(
        self,
        depths: Annotated[tuple[Annotated[int, Ge(0)], ...], MinLen(1)] = (3, 3, 18, 3),
        dims: Annotated[tuple[Annotated[int, Ge(4)], ...], MinLen(1)] = (80, 160, 320, 640),
        kernel_sizes: tuple[tuple[BlockKernel, ...], ...] | None = None,
        in_channels: Annotated[int, Ge(1)] = 3,
        drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        layer_scale_init_value: Annotated[float, Ge(0)] | None = 1e-6,
        out_indices: tuple[int, ...] | None = None,
        norm_outputs: bool = False,
        deploy: bool = False,
    ):
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        if kernel_sizes is None:
            if depths not in DEFAULT_KERNEL_SIZES:
                raise ValueError(
                    f"UniRepLKNet: no default kernel_sizes for depths {depths}; pass kernel_sizes "
                    "with one tuple of per-block kernel sizes per stage"
                )
            kernel_sizes = DEFAULT_KERNEL_SIZES[depths]
        kernel_sizes = tuple(tuple(k) for k in kernel_sizes)
        if [len(k) for k in kernel_sizes] != list(depths):
            raise ValueError(f"UniRepLKNet: kernel_sizes {kernel_sizes} do not match depths {depths}")
        self.out_indices = check_out_indices(out_indices, len(depths))
        num_built = max(self.out_indices) + 1  # later stages are not built (every parameter gets a gradient)

        # stem: 3x3/2 conv -> LN -> GELU -> 3x3/2 conv -> LN; total stride 4
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0] // 2, 3, stride=2, padding=1),
            LayerNorm2d(dims[0] // 2, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
            LayerNorm2d(dims[0], eps=1e-6),
        )
        # downsampling between stages: 3x3/2 conv -> LN
        self.downsamples = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1), LayerNorm2d(dims[i + 1], eps=1e-6))
            for i in range(num_built - 1)
        )
        rates = drop_path_rates(depths, drop_path_rate)
        self.stages = nn.ModuleList(
            nn.Sequential(*[
                UniRepLKNetBlock(dims[i], kernel_sizes[i][j], drop_path_rate=rates[i][j],
                                 layer_scale_init_value=layer_scale_init_value, deploy=deploy)
                for j in range(depths[i])
            ])
            for i in range(num_built)
        )
        self.out_norms = nn.ModuleDict(
            {str(i): LayerNorm2d(dims[i], eps=1e-6) for i in self.out_indices} if norm_outputs else {}
        )
        self.feature_info = [FeatureInfo(dims[i], 4 * 2**i, f"stages.{i}") for i in self.out_indices]
        # official init: truncated normal (std 0.02) for every conv/linear weight, zero bias;
        # GRN starts as identity (gamma = beta = 0), layer scale at 1e-6
        self.apply(trunc_normal_init)

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.stem[0].in_channels, 64, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
            if i in self.out_indices:
                outs.append(self.out_norms[str(i)](x) if str(i) in self.out_norms else x)
        return outs

    @torch.no_grad()
    def reparameterize(self) -> UniRepLKNet:
        """Convert to the deploy form in place (call in eval mode after training); returns self."""
        for m in self.modules():
            if isinstance(m, UniRepLKNetBlock):
                m.reparameterize()
        return self

    @classmethod
    def example_config(cls) -> dict:
        # every block type once: plain 3x3 DW, DRB 7/9/13, and a 5x5 plain DW
        return {"depths": (1, 1, 2, 1), "dims": (8, 16, 32, 64),
                    "kernel_sizes": ((3,), (7,), (13, 5), (9,))}


# Per-block kernel sizes by depth (official defaults; paper Sec. 4: "13 for stages 2-4, 3 in stage 1,
# and in stage 3 a 13x13 block followed by 3x3 blocks").
DEFAULT_KERNEL_SIZES: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3,) * 2, (13,) * 2, (13,) * 6, (13,) * 2),  # A, F, P
    (2, 2, 8, 2): ((3,) * 2, (13,) * 2, (13,) * 8, (13,) * 2),  # N
    (3, 3, 18, 3): ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3),  # T
    (3, 3, 27, 3): ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (13,) * 3),  # S, B, L, XL
}


# ---- weights from the official code -------------------------------------------------------------
#: official (AILab-CVC/UniRepLKNet ``unireplknet.py``) block sub-module names -> ours
_OFFICIAL_RENAMES = (
    (".dwconv.lk_origin.", ".dwconv.lk."), (".dwconv.origin_bn.", ".dwconv.lk_bn."),
    (".pwconv1.1.", ".pwconv1."), (".act.1.", ".grn."), (".pwconv2.0.", ".pwconv2."), (".pwconv2.2.", ".ffn_norm."),
)
_OFFICIAL_BRANCH = re.compile(r"\.dwconv\.dil_(conv|bn)_k(\d+)_(\d+)\.")


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official UniRepLKNet weights (AILab-CVC/UniRepLKNet ``unireplknet.py``) -> a composed classifier's keys.

    Returns ``backbone.*`` (:class:`UniRepLKNet`; a training-form checkpoint fits a model built as usual, a
    reparameterised one a model built with ``deploy=True``), ``neck.norm.*`` (the final LayerNorm:
    ``vision.PoolNorm`` of :attr:`UniRepLKNet.paper_head`) and ``head.fc.*`` (``core.LinearClsHead``). The
    Dilated Reparam Block's branches ``dil_conv_k{k}_{r}`` / ``dil_bn_k{k}_{r}`` become ``branches.{i}`` in the
    order of :data:`DILATED_BRANCHES` for the block's large kernel (read off its ``lk_origin`` weight); GRN's
    ``(1, 1, 1, C)`` parameters become ``(C,)``. A key the official model does not have raises a KeyError naming it.
    """
    large = {k[: -len(".dwconv.lk_origin.weight")]: v.shape[-1]
             for k, v in state_dict.items() if k.endswith(".dwconv.lk_origin.weight")}
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "norm":
            out["neck." + key] = value
            continue
        if parts[0] == "head":
            out["head.fc." + ".".join(parts[1:])] = value
            continue
        if parts[0] == "downsample_layers" and len(parts) > 2:
            i = int(parts[1])
            new = ".".join(["stem" if i == 0 else f"downsamples.{i - 1}", *parts[2:]])
        elif parts[0] == "stages" and len(parts) > 3:
            new = key
            for old, ours in _OFFICIAL_RENAMES:
                new = new.replace(old, ours)
            m = _OFFICIAL_BRANCH.search(new)
            if m:
                block = ".".join(parts[:3])
                table = DILATED_BRANCHES.get(large.get(block, 0))
                pair = (int(m.group(2)), int(m.group(3)))
                if table is None or pair not in zip(*table):
                    raise KeyError(f"official UniRepLKNet key {key}: no dilated branch k={pair[0]}, r={pair[1]} in "
                                   f"a block whose large kernel is {large.get(block)}")
                index = list(zip(*table)).index(pair)
                new = new.replace(m.group(0), f".dwconv.branches.{index}.{m.group(1)}.")
            if ".grn." in new:
                value = value.reshape(-1)
        else:
            raise KeyError(f"unexpected key in an official UniRepLKNet state dict: {key}")
        out["backbone." + new] = value
    return out
