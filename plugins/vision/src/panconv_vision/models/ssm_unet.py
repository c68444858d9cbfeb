"""A 2-D state-space U-Net segmenter (VM-UNet-like: Ruan & Xiang 2024, on VMamba's SS2D) and its CNN twin.

The skeleton (channels-last inside the stages), for an ``S x S`` image and ``len(dims)`` stages:

    patch embedding: ``patch x patch`` conv, stride ``patch``, to ``dims[0]`` channels, LayerNorm
    encoder stage i: ``depths[i]`` blocks at ``S / (patch 2^i)``; then patch merging (LayerNorm + 2x2 stride-2
                     conv to ``dims[i+1]``) except after the last stage
    decoder stage i (deepest first): patch expanding (LayerNorm + 2x2 stride-2 transposed conv to ``dims[i]``),
                     + the encoder's stage-i features (VM-UNet adds its skips), ``depths[i]`` blocks
    head: patch expanding by ``patch`` back to ``S x S`` and a 1x1 conv to ``num_classes`` logits

``block="vss"``: the visual state-space block, ``x + SS2D(LN(x))`` then ``x + MLP(LN(x))`` when ``mlp_ratio > 0``
(VMamba's VSS block; SS2D is :class:`panconv_vision.models.vmamba_blocks.SS2D`: four directional selective
scans on the ``vision.selective_scan`` kernel, so every pixel's output depends on the whole image after one
block). ``block="conv"``: the plain CNN U-Net block in the same place, ``x + conv3x3(GELU(conv3x3(LN(x))))``
(then the same MLP): identical skeleton, widths and training, only the token mixer differs (local 3x3
receptive fields instead of a global scan).

The loss is cross-entropy + soft Dice over the foreground classes (VM-UNet's BceDice loss for several
classes); ``predict`` gives ``masks`` (``(B, S, S)`` argmax labels) scored by ``vision.Dice``.

:class:`VMUNet` is the released VM-UNet layout itself (JCruan519/VM-UNet ``models/vmunet``; Ruan, Li & Xiang 2024),
where it differs from the skeleton above:

    blocks:           ``x + SS2D(LN(x))`` only (no MLP); drop-path rates rise linearly over the encoder's blocks
                      and fall over the decoder's
    patch merging:    Swin's: the 2x2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)), LayerNorm(4C),
                      a bias-free linear map to ``dims[i+1]``
    decoder stage j:  (deepest first) ``depths_decoder[j]`` blocks; stage 0 works on the bottleneck itself; stage
                      j > 0 first adds the *input* of encoder stage ``n - j`` (the merged features at the current
                      resolution; the patch embedding's output is never used as a skip), then patch expanding
                      (bias-free linear to 4x the next width, pixel-shuffled 2x2, LayerNorm) and its blocks
    head:             bias-free linear to ``patch^2 x dims[0] / patch``, pixel-shuffled ``patch x patch``, LayerNorm,
                      1x1 conv to ``num_classes`` logits
    input:            a 1-channel image is repeated to 3 channels when ``in_channels == 3`` (as the release does)

``vision.vmunet`` is the paper's size (dims 96-768, encoder depths 2-2-2-2, decoder 2-2-2-1, d_state 16: 27,427,561
parameters with the one-class ISIC head, = the official code). With ``num_classes == 1`` the loss is the release's
BceDice (BCE on the sigmoid + per-image soft Dice, weights 1 and 1) and ``predict`` thresholds the sigmoid at 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, Len
from torch import nn

from panconv.api import Model
from panconv_vision.models.vmamba_blocks import SS2D

from .layers import drop_path, drop_path_rates


class ConvMixer(nn.Module):
    """The CNN block's mixer, channels-last: ``conv3x3(GELU(conv3x3(x)))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        return self.conv2(F.gelu(self.conv1(x))).permute(0, 2, 3, 1)


class Block(nn.Module):
    """``x + mixer(LN(x))`` then ``x + MLP(LN(x))`` (``mlp_ratio > 0``), channels-last ``(N, H, W, C)``."""

    def __init__(self, dim: int, block: str, d_state: int, ssm_ratio: float, mlp_ratio: float, drop_path_rate: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio) if block == "vss" else ConvMixer(dim)
        self.drop = drop_path(drop_path_rate)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)) \
            if hidden > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(x))
        return x


class Resample(nn.Module):
    """LayerNorm then a ``factor x factor`` stride-``factor`` conv (merging) or transposed conv (expanding)."""

    def __init__(self, in_dim: int, out_dim: int, factor: int, up: bool):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        conv = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = conv(in_dim, out_dim, factor, stride=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - mean over foreground classes of 2 sum(p g) / (sum p + sum g)`` over the batch (soft Dice)."""
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs)
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


class SSMUNet(Model):
    """The U-Net segmenter of the module docstring (``block="vss"``: state-space; ``"conv"``: the CNN twin).

    ``batch["inputs"]``: ``(B, in_channels, S, S)`` with ``S`` divisible by ``patch * 2**(len(dims) - 1)``;
    ``batch["masks"]``: ``(B, S, S)`` labels in ``0..num_classes-1``.
    """

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 2, in_channels: Annotated[int, Ge(1)] = 1,
                 dims: Annotated[Sequence[Annotated[int, Ge(1)]], Len(1)] = (24, 48, 96),
                 depths: Annotated[Sequence[Annotated[int, Ge(0)]], Len(1)] = (1, 1, 1),
                 block: Literal["vss", "conv"] = "vss", patch: Annotated[int, Ge(1)] = 2,
                 d_state: Annotated[int, Ge(1)] = 8, ssm_ratio: Annotated[float, Gt(0)] = 2.0,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 dice_weight: Annotated[float, Ge(0)] = 1.0):
        super().__init__()
        dims, depths = tuple(int(d) for d in dims), tuple(int(d) for d in depths)
        if len(dims) != len(depths) or not dims or min(dims) < 1 or min(depths) < 0:
            raise ValueError(f"SSMUNet: dims and depths must be non-empty lists of the same length (dims >= 1, "
                             f"depths >= 0), got {dims} and {depths}")
        if block not in ("vss", "conv"):
            raise ValueError(f"SSMUNet: block must be 'vss' or 'conv', got {block!r}")
        if num_classes < 2 or in_channels < 1 or patch < 1:
            raise ValueError("SSMUNet: num_classes >= 2, in_channels >= 1, patch >= 1")
        self.num_classes, self.in_channels, self.patch, self.dice_weight = num_classes, in_channels, patch, dice_weight
        self.multiple = patch * 2 ** (len(dims) - 1)
        self.stem = nn.Conv2d(in_channels, dims[0], patch, stride=patch)
        self.stem_norm = nn.LayerNorm(dims[0])
        make = lambda dim, n: nn.Sequential(*[Block(dim, block, d_state, ssm_ratio, mlp_ratio, drop_path_rate)  # noqa: E731
                                             for _ in range(n)])
        self.encoder = nn.ModuleList(make(d, n) for d, n in zip(dims, depths))
        self.down = nn.ModuleList(Resample(dims[i], dims[i + 1], 2, up=False) for i in range(len(dims) - 1))
        self.up = nn.ModuleList(Resample(dims[i + 1], dims[i], 2, up=True) for i in range(len(dims) - 1))
        self.decoder = nn.ModuleList(make(d, n) for d, n in zip(dims[:-1], depths[:-1]))
        self.head_up = Resample(dims[0], dims[0], patch, up=True) if patch > 1 else nn.LayerNorm(dims[0])
        self.head = nn.Conv2d(dims[0], num_classes, 1)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` -> ``(B, num_classes, S, S)`` logits."""
        if images.dim() != 4 or images.shape[1] != self.in_channels or images.shape[-1] % self.multiple \
                or images.shape[-2] % self.multiple:
            raise ValueError(f"SSMUNet: expected (B, {self.in_channels}, H, W) with H and W divisible by "
                             f"{self.multiple}, got {tuple(images.shape)}")
        x = self.stem_norm(self.stem(images).permute(0, 2, 3, 1))
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        for i in reversed(range(len(self.up))):
            x = self.decoder[i](self.up[i](x) + skips[i])
        x = self.head_up(x)
        return self.head(x.permute(0, 3, 1, 2))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.segment(batch["inputs"] if isinstance(batch, dict) else batch)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["masks"]
        losses = {"loss_ce": F.cross_entropy(outputs, target)}
        if self.dice_weight > 0:
            losses["loss_dice"] = self.dice_weight * soft_dice_loss(outputs, target)
        return losses

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> dict:
        return {"masks": outputs.argmax(1)}

    def example_inputs(self, batch_size: int = 2) -> dict:
        side = 2 * self.multiple
        return {"inputs": torch.randn(batch_size, self.in_channels, side, side),
                "masks": torch.randint(0, self.num_classes, (batch_size, side, side))}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "dims": [8, 16], "depths": [1, 1], "d_state": 4, "mlp_ratio": 1.0}


class PatchMerging(nn.Module):
    """Swin/VM-UNet patch merging, channels-last: the 2x2 neighbours concatenated, LayerNorm, bias-free linear."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class PatchExpanding(nn.Module):
    """VM-UNet patch expanding, channels-last: bias-free linear to ``scale^2 * out_dim``, each pixel's vector laid
    out as a ``scale x scale`` block of ``out_dim`` channels (row, column, channel order), LayerNorm."""

    def __init__(self, dim: int, out_dim: int, scale: int):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(n, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(n, h * s, w * s, self.out_dim))


class VMUNet(SSMUNet):
    """The released VM-UNet (see the module docstring): shares :class:`SSMUNet`'s loss, prediction and checks for
    ``num_classes >= 2``; ``num_classes == 1`` is the binary (ISIC) form with the release's BceDice loss."""

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, num_classes: Annotated[int, Ge(1)] = 1, in_channels: Annotated[int, Ge(1)] = 3,
                 dims: Annotated[Sequence[Annotated[int, Ge(1)]], Len(1)] = (96, 192, 384, 768),
                 depths: Annotated[Sequence[Annotated[int, Ge(0)]], Len(1)] = (2, 2, 2, 2),
                 depths_decoder: Annotated[Sequence[Annotated[int, Ge(0)]], Len(1)] = (2, 2, 2, 1),
                 patch: Annotated[int, Ge(1)] = 4, d_state: Annotated[int, Ge(1)] = 16,
                 ssm_ratio: Annotated[float, Gt(0)] = 2.0,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.2,
                 dice_weight: Annotated[float, Ge(0)] = 1.0):
        Model.__init__(self)   # not SSMUNet.__init__: VM-UNet builds its own modules
        dims, depths, depths_decoder = (tuple(int(d) for d in v) for v in (dims, depths, depths_decoder))
        if not dims or not (len(dims) == len(depths) == len(depths_decoder)) or min(dims) < 1 \
                or min(depths + depths_decoder) < 0:
            raise ValueError(f"VMUNet: dims, depths and depths_decoder must be non-empty lists of the same length "
                             f"(dims >= 1, depths >= 0), got {dims}, {depths}, {depths_decoder}")
        if num_classes < 1 or in_channels < 1 or patch < 1 or dims[0] % patch:
            raise ValueError(f"VMUNet: num_classes >= 1, in_channels >= 1, patch >= 1 dividing dims[0], got "
                             f"{num_classes}, {in_channels}, {patch}, dims[0] = {dims[0]}")
        self.num_classes, self.in_channels, self.patch, self.dice_weight = num_classes, in_channels, patch, dice_weight
        self.multiple = patch * 2 ** (len(dims) - 1)
        self.stem = nn.Conv2d(in_channels, dims[0], patch, stride=patch)
        self.stem_norm = nn.LayerNorm(dims[0])

        def stage(dim: int, rates: list[float]) -> nn.Sequential:
            return nn.Sequential(*[Block(dim, "vss", d_state, ssm_ratio, 0.0, r) for r in rates])

        enc_rates = drop_path_rates(depths, drop_path_rate)
        dec_flat = [r for rates in drop_path_rates(depths_decoder, drop_path_rate) for r in rates][::-1]
        dec_rates, start = [], 0
        for d in depths_decoder:
            dec_rates.append(dec_flat[start:start + d])
            start += d
        n = len(dims)
        self.encoder = nn.ModuleList(stage(d, r) for d, r in zip(dims, enc_rates))
        self.down = nn.ModuleList(PatchMerging(dims[i], dims[i + 1]) for i in range(n - 1))
        # decoder stage j works at dims[n - 1 - j]; up[j - 1] brings stage j - 1's output there
        self.up = nn.ModuleList(PatchExpanding(dims[n - j], dims[n - 1 - j], 2) for j in range(1, n))
        self.decoder = nn.ModuleList(stage(dims[n - 1 - j], r) for j, r in enumerate(dec_rates))
        self.head_up = PatchExpanding(dims[0], dims[0] // patch, patch)
        self.head = nn.Conv2d(dims[0] // patch, num_classes, 1)
        for m in self.modules():   # the release's init: linear maps truncated N(0, 0.02), zero bias; convs as built
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` -> ``(B, num_classes, S, S)`` logits (a 1-channel image is repeated to 3 channels when
        the network takes 3, as the release does)."""
        if images.dim() == 4 and images.shape[1] == 1 and self.in_channels == 3:
            images = images.repeat(1, 3, 1, 1)
        if images.dim() != 4 or images.shape[1] != self.in_channels or images.shape[-1] % self.multiple \
                or images.shape[-2] % self.multiple:
            raise ValueError(f"VMUNet: expected (B, {self.in_channels}, H, W) with H and W divisible by "
                             f"{self.multiple}, got {tuple(images.shape)}")
        x = self.stem_norm(self.stem(images).permute(0, 2, 3, 1))
        skips = []
        for i, stage in enumerate(self.encoder):
            skips.append(x)
            x = stage(x)
            if i < len(self.down):
                x = self.down[i](x)
        n = len(self.encoder)
        for j, stage in enumerate(self.decoder):
            if j > 0:
                x = self.up[j - 1](x + skips[n - j])
            x = stage(x)
        return self.head(self.head_up(x).permute(0, 3, 1, 2))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        if self.num_classes > 1:
            return super().loss(outputs, batch)
        target = batch["masks"].to(outputs.dtype)
        probs = outputs[:, 0].sigmoid()
        losses = {"loss_bce": F.binary_cross_entropy_with_logits(outputs[:, 0], target)}
        if self.dice_weight > 0:
            p, g = probs.flatten(1), target.flatten(1)
            dice = (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)
            losses["loss_dice"] = self.dice_weight * (1 - dice.mean())
        return losses

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> dict:
        if self.num_classes > 1:
            return super().predict(outputs, batch)
        return {"masks": (outputs[:, 0] > 0).long()}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "in_channels": 1, "dims": [8, 16], "depths": [1, 1], "depths_decoder": [1, 1],
                "d_state": 4}


__all__ = ["SSMUNet", "VMUNet", "soft_dice_loss"]
