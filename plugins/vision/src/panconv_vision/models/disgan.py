"""DISGAN: wavelet-informed discriminator guides a GAN to MRI super-resolution with noise cleaning.

Paper: Wang, Mahler, Steiglechner, Birk, Scheffler and Lohmann, ICCV 2023 Workshops, arXiv:2308.12084.
Reference code: https://github.com/wqlevi/DISGAN (``mains/model/model_DISGAN.py``: ``Generator`` and
``dwt_UNet``; numerical parity checked, tests/test_disgan.py).

* **Generator**: a 3-D ESRGAN: a 3x3x3 conv, residual-in-residual dense blocks (RRDB: three dense
  blocks of five 3-D convs with LeakyReLU, residual scale 0.2), a conv and a long skip, then per x2 a
  conv to ``8 C`` channels, LeakyReLU and a **3-D pixel shuffle** (:func:`pixel_shuffle_3d`), and two
  output convs.
* **Discriminator** (:class:`WaveletUNetDiscriminator`): a 3-D U-Net whose encoder concatenates, at every
  level, the strided-conv features with a 1x1x1 conv of the low-frequency band of a 3-D Haar DWT of the
  previous level (:func:`haar_dwt3`), and whose decoder concatenates the skip features with a 1x1x1 conv
  of the seven high-frequency bands; a per-voxel real/fake logit map.
* **Losses** (the official training step): generator ``L1 + 5e-3 * adversarial``, the adversarial terms
  relativistic (``BCE(D(fake) - mean D(real), 1)``), the discriminator ``(BCE(D(real) - mean D(fake), 1) +
  BCE(D(fake) - mean D(real), 0)) / 2``; optional instance noise on the discriminator's inputs.

The engine trains one optimizer on the summed loss; :meth:`DISGAN.loss` keeps the two players apart:
the generator's adversarial term is computed with the discriminator's parameters *detached* (so it moves
only the generator) and the discriminator's loss on the *detached* generator output (so it moves only the
discriminator): the simultaneous-gradient form of the official alternating updates (both use Adam with
one learning rate). As the release takes both gradients at the same point (G's term through D before D's
update, D's loss on the output G gave before its update), one step lands on the same weights as the release's
G-then-D step (tests/test_disgan_schedule.py). The "noise cleaning" is the generator trained on LR inputs
with Rician noise (``vision.MRIPatches``).

**Training schedule** (the official ``mains/ln_DDP_train.py``: Adam, lr 1e-4, batch 4, 20 epochs, no warm-up,
generator ``L1 + 5e-3 adv + 1e-2 perceptual``; the generator has no skip from an interpolated input). The
model counts its training steps (calls of :meth:`DISGAN.loss` in train mode, one per micro-batch) in a
``steps`` buffer (saved with the weights, so a resumed run continues the schedule), registered only when one
of these options is on (the default state dict is the official one):

* ``pixel_warmup_iters`` (default 0, as the release): the generator is first trained with the pixel L1 alone
  for that many steps (no discriminator, no perceptual term), ESRGAN's PSNR-oriented pre-training (Wang et
  al. 2018, the generator family DISGAN builds on); the adversarial phase starts from that generator.
* ``instance_noise_decay_iters`` (default 0: constant ``instance_noise``): the release's schedule, sigma
  ``1 - epoch / num_epochs`` from 1 to 0 over the run, as a linear decay from ``instance_noise`` to 0 over
  that many adversarial steps (per step rather than per epoch). As in the release, one noise draw per step
  is added to every discriminator input of that step (real and generated, in both players' terms).

**Perceptual term** (``perceptual_weight``, official ``1e-2``; off by default): ``w * L1(FE(G(x)), FE(y))``
with a *frozen* feature extractor ``FE``, added to the generator's loss (the official ``g_pixel_loss``). The
official training script's default ``FE_type`` is ``VGG16`` (``model_DISGAN.VGG16``: VGG16's first ten convs,
through conv4_3, as 3x3x3 convs + ReLU with three 2x2x2 max-pools; 22.9M parameters at width 64), which is what
:class:`VGG3dFeatures` builds (forward parity with the official class, tests/test_disgan_perceptual.py). The
official extractors are *not* pre-trained: ``VGG16`` is initialised by ``_init_weights`` (weights ~ N(0, 1),
zero bias) and frozen (``freeze_model``), and no pre-trained 3-D VGG exists. ``perceptual_init="official"``
reproduces that init; ``"kaiming"`` (He normal, fan-in) keeps the feature scale ~1 through the ten layers,
whereas the N(0, 1) init multiplies it by ~sqrt(27 C / 2) per layer (mean |feature| ~5e14 on a uniform
[0, 1] 16^3 patch at width 64), so the official term outweighs the L1 and adversarial terms by many orders
of magnitude (with Adam the generator then follows the perceptual gradient's direction alone). The
extractor's weights come from their own generator seeded with ``perceptual_seed`` (independent of the global
RNG), so the loss is reproducible; ``perceptual_width`` scales the widths (official 64: 64/128/256/512). The
release's alternative ``FE_type: resnet10`` (MedicalNet's ResNet-10 layout, also randomly initialised
there) is not built.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn
from torch.func import functional_call

from .layers import RestorationModel

__all__ = [
    "DISGAN", "DenseBlock3d", "RRDBGenerator3d", "VGG3dFeatures", "WaveletUNetDiscriminator", "haar_dwt3",
    "pixel_shuffle_3d",
]


def pixel_shuffle_3d(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``(N, C s^3, D, H, W) -> (N, C, D s, H s, W s)``: sub-voxel channel ``(i, j, k)`` to offset ``(i, j, k)``."""
    n, c, d, h, w = x.shape
    if c % scale ** 3:
        raise ValueError(f"pixel_shuffle_3d: {c} channels are not divisible by scale^3 = {scale ** 3}")
    out = c // scale ** 3
    x = x.reshape(n, out, scale, scale, scale, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(n, out, d * scale, h * scale, w * scale)


def haar_dwt3(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal 3-D Haar DWT: ``(N, C, D, H, W) -> (N, 8, C, D/2, H/2, W/2)``.

    Band ``s = 4 b_D + 2 b_H + b_W`` (``b = 0`` low: ``(x_0 + x_1)/sqrt(2)``, ``1`` high: ``(x_0 - x_1)/sqrt(2)``
    along each axis), band 0 the low-frequency LLL (pywt's / torch-dwt's ``dwt3`` order)."""
    n, c, d, h, w = x.shape
    if d % 2 or h % 2 or w % 2:
        raise ValueError(f"haar_dwt3: sides must be even, got {(d, h, w)}")
    v = x.reshape(n, c, d // 2, 2, h // 2, 2, w // 2, 2)
    sign = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=x.dtype, device=x.device) / 2 ** 0.5  # [band, tap]
    # contract the tap axes of D, H and W with the band filters
    out = torch.einsum("nciajbke,xa,yb,ze->nxyzcijk", v, sign, sign, sign)
    return out.reshape(n, 8, c, d // 2, h // 2, w // 2)


VGG16_3D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)


class VGG3dFeatures(nn.Module):
    """The official perceptual feature extractor (``model_DISGAN.VGG16``): VGG16's first ten convs (through
    conv4_3) as 3x3x3 convs + ReLU, 2x2x2 max-pools after blocks 1-3; frozen (``requires_grad=False``),
    initialised from ``seed``.

    ``width`` is the first block's channels (official 64; the others scale with it); ``init`` ``"official"``
    draws weights from N(0, 1) (the release's ``_init_weights``), ``"kaiming"`` from N(0, 2 / fan_in); biases 0.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, init: str = "official", seed: int = 0):
        super().__init__()
        if init not in ("official", "kaiming"):
            raise ValueError(f"VGG3dFeatures: init must be 'official' or 'kaiming', got {init!r}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in VGG16_3D:
            if v == "M":
                layers.append(nn.MaxPool3d(2, 2))
            else:
                out = max(1, v * width // 64)
                layers += [nn.Conv3d(c, out, 3, 1, 1), nn.ReLU()]
                c = out
        self.layers = nn.Sequential(*layers)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.layers:
                if isinstance(m, nn.Conv3d):
                    std = 1.0 if init == "official" else (2.0 / m.weight[0].numel()) ** 0.5
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                    m.bias.zero_()
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[2:]) < 8:
            raise ValueError(f"VGG3dFeatures: sides {tuple(x.shape[2:])} must be >= 8 (three 2x2x2 max-pools)")
        return self.layers(x)


class DenseBlock3d(nn.Module):
    """Five 3x3x3 convs, each on the concatenation of the input and every previous output (LeakyReLU 0.01 after
    the first four); ``x + 0.2 * last``."""

    def __init__(self, filters: int, res_scale: float = 0.2):
        super().__init__()
        self.res_scale = res_scale
        self.convs = nn.ModuleList(nn.Conv3d(filters * (i + 1), filters, 3, 1, 1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x
        for i, conv in enumerate(self.convs):
            out = conv(inputs)
            if i < 4:
                out = F.leaky_relu(out, 0.01)
                inputs = torch.cat([inputs, out], 1)
        return out * self.res_scale + x


class RRDB3d(nn.Module):
    """Residual-in-residual dense block: three dense blocks, ``x + 0.2 * blocks(x)``."""

    def __init__(self, filters: int, res_scale: float = 0.2):
        super().__init__()
        self.res_scale = res_scale
        self.blocks = nn.Sequential(DenseBlock3d(filters), DenseBlock3d(filters), DenseBlock3d(filters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x) * self.res_scale + x


class RRDBGenerator3d(nn.Module):
    """The DISGAN generator: conv, RRDBs, conv + long skip, (conv, LeakyReLU, 3-D pixel shuffle) per x2, two convs."""

    def __init__(self, channels: int = 1, filters: int = 64, num_blocks: int = 3, num_upsample: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, filters, 3, 1, 1)
        self.blocks = nn.Sequential(*[RRDB3d(filters) for _ in range(num_blocks)])
        self.conv2 = nn.Conv3d(filters, filters, 3, 1, 1)
        self.upsample = nn.ModuleList(nn.Conv3d(filters, filters * 8, 3, 1, 1) for _ in range(num_upsample))
        self.conv3 = nn.Conv3d(filters, filters, 3, 1, 1)
        self.conv4 = nn.Conv3d(filters, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv1(x)
        f = f + self.conv2(self.blocks(f))
        for conv in self.upsample:
            f = pixel_shuffle_3d(F.leaky_relu(conv(f), 0.01), 2)
        return self.conv4(F.leaky_relu(self.conv3(f), 0.01))


class _WaveletUnit(nn.Module):
    """1x1x1 convs of a Haar DWT's low band (``C -> c``) and of its seven high bands (``7C -> c``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.low = nn.Conv3d(in_channels, out_channels, 1)
        self.high = nn.Conv3d(7 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bands = haar_dwt3(x)
        return self.low(bands[:, 0]), self.high(bands[:, 1:].flatten(1, 2))


class _Down(nn.Module):
    """(activation outside) 4x4x4 stride-2 conv, dense block, optional BatchNorm."""

    def __init__(self, c_in: int, c_out: int, bn: bool):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 4, 2, 1, bias=False)
        self.dense = DenseBlock3d(c_out)
        self.bn = nn.BatchNorm3d(c_out) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.dense(self.conv(x)))


class _Level(nn.Module):
    def __init__(self, layer: nn.Module, wavelet: _WaveletUnit):
        super().__init__()
        self.layer, self.wavelet = layer, wavelet


class _Up(nn.Module):
    """ReLU, then a 4x4x4 stride-2 transposed conv and a dense block (or trilinear x2, dense block, 1x1x1 conv), BN."""

    def __init__(self, c_in: int, c_out: int, linear: bool = False):
        super().__init__()
        self.linear = linear
        if linear:
            self.dense = DenseBlock3d(c_in)
            self.conv = nn.Conv3d(c_in, c_out, 1, bias=False)
        else:
            self.conv = nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False)
            self.dense = DenseBlock3d(c_out)
        self.bn = nn.BatchNorm3d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if self.linear:
            x = self.conv(self.dense(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)))
        else:
            x = self.dense(self.conv(x))
        return self.bn(x)


class WaveletUNetDiscriminator(nn.Module):
    """DISGAN's discriminator: a 3-D U-Net with Haar-DWT units; per-voxel logits ``(N, 1, D, H, W)``.

    ``levels`` stride-2 levels (the official network: 6, for 64^3 patches; sides must be divisible by
    ``2^levels``); level ``k`` concatenates ``w_k - 2^(k-1)`` conv features with ``2^(k-1)`` wavelet
    low-band features (``w_k = nf * 2^(k-1)``, at most ``8 nf``).
    """

    def __init__(self, in_channels: int = 1, nf: int = 16, levels: int = 6):
        super().__init__()
        if not 2 <= levels <= 6:
            raise ValueError(f"WaveletUNetDiscriminator: levels must be in 2..6, got {levels}")
        self.levels = levels
        widths = [min(nf * 2 ** k, 8 * nf) for k in range(levels - 1)]  # w_1 .. w_{L-1}
        dwt_c = [2 ** k for k in range(levels - 1)]
        self.initial_conv = nn.Conv3d(in_channels, nf, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(nf)
        enc = []
        for k in range(levels - 1):
            if k == 0:
                layer: nn.Module = nn.Conv3d(nf, widths[0] - dwt_c[0], 4, 2, 1, bias=False)
            else:
                layer = _Down(widths[k - 1], widths[k] - dwt_c[k], bn=True)
            enc.append(_Level(layer, _WaveletUnit(in_channels if k == 0 else widths[k - 1], dwt_c[k])))
        self.encoder = nn.ModuleList(enc)
        self.bottom = _Down(widths[-1], widths[-1], bn=False)
        dec = [_Up(widths[-1], widths[-1])]
        for k in range(levels - 2, 0, -1):
            dec.append(_Up(widths[k] + widths[k] + dwt_c[k], widths[k - 1]))
        dec.append(_Up(widths[0] + widths[0] + dwt_c[0], 2 * nf, linear=True))
        self.decoder = nn.ModuleList(dec)
        self.tail_conv1 = nn.Conv3d(3 * nf, 2 * nf, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(2 * nf)
        self.tail_conv2 = nn.Conv3d(2 * nf, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = 2 ** self.levels
        if any(s % side for s in x.shape[2:]):
            raise ValueError(f"WaveletUNetDiscriminator: sides {tuple(x.shape[2:])} must be divisible by {side}")
        start = self.bn1(self.initial_conv(x))
        outs, highs = [], []
        prev, prev_raw = start, x
        for level in self.encoder:
            low, high = level.wavelet(prev_raw)
            out = torch.cat([level.layer(prev), low], 1)
            # the official blocks open with an in-place LeakyReLU(0.2) on their input: the activated features
            # are what the next level, its wavelet unit and the skip connection see
            out = F.leaky_relu(out, 0.2)
            outs.append(out)
            highs.append(high)
            prev = prev_raw = out
        t = self.decoder[0](self.bottom(prev))
        for i, up in enumerate(self.decoder[1:]):
            k = len(outs) - 1 - i
            t = up(torch.cat([t, outs[k], highs[k]], 1))
        return self.tail_conv2(self.bn2(self.tail_conv1(torch.cat([t, start], 1))))


class DISGAN(RestorationModel):
    """DISGAN for 3-D MRI super-resolution: the RRDB generator restores; the wavelet U-Net discriminator trains it.

    Args:
        upscale: SR factor (a power of 2: one pixel-shuffle stage per x2).
        filters, num_blocks: generator width and RRDB count (official 64 and 3).
        disc_features, disc_levels: discriminator base width and depth (official 16 and 6, 64^3 patches).
        adv_weight: weight of the generator's adversarial term (official 5e-3); 0 trains the generator alone.
        instance_noise: std of Gaussian noise added to the discriminator's inputs.
        in_channels: image channels.
        perceptual_weight: weight of the perceptual L1 on frozen VGG16-3D features (official 1e-2); 0 builds no
            extractor.
        perceptual_width, perceptual_init, perceptual_seed: the extractor's width (official 64), init
            ("official" N(0, 1) or "kaiming") and seed (see :class:`VGG3dFeatures`).
        pixel_warmup_iters: training steps with the pixel L1 alone before the adversarial phase (ESRGAN's
            pre-training; 0, the release, starts adversarial).
        instance_noise_decay_iters: adversarial steps over which the instance noise std falls linearly from
            ``instance_noise`` to 0 (the release: from 1 over the whole run); 0 keeps it constant.
    """

    metadata_inputs = ("in_channels", "upscale")
    spatial_dims = 3

    def __init__(self, upscale: Annotated[int, Ge(2)] = 2, filters: Annotated[int, Ge(1)] = 64,
                 num_blocks: Annotated[int, Ge(1)] = 3, disc_features: Annotated[int, Ge(1)] = 16,
                 disc_levels: Annotated[int, Interval(ge=2, le=6)] = 6,
                 adv_weight: Annotated[float, Ge(0)] = 5e-3, instance_noise: Annotated[float, Ge(0)] = 0.0,
                 in_channels: Annotated[int, Ge(1)] = 1, perceptual_weight: Annotated[float, Ge(0)] = 0.0,
                 perceptual_width: Annotated[int, Ge(1)] = 64,
                 perceptual_init: Literal["official", "kaiming"] = "official",
                 perceptual_seed: Annotated[int, Ge(0)] = 0, pixel_warmup_iters: Annotated[int, Ge(0)] = 0,
                 instance_noise_decay_iters: Annotated[int, Ge(0)] = 0):
        super().__init__()
        if pixel_warmup_iters < 0 or instance_noise_decay_iters < 0:
            raise ValueError(f"DISGAN: pixel_warmup_iters ({pixel_warmup_iters}) and instance_noise_decay_iters "
                             f"({instance_noise_decay_iters}) must be >= 0")
        if upscale < 2 or upscale & (upscale - 1):
            raise ValueError(f"DISGAN: upscale must be a power of 2 (one 3-D pixel shuffle per x2), got {upscale}")
        self.in_channels, self.upscale = in_channels, upscale
        self.adv_weight, self.instance_noise = adv_weight, instance_noise
        self.generator = RRDBGenerator3d(in_channels, filters, num_blocks, upscale.bit_length() - 1)
        self.discriminator = WaveletUNetDiscriminator(in_channels, disc_features, disc_levels)
        self.perceptual_weight = perceptual_weight
        self.feature_extractor = (VGG3dFeatures(in_channels, perceptual_width, perceptual_init, perceptual_seed)
                                  if perceptual_weight > 0 else None)
        self.pixel_warmup_iters, self.instance_noise_decay_iters = pixel_warmup_iters, instance_noise_decay_iters
        if pixel_warmup_iters or instance_noise_decay_iters:
            # training steps taken (calls of loss() in train mode); only with a schedule, so that the default
            # state dict stays the official one
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def step_count(self) -> int:
        """Training steps taken so far (0 without a schedule, whose models keep no counter)."""
        return int(self.steps) if hasattr(self, "steps") else 0

    @property
    def warming_up(self) -> bool:
        """Whether the next training step is a pixel-loss-only warm-up step."""
        return self.step_count < self.pixel_warmup_iters

    @property
    def noise_std(self) -> float:
        """The instance noise std of the next adversarial step (decayed linearly when a decay is set)."""
        if self.instance_noise_decay_iters == 0:
            return self.instance_noise
        adversarial = max(0, self.step_count - self.pixel_warmup_iters)
        return self.instance_noise * max(0.0, 1.0 - adversarial / self.instance_noise_decay_iters)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        losses = super().loss(outputs, batch)  # {"loss": L1}
        if not self.training:
            return losses
        warming_up, sigma = self.warming_up, self.noise_std
        if hasattr(self, "steps"):
            self.steps += 1
        if warming_up:
            return {"loss_pixel": losses["loss"]}
        real = batch["targets"]
        terms = {"loss_pixel": losses["loss"]}
        if self.feature_extractor is not None:
            terms["loss_perceptual"] = self.perceptual_weight * self.perceptual_loss(outputs, real)
        if self.adv_weight == 0:
            return terms if len(terms) > 1 else losses
        # instance noise: one draw per step, added to every discriminator input of the step (as the release)
        noise = sigma * torch.randn_like(real) if sigma > 0 else 0.0
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        # generator's relativistic adversarial term; D's parameters detached: moves only G
        d_real_g = functional_call(self.discriminator, frozen, (real + noise,)).detach()
        d_fake_g = functional_call(self.discriminator, frozen, (outputs + noise,))
        g_adv = F.binary_cross_entropy_with_logits(d_fake_g - d_real_g.mean(0, keepdim=True),
                                                   torch.ones_like(d_fake_g))
        # discriminator's loss on the detached generator output: moves only D
        d_real = self.discriminator(real + noise)
        d_fake = self.discriminator(outputs.detach() + noise)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real - d_fake.mean(0, keepdim=True),
                                                           torch.ones_like(d_real))
                        + F.binary_cross_entropy_with_logits(d_fake - d_real.mean(0, keepdim=True),
                                                             torch.zeros_like(d_fake)))
        return {**terms, "loss_adv": self.adv_weight * g_adv, "loss_disc": d_loss}

    def perceptual_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``L1(FE(outputs), FE(targets))`` (unweighted) on the frozen extractor; gradients reach only ``outputs``."""
        if self.feature_extractor is None:
            raise ValueError("DISGAN.perceptual_loss: perceptual_weight is 0, no feature extractor was built")
        with torch.no_grad():
            target_features = self.feature_extractor(targets)
        return F.l1_loss(self.feature_extractor(outputs), target_features)

    def example_inputs(self, batch_size: int = 2) -> dict:
        side = 2 ** self.discriminator.levels // self.upscale
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch_size, self.in_channels, side, side, side, generator=g)
        y = torch.rand(batch_size, self.in_channels, *(s * self.upscale for s in x.shape[2:]), generator=g)
        return {"inputs": x, "targets": y}

    @classmethod
    def example_config(cls) -> dict:
        return {"upscale": 2, "filters": 4, "num_blocks": 1, "disc_features": 4, "disc_levels": 2}
