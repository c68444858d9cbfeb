"""DEA-Net: single-image dehazing via detail-enhanced convolution and content-guided attention.

Paper: Chen, He and Lu, "DEA-Net: Single image dehazing based on detail-enhanced convolution and
content-guided attention", IEEE TIP 2024, arXiv:2301.04805. Reference code:
https://github.com/cecret3350/DEA-Net (numerical parity checked, tests/test_deanet.py).

* **DEConv** (detail-enhanced convolution, paper Sec. III-B): five parallel 3x3 convolutions on the
  same input: a vanilla one and four difference convolutions (Su et al.'s pixel-difference convs),
  central (CDC: ``sum_i w_i (x_i - x_c)``), angular (ADC: ``sum_i w_i (x_i - x_{pi(i)})``, the
  clockwise neighbour), horizontal (HDC: a 1x3 kernel applied as left-column minus right-column) and
  vertical (VDC: top row minus bottom row). Every one is linear in the input, so their sum is one
  3x3 convolution whose kernel is the sum of the rewritten kernels (Eq. 3): training uses the five
  kernels (7.79 M parameters for the network), :meth:`DEANet.reparameterize` folds them into one conv
  (3.653 M, the paper's count) with identical outputs.
* **CGA** (content-guided attention, Sec. III-C): channel weights (GAP -> 1x1 -> ReLU -> 1x1) plus a
  spatial map (7x7 conv of [mean, max] over channels) give a coarse map ``W_coa``; it is refined by the
  input itself: the input and ``W_coa`` are interleaved channel by channel (channel shuffle) and a 7x7
  group conv (one group per channel pair, reflect padding) + sigmoid gives the channel-specific map.
* **DEA block**: ``y = x + CGA(conv(ReLU(DEConv(x)) + x))``; **DE block**: without CGA.
* **CGA-based mixup fusion** (Sec. III-D): encoder feature ``x`` and decoder feature ``y`` mix as
  ``1x1conv(x + y + W * x + (1 - W) * y)`` with ``W`` the CGA map of ``x + y`` (the official code applies
  the sigmoid twice here, and so do we, for parity).
* **U-shape** (Fig. 2): 3x3 conv; 4 DE blocks at full resolution (32 ch), stride-2 conv; conv + 4 DE
  blocks at 1/2 (64 ch); stride-2 conv; conv + 8 DEA blocks at 1/4 (128 ch); fusion with the
  down-sampled features, transposed conv, 4 DE blocks, fusion, transposed conv, 4 DE blocks, 3x3 conv
  to RGB. The output is the dehazed image itself (no global residual), as in the official code.
"""

from __future__ import annotations

import re
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from .layers import RestorationModel

__all__ = ["CGAFusion", "ContentGuidedAttention", "DEABlock", "DEBlock", "DEConv", "DEANet", "map_official_state_dict"]

#: the angular difference pairs each tap of a flattened 3x3 kernel with its clockwise neighbour
ANGULAR_PERMUTATION = (3, 0, 1, 6, 4, 2, 7, 8, 5)


def central_difference_kernel(w: torch.Tensor) -> torch.Tensor:
    """CDC: ``sum_i w_i (x_i - x_c)`` as a plain kernel: the centre tap becomes ``w_c - sum_i w_i``."""
    flat = w.flatten(2).clone()
    flat[:, :, 4] = flat[:, :, 4] - w.flatten(2).sum(2)
    return flat.view_as(w)


def angular_difference_kernel(w: torch.Tensor, theta: float = 1.0) -> torch.Tensor:
    """ADC: ``sum_i w_i (x_i - theta x_{pi(i)})`` as a plain kernel: ``w - theta w[pi]``."""
    flat = w.flatten(2)
    return (flat - theta * flat[:, :, list(ANGULAR_PERMUTATION)]).view_as(w)


def horizontal_difference_kernel(w: torch.Tensor) -> torch.Tensor:
    """HDC: a ``(O, I, 3)`` kernel placed in the left column and negated in the right column of a 3x3."""
    out = w.new_zeros(w.shape[0], w.shape[1], 3, 3)
    out[:, :, :, 0] = w
    out[:, :, :, 2] = -w
    return out


def vertical_difference_kernel(w: torch.Tensor) -> torch.Tensor:
    """VDC: a ``(O, I, 3)`` kernel placed in the top row and negated in the bottom row of a 3x3."""
    out = w.new_zeros(w.shape[0], w.shape[1], 3, 3)
    out[:, :, 0, :] = w
    out[:, :, 2, :] = -w
    return out


class DEConv(nn.Module):
    """Detail-enhanced convolution: vanilla + central, horizontal, vertical and angular difference 3x3 convs.

    Training form: five kernels (``cd``, ``hd``, ``vd``, ``ad`` and ``vanilla``, biased); the forward
    adds the rewritten kernels and runs one convolution (equal to running the five and adding, by
    linearity; tests/test_deanet.py checks it against the pixel-difference definitions). After
    :meth:`reparameterize` only ``vanilla`` remains, holding the merged kernel.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.cd = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.hd = nn.Conv1d(dim, dim, 3, padding=1, bias=True)
        self.vd = nn.Conv1d(dim, dim, 3, padding=1, bias=True)
        self.ad = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.vanilla = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.deployed = False

    def merged_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the sum of the five convolutions (paper Eq. 3)."""
        if self.deployed:
            return self.vanilla.weight, self.vanilla.bias
        w = (central_difference_kernel(self.cd.weight) + horizontal_difference_kernel(self.hd.weight)
             + vertical_difference_kernel(self.vd.weight) + angular_difference_kernel(self.ad.weight)
             + self.vanilla.weight)
        b = self.cd.bias + self.hd.bias + self.vd.bias + self.ad.bias + self.vanilla.bias
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.merged_kernel_bias()
        return F.conv2d(x, w, b, padding=1)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        w, b = self.merged_kernel_bias()
        self.vanilla.weight.copy_(w)
        self.vanilla.bias.copy_(b)
        del self.cd, self.hd, self.vd, self.ad
        self.deployed = True


class ContentGuidedAttention(nn.Module):
    """CGA: coarse map = channel weights + spatial map; refined by the input (channel shuffle + 7x7 group conv).

    ``forward(x, coarse=None)``: the channel-specific map ``sigmoid(GConv(shuffle(x, W_coa)))``.
    """

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, padding_mode="reflect", bias=True)
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // reduction, 1), nn.ReLU(),
                                     nn.Conv2d(dim // reduction, dim, 1))
        self.refine = nn.Conv2d(2 * dim, dim, 7, padding=3, padding_mode="reflect", groups=dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1))
        coarse = spatial + self.channel(x)  # (N, C, H, W) by broadcasting
        shuffled = torch.stack([x, coarse], 2).flatten(1, 2)  # channel shuffle: x_0, w_0, x_1, w_1, ...
        return torch.sigmoid(self.refine(shuffled))


class DEBlock(nn.Module):
    """DE block: ``x + conv3x3(ReLU(DEConv(x)) + x)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.deconv = DEConv(dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.deconv(x)) + x) + x


class DEABlock(nn.Module):
    """DEA block: the DE block's features reweighted by content-guided attention: ``x + r * CGA(r)``."""

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        self.deconv = DEConv(dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.cga = ContentGuidedAttention(dim, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv(F.relu(self.deconv(x)) + x)
        return r * self.cga(r) + x


class CGAFusion(nn.Module):
    """CGA-based mixup fusion of an encoder feature ``x`` and a decoder feature ``y``."""

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        self.cga = ContentGuidedAttention(dim, reduction)
        self.proj = nn.Conv2d(dim, dim, 1, bias=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = x + y
        w = torch.sigmoid(self.cga(s))  # the official fusion applies a second sigmoid
        return self.proj(s + w * x + (1 - w) * y)


class DEANet(RestorationModel):
    """DEA-Net (the paper's single configuration: base width 32, blocks 4/4/8, 3.653 M parameters deployed).

    Args:
        base_dim: channels at full resolution (x2, x4 at the lower levels).
        blocks: DE blocks per level-1 / level-2 stage (each of encoder and decoder) and DEA blocks at level 3.
        in_channels: image channels.
        deploy: build with the DEConvs already merged (to load re-parameterised weights).
    """

    def __init__(self, base_dim: Annotated[int, Ge(8)] = 32,
                 blocks: tuple[Annotated[int, Ge(1)], Annotated[int, Ge(1)], Annotated[int, Ge(1)]] = (4, 4, 8),
                 in_channels: Annotated[int, Ge(1)] = 3, deploy: bool = False):
        super().__init__()
        if base_dim < 8 or base_dim % 8:
            raise ValueError(f"DEANet: base_dim must be a positive multiple of 8 (channel reduction 8), got {base_dim}")
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"DEANet: blocks must be 3 positive counts (level 1, 2, 3), got {blocks}")
        self.in_channels = in_channels
        d = base_dim
        n1, n2, n3 = blocks
        # module order follows the official code's (so its checkpoints map onto ours in order)
        self.down1 = nn.Conv2d(in_channels, d, 3, padding=1)
        self.down2 = nn.Sequential(nn.Conv2d(d, 2 * d, 3, stride=2, padding=1), nn.ReLU())
        self.down3 = nn.Sequential(nn.Conv2d(2 * d, 4 * d, 3, stride=2, padding=1), nn.ReLU())
        self.enc1 = nn.Sequential(*[DEBlock(d) for _ in range(n1)])
        self.dec1 = nn.Sequential(*[DEBlock(d) for _ in range(n1)])
        self.fe2 = nn.Conv2d(2 * d, 2 * d, 3, padding=1)
        self.enc2 = nn.Sequential(*[DEBlock(2 * d) for _ in range(n2)])
        self.dec2 = nn.Sequential(*[DEBlock(2 * d) for _ in range(n2)])
        self.fe3 = nn.Conv2d(4 * d, 4 * d, 3, padding=1)
        self.level3 = nn.Sequential(*[DEABlock(4 * d) for _ in range(n3)])
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * d, 2 * d, 3, stride=2, padding=1, output_padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * d, d, 3, stride=2, padding=1, output_padding=1), nn.ReLU())
        self.up3 = nn.Conv2d(d, in_channels, 3, padding=1)
        self.mix1 = CGAFusion(4 * d, reduction=8)
        self.mix2 = CGAFusion(2 * d, reduction=4)
        if deploy:
            self.reparameterize()

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"DEANet: height and width must be multiples of 4, got {tuple(x.shape[-2:])}")
        f1 = self.enc1(self.down1(x))
        f2_down = self.down2(f1)
        f2 = self.enc2(self.fe2(f2_down))
        f3_down = self.down3(f2)
        f3 = self.level3(self.fe3(f3_down))
        u2 = self.dec2(self.up1(self.mix1(f3_down, f3)))
        u1 = self.dec1(self.up2(self.mix2(f2_down, u2)))
        return self.up3(u1)

    @torch.no_grad()
    def reparameterize(self) -> DEANet:
        """Merge every DEConv into one 3x3 convolution, in place (outputs unchanged); returns self."""
        for m in self.modules():
            if isinstance(m, DEConv):
                m.reparameterize()
        return self

    @classmethod
    def example_config(cls) -> dict:
        return {"base_dim": 8, "blocks": (1, 1, 1)}


# ---- weights from the official code -------------------------------------------------------------
#: official (cecret3350/DEA-Net) keys without a counterpart in :class:`DEANet`: none, every official parameter
#: maps (the official model has no buffers)
OFFICIAL_DROPPED: tuple[str, ...] = ()
#: official top-level modules -> ours (``down1`` / ``up3`` are one-conv ``nn.Sequential`` there, bare convs here)
_OFFICIAL_TOP = {"down1.0": "down1", "down2.0": "down2.0", "down3.0": "down3.0", "up1.0": "up1.0", "up2.0": "up2.0",
                 "up3.0": "up3", "fe_level_2": "fe2", "fe_level_3": "fe3"}
#: official block lists ``{name}{k}`` (k from 1) -> our ``nn.Sequential`` stages
_OFFICIAL_STAGES = {"down_level1_block": "enc1", "up_level1_block": "dec1", "down_level2_block": "enc2",
                    "up_level2_block": "dec2", "level3_block": "level3"}
#: official block / fusion sub-modules -> ours: DEConv's five convs (training form), its merged conv (the released,
#: re-parameterised form of ``backbone.py``), the second conv and the content-guided attention's three parts
_OFFICIAL_PARTS = {
    "conv1.conv1_1.conv": "deconv.cd", "conv1.conv1_2.conv": "deconv.hd", "conv1.conv1_3.conv": "deconv.vd",
    "conv1.conv1_4.conv": "deconv.ad", "conv1.conv1_5": "deconv.vanilla", "conv1": "deconv.vanilla",
    "conv2": "conv", "sa.sa": "cga.spatial", "ca.ca.0": "cga.channel.1", "ca.ca.2": "cga.channel.3",
    "pa.pa2": "cga.refine",
}
_OFFICIAL_FUSION = {"sa.sa": "cga.spatial", "ca.ca.0": "cga.channel.1", "ca.ca.2": "cga.channel.3",
                    "pa.pa2": "cga.refine", "conv": "proj"}
_OFFICIAL_BLOCK = re.compile(r"(" + "|".join(_OFFICIAL_STAGES) + r")(\d+)\.(.+)\.(weight|bias)")
_OFFICIAL_MIX = re.compile(r"(mix[12])\.(.+)\.(weight|bias)")
_OFFICIAL_PLAIN = re.compile(r"(.+)\.(weight|bias)")


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official DEA-Net weights (cecret3350/DEA-Net ``code/model``) -> :class:`DEANet`'s keys.

    Takes either form of the official model: the training form (``backbone_train.py`` ``DEANet``, each DEConv as
    ``conv1.conv1_{1..5}``: central, horizontal, vertical, angular difference and vanilla conv) loads into a model
    built as usual; the re-parameterised form the released checkpoints are in (``backbone.py`` ``Backbone``, the
    ``*_simplified.pk`` files of ``reparam.py``: each DEConv one ``conv1``) into one built with ``deploy=True`` (or
    after :meth:`DEANet.reparameterize`). A released file holds the state dict under ``"model"``; pass that. A
    ``module.`` prefix (DataParallel) is stripped. The official block lists ``down_level{1,2}_block{k}`` /
    ``up_level{1,2}_block{k}`` / ``level3_block{k}`` become ``enc1`` / ``enc2`` / ``dec1`` / ``dec2`` / ``level3``
    (index ``k - 1``), ``fe_level_{2,3}`` ``fe2`` / ``fe3``, the content-guided attention's ``sa.sa`` / ``ca.ca.{0,2}``
    / ``pa.pa2`` ``cga.spatial`` / ``cga.channel.{1,3}`` / ``cga.refine`` and a fusion's ``conv`` ``proj``. The
    official model is fixed at 4 / 4 / 8 blocks; build ours with ``blocks=(4, 4, 8)`` (the default) and the same
    ``base_dim``. Shapes are the same on both sides. A key the official model does not have raises a KeyError
    naming it (:data:`OFFICIAL_DROPPED`: none is left out).
    """
    out = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name.startswith(OFFICIAL_DROPPED):
            continue
        new = None
        if m := _OFFICIAL_BLOCK.fullmatch(name):
            stage, k, part, kind = m.groups()
            if part in _OFFICIAL_PARTS and int(k) >= 1:
                new = f"{_OFFICIAL_STAGES[stage]}.{int(k) - 1}.{_OFFICIAL_PARTS[part]}.{kind}"
        elif m := _OFFICIAL_MIX.fullmatch(name):
            mix, part, kind = m.groups()
            if part in _OFFICIAL_FUSION:
                new = f"{mix}.{_OFFICIAL_FUSION[part]}.{kind}"
        elif (m := _OFFICIAL_PLAIN.fullmatch(name)) and m.group(1) in _OFFICIAL_TOP:
            new = f"{_OFFICIAL_TOP[m.group(1)]}.{m.group(2)}"
        if new is None:
            raise KeyError(f"unexpected key in an official DEA-Net state dict: {key}")
        out[new] = value
    return out
