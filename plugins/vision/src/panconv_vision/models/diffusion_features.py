"""Diffusion features for classification (Mukhopadhyay et al. 2023, "Diffusion Models Beat GANs on Image
Classification"; official code soumik-kanad/diffssl).

A trained DDPM U-Net is frozen; an image x_0 is noised to step t (x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps, fresh eps every training step, seeded in evaluation), the U-Net runs on (x_t, t), and
the output of one block b (numbered as in :mod:`.ddpm`: the paper picks decoder blocks, 24 of the 256^2 ADM at
t = 90) is the feature map. Only a light head is trained on it (paper Sec. 3-4, Fig. 1):

- ``linear``: adaptive average pooling to ``pool_size`` x ``pool_size`` (the paper's pooling-size ablation), flatten,
  one linear layer (diffssl ``ssl_diff/head.py`` ``Head`` with an empty ``head_arc``);
- ``mlp``: the same with ReLU hidden layers ``hidden`` (``Head`` with ``head_arc="h1_h2"``);
- ``cnn``: pooling to ``pool_size``, then per width in ``hidden`` a 3x3 convolution (no bias) -> BatchNorm -> ReLU,
  global average pooling, a linear layer. The official repository has no CNN head module; this is our reading of
  the paper's Fig. 1 "CNN" head, built from the conv-BN-ReLU unit diffssl uses elsewhere (its C_B_R layers);
- ``attention``: diffssl's attention head (``ssl_diff/attention_fusion.py`` ``AttentionFusion`` with one block
  and one step, ``ssl_diff/attention_head.py``): pooling to ``pool_size``, LayerNorm over (C, h, w) (or
  BatchNorm), a 1x1 convolution to ``attention_dim``, the positions as tokens after a learnable class token
  (zero-initialised, no position embedding), ``attention_depth`` pre-norm transformer blocks (qkv without bias,
  GELU MLP of ratio ``mlp_ratio``), the class token, a linear layer (scripts/attention.sh: 2 blocks of width
  1024, 8 heads, ratio 4, layer norm, pool 16).

The U-Net is ``self.unet`` (prefix ``unet.``, the same as ``vision.DDPM``'s): start from a pre-training run with
``run: {init_from: {path: work_dirs/vision_ddpm_mnist/last.pth, map: {"unet.": "unet."}}}``. Without it the U-Net
keeps its random initialisation (the random-features baseline). Its parameters are frozen (no gradient) and it
always runs in eval mode.

:func:`probe_grid` is the paper's (block, t) study at small scale: pooled features of every block at every step
from one U-Net pass per step, for a linear probe per cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, MinLen
from torch import nn

from panconv.api import Model

from .attention import TransformerBlock
from .ddpm import GaussianDiffusion, build_unet

# --------------------------------------------------------------------------- the paper's heads


class PooledMLPHead(nn.Module):
    """Pool to ``pool_size``^2, flatten, ``hidden`` Linear-ReLU layers, a linear classifier (no hidden: linear)."""

    def __init__(self, channels: int, num_classes: int, pool_size: int = 1, hidden: Sequence[int] = ()):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        dims = [channels * pool_size * pool_size, *hidden, num_classes]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        for fc in self.fcs[:-1]:
            x = F.relu(fc(x))
        return self.fcs[-1](x)


class CNNHead(nn.Module):
    """Pool to ``pool_size``^2 (kept if smaller), per width a 3x3 conv (no bias)-BN-ReLU, global pool, linear."""

    def __init__(self, channels: int, num_classes: int, pool_size: int = 8, hidden: Sequence[int] = (256,)):
        super().__init__()
        self.pool_size = pool_size
        layers, c = [], channels
        for width in hidden:
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, min(self.pool_size, x.shape[-1]))
        return self.fc(self.convs(x).mean((-2, -1)))


class AttentionHead(nn.Module):
    """diffssl's attention head on one feature map (see the module docstring); ``size``: the map's side, for the
    LayerNorm's shape."""

    def __init__(self, channels: int, size: int, num_classes: int, pool_size: int = 16, dim: int = 64,
                 num_heads: int = 4, depth: int = 2, mlp_ratio: float = 4.0, norm: str = "layer"):
        super().__init__()
        side = min(size, pool_size)
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.norm = nn.LayerNorm([channels, side, side]) if norm == "layer" else (
            nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity())
        self.proj = nn.Conv2d(channels, dim, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(self.norm(self.pool(x))).flatten(2).transpose(1, 2)  # (N, h*w, dim)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.fc(self.blocks(tokens)[:, 0])


# --------------------------------------------------------------------------- the classifier


class DiffusionFeatures(Model):
    """A frozen DDPM U-Net's block-``block`` activations at step ``t`` -> a trained head (module docstring).

    The U-Net arguments are :class:`~.ddpm.DDPM`'s (give the pre-training's, so that ``run.init_from`` finds
    every entry with its shape). ``head``: ``linear``, ``mlp``, ``cnn`` or ``attention``; ``pool_size``: the
    pooling before the head (paper: 1..16); ``hidden``: the MLP's hidden widths or the CNN's conv widths.
    ``forward -> logits (N, num_classes)``; cross-entropy loss; ``predict`` = the logits (``core.Accuracy``).
    """

    metadata_inputs = ("num_classes", "in_channels")
    frozen_parameters = ("unet.",)

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 10, in_channels: Annotated[int, Ge(1)] = 1,
                 image_size: Annotated[int, Ge(1)] = 16, model_channels: Annotated[int, Ge(1)] = 16,
                 channel_mult: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (1, 2, 2),
                 num_res_blocks: Annotated[int, Ge(1)] = 1,
                 attention_resolutions: tuple[Annotated[int, Ge(1)], ...] = (4,),
                 num_heads: Annotated[int, Ge(1)] = 1, num_head_channels: Annotated[int, Ge(-1)] = -1,
                 scale_shift: bool = True, resblock_updown: bool = False, learn_sigma: bool = False,
                 norm_groups: Annotated[int, Ge(1)] = 8, timesteps: Annotated[int, Ge(1)] = 1000,
                 schedule: Literal["linear", "cosine"] = "linear", block: Annotated[int, Ge(1)] = 8,
                 t: Annotated[int, Ge(0)] = 50, head: Literal["linear", "mlp", "cnn", "attention"] = "linear",
                 pool_size: Annotated[int, Ge(1)] = 1, hidden: tuple[Annotated[int, Ge(1)], ...] = (256,),
                 attention_dim: Annotated[int, Ge(1)] = 64, attention_heads: Annotated[int, Ge(1)] = 4,
                 attention_depth: Annotated[int, Ge(1)] = 2, mlp_ratio: Annotated[float, Ge(0)] = 4.0,
                 norm: Literal["layer", "batch", "none"] = "layer", label_smoothing: Annotated[
                     float, Interval(ge=0, lt=1)] = 0.0, eval_seed: Annotated[int, Interval(ge=0, lt=2**63)] = 0):
        super().__init__()
        if num_head_channels == 0:
            raise ValueError("num_head_channels must be -1 (use num_heads) or >= 1")
        self.unet = build_unet(in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
                               num_heads, num_head_channels, 0.0, scale_shift, resblock_updown, learn_sigma,
                               norm_groups)
        self.unet.requires_grad_(False)
        self.diffusion = GaussianDiffusion(timesteps, schedule)
        if not 1 <= block <= self.unet.num_blocks:
            raise ValueError(f"block must be in 1..{self.unet.num_blocks} for this U-Net, got {block}")
        if t >= timesteps:
            raise ValueError(f"t must be < timesteps ({timesteps}), got {t}")
        if image_size % self.unet.down_factor:
            raise ValueError(f"image_size must be divisible by {self.unet.down_factor}, got {image_size}")
        if head == "attention" and attention_dim % attention_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by attention_heads {attention_heads}")
        self.block, self.t, self.in_channels, self.image_size = block, t, in_channels, image_size
        self.eval_seed, self.label_smoothing = eval_seed, label_smoothing
        channels, down = self.unet.block_info[block - 1]
        size = image_size // down
        if head in ("linear", "mlp"):
            self.head = PooledMLPHead(channels, num_classes, pool_size, hidden if head == "mlp" else ())
        elif head == "cnn":
            self.head = CNNHead(channels, num_classes, pool_size, hidden)
        else:
            self.head = AttentionHead(channels, size, num_classes, pool_size, attention_dim, attention_heads,
                                      attention_depth, mlp_ratio, norm)

    @classmethod
    def example_config(cls) -> dict:
        return dict(num_classes=3, image_size=8, model_channels=8, channel_mult=(1, 2), attention_resolutions=(2,),
                    norm_groups=4, timesteps=50, block=5, t=10, head="attention", pool_size=4, attention_dim=8,
                    attention_heads=2, attention_depth=1)

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.randn(batch_size, self.in_channels, self.image_size, self.image_size),
                "labels": torch.arange(batch_size) % 2}

    def train(self, mode: bool = True):
        super().train(mode)
        self.unet.eval()  # frozen: always in eval mode (no dropout)
        return self

    def feature_map(self, x0: torch.Tensor) -> torch.Tensor:
        """The frozen U-Net's block-``block`` output for x_0 noised to step ``t`` (N, C, h, w)."""
        g = None if self.training else torch.Generator(device=x0.device).manual_seed(self.eval_seed)
        noise = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        steps = torch.full((x0.shape[0],), self.t, device=x0.device, dtype=torch.long)
        with torch.no_grad():
            return self.unet.block_features(self.diffusion.q_sample(x0, steps, noise), steps, [self.block])[0]

    def forward(self, batch: dict | torch.Tensor) -> torch.Tensor:
        x0 = batch["inputs"] if isinstance(batch, dict) else batch
        if x0.dim() != 4 or x0.shape[1] != self.in_channels:
            raise ValueError(f"DiffusionFeatures expects images (N, {self.in_channels}, H, W), got {tuple(x0.shape)}")
        return self.head(self.feature_map(x0))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"], label_smoothing=self.label_smoothing)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs


# --------------------------------------------------------------------------- the (block, t) study


@torch.no_grad()
def probe_grid(unet: nn.Module, diffusion: GaussianDiffusion, batches: Iterable[torch.Tensor],
               blocks: Sequence[int], steps: Sequence[int], seed: int = 0) -> dict[tuple[int, int], torch.Tensor]:
    """Globally pooled features ``{(block, t): (N, C)}`` of every block in ``blocks`` at every step in ``steps``
    over the image ``batches`` (one U-Net pass per batch and step; seeded noise)."""
    out: dict[tuple[int, int], list[torch.Tensor]] = {(b, t): [] for b in blocks for t in steps}
    for i, x0 in enumerate(batches):
        for t in steps:
            g = torch.Generator(device=x0.device).manual_seed(seed + 1000 * i + t)
            noise = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
            tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
            for b, h in zip(blocks, unet.block_features(diffusion.q_sample(x0, tt, noise), tt, list(blocks))):
                out[(b, t)].append(h.mean((-2, -1)))
    return {key: torch.cat(v) for key, v in out.items()}
