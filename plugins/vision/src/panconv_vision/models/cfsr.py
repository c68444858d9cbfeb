"""CFSR: lightweight image super-resolution with ConvFormer layers.

Paper: Wu, Jiang, Jiang and Liu, "Transforming Image Super-Resolution: A ConvFormer-based Efficient
Approach", IEEE TIP 2024, arXiv:2401.05633. Reference code: https://github.com/Aitical/CFSR
(numerical parity checked, tests/test_cfsr.py).

* **ConvFormer layer**: a Transformer block whose token mixer is a large-kernel convolution modulation
  instead of self-attention: ``x + ls1 * proj(a(LN(x)) * v(LN(x)))`` with
  ``a = DWConv_KxK(GELU(1x1(.)))`` (K = 9) and ``v`` a 1x1 conv; then
  ``x + ls2 * EFN(LN(x))``. The depthwise K x K conv runs through ``vision.dwconv2d_large``.
* **EFN** (edge-preserving feed-forward network): ``fc2(h + GELU(DW3x3(h) + sobel_x(h) + sobel_y(h)
  + laplacian(h)))`` with ``h = GELU(fc1(x))``; the three edge branches are fixed Sobel/Laplacian masks
  with a learnable per-channel scale and bias, re-parameterised into the 3x3 depthwise kernel after
  training (:meth:`CFSR.reparameterize`; the official code merges them at construction, which is the
  deploy form its parameter counts and checkpoints are in).
* Groups of ConvFormer layers each close with a 1x1 conv and a residual; a 3x3 conv before and after
  the body with a global residual; ``pixelshuffledirect`` up-sampling (a 3x3 conv to ``3 s^2``
  channels + pixel shuffle); RGB mean (DIV2K's) subtracted at the input and added back.

Paper sizes (the official test options): ``embed_dim`` 48, ``depths`` (6, 6), ``dw_size`` 9,
``mlp_ratio`` 2: x2 291 K, x3 298 K, x4 307 K parameters (deploy form; the paper's table: 307 K at x4).
"""

from __future__ import annotations

import re
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, MinLen
from torch import nn

from ..kernels.dwconv_large import large_depthwise_conv
from .layers import LayerNorm2d, RestorationModel

__all__ = ["CFSR", "ConvFormerLayer", "ConvModulation", "EdgePreservingFFN", "map_official_state_dict"]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def _edge_masks() -> torch.Tensor:
    """(3, 3, 3): Sobel-x, Sobel-y and Laplacian masks as the official code lays them out."""
    sobel_x = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    sobel_y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    laplacian = torch.tensor([[1.0, 0.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    return torch.stack([sobel_x, sobel_y, laplacian])


class EdgePreservingFFN(nn.Module):
    """EFN: LN -> 1x1 expand -> GELU -> (3x3 DW + scaled Sobel-x, Sobel-y, Laplacian) -> GELU, residual -> 1x1."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, deploy: bool = False):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.deployed = deploy
        if not deploy:
            self.edge_scale = nn.Parameter(torch.randn(3, hidden) * 1e-3)
            self.edge_bias = nn.Parameter(torch.randn(3, hidden) * 1e-3)
        self.register_buffer("edge_masks", _edge_masks(), persistent=False)

    def merged_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 depthwise kernel and bias equal to ``pos`` plus the three scaled edge filters."""
        if self.deployed:
            return self.pos.weight, self.pos.bias
        edges = torch.einsum("bc,bij->cij", self.edge_scale, self.edge_masks).unsqueeze(1)
        return self.pos.weight + edges, self.pos.bias + self.edge_bias.sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(self.norm(x)))
        w, b = self.merged_kernel_bias()
        return self.fc2(h + F.gelu(F.conv2d(h, w, b, padding=1, groups=h.shape[1])))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        w, b = self.merged_kernel_bias()
        self.pos.weight.copy_(w)
        self.pos.bias.copy_(b)
        del self.edge_scale, self.edge_bias
        self.deployed = True


class ConvModulation(nn.Module):
    """The large-kernel token mixer: ``proj(DWConv_K(GELU(1x1(x))) * v(x))`` on the normalised input."""

    def __init__(self, dim: int, kernel_size: int = 9):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.a_in = nn.Conv2d(dim, dim, 1)
        self.a_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        a = large_depthwise_conv(self.a_dw, F.gelu(self.a_in(x)))
        return self.proj(a * self.v(x))


class ConvFormerLayer(nn.Module):
    """``x + ls1 * ConvMod(x)``, then ``x + ls2 * EFN(x)`` (layer scales initialised to 1e-6)."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: float, deploy: bool = False):
        super().__init__()
        self.attn = ConvModulation(dim, kernel_size)
        self.mlp = EdgePreservingFFN(dim, mlp_ratio, deploy)
        self.layer_scale_1 = nn.Parameter(1e-6 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1.view(1, -1, 1, 1) * self.attn(x)
        return x + self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(x)


class _Group(nn.Module):
    def __init__(self, dim: int, depth: int, kernel_size: int, mlp_ratio: float, deploy: bool):
        super().__init__()
        self.blocks = nn.Sequential(*[ConvFormerLayer(dim, kernel_size, mlp_ratio, deploy) for _ in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.conv(x) + x


class CFSR(RestorationModel):
    """CFSR super-resolution network (``inputs``: LR images in [0, 1]; output: ``upscale`` x larger).

    Args:
        upscale: the SR factor (2, 3 or 4 in the paper; any >= 1).
        embed_dim: feature channels.
        depths: ConvFormer layers per residual group.
        dw_size: the large depthwise kernel (odd).
        mlp_ratio: EFN expansion.
        in_channels: image channels (3: the DIV2K mean is subtracted; otherwise none).
        img_range: inputs are multiplied by it after the mean subtraction (official option).
        deploy: build with the EFN edge branches already merged (the official checkpoints' form).
    """

    metadata_inputs = ("in_channels", "upscale")

    def __init__(self, upscale: Annotated[int, Ge(1)] = 4, embed_dim: Annotated[int, Ge(1)] = 48,
                 depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (6, 6),
                 dw_size: Annotated[int, Ge(1)] = 9, mlp_ratio: Annotated[float, Gt(0)] = 2.0,
                 in_channels: Annotated[int, Ge(1)] = 3, img_range: Annotated[float, Gt(0)] = 1.0,
                 deploy: bool = False):
        super().__init__()
        if dw_size % 2 == 0:
            raise ValueError(f"CFSR: dw_size must be odd (same-size depthwise conv), got {dw_size}")
        if int(embed_dim * mlp_ratio) < 1:
            raise ValueError(f"CFSR: embed_dim {embed_dim} x mlp_ratio {mlp_ratio} leaves the EFN without channels")
        self.in_channels, self.upscale, self.img_range = in_channels, upscale, img_range
        mean = torch.tensor(DIV2K_MEAN) if in_channels == 3 else torch.zeros(in_channels)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, padding=1)
        self.layers = nn.ModuleList(_Group(embed_dim, d, dw_size, mlp_ratio, deploy) for d in depths)
        self.norm = LayerNorm2d(embed_dim, eps=1e-6)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale ** 2 * in_channels, 3, padding=1),
                                      nn.PixelShuffle(upscale))

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.img_range
        f = self.conv_first(x)
        body = f
        for layer in self.layers:
            body = layer(body)
        f = self.conv_after_body(self.norm(body)) + f
        return self.upsample(f) / self.img_range + self.mean

    @torch.no_grad()
    def reparameterize(self) -> CFSR:
        """Merge every EFN's Sobel/Laplacian branches into its 3x3 depthwise kernel, in place; returns self."""
        for m in self.modules():
            if isinstance(m, EdgePreservingFFN):
                m.reparameterize()
        return self

    @classmethod
    def example_config(cls) -> dict:
        return {"upscale": 2, "embed_dim": 8, "depths": (1,), "dw_size": 9}


# ---- weights from the official code -------------------------------------------------------------
#: official (Aitical/CFSR ``basicsr/archs/cfsr_arch.py``) keys without a counterpart in :class:`CFSR`: none (its
#: RGB mean is a plain attribute, not in the state dict; the EFN edge masks and scales are gone after the merge the
#: official constructor does)
OFFICIAL_DROPPED: tuple[str, ...] = ()
#: official ConvFormer layer sub-modules -> ours (the token mixer's ``a`` is 1x1 conv, GELU, ``LargeKernelConv``)
_OFFICIAL_LAYER_PARTS = {"attn.a.0": "attn.a_in", "attn.a.2.lkb_reparam": "attn.a_dw", "attn.norm": "attn.norm",
                         "attn.v": "attn.v", "attn.proj": "attn.proj", "mlp.norm": "mlp.norm", "mlp.fc1": "mlp.fc1",
                         "mlp.pos": "mlp.pos", "mlp.fc2": "mlp.fc2"}
_OFFICIAL_TOP = ("conv_first", "norm", "conv_after_body", "upsample.0")
_OFFICIAL_LAYER = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)")
_OFFICIAL_SCALE = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(layer_scale_[12])")
_OFFICIAL_GROUP_CONV = re.compile(r"layers\.(\d+)\.conv\.(weight|bias)")
_OFFICIAL_PLAIN = re.compile(r"(.+)\.(weight|bias)")


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official CFSR weights (Aitical/CFSR ``basicsr/archs/cfsr_arch.py``, ``upsampler="pixelshuffledirect"``) ->
    :class:`CFSR`'s keys, for a model built with ``deploy=True`` (or after :meth:`CFSR.reparameterize`).

    The official constructor merges every EFN's Sobel / Laplacian branches into ``mlp.pos`` at once
    (``merge_all``), so its models train and save in that one, re-parameterised form; there is no other. A BasicSR
    checkpoint holds the state dict under ``"params"``; pass that. A ``module.`` prefix is stripped. The official
    residual groups ``layers.{i}.blocks.{j}`` keep their names; the token mixer's ``attn.a.0`` (1x1 conv) and
    ``attn.a.2.lkb_reparam`` (the large depthwise conv) become ``attn.a_in`` / ``attn.a_dw``; the rest is named
    alike. Build ours with the same ``upscale``, ``embed_dim``, ``depths``, ``dw_size`` and ``mlp_ratio``; shapes are
    the same on both sides. A key the official model does not have (``conv_last`` of its other up-sampler, which
    ours does not build, for one) raises a KeyError naming it (:data:`OFFICIAL_DROPPED`: none is left out).
    """
    out = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name.startswith(OFFICIAL_DROPPED):
            continue
        new = None
        if (m := _OFFICIAL_LAYER.fullmatch(name)) and m.group(3) in _OFFICIAL_LAYER_PARTS:
            new = f"layers.{m.group(1)}.blocks.{m.group(2)}.{_OFFICIAL_LAYER_PARTS[m.group(3)]}.{m.group(4)}"
        elif _OFFICIAL_SCALE.fullmatch(name) or _OFFICIAL_GROUP_CONV.fullmatch(name):
            new = name
        elif (m := _OFFICIAL_PLAIN.fullmatch(name)) and m.group(1) in _OFFICIAL_TOP:
            new = name
        if new is None:
            raise KeyError(f"unexpected key in an official CFSR state dict: {key}")
        out[new] = value
    return out
