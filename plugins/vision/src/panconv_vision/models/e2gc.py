"""E2GC: energy-efficient group convolution (Jha, Saini, Nag and Mittal, VLSID 2020, arXiv:2006.15100).

A group convolution (GConv) with ``g`` groups splits ``C_in`` input channels into groups of
``G = C_in / g`` channels. Networks usually fix the *number of groups* (FgGC): ResNeXt-50 32x4d keeps
``g = 32`` while the width doubles per stage (group size 4, 8, 16, 32), MobileNet-V1's depthwise
convs keep ``g = C`` (group size 1). The paper's analytic model (:func:`group_conv_cost`) shows why that
is energy-inefficient: the multiply-accumulates of a layer grow with the group size,
``H'W' k^2 C_out G``, while its data movement ``H W C_in + k^2 C_out G + H'W' C_out`` is dominated by
the activations for small ``G``, so the arithmetic intensity (data reuse) collapses at small ``G`` and
the compute explodes at large ``G``. E2GC keeps the **group size** ``G`` constant across the network,
balancing the two; it is built here into the two networks of the paper:

* :class:`MobileNetV1` (Howard et al. 2017): ``group_size=None`` is the original (depthwise, 4.23 M
  parameters with the ImageNet-1k head); ``group_size=G`` replaces every 3x3 depthwise conv by a 3x3
  group conv with ``C / G`` groups of ``G`` channels;
* :class:`ResNeXt` (Xie et al. 2017): ``groups=32, width_per_group=4`` is ResNeXt-50 32x4d (25.03 M,
  equal to torchvision's ``resnext50_32x4d``, parity-checked); ``group_size=G`` uses ``width / G`` groups
  in every stage's 3x3 conv.

The official release (github.com/iithcandle/E2GC-release) ships a checkpoint but no code, so the
group sizes registered here are the values the paper discusses and the exact variants are not
parity-checked; the cost model is tested against direct counts and the built modules.
:func:`network_cost` applies the model to any network (forward hooks on every ``nn.Conv2d`` and
``nn.Linear``), ``benchmarks/vision_e2gc.py`` compares it with measured latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge, Gt, MinLen
from torch import nn

from panconv.api import FeatureInfo

from .layers import HierarchicalBackbone, check_out_indices

__all__ = ["LayerCost", "MobileNetV1", "ResNeXt", "energy", "group_conv_cost", "network_cost", "optimal_group_size"]

#: energy per operation at 45 nm (Horowitz, ISSCC 2014): a 32-bit float multiply-add and a 32-bit DRAM access
E_MAC_PJ, E_DRAM_PJ = 4.6, 640.0


@dataclass(frozen=True)
class LayerCost:
    """Analytic cost of one layer (counts in elements: multiply-accumulates, words moved)."""

    macs: int
    params: int
    input_words: int
    weight_words: int
    output_words: int

    @property
    def data_movement(self) -> int:
        """Words read and written once each: inputs + weights + outputs (the paper's data-movement cost)."""
        return self.input_words + self.weight_words + self.output_words

    @property
    def arithmetic_intensity(self) -> float:
        """MACs per word moved (data reuse)."""
        return self.macs / self.data_movement

    def __add__(self, other: LayerCost) -> LayerCost:
        return LayerCost(self.macs + other.macs, self.params + other.params, self.input_words + other.input_words,
                         self.weight_words + other.weight_words, self.output_words + other.output_words)


def group_conv_cost(c_in: int, c_out: int, h: int, w: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                    padding: int | None = None, bias: bool = False, batch: int = 1) -> LayerCost:
    """The cost of a ``k x k`` group convolution on a ``c_in x h x w`` input: MACs, parameters and words moved.

    ``MACs = N H' W' k^2 (c_in / g) c_out``; weights ``k^2 (c_in / g) c_out`` (+ ``c_out`` bias);
    inputs ``N c_in h w``; outputs ``N c_out H' W'`` (``H' = (h + 2p - k) // s + 1``).
    """
    if c_in % groups or c_out % groups:
        raise ValueError(f"group_conv_cost: {groups} groups do not divide c_in {c_in} and c_out {c_out}")
    p = kernel // 2 if padding is None else padding
    ho, wo = (h + 2 * p - kernel) // stride + 1, (w + 2 * p - kernel) // stride + 1
    weights = kernel * kernel * (c_in // groups) * c_out + (c_out if bias else 0)
    macs = batch * ho * wo * kernel * kernel * (c_in // groups) * c_out
    return LayerCost(macs, weights, batch * c_in * h * w, weights, batch * c_out * ho * wo)


def energy(cost: LayerCost, e_mac: float = E_MAC_PJ, e_move: float = E_DRAM_PJ) -> float:
    """Energy (pJ) of the analytic model: ``e_mac * MACs + e_move * words moved``."""
    return e_mac * cost.macs + e_move * cost.data_movement


def optimal_group_size(c: int, h: int, w: int, kernel: int = 3, e_mac: float = E_MAC_PJ,
                       e_move: float = E_DRAM_PJ, candidates: list[int] | None = None) -> int:
    """The group size that balances compute and data movement for a ``c -> c`` 3x3 group conv on ``h x w``.

    Below it the layer's energy is dominated by moving activations (little reuse per word), above it by
    the multiply-accumulates: the divisor ``G`` of ``c`` whose compute energy ``e_mac * MACs`` is closest
    (in ratio) to its data-movement energy ``e_move * words``. For large maps this is about
    ``2 e_move / (k^2 e_mac)`` (31 with the 45 nm DRAM figures), independent of the width: hence a
    constant group size across the network.
    """
    import math

    sizes = candidates or [d for d in range(1, c + 1) if c % d == 0]

    def imbalance(g: int) -> float:
        cost = group_conv_cost(c, c, h, w, kernel, groups=c // g)
        return abs(math.log(e_mac * cost.macs) - math.log(e_move * cost.data_movement))

    return min(sizes, key=imbalance)


def network_cost(model: nn.Module, example: torch.Tensor) -> tuple[LayerCost, list[tuple[str, LayerCost]]]:
    """Total and per-layer analytic cost of every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` on ``example``."""
    layers: list[tuple[str, LayerCost]] = []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            if isinstance(module, nn.Conv2d):
                n, c, h, w = x.shape
                k = module.kernel_size[0]
                cost = group_conv_cost(c, module.out_channels, h, w, k, module.stride[0], module.groups,
                                       module.padding[0], module.bias is not None, n)
            else:
                n = x.numel() // x.shape[-1]
                weights = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
                cost = LayerCost(n * module.weight.numel(), weights, x.numel(), weights, output.numel())
            layers.append((name, cost))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    total = LayerCost(0, 0, 0, 0, 0)
    for _, c in layers:
        total = total + c
    return total, layers


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _groups(channels: int, group_size: int | None) -> int:
    if group_size is None:
        return channels
    if channels % group_size:
        raise ValueError(f"E2GC: group size {group_size} does not divide {channels} channels")
    return channels // group_size


class MobileNetV1(HierarchicalBackbone):
    """MobileNet-V1 with depthwise (``group_size=None``) or E2GC 3x3 group convolutions of constant group size.

    The paper's Table 1 as four stages at strides 4, 8, 16, 32: the stem (3x3/2 conv to ``stem_dim``), then
    separable blocks (3x3 depthwise or group conv-BN-ReLU, 1x1 conv-BN-ReLU): stage 0 a ``first_dim`` block
    and ``depths[0] - 1`` blocks of ``dims[0]`` (the first of them stride 2), every later stage
    ``depths[i]`` blocks of ``dims[i]`` (the first stride 2). Defaults: depths 3/2/6/2, dims
    128/256/512/1024 (MobileNet-V1 1.0). ``width_mult`` scales every width (the paper's alpha).
    """

    metadata_inputs = ("in_channels",)
    paper_head = {"neck": {"type": "core.GlobalAvgPool"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, group_size: Annotated[int, Ge(1)] | None = None,
                 depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 2, 6, 2),
                 dims: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (128, 256, 512, 1024),
                 stem_dim: Annotated[int, Ge(1)] = 32, first_dim: Annotated[int, Ge(1)] = 64,
                 width_mult: Annotated[float, Gt(0)] = 1.0, in_channels: Annotated[int, Ge(1)] = 3,
                 out_indices: tuple[int, ...] | None = None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"MobileNetV1: width_mult must be > 0, got {width_mult}")
        if len(depths) != len(dims) or depths[0] < 2:
            raise ValueError(f"MobileNetV1: depths {depths} and dims {dims} must have one entry per stage and "
                             f"depths[0] >= 2 (the first_dim block and the stride-2 block)")
        self.group_size = group_size
        self.out_indices = check_out_indices(out_indices, len(depths))

        def width(c: int) -> int:
            return max(8, int(c * width_mult))

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(_conv_bn_relu(c_in, c_in, 3, stride, _groups(c_in, group_size)),
                                 _conv_bn_relu(c_in, c_out, 1))

        c = width(stem_dim)
        self.stem = _conv_bn_relu(in_channels, c, 3, 2)
        self.stages = nn.ModuleList()
        for i in range(max(self.out_indices) + 1):
            blocks = []
            if i == 0:
                blocks.append(block(c, width(first_dim), 1))
                c = width(first_dim)
            for j in range(depths[i] - (1 if i == 0 else 0)):
                blocks.append(block(c, width(dims[i]), 2 if j == 0 else 1))
                c = width(dims[i])
            self.stages.append(nn.Sequential(*blocks))
        self.feature_info = [FeatureInfo(width(dims[i]), 4 * 2 ** i, f"stages.{i}") for i in self.out_indices]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.stem[0].in_channels, 64, 64)

    @classmethod
    def example_config(cls) -> dict:
        return {"group_size": 4, "width_mult": 0.25, "depths": (2, 1, 2, 1)}


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 -> 3x3 group conv (stride) -> 1x1 (x4), BN after each, residual (projected)."""

    def __init__(self, c_in: int, planes: int, width: int, groups: int, stride: int):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or c_in != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNeXt(HierarchicalBackbone):
    """ResNeXt-50 (``depths`` 3/4/6/3) with a fixed number of groups (FgGC) or a constant group size (E2GC).

    Args:
        depths: bottlenecks per stage.
        dims: output channels per stage (4x the bottleneck's "planes": 256/512/1024/2048).
        groups, width_per_group: the FgGC layout (32x4d: bottleneck widths 128/256/512/1024).
        group_size: E2GC: every 3x3 conv has ``width / group_size`` groups (overrides ``groups``).
        in_channels: input channels.
        out_indices: stages whose outputs ``forward`` returns (strides 4..32).
    """

    metadata_inputs = ("in_channels",)
    paper_head = {"neck": {"type": "core.GlobalAvgPool"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 4, 6, 3),
                 dims: Annotated[tuple[Annotated[int, Ge(4)], ...], MinLen(1)] = (256, 512, 1024, 2048),
                 groups: Annotated[int, Ge(1)] = 32, width_per_group: Annotated[int, Ge(1)] = 4,
                 group_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] = 3,
                 out_indices: tuple[int, ...] | None = None):
        super().__init__()
        if len(depths) != len(dims) or any(d % 4 for d in dims):
            raise ValueError(f"ResNeXt: depths {depths} and dims {dims} must have one entry per stage, dims "
                             f"multiples of 4 (bottleneck expansion)")
        self.out_indices = check_out_indices(out_indices, len(depths))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        c = 64
        self.stages = nn.ModuleList()
        for i in range(max(self.out_indices) + 1):
            planes = dims[i] // 4
            width = planes * width_per_group * groups // 64  # torchvision's int(planes * base_width / 64) * groups
            g = groups if group_size is None else _groups(width, group_size)
            blocks = []
            for j in range(depths[i]):
                blocks.append(Bottleneck(c, planes, width, g, 2 if (j == 0 and i > 0) else 1))
                c = dims[i]
            self.stages.append(nn.Sequential(*blocks))
        self.feature_info = [FeatureInfo(dims[i], 4 * 2 ** i, f"stages.{i}") for i in self.out_indices]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.stem[0].in_channels, 64, 64)

    @classmethod
    def example_config(cls) -> dict:
        return {"depths": (1, 1), "dims": (256, 512), "groups": 4, "width_per_group": 2, "group_size": 4}
