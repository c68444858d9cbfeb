"""Building blocks shared by the vision backbones (ConvNeXt, HorNet)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from panconv.api import Backbone, FeatureInfo, Model


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an ``(N, C, H, W)`` tensor (ConvNeXt's "channels_first" LN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def is_token_output(info: FeatureInfo) -> bool:
    """Whether a backbone output is a class token ``(N, C)`` rather than a map: ViT-style backbones
    (ConViT, CrossViT, VOLO) return theirs after the maps, named ``cls_token`` (``cls_token.<branch>``)."""
    return info.name.split(".")[0] == "cls_token"


def drop_path(rate: float) -> nn.Module:
    """Stochastic depth per sample (Huang et al. 2016) — torchvision's ``StochasticDepth`` in "row" mode."""
    return StochasticDepth(rate, "row") if rate > 0 else nn.Identity()


def drop_path_rates(depths: Sequence[int], rate: float) -> list[list[float]]:
    """Linearly increasing drop-path rates over all blocks, split per stage (ConvNeXt/HorNet schedule)."""
    total = sum(depths)
    rates = [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]  # torch.linspace(0, rate, total)
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """The ConvNeXt/HorNet init: conv and linear weights ~ truncated N(0, std) on [-2, 2], zero bias."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def check_out_indices(out_indices: Iterable[int] | None, num_stages: int = 4) -> tuple[int, ...]:
    """Sorted stage indices (negative ones count from the end); ``None`` selects every stage."""
    if out_indices is None:
        return tuple(range(num_stages))
    indices = tuple(sorted(int(i) % num_stages for i in out_indices if -num_stages <= int(i) < num_stages))
    if not indices or len(set(indices)) != len(indices) or len(indices) != len(tuple(out_indices)):
        raise ValueError(f"out_indices must name distinct stages in 0..{num_stages - 1}, got {tuple(out_indices)}")
    return indices


class Downsample(nn.Module):
    """LayerNorm then a 2x2 stride-2 conv between stages (ConvNeXt Sec. 2.6, "separate downsampling layers")."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = LayerNorm2d(in_dim, eps=1e-6)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class PatchifyStem(nn.Module):
    """p x p stride-p "patchify" conv followed by LayerNorm (ConvNeXt Sec. 2.2: p = 4)."""

    def __init__(self, in_channels: int, out_dim: int, patch_size: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm2d(out_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Stage(nn.Module):
    """An optional downsampling layer followed by a sequence of blocks."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class HierarchicalBackbone(Backbone):
    """Shared forward of the 4-stage, stride-4/8/16/32 backbones (stem + stages, ``out_indices``).

    Stages after the last requested index are not built (so every parameter gets a gradient).
    """

    def _build_feature_info(self, dims: Sequence[int], out_indices: Sequence[int], patch_size: int = 4) -> None:
        self.out_indices = tuple(out_indices)
        self.feature_info = [FeatureInfo(dims[i], patch_size * 2 ** i, f"stages.{i}") for i in self.out_indices]

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.stem.conv.in_channels, 64, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


# --- large kernels and restoration (issue 18) ---


class RestorationModel(Model):
    """An image-to-image restoration model (dehazing, super-resolution, 3-D MRI SR): the shared contract.

    ``forward(batch)`` restores ``batch["inputs"]`` (``(N, C, H, W)`` or ``(N, C, D, H, W)`` in [0, 1])
    through :meth:`restore`; ``loss`` is the L1 distance to ``batch["targets"]`` (the pixel loss of
    DEA-Net, CFSR and DISGAN's generator); ``predict`` clamps to [0, 1] for ``vision.ImageQuality``.
    Subclasses set ``in_channels`` and ``upscale`` (1 for same-size restoration).
    """

    metadata_inputs = ("in_channels",)
    in_channels: int = 3
    upscale: int = 1
    spatial_dims: int = 2

    def restore(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, batch: dict | torch.Tensor) -> torch.Tensor:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        if x.dim() != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected inputs (N, {self.in_channels}, "
                             f"{', '.join('HWD'[:self.spatial_dims])}) got shape {tuple(x.shape)}")
        return self.restore(x)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["targets"]
        if outputs.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: output shape {tuple(outputs.shape)} != target shape "
                             f"{tuple(target.shape)}")
        return {"loss": F.l1_loss(outputs, target)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.clamp(0, 1)

    def example_inputs(self, batch_size: int = 2) -> dict:
        side = 16 if self.spatial_dims == 2 else 8
        g = torch.Generator().manual_seed(0)
        shape = (batch_size, self.in_channels) + (side,) * self.spatial_dims
        x = torch.rand(shape, generator=g)
        y = torch.rand(shape[:2] + tuple(s * self.upscale for s in shape[2:]), generator=g)
        return {"inputs": x, "targets": y}
