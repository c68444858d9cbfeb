"""LAMP (Wu et al. 2024, "LAMP: Learn A Motion Pattern for Few-Shot-Based Video Generation", CVPR; official
code RQ-Wu/LAMP): an image diffusion U-Net inflated to video and tuned on a handful of clips of one motion.

Read top to bottom: the temporal layers LAMP adds to the image U-Net (the gated causal 1-D temporal convolution
after every 2-D convolution, ``InflatedConv3d`` in the official ``resnet.py``; the temporal self-attention after
every spatial attention, ``attn_temp``), the first-frame spatial attention (``SparseCausalAttention``: every
frame's queries attend to the keys/values of the first frame) with its tunable query projection, the inflated
U-Net walk, the DDIM sampler with the paper's first-frame conditioning and shared-noise initialisation, then
:class:`LAMP`, the model the engine tunes, and :class:`MotionDirection`, the evaluator of the learned motion.

The paper's three ideas, where they are here:

* **First-frame conditioning** (Sec. 3.2): in training the first frame is kept clean in the noised video and the
  loss covers frames 2..F only (official ``train_lamp.py``); in sampling the first frame is the given image and
  only frames 2..F are denoised (``pipeline_lamp.py``).
* **Temporal-spatial motion layers** (Sec. 3.3): the 1-D temporal convolution with a sigmoid gate
  (``y = x + conv1d_causal(x) * sigmoid(conv_gate(x))``) after each 2-D convolution, the temporal attention, and
  the first-frame spatial attention. Only these and the spatial attention's query projections are tuned (the
  official config's ``trainable_modules``: ``conv1d``, ``conv_gate``, ``attn_temp``, ``attn1.to_q``).
* **Shared-noise sampling** (Sec. 3.4): the initial noise of frame f >= 2 is ``r eps_1 + (1 - r) eps_f``
  (r = 0.2, ``base_ratio`` in the official pipeline), a component common to every frame.

Scaled down here (no Stable Diffusion offline): pixel space instead of the SD VAE's latents, no text encoder
(one motion, one "prompt"), the small ADM U-Net of :mod:`.ddpm` pre-trained on 16x16 MNIST digits
(``examples/vision_ddpm_mnist.yaml``) instead of SD-v1.4, Moving-MNIST clips instead of the paper's videos.
Departures from the official code, all so that the inflated model equals the image model frame by frame at
initialisation (tested): the temporal convolution's weights and the temporal attention's output bias start at
zero (official: PyTorch's default init for ``conv1d``, zero weight but default bias for ``attn_temp.to_out``),
and the query projection is tuned as a zero-initialised additive update of the pre-trained one (equivalent to
tuning ``to_q`` from its pre-trained value, but the pre-trained tensor stays under ``unet.``). The official
pipeline's AdaIN of later frames to the first frame's statistics is optional (``adain``).

Checkpoint prefixes: ``unet.`` is exactly :class:`~.ddpm.DDPM`'s U-Net (start from a DDPM run with
``run: {init_from: {path: work_dirs/vision_ddpm_mnist/epoch_1.pth, map: {"unet.": "unet."}}}``); the motion
layers are under ``temporal_convs.``, ``temporal_attns.`` and ``query_updates.``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import Model

from ..evaluators.motion import MotionDirection, centre_of_mass, direction_vector, displacement
from .ddpm import AttentionBlock, Downsample, GaussianDiffusion, ResBlock, Upsample, build_unet, timestep_embedding

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the normalisation the DDPM was pre-trained with (vision.MNIST)

# --------------------------------------------------------------------------- temporal layers


def _frames_last(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B*F, C, H, W)`` -> ``(B*H*W, C, F)``: one sequence over frames per position."""
    bf, c, h, w = x.shape
    return x.view(bf // frames, frames, c, h, w).permute(0, 3, 4, 2, 1).reshape(-1, c, frames)


def _frames_back(y: torch.Tensor, frames: int, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`_frames_last`."""
    bf, c, h, w = shape
    return y.view(bf // frames, h, w, c, frames).permute(0, 4, 3, 1, 2).reshape(bf, c, h, w)


class TemporalConv(nn.Module):
    """LAMP's temporal convolution after a 2-D convolution (official ``InflatedConv3d``): a causal 1-D convolution
    over frames (kernel 3, frame f sees f-2..f), gated per position by ``sigmoid(conv_gate(x))`` (a 3x3
    convolution to one channel), added to its input. Zero-initialised (gate and temporal weights): the identity."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv1d = nn.Conv1d(channels, channels, kernel_size)
        self.conv_gate = nn.Conv2d(channels, 1, 3, padding=1)
        for p in (*self.conv1d.parameters(), *self.conv_gate.parameters()):
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        seq = F.pad(_frames_last(x, frames), (self.conv1d.kernel_size[0] - 1, 0))  # causal: pad the past only
        return x + _frames_back(self.conv1d(seq), frames, x.shape) * torch.sigmoid(self.conv_gate(x))


class TemporalAttention(nn.Module):
    """Self-attention over the frames at each position (official ``attn_temp`` with its pre-LayerNorm
    ``norm_temp``), residual, multi-head, no bias on q/k/v; the output projection starts at zero."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels are not divisible by temporal num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        seq = _frames_last(x, frames).transpose(1, 2)  # (B*H*W, F, C)
        n, f, c = seq.shape
        q, k, v = self.to_qkv(self.norm(seq)).view(n, f, 3, self.num_heads, c // self.num_heads).unbind(2)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = seq + self.to_out(h.transpose(1, 2).reshape(n, f, c))
        return _frames_back(out.transpose(1, 2), frames, x.shape)


def first_frame_attention(block: AttentionBlock, query_update: nn.Module, x: torch.Tensor, frames: int,
                          first_frame: bool = True) -> torch.Tensor:
    """The image U-Net's spatial attention ``block`` on every frame, its queries ``W_q x + query_update(x)`` (the
    tuned query projection), keys and values from the first frame of each clip (official ``SparseCausalAttention``,
    ``key[:, [0] * video_length]``) when ``first_frame``, else from the frame itself (the image model per frame)."""
    bf, c, *spatial = x.shape
    xs = x.reshape(bf, c, -1)
    normed = block.norm(xs)
    heads, ch = block.num_heads, c // block.num_heads
    q, k, v = block.qkv(normed).reshape(bf * heads, 3 * ch, -1).split(ch, dim=1)  # ADM's head-major layout
    q = q + query_update(normed).reshape(bf * heads, ch, -1)
    if first_frame:
        def first(z):  # (B*F*heads, ch, N) -> the first frame's, repeated over the frames
            z = z.view(bf // frames, frames, heads, ch, -1)
            return z[:, :1].expand_as(z).reshape(bf * heads, ch, -1)
        k, v = first(k), first(v)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k).float() / math.sqrt(ch), dim=-1).type(q.dtype)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(bf, c, -1)
    return (xs + block.proj_out(h)).reshape(bf, c, *spatial)


# --------------------------------------------------------------------------- DDIM with LAMP's conditioning


def shared_noise(shape, ratio: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """The paper's shared-noise initialisation (Sec. 3.4): eps ~ N(0, I) of shape ``(B, F, ...)``, then frame
    f >= 2 gets ``ratio * eps_1 + (1 - ratio) * eps_f`` (official ``base_ratio`` = 0.2)."""
    eps = torch.randn(tuple(shape), generator=generator, device=device)
    eps[:, 1:] = ratio * eps[:, :1] + (1 - ratio) * eps[:, 1:]
    return eps


def adain(x: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation of ``x`` to ``ref``'s per-channel mean and std (official pipeline)."""
    dims = tuple(range(2, x.dim()))
    mu, sd = x.mean(dims, keepdim=True), x.std(dims, keepdim=True) + eps
    return (x - mu) / sd * (ref.std(dims, keepdim=True) + eps) + ref.mean(dims, keepdim=True)


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """``steps`` evenly spaced steps of ``0..total-1``, descending (DDIM's "uniform" skip, ``total - 1`` first)."""
    return sorted({round(i * (total - 1) / max(steps - 1, 1)) for i in range(steps)}, reverse=True)


# --------------------------------------------------------------------------- the model


class LAMP(Model):
    """LAMP on a small pixel-space DDPM (see the module docstring for what is scaled down).

    ``forward`` takes ``{"inputs": (B, F, C, H, W)}`` clips (Moving-MNIST: floats in [0, 1], normalised here with
    ``normalize`` = MNIST's mean/std, the DDPM's pre-training statistics; frames resized to ``frame_size`` by area
    averaging when given). Training (the official ``train_lamp.py``): t ~ U, eps ~ N(0, I) on every frame, the
    first frame replaced by its clean value, the epsilon loss on frames 2..F only. ``motion``: tune on the clips
    of that direction label only (the "handful of clips of one motion pattern"; the others in a batch are
    dropped; None: all clips). ``tune``: ``"motion"`` freezes the image U-Net and trains the paper's parts (temporal
    convolutions and attention, the spatial attention's query projections); ``"all"`` trains everything.

    In eval mode ``forward`` also generates (``generate``): each clip's first frame is given, the rest sampled by
    DDIM (``sample_steps``, eta 0) from the shared-noise initialisation (``noise_ratio``), seeded (``eval_seed``).
    ``predict -> {"eps_mse", "displacement"}``: the centre-of-mass displacement (dy, dx) in pixels of the
    generated clip's last frame from its first (for :class:`MotionDirection`).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 1, model_channels: Annotated[int, Ge(1)] = 16,
                 channel_mult: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (1, 2, 2),
                 num_res_blocks: Annotated[int, Ge(1)] = 1,
                 attention_resolutions: tuple[Annotated[int, Ge(1)], ...] = (4,),
                 num_heads: Annotated[int, Ge(1)] = 1, num_head_channels: Annotated[int, Ge(-1)] = -1,
                 norm_groups: Annotated[int, Ge(1)] = 8, timesteps: Annotated[int, Ge(1)] = 1000,
                 schedule: Literal["linear", "cosine"] = "linear", temporal_heads: Annotated[int, Ge(1)] = 1,
                 first_frame_attention: bool = True, tune: Literal["motion", "all"] = "motion",
                 motion: Annotated[int, Ge(0)] | None = None, frame_size: Annotated[int, Ge(1)] | None = None,
                 normalize: tuple[Annotated[float, Interval(ge=-1e3, le=1e3)], Annotated[float, Gt(0)]] | None = (
                     MNIST_MEAN, MNIST_STD),
                 noise_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.2,
                 sample_steps: Annotated[int, Ge(1)] = 25, generate: bool = True, adain: bool = False,
                 eval_seed: Annotated[int, Interval(ge=0, lt=2**63)] = 0):
        super().__init__()
        if tune not in ("motion", "all"):
            raise ValueError(f"tune must be 'motion' or 'all', got {tune!r}")
        if normalize is not None and (len(normalize) != 2 or normalize[1] <= 0):
            raise ValueError(f"normalize must be (mean, std > 0) or null, got {normalize!r}")
        if num_head_channels == 0:
            raise ValueError("num_head_channels must be -1 (use num_heads) or >= 1")
        if sample_steps > timesteps:
            raise ValueError(f"sample_steps ({sample_steps}) must be <= timesteps ({timesteps})")
        self.unet = build_unet(in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
                               num_heads, num_head_channels, 0.0, True, False, False, norm_groups)
        self.diffusion = GaussianDiffusion(timesteps, schedule)
        self.temporal_convs, self.temporal_attns, self.query_updates = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for key, layer in self._layers():  # one temporal layer per 2-D convolution / spatial attention
            if isinstance(layer, ResBlock):
                width = layer.out_layers[-1].out_channels
                self.temporal_convs[key + "_conv1"] = TemporalConv(width)
                self.temporal_convs[key + "_conv2"] = TemporalConv(width)
            elif isinstance(layer, AttentionBlock):
                width = layer.proj_out.out_channels
                self.temporal_attns[key] = TemporalAttention(width, temporal_heads)
                self.query_updates[key] = nn.Conv1d(width, width, 1)
                nn.init.zeros_(self.query_updates[key].weight)
                nn.init.zeros_(self.query_updates[key].bias)
            elif isinstance(layer, nn.Conv2d | Downsample | Upsample):
                conv = layer if isinstance(layer, nn.Conv2d) else getattr(layer, "op", None) or layer.conv
                if isinstance(conv, nn.Conv2d):
                    self.temporal_convs[key] = TemporalConv(conv.out_channels)
        self.temporal_convs["out"] = TemporalConv(self.unet.out[-1].out_channels)
        self.tune = tune
        if tune == "motion":
            self.unet.requires_grad_(False)
        self.in_channels, self.first_frame_attention, self.motion = in_channels, first_frame_attention, motion
        self.frame_size, self.normalize, self.noise_ratio = frame_size, normalize, noise_ratio
        self.sample_steps, self.generate, self.adain, self.eval_seed = sample_steps, generate, adain, eval_seed

    @classmethod
    def example_config(cls) -> dict:
        return dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                    norm_groups=4, timesteps=30, sample_steps=3)

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.rand(batch_size, 3, self.in_channels, 8, 8), "labels": torch.arange(batch_size) % 8}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.tune == "motion":  # the frozen image U-Net never trains (no dropout/normalisation updates either)
            self.unet.eval()
        return self

    # ---- the inflated U-Net

    def _layers(self):
        """(key, layer) for every layer of the U-Net's blocks, in the order of the forward pass."""
        blocks = [(f"in{i}", b) for i, b in enumerate(self.unet.input_blocks)] + [("mid", self.unet.middle_block)]
        blocks += [(f"out{i}", b) for i, b in enumerate(self.unet.output_blocks)]
        for name, block in blocks:
            for j, layer in enumerate(block):
                yield f"{name}_{j}", layer

    def _resblock(self, block: ResBlock, key: str, x: torch.Tensor, emb: torch.Tensor, frames: int):
        """:class:`~.ddpm.ResBlock` per frame, each of its two convolutions followed by a temporal convolution."""
        h = block.in_layers(x)
        h = self.temporal_convs[key + "_conv1"](h, frames)
        scale, shift = block.emb_layers(emb).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = block.out_layers[1:3](block.out_layers[0](h) * (1 + scale) + shift)
        h = self.temporal_convs[key + "_conv2"](block.out_layers[3](h), frames)
        return block.skip_connection(x) + h

    def _block(self, name: str, block: nn.Module, h: torch.Tensor, emb: torch.Tensor, frames: int):
        for j, layer in enumerate(block):
            key = f"{name}_{j}"
            if isinstance(layer, ResBlock):
                h = self._resblock(layer, key, h, emb, frames)
            elif isinstance(layer, AttentionBlock):
                h = first_frame_attention(layer, self.query_updates[key], h, frames, self.first_frame_attention)
                h = self.temporal_attns[key](h, frames)
            else:
                h = layer(h)
                if key in self.temporal_convs:
                    h = self.temporal_convs[key](h, frames)
        return h

    def video_unet(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The inflated U-Net: ``x`` ``(B, F, C, H, W)``, ``t`` ``(B,)`` -> predicted noise ``(B, F, C, H, W)``."""
        b, f, c, hgt, wid = x.shape
        if hgt % self.unet.down_factor or wid % self.unet.down_factor:
            raise ValueError(f"LAMP needs a frame side divisible by {self.unet.down_factor}, got {(hgt, wid)}")
        emb = self.unet.time_embed(timestep_embedding(t.repeat_interleave(f), self.unet.model_channels))
        h, skips = x.reshape(b * f, c, hgt, wid), []
        for i, block in enumerate(self.unet.input_blocks):
            h = self._block(f"in{i}", block, h, emb, f)
            skips.append(h)
        h = self._block("mid", self.unet.middle_block, h, emb, f)
        for i, block in enumerate(self.unet.output_blocks):
            h = self._block(f"out{i}", block, torch.cat([h, skips.pop()], dim=1), emb, f)
        h = self.temporal_convs["out"](self.unet.out(h), f)
        return h.view(b, f, -1, hgt, wid)[:, :, :c]

    # ---- data, loss and sampling

    def prepare(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips as the data set gives them -> the model's space (resized, normalised)."""
        if clips.dim() != 5 or clips.shape[2] != self.in_channels or clips.shape[1] < 2:
            raise ValueError(f"LAMP expects clips (B, F >= 2, {self.in_channels}, H, W), got {tuple(clips.shape)}")
        b, f, c, h, w = clips.shape
        x = clips.float()
        if self.frame_size is not None and (h, w) != (self.frame_size, self.frame_size):
            x = F.interpolate(x.reshape(b * f, c, h, w), size=(self.frame_size,) * 2, mode="area")
            x = x.view(b, f, c, self.frame_size, self.frame_size)
        return (x - self.normalize[0]) / self.normalize[1] if self.normalize is not None else x

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of the normalisation (model space -> the data set's intensities)."""
        return x * self.normalize[1] + self.normalize[0] if self.normalize is not None else x

    def forward(self, batch: dict) -> dict:
        x0 = self.prepare(batch["inputs"])
        if self.motion is not None and self.training and "labels" in batch:
            x0 = x0[torch.as_tensor(batch["labels"], device=x0.device) == self.motion]
        g = None if self.training else torch.Generator(device=x0.device).manual_seed(self.eval_seed)
        noise = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        t = torch.randint(0, self.diffusion.timesteps, (x0.shape[0],), generator=g, device=x0.device)
        x_t = self.diffusion.q_sample(x0.flatten(1), t, noise.flatten(1)).view_as(x0)
        x_t = torch.cat([x0[:, :1], x_t[:, 1:]], dim=1)  # first-frame conditioning: the first frame stays clean
        eps = self.video_unet(x_t, t) if len(x0) else torch.zeros_like(x_t)  # no clip of the tuned motion
        out = {"eps": eps[:, 1:], "noise": noise[:, 1:]}
        if not self.training and self.generate:
            out["video"] = self.sample(x0[:, 0], x0.shape[1], torch.Generator(device=x0.device)
                                       .manual_seed(self.eval_seed + 1))
        return out

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if outputs["eps"].shape[0] == 0:  # no clip of the tuned motion in this batch
            return {"loss": sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0}
        return {"loss": F.mse_loss(outputs["eps"], outputs["noise"])}

    @torch.no_grad()
    def sample(self, first: torch.Tensor, frames: int, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        """Clips ``(B, frames, C, H, W)`` (model space) whose first frame is ``first`` ``(B, C, H, W)``: the other
        frames start from the shared noise and are denoised by DDIM (eta 0) over ``steps`` (``sample_steps``);
        the first frame stays the given one throughout (official ``pipeline_lamp.py``)."""
        shape = (first.shape[0], frames, *first.shape[1:])
        x = shared_noise(shape, self.noise_ratio, generator, first.device).to(first.dtype)
        x[:, 0] = first
        alpha_bar = self.diffusion.alphas_cumprod
        seq = ddim_timesteps(self.diffusion.timesteps, steps or self.sample_steps)
        for i, t in enumerate(seq):
            eps = self.video_unet(x, torch.full((shape[0],), t, device=x.device, dtype=torch.long))[:, 1:]
            a_t = float(alpha_bar[t])
            a_prev = float(alpha_bar[seq[i + 1]]) if i + 1 < len(seq) else 1.0
            x0_hat = (x[:, 1:] - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            x[:, 1:] = math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev) * eps
            if self.adain:
                x[:, 1:] = adain(x[:, 1:].flatten(0, 1), x[:, :1].expand_as(x[:, 1:]).flatten(0, 1)).view_as(x[:, 1:])
        return x

    def predict(self, outputs: dict, batch: dict | None = None) -> dict:
        mse = (outputs["eps"] - outputs["noise"]).pow(2).flatten(1).mean(1)
        result = {"eps_mse": mse}
        if "video" in outputs:
            result["displacement"] = displacement(self.to_pixels(outputs["video"]))
        return result


__all__ = ["LAMP", "MotionDirection", "TemporalAttention", "TemporalConv", "adain", "centre_of_mass",
           "ddim_timesteps", "direction_vector", "displacement", "first_frame_attention", "shared_noise"]
