"""DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models") with the ADM U-Net of Dhariwal & Nichol
2021 ("Diffusion Models Beat GANs on Image Synthesis", openai/guided-diffusion): the network whose features
Mukhopadhyay et al. 2023 ("Diffusion Models Beat GANs on Image Classification") classify.

Read top to bottom: the noise schedules and the forward process q(x_t | x_0) (:class:`GaussianDiffusion`,
ancestral sampling included), the U-Net blocks (time-conditioned residual block, multi-head spatial
attention, up/down-sampling), the U-Net, and :class:`DDPM`, the whole model the engine trains with the
epsilon-prediction loss (Ho et al. Eq. 14, "L_simple").

The U-Net's block numbering is the one of the classification paper (and of its official code,
soumik-kanad/diffssl ``get_multiple_features``): blocks are counted from 1 over the input blocks (the stem
convolution is block 1), the middle block, then the output (decoder) blocks; the output of block ``b`` is
what the paper calls the features of block ``b``. For the 256^2 ImageNet ADM that is 18 input blocks, the
middle block 19, the decoder blocks 20..37 (the paper's best: block 24).

The U-Net sits under the prefix ``unet.`` of :class:`DDPM` (and of ``vision.DiffusionFeatures``), so a
feature model starts from a pre-training run with ``run: {init_from: {path: .../last.pth, map: {"unet.":
"unet."}}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, MinLen
from torch import nn

from panconv.api import Model

# --------------------------------------------------------------------------- noise schedules, q(x_t | x_0)


def linear_betas(timesteps: int) -> np.ndarray:
    """Ho et al.'s linear schedule, beta_1 = 1e-4 to beta_T = 0.02 at T = 1000, scaled by 1000 / T for other T
    (guided-diffusion's extension, so that the schedule keeps its shape)."""
    scale = 1000 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021's cosine schedule: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi / 2) (Eq. 17),
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1) clipped at ``max_beta``."""
    f = np.cos((np.arange(timesteps + 1, dtype=np.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta)


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped to broadcast over ``like`` (one value per sample)."""
    return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion(nn.Module):
    """The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. Eq. 4) and the
    ancestral sampler of p(x_{t-1} | x_t) with the epsilon parameterisation (Algorithm 2).

    Steps are 0-based as in guided-diffusion: ``t = 0`` is the first noising step (Ho et al.'s t = 1). The tables
    are non-persistent buffers (rebuilt from ``timesteps`` and ``schedule``, never stored in checkpoints).
    ``variance``: the reverse-process variance, ``"posterior"`` (beta tilde, "fixed small") or ``"beta"``.
    """

    def __init__(self, timesteps: Annotated[int, Ge(1)] = 1000, schedule: Literal["linear", "cosine"] = "linear",
                 variance: Literal["posterior", "beta"] = "posterior"):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        self.timesteps, self.schedule, self.variance = timesteps, schedule, variance
        betas = linear_betas(timesteps) if schedule == "linear" else cosine_betas(timesteps)
        if betas.max() >= 1:
            raise ValueError(f"the linear schedule's beta_T = 0.02 * 1000 / T reaches 1 below 21 steps: "
                             f"timesteps={timesteps} is too few (use >= 21 or the cosine schedule)")
        alpha_bar = np.cumprod(1.0 - betas)
        alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
        posterior = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)  # beta tilde (Eq. 7)
        tables = {"betas": betas, "alphas_cumprod": alpha_bar, "sqrt_alphas_cumprod": np.sqrt(alpha_bar),
                  "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alpha_bar),
                  "posterior_variance": posterior}
        for name, value in tables.items():  # float64 tables, as the reference implementations keep them
            self.register_buffer(name, torch.from_numpy(value), persistent=False)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Eq. 4 reparameterised); ``t``: (N,) steps."""
        signal, sigma = _gather(self.sqrt_alphas_cumprod, t, x0), _gather(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return signal * x0 + sigma * noise

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The closed form of q(x_t | x_0): its mean and (per-element) variance."""
        return _gather(self.sqrt_alphas_cumprod, t, x0) * x0, _gather(1.0 - self.alphas_cumprod, t, x0).expand_as(x0)

    def p_step(self, eps: torch.Tensor, x_t: torch.Tensor, t: int, generator: torch.Generator | None = None):
        """One ancestral step x_t -> x_{t-1} from the predicted noise (Algorithm 2, line 4)."""
        beta, alpha_bar = float(self.betas[t]), float(self.alphas_cumprod[t])
        mean = (x_t - beta / math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(1.0 - beta)
        if t == 0:
            return mean
        var = float(self.posterior_variance[t]) if self.variance == "posterior" else beta
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return mean + math.sqrt(var) * noise

    @torch.no_grad()
    def sample(self, denoiser, shape: Sequence[int], generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """Draw ``shape`` samples: x_T ~ N(0, I), then T ancestral steps with ``denoiser(x_t, t) -> eps``."""
        x = torch.randn(tuple(shape), generator=generator, device=device)
        for t in reversed(range(self.timesteps)):
            steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x = self.p_step(denoiser(x, steps), x, t, generator)
        return x


# --------------------------------------------------------------------------- U-Net blocks


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) steps: [cos(t f_i), sin(t f_i)], f_i = max_period^(-i / half)
    (the Transformer's position encoding; ADM's order, cosines first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (ADM's normalisation, 32 groups)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer (the last convolution of each residual branch and of the U-Net, as in ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Downsample(nn.Module):
    """Halve the resolution: a strided 3x3 convolution, or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then an optional 3x3 convolution."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(nn.Module):
    """The time-conditioned residual block: GN-SiLU-conv, add (or scale-shift by, with ``scale_shift``) the
    projected step embedding, GN-SiLU-dropout-conv (zero-initialised), plus a skip (1x1 conv if the width
    changes). ``up``/``down``: the block also re-samples (ADM's "resblock_updown"), both branches alike."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, dropout: float = 0.0,
                 scale_shift: bool = True, up: bool = False, down: bool = False, groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        resample = (lambda: Upsample(channels, False)) if up else (lambda: Downsample(channels, False))
        self.h_upd = resample() if self.updown else nn.Identity()
        self.x_upd = resample() if self.updown else nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if scale_shift
                                                             else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:  # re-sample between the activation and the first convolution
            h = self.in_layers[2](self.h_upd(self.in_layers[:2](x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:  # FiLM-like: GN(h) * (1 + scale) + shift
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the positions of a feature map, pre-GN, residual; zero-initialised output
    projection. ADM's ("legacy") head layout: the 1x1 qkv projection's channels are split into heads first, then
    into q, k, v; scores scaled by 1/sqrt(head width)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, groups: int = 32):
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels={num_head_channels}")
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise ValueError(f"{channels} channels are not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # (B, heads * 3 * ch, T)
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, -1).split(ch, dim=1)
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k).float() / math.sqrt(ch), dim=-1).type(q.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """A U-Net block: layers applied in turn, residual blocks also given the step embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


# --------------------------------------------------------------------------- the U-Net


class UNet(nn.Module):
    """ADM's U-Net (Dhariwal & Nichol 2021, Sec. 3): per level ``num_res_blocks`` residual blocks (attention after
    each where the down-sampling factor is in ``attention_resolutions``), down-sampling between levels; a middle
    block (res-attention-res); the decoder mirrors it with one block more per level, each taking the matching
    encoder output by concatenation. Step embedding: sinusoidal -> Linear-SiLU-Linear (4x ``model_channels``).

    ``forward(x, t) -> eps`` (``out_channels``; twice the input channels with ``learn_sigma``);
    ``block_features(x, t, blocks)``: the outputs of the 1-based blocks (see the module docstring).
    """

    def __init__(self, in_channels: int = 3, model_channels: int = 128, out_channels: int = 3,
                 num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (16, 8), dropout: float = 0.0,
                 channel_mult: Sequence[int] = (1, 2, 2, 2), conv_resample: bool = True, num_heads: int = 1,
                 num_head_channels: int = -1, scale_shift: bool = True, resblock_updown: bool = False,
                 groups: int = 32):
        super().__init__()
        self.model_channels = model_channels
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        res = dict(emb_channels=emb, dropout=dropout, scale_shift=scale_shift, groups=groups)
        attn = dict(num_heads=num_heads, num_head_channels=num_head_channels, groups=groups)
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds, info = [ch], 1, [(ch, 1)]
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, out_channels=int(mult * model_channels), **res)]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
                info.append((ch, ds))
            if level != len(channel_mult) - 1:
                down = ResBlock(ch, down=True, **res) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepSequential(down))
                ds *= 2
                skips.append(ch)
                info.append((ch, ds))
        self.middle_block = TimestepSequential(ResBlock(ch, **res), AttentionBlock(ch, **attn), ResBlock(ch, **res))
        info.append((ch, ds))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), out_channels=int(model_channels * mult), **res)]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, up=True, **res) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
                info.append((ch, ds))
        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))
        #: (channels, down-sampling factor) of the output of each block, block b at index b - 1
        self.block_info = info
        self.down_factor = 2 ** (len(channel_mult) - 1)

    @property
    def num_blocks(self) -> int:
        return len(self.block_info)

    def _walk(self, x: torch.Tensor, t: torch.Tensor, last: int):
        """Yield (block number, output) up to block ``last``, then the network output as block ``0``."""
        if x.shape[-1] % self.down_factor or x.shape[-2] % self.down_factor:
            raise ValueError(f"the U-Net needs an input side divisible by {self.down_factor}, got {tuple(x.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        hs, b, h = [], 0, x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
            b += 1
            yield b, h
            if b >= last:
                return
        h = self.middle_block(h, emb)
        b += 1
        yield b, h
        for module in self.output_blocks:
            if b >= last:
                return
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
            b += 1
            yield b, h
        yield 0, self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        for b, h in self._walk(x, t, self.num_blocks + 1):
            if b == 0:
                return h
        raise AssertionError("unreachable")

    def block_features(self, x: torch.Tensor, t: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """The outputs of the 1-based ``blocks`` (in the order asked), running the U-Net only as far as needed."""
        bad = [b for b in blocks if not 1 <= b <= self.num_blocks]
        if bad:
            raise ValueError(f"block numbers must be in 1..{self.num_blocks} for this U-Net, got {bad}")
        found = {b: h for b, h in self._walk(x, t, max(blocks)) if b in blocks}
        return [found[b] for b in blocks]


def build_unet(in_channels: int, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
               attention_resolutions: Sequence[int], num_heads: int, num_head_channels: int, dropout: float,
               scale_shift: bool, resblock_updown: bool, learn_sigma: bool, norm_groups: int) -> UNet:
    """The U-Net of a :class:`DDPM`-style constructor's arguments, with their range checks."""
    widths = [int(m * model_channels) for m in channel_mult]
    if any(w % norm_groups for w in widths):
        raise ValueError(f"every level's width {widths} must be divisible by norm_groups={norm_groups}")
    return UNet(in_channels, model_channels, in_channels * (2 if learn_sigma else 1), num_res_blocks,
                tuple(attention_resolutions), dropout, tuple(channel_mult), True, num_heads, num_head_channels,
                scale_shift, resblock_updown, norm_groups)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# --------------------------------------------------------------------------- the trainable model


class DDPM(Model):
    """A DDPM trained with L_simple = E ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2
    (Ho et al. Eq. 14; t uniform, eps ~ N(0, I)). The U-Net (ADM, :class:`UNet`) is ``self.unet``: checkpoint
    prefix ``unet.`` (``vision.DiffusionFeatures`` takes it with ``run.init_from``).

    Images come as the data set gives them (``vision.MNIST``: normalised with MNIST's mean/std, so roughly
    zero-mean; the forward process does not need them in [-1, 1]). ``image_size`` must be divisible by
    2^(len(channel_mult) - 1). ``attention_resolutions``: the down-sampling factors with attention (ADM's
    ``attention_resolutions`` 32,16,8 at 256^2 are factors 8, 16, 32). ``learn_sigma``: ADM's extra output
    channels for the variance (kept for the published configuration and its parameter count; this model trains
    L_simple only, so they stay untrained and sampling uses the fixed variance).

    ``forward`` in train mode draws t and eps from the global generator; in eval mode from one seeded with
    ``eval_seed`` (the same noise for every evaluation: comparable validation losses), and then also returns
    ``features``: the output of block ``feature_block`` (default: the first decoder block) at step ``feature_t``
    (default T / 20), averaged over positions, for the linear-probe and k-NN evaluators.
    ``predict -> {"features": (N, C), "eps_mse": (N,)}``.
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 1, model_channels: Annotated[int, Ge(1)] = 16,
                 channel_mult: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (1, 2, 2),
                 num_res_blocks: Annotated[int, Ge(1)] = 1,
                 attention_resolutions: tuple[Annotated[int, Ge(1)], ...] = (4,),
                 num_heads: Annotated[int, Ge(1)] = 1, num_head_channels: Annotated[int, Ge(-1)] = -1,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0, scale_shift: bool = True,
                 resblock_updown: bool = False, learn_sigma: bool = False, norm_groups: Annotated[int, Ge(1)] = 8,
                 timesteps: Annotated[int, Ge(1)] = 1000, schedule: Literal["linear", "cosine"] = "linear",
                 feature_block: Annotated[int, Ge(1)] | None = None, feature_t: Annotated[int, Ge(0)] | None = None,
                 eval_seed: Annotated[int, Interval(ge=0, lt=2**63)] = 0):
        super().__init__()
        if num_head_channels == 0:
            raise ValueError("num_head_channels must be -1 (use num_heads) or >= 1")
        self.unet = build_unet(in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
                               num_heads, num_head_channels, dropout, scale_shift, resblock_updown, learn_sigma,
                               norm_groups)
        self.diffusion = GaussianDiffusion(timesteps, schedule)
        self.in_channels, self.eval_seed = in_channels, eval_seed
        # default: the first decoder block after the middle one (the paper picks an early decoder block)
        self.feature_block = feature_block or min(len(self.unet.input_blocks) + 2, self.unet.num_blocks)
        if not 1 <= self.feature_block <= self.unet.num_blocks:
            raise ValueError(f"feature_block must be in 1..{self.unet.num_blocks}, got {self.feature_block}")
        feature_t = timesteps // 20 if feature_t is None else feature_t  # 50 of 1000 steps
        if feature_t >= timesteps:
            raise ValueError(f"feature_t must be < timesteps ({timesteps}), got {feature_t}")
        self.feature_t = feature_t

    @classmethod
    def example_config(cls) -> dict:
        return dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                    norm_groups=4, timesteps=30, feature_t=3)

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.randn(batch_size, self.in_channels, 8, 8), "labels": torch.arange(batch_size) % 10}

    def noise_and_steps(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eps ~ N(0, I) and t ~ U{0..T-1}: global generator in training, seeded (``eval_seed``) in eval mode."""
        g = None if self.training else _generator(self.eval_seed, x0.device)
        t = torch.randint(0, self.diffusion.timesteps, (x0.shape[0],), generator=g, device=x0.device)
        return torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype), t

    def forward(self, batch: dict | torch.Tensor) -> dict:
        x0 = batch["inputs"] if isinstance(batch, dict) else batch
        if x0.dim() != 4 or x0.shape[1] != self.in_channels:
            raise ValueError(f"DDPM expects images (N, {self.in_channels}, H, W), got {tuple(x0.shape)}")
        noise, t = self.noise_and_steps(x0)
        out = {"eps": self.unet(self.diffusion.q_sample(x0, t, noise), t)[:, :self.in_channels], "noise": noise}
        if not self.training:
            out["features"] = self.features(x0)
        return out

    def features(self, x0: torch.Tensor, block: int | None = None, t: int | None = None,
                 pool: bool = True) -> torch.Tensor:
        """The paper's features: x_0 noised to step ``t`` (seeded noise), the U-Net's block ``block`` output,
        averaged over positions (``pool``) -> (N, C); defaults ``feature_block``, ``feature_t``."""
        t = self.feature_t if t is None else t
        noise = torch.randn(x0.shape, generator=_generator(self.eval_seed + 1, x0.device), device=x0.device,
                            dtype=x0.dtype)
        steps = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
        h = self.unet.block_features(self.diffusion.q_sample(x0, steps, noise), steps,
                                     [block or self.feature_block])[0]
        return h.mean((-2, -1)) if pool else h

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(outputs["eps"], outputs["noise"])}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict:
        mse = (outputs["eps"] - outputs["noise"]).pow(2).flatten(1).mean(1)
        return {"eps_mse": mse, **({"features": outputs["features"]} if "features" in outputs else {})}

    @torch.no_grad()
    def sample(self, n: int, image_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, C, S, S)`` by ancestral sampling over all ``timesteps`` steps (Algorithm 2)."""
        device = next(self.parameters()).device
        return self.diffusion.sample(lambda x, t: self.unet(x, t)[:, :self.in_channels],
                                     (n, self.in_channels, image_size, image_size), generator, device)
