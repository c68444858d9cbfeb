"""RepLKNet: scaling up kernels to 31x31 (Ding et al., CVPR 2022).

Paper: "Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs",
arXiv:2203.06717. Reference code: https://github.com/DingXiaoH/RepLKNet-pytorch (numerical
parity checked, see tests/test_replknet.py). RepLKNet is the basis of UniRepLKNet
(``unireplknet.py``); the similarly titled "Scaling Up Your Kernels: Large Kernel Design in
ConvNets towards Universal Representations" is the journal version of UniRepLKNet, not of
RepLKNet.

Architecture (paper Sec. 4 and its architecture figure): a stem (3x3/2 conv, 3x3 DW conv,
1x1 conv, 3x3/2 DW conv, each conv-BN-ReLU) and four stages of alternating

* RepLK Block: ``x + DropPath(PW2(ReLU(DW_K(PW1(BN(x))))))``, PW1 = 1x1 conv-BN-ReLU widening
  by ``dw_ratio``, DW_K a K x K depthwise conv-BN with a parallel 5x5 depthwise conv-BN that is
  merged into the large kernel after training (structural re-parameterisation, Sec. 3
  guideline 3), PW2 = 1x1 conv-BN;
* ConvFFN: ``x + DropPath(PW2(GELU(PW1(BN(x)))))`` with 4x expansion,

separated by transitions (1x1 conv-BN-ReLU to the next width, then 3x3/2 DW conv-BN-ReLU).
Kernel sizes per stage: [31, 29, 27, 13] for 31B/31L, [27, 27, 27, 13] for XL, which also has
no small-kernel branch and ``dw_ratio`` 1.5 (paper; official code and README).

Initialisation is PyTorch's default, as in the official code. The backbone is head-less; the
paper's parameter counts (its ImageNet tables, = official README) are for the deploy form plus
the final BN (before pooling) and the 1000-way classifier: ``RepLKNet.paper_head`` with
:meth:`RepLKNet.reparameterize` applied, which is how the tests (and ``panconv info``) count ours.
The paper's sizes are registered variants (``vision.replknet_31b``, ``_31l``, ``_xl``, plugin.py).
"""

from __future__ import annotations

import re
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import Backbone, FeatureInfo

from ..kernels.dwconv_large import large_depthwise_conv
from .layers import check_out_indices, drop_path, drop_path_rates
from .reparam import ConvBN, conv_from, fuse_convbn_modules, pad_kernel_to

__all__ = ["ConvFFN", "LargeKernelConv", "RepLKBlock", "RepLKNet", "map_official_state_dict"]


class LargeKernelConv(nn.Module):
    """Depthwise ``K x K`` conv-BN plus an optional parallel ``k x k`` conv-BN (Sec. 3, guideline 3).

    :meth:`reparameterize` folds both BNs and adds the zero-padded small kernel to the centre
    of the large one, leaving a single biased ``K x K`` conv (``large.conv``).
    """

    def __init__(self, channels: int, kernel_size: int, small_kernel: int | None = 5, deploy: bool = False):
        super().__init__()
        if small_kernel is not None and small_kernel > kernel_size:
            raise ValueError(f"LargeKernelConv: small_kernel {small_kernel} > kernel_size {kernel_size}")
        if kernel_size % 2 == 0 or (small_kernel is not None and small_kernel % 2 == 0):
            # "same" padding keeps the map size (the branches add up, the block is residual) only for odd k
            raise ValueError(f"LargeKernelConv: kernel sizes must be odd, got kernel_size {kernel_size} "
                             f"and small_kernel {small_kernel}")
        self.kernel_size = kernel_size
        self.large = ConvBN(channels, channels, kernel_size, groups=channels, fused=deploy)
        self.small = (
            ConvBN(channels, channels, small_kernel, groups=channels)
            if small_kernel is not None and not deploy else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the large depthwise conv runs through the vision.dwconv2d_large kernel dispatch
        out = self.large.act(self.large.bn(large_depthwise_conv(self.large.conv, x)))
        if self.small is not None:
            out = out + self.small(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        kernel, bias = self.large.fused_kernel_bias()
        if self.small is not None:
            k, b = self.small.fused_kernel_bias()
            kernel, bias = kernel + pad_kernel_to(k, self.kernel_size), bias + b
        self.large.conv = conv_from(self.large.conv, kernel, bias)
        self.large.bn = nn.Identity()
        self.small = None


class RepLKBlock(nn.Module):
    """RepLK Block (Sec. 4): pre-BN, 1x1 widen, large depthwise kernel, ReLU, 1x1 back, shortcut."""

    def __init__(
        self, channels: int, dw_channels: int, kernel_size: int, small_kernel: int | None,
        drop_path_rate: float = 0.0, deploy: bool = False,
    ):
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(channels)
        self.pw1 = ConvBN(channels, dw_channels, 1, act=nn.ReLU())
        self.large_kernel = LargeKernelConv(dw_channels, kernel_size, small_kernel, deploy=deploy)
        self.lk_act = nn.ReLU()
        self.pw2 = ConvBN(dw_channels, channels, 1)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.lk_act(self.large_kernel(self.pw1(self.pre_bn(x)))))
        return x + self.drop_path(y)


class ConvFFN(nn.Module):
    """ConvFFN (Sec. 4): pre-BN, 1x1 conv-BN expanding ``ffn_ratio`` times, GELU, 1x1 conv-BN, shortcut."""

    def __init__(self, channels: int, hidden: int, drop_path_rate: float = 0.0):
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(channels)
        self.pw1 = ConvBN(channels, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = ConvBN(hidden, channels, 1)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.act(self.pw1(self.pre_bn(x)))))


class RepLKNet(Backbone):
    """RepLKNet backbone (head-less).

    Args:
        depths: number of (RepLK Block, ConvFFN) pairs per stage (Sec. 4: [2, 2, 18, 2]); 0 leaves a
            stage without blocks.
        dims: channels per stage.
        kernel_sizes: large depthwise kernel per stage (odd).
        small_kernel: size of the parallel re-parameterisation branch (odd, at most the stage's
            kernel; None: no branch, as XL).
        dw_ratio: width of the large-kernel depthwise conv relative to the stage width.
        ffn_ratio: ConvFFN expansion.
        in_channels: input channels.
        drop_path_rate: stochastic depth, linearly increasing over block pairs.
        out_indices: stages whose outputs ``forward`` returns (None: all four).
        norm_outputs: a BatchNorm on each returned output (the official XL setting for
            detection/segmentation, "norm_intermediate_features").
        deploy: build the re-parameterised inference form directly (to load deploy weights).
    """

    metadata_inputs = ("in_channels",)
    #: the ImageNet-1k classifier the paper counts (deploy form): BatchNorm, global
    #: average pool, linear (official ``norm`` -> ``avgpool`` -> ``head``)
    paper_head = {"neck": {"type": "vision.PoolNorm", "norm": "batch"},
                  "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(
        self,
        depths: Annotated[tuple[Annotated[int, Ge(0)], ...], MinLen(1)] = (2, 2, 18, 2),
        dims: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (128, 256, 512, 1024),
        kernel_sizes: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (31, 29, 27, 13),
        small_kernel: Annotated[int, Ge(1)] | None = 5,
        dw_ratio: Annotated[float, Gt(0)] = 1.0,
        ffn_ratio: Annotated[float, Gt(0)] = 4.0,
        in_channels: Annotated[int, Ge(1)] = 3,
        drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        out_indices: tuple[int, ...] | None = None,
        norm_outputs: bool = False,
        deploy: bool = False,
    ):
        super().__init__()
        if not len(depths) == len(dims) == len(kernel_sizes):
            raise ValueError(f"RepLKNet: depths {depths}, dims {dims} and kernel_sizes {kernel_sizes} differ in length")
        for name, ratio in (("dw_ratio", dw_ratio), ("ffn_ratio", ffn_ratio)):
            if any(int(d * ratio) < 1 for d in dims):
                raise ValueError(f"RepLKNet: {name} {ratio} leaves a stage of dims {tuple(dims)} with no channels "
                                 f"(int(dim * {name}) must be >= 1)")
        self.out_indices = check_out_indices(out_indices, len(depths))
        num_built = max(self.out_indices) + 1  # later stages are not built (every parameter gets a gradient)
        relu = nn.ReLU
        width = dims[0]
        # stem (Sec. 4): conv3x3/2, DW conv3x3, conv1x1, DW conv3x3/2 -- all conv-BN-ReLU, stride 4
        self.stem = nn.Sequential(
            ConvBN(in_channels, width, 3, stride=2, act=relu()),
            ConvBN(width, width, 3, groups=width, act=relu()),
            ConvBN(width, width, 1, act=relu()),
            ConvBN(width, width, 3, stride=2, groups=width, act=relu()),
        )
        rates = drop_path_rates(depths, drop_path_rate)
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i in range(num_built):
            dim = dims[i]
            blocks = []
            for rate in rates[i]:  # a RepLK Block and its ConvFFN share one rate
                blocks.append(RepLKBlock(dim, int(dim * dw_ratio), kernel_sizes[i], small_kernel, rate, deploy))
                blocks.append(ConvFFN(dim, int(dim * ffn_ratio), rate))
            self.stages.append(nn.Sequential(*blocks))
            if i < num_built - 1:  # transition: 1x1 conv to the next width, then DW 3x3/2
                nxt = dims[i + 1]
                self.transitions.append(nn.Sequential(
                    ConvBN(dim, nxt, 1, act=relu()),
                    ConvBN(nxt, nxt, 3, stride=2, groups=nxt, act=relu()),
                ))
        self.out_norms = nn.ModuleDict(
            {str(i): nn.BatchNorm2d(dims[i]) for i in self.out_indices} if norm_outputs else {}
        )
        self.feature_info = [FeatureInfo(dims[i], 4 * 2**i, f"stages.{i}") for i in self.out_indices]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.stem[0].conv.in_channels, 64, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.transitions[i - 1](x)
            x = stage(x)
            if i in self.out_indices:
                outs.append(self.out_norms[str(i)](x) if str(i) in self.out_norms else x)
        return outs

    @torch.no_grad()
    def reparameterize(self, fuse_bn: bool = False) -> RepLKNet:
        """Merge every small-kernel branch into its large kernel, in place; returns self.

        With ``fuse_bn=True`` every remaining conv-BN pair is folded as well (the official
        ``deep_fuse_BN``). Call in eval mode after training.
        """
        for m in self.modules():
            if isinstance(m, LargeKernelConv):
                m.reparameterize()
        if fuse_bn:
            fuse_convbn_modules(self)
        return self

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64), "kernel_sizes": (13, 11, 9, 7), "small_kernel": 5}


# ---- weights from the official code -------------------------------------------------------------
#: official (DingXiaoH/RepLKNet-pytorch ``replknet.py``) block sub-module names -> ours
_OFFICIAL_RENAMES = (
    ("prelkb_bn.", "pre_bn."), ("preffn_bn.", "pre_bn."), ("large_kernel.lkb_origin.", "large_kernel.large."),
    ("large_kernel.small_conv.", "large_kernel.small."), ("large_kernel.lkb_reparam.", "large_kernel.large.conv."),
)
_OFFICIAL_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")
_OFFICIAL_STAGE_NORM = re.compile(r"stages\.(\d+)\.norm\.(.+)")


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official RepLKNet weights (DingXiaoH/RepLKNet-pytorch ``replknet.py``) -> a composed classifier's keys.

    Returns ``backbone.*`` (:class:`RepLKNet`), ``neck.norm.*`` (the final BatchNorm: ``vision.PoolNorm`` with
    ``norm: batch`` of :attr:`RepLKNet.paper_head`) and ``head.fc.*`` (``core.LinearClsHead``); a backbone-only
    state dict (``num_classes=None``) gives ``backbone.*`` alone. Every form of the official model maps: the
    training form (``lkb_origin`` / ``small_conv``) into a model built as usual, the ``structural_reparam()`` form
    (``lkb_reparam``, ``small_kernel_merged=True``) into one built with ``deploy=True``, and the
    ``deep_fuse_BN()`` form into a model after ``reparameterize(fuse_bn=True)``. The official block list
    ``stages.{i}.blocks.{j}`` (RepLK Block, ConvFFN alternating) becomes ``stages.{i}.{j}``, its pre-norms
    ``prelkb_bn`` / ``preffn_bn`` become ``pre_bn``, and the stage norms of ``norm_intermediate_features``
    (``stages.{i}.norm``) become ``out_norms.{i}`` (``norm_outputs=True``). Shapes are the same on both sides. A
    key the official model does not have raises a KeyError naming it.
    """
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "norm" and len(parts) == 2:
            out["neck." + key] = value
            continue
        if parts[0] == "head" and len(parts) == 2:
            out["head.fc." + parts[1]] = value
            continue
        block, stage_norm = _OFFICIAL_BLOCK.fullmatch(key), _OFFICIAL_STAGE_NORM.fullmatch(key)
        if block:
            rest = block.group(3)
            for old, ours in _OFFICIAL_RENAMES:
                if rest.startswith(old):
                    rest = ours + rest[len(old):]
                    break
            if not rest.startswith(("pre_bn.", "pw1.", "pw2.", "large_kernel.large.", "large_kernel.small.")):
                raise KeyError(f"unexpected key in an official RepLKNet state dict: {key}")
            new = f"stages.{block.group(1)}.{block.group(2)}.{rest}"
        elif stage_norm:
            new = f"out_norms.{stage_norm.group(1)}.{stage_norm.group(2)}"
        elif parts[0] in ("stem", "transitions") and len(parts) > 2:
            new = key  # named alike
        else:
            raise KeyError(f"unexpected key in an official RepLKNet state dict: {key}")
        out["backbone." + new] = value
    return out
