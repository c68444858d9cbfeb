"""VFIMamba (Zhang et al., NeurIPS 2024): video frame interpolation with state-space models.

Two frames ``I0``, ``I1`` -> the middle frame ``It`` (``t = 0.5``). The network (official code's
layout, ``F`` = ``embed_dim``; VFIMamba-S: ``F = 16``, VFIMamba: ``F = 32``; depths ``(2, 2, 2, 3, 3)``):

* **Low-level feature extractor** (:class:`FeatureExtractor`), run on both frames (stacked along the
  batch): five stages at strides 1, 2, 4, 8, 16 with ``F, 2F, 4F, 8F, 16F`` channels. The first
  ``conv_stages = 3`` are plain 3x3 conv + PReLU stacks (stride-2 conv between them); the last two
  embed with LayerNorm + a stride-2 3x3 conv (overlapping patches) and hold **Mixed-SSM Blocks**.
* **Mixed-SSM Block** (:class:`MixedSSMBlock`, paper Sec. 3.2): ``x = s1 * x + SS2D_2(LN(x))`` then
  ``x = s2 * x + CAB(LN(x))``, where ``SS2D_2`` is :class:`~panconv_vision.models.vmamba_blocks.SS2D`
  with ``frames = 2``: the two frames' tokens are **interleaved** (at each pixel, frame 0 then frame 1)
  and scanned by S6 in four directions (row-major, column-major, both reversed), so every step of the
  recurrence mixes the two frames at neighbouring positions; CAB is RCAN's channel-attention conv block
  (3x3 conv to ``C/3``, GELU, 3x3 conv back, squeeze-excitation with ratio 30). ``block="conv"``
  swaps ``SS2D_2`` for a plain-conv inter-frame mixer of the same size (:class:`ConvMixer`: the two
  frames' channels concatenated, 1x1 -> depthwise 3x3 -> SiLU -> 1x1): the paper's ablation question
  (is the S6 scan what helps?) as an equal-size baseline.
* **Flow estimation** (:class:`FlowHead`, coarse to fine on the stride-16 then stride-8 features):
  each head pixel-shuffles the two frames' features to 4x the resolution, concatenates the images
  (and from the second head on the warped images, mask and current flow), three conv + PReLU layers
  predict a residual bidirectional flow ``(F_t->0, F_t->1)`` (4 channels) and a fusion-mask logit.
* **Local refinement** (:class:`LocalFlowBlock`, RIFE's IFBlock; ``local_refine = 2`` blocks at
  scales 2 and 1) on the images, warped images, mask and flow, residually.
* **Refinement U-Net** (:class:`RefineUNet`): the images, warped images, mask, flow and the extractor's
  features of both frames warped by the flow (per stage, the flow halved with the resolution) -> a
  residual in ``[-1, 1]`` added to the mask-blended warp ``M * W(I0, F_t->0) + (1 - M) * W(I1, F_t->1)``.

Warping (:func:`backward_warp`) is bilinear ``grid_sample`` with border padding and ``align_corners``,
the flow in pixels (zero flow is the identity). Training loss (the official recipe follows EMA-VFI):
a Laplacian-pyramid L1 on the prediction plus half of it on every stage's blended warp. Parameter
counts equal the official model's (``config.py``, counted on CPU with our scan in place of mamba-ssm):
VFIMamba-S 16,792,786, VFIMamba 66,070,921.

Curriculum over motion magnitude (paper Sec. 3.3: Vimeo90K first, X-TRAIN's large motions mixed in
gradually): ``curriculum_steps > 0`` weights each training triplet's loss by ``min(1, (step + 1) /
curriculum_steps)`` when its ``magnitude`` (``vision.VideoTriplets``: mean absolute difference of the
outer frames) is above the batch median, 1 otherwise, so large motions enter the objective gradually
(``step`` counts the training ``loss`` calls; it is not saved in checkpoints). A scaled-down stand-in
for the paper's data-mixing schedule, which needs two training sets.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, MinLen
from torch import nn

from panconv.api import Model
from panconv_vision.kernels.selective_scan import interleaved_selective_scan, scan_orders
from panconv_vision.models.vmamba_blocks import SS2D

# ---------------------------------------------------------------- warping


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``(N, C, H, W)`` at ``p + flow(p)`` (``flow`` ``(N, 2, H, W)`` in pixels, x then y):
    bilinear, border padding, ``align_corners=True`` (pixel centres at -1 ... 1), so zero flow is the identity."""
    if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[2:] != image.shape[2:]:
        raise ValueError(f"backward_warp: flow must be (N, 2, H, W) matching image {tuple(image.shape)}, "
                         f"got {tuple(flow.shape)}")
    n, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, w).expand(n, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, h, 1).expand(n, h, w)
    gx = xs + flow[:, 0] / ((w - 1.0) / 2.0) if w > 1 else xs
    gy = ys + flow[:, 1] / ((h - 1.0) / 2.0) if h > 1 else ys
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.PReLU(cout))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.PReLU(cout))


# ---------------------------------------------------------------- the Mixed-SSM Block


class ChannelAttentionBlock(nn.Module):
    """RCAN's CAB: 3x3 conv to ``C // compress``, GELU, 3x3 conv back, squeeze-excitation (``C // squeeze``)."""

    def __init__(self, dim: int, compress: int = 3, squeeze: int = 30):
        super().__init__()
        hidden, squeezed = max(dim // compress, 1), max(dim // squeeze, 1)
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 3, 1, 1))
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, squeezed, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(squeezed, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y * self.attention(y)


def _ss2d_params(dim: int, d_state: int, ssm_ratio: float) -> int:
    """Parameters of ``SS2D(dim, d_state, ssm_ratio)`` (in/out projections, depthwise conv, 4 directions' x/dt
    projections, dt bias, A_log, D, output norm), without building it."""
    inner, rank = int(ssm_ratio * dim), math.ceil(dim / 16)
    return (dim * 2 * inner + inner * 10 + 4 * inner * (rank + 2 * d_state) + 4 * inner * rank + 4 * inner
            + 4 * inner * d_state + 4 * inner + 2 * inner + inner * dim)


class ConvMixer(nn.Module):
    """The plain-conv inter-frame mixer (``block="conv"``): the two frames' channels concatenated, 1x1 conv ->
    depthwise 3x3 -> SiLU -> 1x1 conv back to both frames; its hidden width is chosen so that it has (within
    a few parameters) as many parameters as the ``SS2D`` it replaces. Input/output ``(N, 2, H, W, C)``."""

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0):
        super().__init__()
        target = _ss2d_params(dim, d_state, ssm_ratio)
        hidden = max(1, round((target - 2 * dim) / (4 * dim + 11)))   # 2D*h + h + 9h + h + h*2D + 2D
        self.mix = nn.Sequential(nn.Conv2d(2 * dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden),
                                 nn.SiLU(), nn.Conv2d(hidden, 2 * dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, h, w, c = x.shape
        y = self.mix(x.permute(0, 1, 4, 2, 3).reshape(n, t * c, h, w))
        return y.view(n, t, c, h, w).permute(0, 1, 3, 4, 2)


@functools.lru_cache(maxsize=32)
def official_column_merge(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the official code puts the column-major scans' outputs (canonical ``(t, i, j)`` indices).

    The official ``forward_core`` maps the column-major (and reversed column-major) outputs back with
    ``transpose(y.view(B, -1, W, H))`` on a sequence of ``2 H W`` interleaved tokens, which reads step ``s``
    into row-interleaved position ``p(s) = (s // HW) HW + (s % H) W + (s % HW) // H`` rather than inverting the
    scan order (the two agree only for a single frame). Returns ``(source, target)``: the official output at
    canonical ``target[k]`` is the correctly un-permuted output at canonical ``source[k]``.
    """
    orders, _ = scan_orders(2, height, width)
    s = torch.arange(2 * height * width)
    hw = height * width
    p = (s // hw) * hw + (s % height) * width + (s % hw) // height
    return orders[1].clone(), orders[0][p]


class MixedSS2D(SS2D):
    """SS2D over two frames with interleaved tokens (``frames=2``), ``(N, 2, H, W, C)`` -> same.

    ``merge="inverse"``: the four directions' outputs mapped back by the inverse of each scan order (the
    paper's description; :class:`SS2D` as is). ``merge="official"``: the column-major directions placed as
    the official code does (:func:`official_column_merge`), for parity with its weights and outputs.
    """

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, merge: str = "official"):
        super().__init__(dim, d_state=d_state, ssm_ratio=ssm_ratio, frames=2)
        if merge not in ("inverse", "official"):
            raise ValueError(f"MixedSS2D: merge must be 'inverse' or 'official', got {merge!r}")
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merge == "inverse":
            return super().forward(x)
        n, t, h, w, _ = x.shape
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv(u.reshape(n * t, h, w, self.inner).permute(0, 3, 1, 2))).view(n, t, self.inner, h, w)
        orders, _ = scan_orders(t, h, w, str(u.device))
        xs = u.transpose(1, 2).flatten(2)[:, None].expand(-1, 4, -1, -1).gather(
            3, orders[None, :, None].expand(n, 4, self.inner, -1))
        dts, Bs, Cs = self._scan_inputs(xs)
        ys = interleaved_selective_scan(u, dts, -torch.exp(self.A_logs.float()), Bs, Cs, self.Ds.float(),
                                        delta_bias=self.dt_projs_bias.flatten().float(), reduce=False)
        ys = ys.transpose(2, 3).flatten(3)                                        # (N, 4, D, T*H*W) canonical
        source, target = official_column_merge(h, w)
        source, target = source.to(ys.device), target.to(ys.device)
        columns = torch.empty_like(ys[:, 1::2])
        columns[..., target] = ys[:, 1::2][..., source]
        y = (ys[:, 0] + ys[:, 2] + columns.sum(1)).view(n, self.inner, t, h, w).permute(0, 2, 3, 4, 1)
        return self.out_proj(self.out_norm(y) * F.silu(z))


class MixedSSMBlock(nn.Module):
    """Mixed-SSM Block on the two frames stacked along the batch (``(2N, C, H, W)``: frame 0 then frame 1)."""

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, block: str = "mamba",
                 merge: str = "official"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = MixedSS2D(dim, d_state, ssm_ratio, merge) if block == "mamba" \
            else ConvMixer(dim, d_state, ssm_ratio)
        self.skip_scale = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim)
        self.cab = ChannelAttentionBlock(dim)
        self.skip_scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n2, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1)                                                  # (2N, H, W, C)
        pair = self.norm1(x).view(2, n2 // 2, h, w, c).transpose(0, 1)              # (N, 2, H, W, C)
        mixed = self.mixer(pair).transpose(0, 1).reshape(n2, h, w, c)
        x = x * self.skip_scale + mixed
        x = x * self.skip_scale2 + self.cab(self.norm2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x.permute(0, 3, 1, 2)


# ---------------------------------------------------------------- the low-level feature extractor


class PatchEmbed(nn.Module):
    """LayerNorm over channels, then a stride-2 3x3 conv (overlapping patches)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = nn.LayerNorm(cin)
        self.proj = nn.Conv2d(cin, cout, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class FeatureExtractor(nn.Module):
    """Conv stages then Mixed-SSM stages; ``forward(I0, I1)`` -> per-stage features of ``cat([I0, I1])``."""

    def __init__(self, in_channels: int, dims: tuple[int, ...], depths: tuple[int, ...], conv_stages: int,
                 d_state: int, ssm_ratio: float, block: str, merge: str = "official"):
        super().__init__()
        self.embeds, self.stages = nn.ModuleList(), nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i == 0:
                self.embeds.append(nn.Identity())
            elif i < conv_stages:
                self.embeds.append(_conv(dims[i - 1], dim, 3, 2, 1))
            else:
                self.embeds.append(PatchEmbed(dims[i - 1], dim))
            if i < conv_stages:
                cin = in_channels if i == 0 else dim
                self.stages.append(nn.Sequential(*[_conv(cin if k == 0 else dim, dim) for k in range(depth)]))
            else:
                self.stages.append(nn.Sequential(*[MixedSSMBlock(dim, d_state, ssm_ratio, block, merge)
                                                   for _ in range(depth)]))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> list[torch.Tensor]:
        x, features = torch.cat([img0, img1]), []
        for embed, stage in zip(self.embeds, self.stages):
            x = stage(embed(x))
            features.append(x)
        return features


# ---------------------------------------------------------------- flow estimation and refinement


class FlowHead(nn.Module):
    """One coarse-to-fine flow step on the stride-``scale`` features of both frames (pixel-shuffled 4x)."""

    def __init__(self, dim: int, scale: int, hidden: int, extra: int):
        super().__init__()
        self.scale = scale
        self.shuffle = nn.Sequential(nn.PixelShuffle(2), nn.PixelShuffle(2))   # (not PixelShuffle(4): channel order)
        self.convs = nn.Sequential(_conv(2 * dim // 16 + extra, hidden), _conv(hidden, hidden), _conv(hidden, 5))

    def forward(self, motion: torch.Tensor, x: torch.Tensor, flow: torch.Tensor | None):
        motion = self.shuffle(motion)
        factor = 4.0 / self.scale
        if self.scale != 4:
            x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        if flow is not None:
            if self.scale != 4:
                flow = F.interpolate(flow, scale_factor=factor, mode="bilinear", align_corners=False) * factor
            x = torch.cat([x, flow], 1)
        out = self.convs(torch.cat([motion, x], 1))
        if self.scale != 4:
            out = F.interpolate(out, scale_factor=self.scale // 4, mode="bilinear", align_corners=False)
            return out[:, :4] * (self.scale // 4), out[:, 4:5]
        return out[:, :4], out[:, 4:5]


class LocalFlowBlock(nn.Module):
    """RIFE's IFBlock: at 1/``scale`` resolution, two stride-2 convs, 8 residual convs, a deconv -> (flow, mask)."""

    def __init__(self, in_planes: int, hidden: int, scale: int):
        super().__init__()
        self.scale = scale
        self.down = nn.Sequential(_conv(in_planes + 4, hidden // 2, 3, 2, 1), _conv(hidden // 2, hidden, 3, 2, 1))
        self.body = nn.Sequential(*[_conv(hidden, hidden) for _ in range(8)])
        self.last = nn.ConvTranspose2d(hidden, 5, 4, 2, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor):
        if self.scale != 1:
            x = F.interpolate(x, scale_factor=1.0 / self.scale, mode="bilinear", align_corners=False)
            flow = F.interpolate(flow, scale_factor=1.0 / self.scale, mode="bilinear", align_corners=False) / self.scale
        x = self.down(torch.cat([x, flow], 1))
        out = self.last(self.body(x) + x)
        out = F.interpolate(out, scale_factor=self.scale * 2, mode="bilinear", align_corners=False)
        return out[:, :4] * self.scale * 2, out[:, 4:5]


class RefineUNet(nn.Module):
    """The refinement U-Net: images, warps, mask, flow and both frames' warped features -> RGB residual (sigmoid)."""

    def __init__(self, c: int, in_channels: int = 3):
        super().__init__()
        base = 4 * in_channels + 5
        self.down = nn.ModuleList([nn.Sequential(_conv(cin, cout, 3, 2, 1), _conv(cout, cout))
                                   for cin, cout in ((base + c, 2 * c), (4 * c, 4 * c), (8 * c, 8 * c),
                                                     (16 * c, 16 * c))])
        self.up = nn.ModuleList([_deconv(32 * c, 8 * c), _deconv(16 * c, 4 * c), _deconv(8 * c, 2 * c),
                                 _deconv(4 * c, c)])
        self.out = nn.Conv2d(c, in_channels, 3, 1, 1)

    def forward(self, stem: torch.Tensor, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        skips, x = [], torch.cat([stem, feats0[0], feats1[0]], 1)
        for i, down in enumerate(self.down):
            x = down(x)
            skips.append(x)
            x = torch.cat([x, feats0[i + 1], feats1[i + 1]], 1)
        for i, up in enumerate(self.up):
            x = up(x if i == 0 else torch.cat([x, skips[-1 - i]], 1))
        return torch.sigmoid(self.out(x))


# ---------------------------------------------------------------- losses


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """L1 between Laplacian pyramids (5x5 binomial Gaussian, reflect padding; the official ``LapLoss``), per sample."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=pred.device, dtype=pred.dtype)
    kernel = (torch.outer(k, k) / 256.0).expand(pred.shape[1], 1, 5, 5)

    def blur(x):
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])

    def pyramid(x):
        out = []
        for _ in range(levels):
            if min(x.shape[-2:]) < 4:
                break
            down = blur(x)[..., ::2, ::2]
            up = torch.zeros(x.shape, device=x.device, dtype=x.dtype)
            up[..., ::2, ::2] = down * 4
            out.append(x - blur(up))
            x = down
        return out + [x]

    return sum((a - b).abs().flatten(1).mean(1) for a, b in zip(pyramid(pred), pyramid(target)))


# ---------------------------------------------------------------- the model


class VFIMamba(Model):
    """VFIMamba frame interpolator (see the module docstring). ``inputs`` ``(N, 2, C, H, W)`` in [0, 1] (the two
    frames; ``H``, ``W`` multiples of 32 for the default five stages), output the middle frame ``(N, C, H, W)``.

    Args:
        embed_dim: ``F``, the first stage's channels (stage ``i``: ``2^i F``). depths: blocks per stage.
        conv_stages: how many leading stages are plain convs (the rest Mixed-SSM). d_state, ssm_ratio: S6 sizes.
        flow_stages: coarse-to-fine flow heads (on the last ``flow_stages`` stages). local_refine: IFBlocks.
        block: ``"mamba"`` (Mixed-SSM) or ``"conv"`` (the equal-size plain-conv mixer baseline).
        timestep: the interpolated time in (0, 1). curriculum_steps: see the module docstring (0: off).
        merge: how the column-major scans are mapped back: ``"official"`` (as the official code, for parity)
            or ``"inverse"`` (the inverse scan order, the paper's description); see :class:`MixedSS2D`.
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, embed_dim: Annotated[int, Ge(4)] = 16,
                 depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(3)] = (2, 2, 2, 3, 3),
                 conv_stages: Annotated[int, Ge(1)] = 3, d_state: Annotated[int, Ge(1)] = 16,
                 ssm_ratio: Annotated[float, Gt(0)] = 2.0, flow_stages: Annotated[int, Ge(1)] = 2,
                 local_refine: Annotated[int, Ge(0)] = 2, block: Literal["mamba", "conv"] = "mamba",
                 in_channels: Annotated[int, Ge(1)] = 3, timestep: Annotated[float, Gt(0)] = 0.5,
                 curriculum_steps: Annotated[int, Ge(0)] = 0, merge: Literal["official", "inverse"] = "official"):
        super().__init__()
        depths = tuple(depths)
        if embed_dim < 4 or len(depths) < 3 or min(depths) < 1 or not 1 <= conv_stages < len(depths):
            raise ValueError(f"VFIMamba: embed_dim >= 4, >= 3 stages of depth >= 1 and 1 <= conv_stages < stages "
                             f"(got embed_dim={embed_dim}, depths={depths}, conv_stages={conv_stages})")
        if not 1 <= flow_stages <= len(depths) - 2 or local_refine < 0 or local_refine > 2:
            raise ValueError(f"VFIMamba: 1 <= flow_stages <= stages - 2 and 0 <= local_refine <= 2 "
                             f"(got {flow_stages}, {local_refine})")
        if block not in ("mamba", "conv") or not 0 < timestep < 1 or in_channels < 1 or d_state < 1 \
                or ssm_ratio <= 0 or curriculum_steps < 0 or merge not in ("official", "inverse"):
            raise ValueError(f"VFIMamba: block in ('mamba', 'conv'), 0 < timestep < 1, in_channels, d_state >= 1, "
                             f"ssm_ratio > 0 (got {block!r}, {timestep}, {in_channels}, {d_state}, {ssm_ratio})")
        dims = tuple(embed_dim * 2 ** i for i in range(len(depths)))
        self.in_channels, self.timestep, self.curriculum_steps = in_channels, timestep, curriculum_steps
        self._step = 0
        if curriculum_steps:
            # the ramp's position is saved with the weights, so a resumed run continues the ramp where it was; only
            # with a curriculum, so that the default state dict stays the official one
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.stride = 2 ** len(depths)
        self.features = FeatureExtractor(in_channels, dims, depths, conv_stages, d_state, ssm_ratio, block,
                                         merge)
        scales = [4 * 2 ** i for i in range(len(depths) - 2)]     # stride of stage i + 2
        extra0, extra = 2 * in_channels + 1, 4 * in_channels + 2  # images (+ warps, mask) and the time channel
        self.flow_heads = nn.ModuleList([FlowHead(dims[-1 - i], scales[-1 - i], 4 * embed_dim,
                                                  extra0 if i == 0 else extra + 4) for i in range(flow_stages)])
        self.local_blocks = nn.ModuleList([LocalFlowBlock(4 * in_channels + 1, 4 * embed_dim, 2 - i)
                                           for i in range(local_refine)])
        self.refine = RefineUNet(2 * embed_dim, in_channels)
        if len(depths) != 5:
            raise ValueError(f"VFIMamba: the refinement U-Net takes five feature stages (got {len(depths)})")

    # ------------------------------------------------------------ forward
    def interpolate(self, img0: torch.Tensor, img1: torch.Tensor) -> dict[str, torch.Tensor | list]:
        """-> ``{"pred", "flow" (N, 4, H, W), "mask" (logit), "merged": [blended warp per flow step]}``."""
        n = img0.shape[0]
        feats = self.features(img0, img1)
        time = img0.new_full((n, 1) + img0.shape[2:], self.timestep)
        flow = mask = None
        warped0, warped1, merged = img0, img1, []

        def blend():
            w = torch.sigmoid(mask)
            return warped0 * w + warped1 * (1 - w)

        for i, head in enumerate(self.flow_heads):
            motion = torch.cat([feats[-1 - i][:n], feats[-1 - i][n:]], 1)
            if flow is None:
                flow, mask = head(motion, torch.cat([img0, img1, time], 1), None)
            else:
                d_flow, d_mask = head(motion, torch.cat([img0, img1, warped0, warped1, mask, time], 1), flow)
                flow, mask = flow + d_flow, mask + d_mask
            warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:])
            merged.append(blend())
        for block in self.local_blocks:
            d_flow, d_mask = block(torch.cat([img0, img1, warped0, warped1, mask], 1), flow)
            flow, mask = flow + d_flow, mask + d_mask
            warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:])
            merged.append(blend())
        feats0, feats1, f = [], [], flow
        for x in feats:                                           # the features warped by the (halved) flow
            feats0.append(backward_warp(x[:n], f[:, :2]))
            feats1.append(backward_warp(x[n:], f[:, 2:]))
            f = F.interpolate(f, scale_factor=0.5, mode="bilinear", align_corners=False) * 0.5
        residual = self.refine(torch.cat([img0, img1, warped0, warped1, mask, flow], 1), feats0, feats1)
        pred = (merged[-1] + residual[:, :self.in_channels] * 2 - 1).clamp(0, 1)
        return {"pred": pred, "flow": flow, "mask": mask, "merged": merged}

    def forward(self, batch: dict | torch.Tensor) -> dict:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        if x.dim() != 5 or x.shape[1] != 2 or x.shape[2] != self.in_channels \
                or x.shape[3] % self.stride or x.shape[4] % self.stride:
            raise ValueError(f"VFIMamba: expected inputs (N, 2, {self.in_channels}, H, W) with H, W multiples of "
                             f"{self.stride}, got {tuple(x.shape)}")
        return self.interpolate(x[:, 0], x[:, 1])

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["targets"]
        if outputs["pred"].shape != target.shape:
            raise ValueError(f"VFIMamba: prediction {tuple(outputs['pred'].shape)} != target {tuple(target.shape)}")
        per_sample = laplacian_loss(outputs["pred"], target)
        warp = sum(laplacian_loss(m, target) for m in outputs["merged"]) * 0.5
        weights = self.curriculum_weights(batch)
        if self.training:
            self.step += 1
        return {"loss_pred": (per_sample * weights).mean(), "loss_warp": (warp * weights).mean()}

    @property
    def step(self) -> int:
        """Training steps taken (calls of ``loss`` in train mode): the curriculum's position."""
        return int(self.steps) if hasattr(self, "steps") else self._step

    @step.setter
    def step(self, value: int) -> None:
        if hasattr(self, "steps"):
            self.steps.fill_(int(value))
        else:
            self._step = int(value)

    def curriculum_weights(self, batch: dict) -> torch.Tensor:
        """Per-sample loss weights of the motion-magnitude curriculum (ones when off or without ``magnitude``)."""
        n = batch["targets"].shape[0]
        ones = batch["targets"].new_ones(n)
        if not self.curriculum_steps or "magnitude" not in batch or not self.training:
            return ones
        magnitude = batch["magnitude"].to(ones)
        ramp = min(1.0, (self.step + 1) / self.curriculum_steps)
        return torch.where(magnitude > magnitude.median(), ones * ramp, ones)

    def predict(self, outputs: dict, batch: dict | None = None) -> torch.Tensor:
        return outputs["pred"]

    @classmethod
    def example_config(cls) -> dict:
        return {"embed_dim": 4, "depths": (1, 1, 1, 1, 1), "d_state": 4, "local_refine": 1}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        size = self.stride
        return {"inputs": torch.rand(batch_size, 2, self.in_channels, size, size, generator=g),
                "targets": torch.rand(batch_size, self.in_channels, size, size, generator=g)}


# ---------------------------------------------------------------- weights from the official code
#: official (MCG-NJU/VFIMamba ``model/``) key prefixes -> ours, tried in order (first match wins)
_OFFICIAL_RENAMES = (
    (r"feature_bone\.patch_embed(\d)\.", r"features.embeds.\1."),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.self_attention\.conv2d\.", r"features.stages.\1.\2.mixer.conv."),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.self_attention\.", r"features.stages.\1.\2.mixer."),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.ln_1\.", r"features.stages.\1.\2.norm1."),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.ln_2\.", r"features.stages.\1.\2.norm2."),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.(skip_scale2?)$", r"features.stages.\1.\2.\3"),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.conv_blk\.cab\.3\.attention\.", r"features.stages.\1.\2.cab.attention."),
    (r"feature_bone\.block(\d)\.blocks\.(\d+)\.conv_blk\.cab\.", r"features.stages.\1.\2.cab.body."),
    (r"block\.(\d)\.conv\.", r"flow_heads.\1.convs."),
    (r"local_block\.(\d)\.conv0\.", r"local_blocks.\1.down."),
    (r"local_block\.(\d)\.convblock\.", r"local_blocks.\1.body."),
    (r"local_block\.(\d)\.lastconv\.", r"local_blocks.\1.last."),
    (r"unet\.down(\d)\.conv1\.", r"refine.down.\1.0."),
    (r"unet\.down(\d)\.conv2\.", r"refine.down.\1.1."),
    (r"unet\.up(\d)\.", r"refine.up.\1."),
    (r"unet\.conv\.", r"refine.out."),
)
#: the conv stages' layers: official ``feature_bone.block{s}.conv.{k}`` (conv, PReLU, conv, PReLU, ...)
_OFFICIAL_CONV_STAGE = re.compile(r"feature_bone\.block(\d)\.conv\.(\d+)\.(weight|bias)")
#: substrings of keys without a counterpart, which the official loader (``Trainer_finetune.convert``) drops too:
#: the attention-mask / window-size buffers of the EMA-VFI transformer that VFIMamba's training code derives from
OFFICIAL_DROPPED = ("attn_mask", "HW")


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VFIMamba weights (MCG-NJU/VFIMamba ``model/``: ``mamba_estimation(mamba_extractor(...))``, the
    ``ckpt/VFIMamba*.pkl`` / Hugging Face ``model.pkl`` checkpoints) -> :class:`VFIMamba`'s keys.

    Takes the checkpoint as saved (keys ``module.*`` of the official DDP wrapper: the prefix is stripped, as the
    official loader does) or the official network's own ``state_dict()``. The result loads strictly into a
    :class:`VFIMamba` of the checkpoint's size (``embed_dim`` = the official ``F``, ``depths``; the default
    ``block="mamba"``, ``merge="official"`` and no curriculum, whose ``steps`` buffer the official model lacks):
    ``feature_bone.patch_embed{i}`` / ``block{i}`` become ``features.embeds.{i}`` / ``features.stages.{i}``
    (a conv stage's flat ``conv.{k}`` list of conv, PReLU pairs becomes layer ``k // 2``, part ``k % 2``; a
    Mixed-SSM block's ``self_attention`` / ``ln_1`` / ``ln_2`` / ``conv_blk.cab`` become ``mixer`` / ``norm1`` /
    ``norm2`` / ``cab.body`` with its squeeze-excitation ``cab.attention``), ``block.{i}`` the flow heads
    ``flow_heads.{i}``, ``local_block.{i}`` ``local_blocks.{i}`` and ``unet`` the refinement U-Net ``refine``.
    There is one form (no re-parameterisation) and shapes are the same on both sides. Keys in
    :data:`OFFICIAL_DROPPED` are left out; any other key the official model does not have raises a KeyError
    naming it.
    """
    out = {}
    for key, value in state_dict.items():
        if any(part in key for part in OFFICIAL_DROPPED):
            continue
        name = key.removeprefix("module.")
        conv = _OFFICIAL_CONV_STAGE.fullmatch(name)
        if conv:
            stage, index, kind = conv.groups()
            out[f"features.stages.{stage}.{int(index) // 2}.{int(index) % 2}.{kind}"] = value
            continue
        for pattern, repl in _OFFICIAL_RENAMES:
            new, n = re.subn("^" + pattern, repl, name)
            if n:
                out[new] = value
                break
        else:
            raise KeyError(f"unexpected key in an official VFIMamba state dict: {key}")
    return out


__all__ = ["ConvMixer", "FeatureExtractor", "FlowHead", "LocalFlowBlock", "MixedSSMBlock", "RefineUNet", "VFIMamba",
           "backward_warp", "laplacian_loss", "map_official_state_dict"]
