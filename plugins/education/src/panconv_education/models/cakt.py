"""CAKT (Yang, Zhang et al., "Deep Knowledge Tracing with Learning Curves", ICDMW 2020;
the convolution-augmented knowledge tracing of the release ``Badstu/CAKT``).

Per step ``t`` (Sec. III of the paper):

1. every interaction ``x_t = q_t + num_skills * r_t`` is embedded in ``R^{H*H}`` and reshaped to an
   ``H x H`` frame (``H = 15``);
2. the frames of the last ``k`` (= 4) interactions on the same skill as ``q_t`` (``t`` included; oldest
   first, zero frames in front when there are fewer), each weighted by the learnable time decay
   ``exp(-(t - s) S)`` (``S`` initialised to 1), form a ``k x H x H`` clip: the student's learning curve
   on that skill;
3. a 3D-convolutional residual network (channels 1 -> 4 -> 8 -> 4 -> 1; each block two 3x3x3
   convolutions with batch norm, a squeeze-and-excitation gate over the ``k`` frames, a residual path
   with a 1x1x1 convolution when the width changes), averaged over the frames, gives ``c_t in R^{H*H}``;
4. an LSTM over all the embedded interactions gives ``h_t in R^{H*H}``;
5. gated fusion: ``g_c = sigmoid(W_c [c_t, h_t] + b_c)``, ``g_h = sigmoid(W_h [c_t, h_t] + b_h)``,
   ``z_t = g_c * c_t + g_h * h_t``;
6. a second LSTM over ``z``, then a linear layer to one logit per skill; the logit of ``q_{t+1}`` predicts
   ``r_{t+1}`` (binary cross-entropy).

Both LSTMs start from **zero** states (the release draws random initial states at every call; zeros make
the model deterministic). The convolutional network runs on the real steps of a batch only, so that its
batch-norm statistics do not count the padding (the release runs it on the padding too). Defaults: the
release's run settings (``H = 15``, ``k = 4``, one LSTM layer; batch 80, Adam lr 1e-3, weight decay 1e-5).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from .layers import KnowledgeTracingModel, gather_next, interaction_tokens


def same_skill_history(skills: torch.Tensor, k: int) -> torch.Tensor:
    """For every step ``t``, the steps of the last ``k`` interactions on skill ``q_t`` up to ``t``
    (``t`` last, oldest first), -1 where there are fewer than ``k``: ``(B, T, k)`` int64."""
    batch, steps = skills.shape
    position = torch.arange(steps, device=skills.device)
    earlier = torch.ones(steps, steps, dtype=torch.bool, device=skills.device).tril(-1)        # s < t
    same = (skills.unsqueeze(2) == skills.unsqueeze(1)) & earlier                              # (B, t, s)
    previous = torch.where(same, position, -1).amax(-1)                                        # (B, T)
    chain = [position.expand(batch, steps)]
    for _ in range(k - 1):
        last = chain[-1]
        chain.append(torch.where(last >= 0, previous.gather(1, last.clamp(min=0)), -1))
    return torch.stack(chain[::-1], dim=-1)


def frame_banded_weight(weight: torch.Tensor, frames: int) -> torch.Tensor:
    """The weight of a ``Conv3d`` (``(C_out, C_in, k_d, k_h, k_w)``, padding ``k_d // 2`` along the frames,
    stride 1) as a ``Conv2d`` weight over ``frames`` stacked frames: ``(C_out * frames, C_in * frames, k_h, k_w)``,
    block-banded: output frame ``d`` reads input frame ``d + j - k_d // 2`` with the kernel slice ``j``."""
    out_ch, in_ch, depth = weight.shape[:3]
    blocks = weight.new_zeros(out_ch, frames, in_ch, frames, *weight.shape[3:])
    for d in range(frames):
        for j in range(depth):
            s = d + j - depth // 2
            if 0 <= s < frames:
                blocks[:, d, :, s] = weight[:, :, j]
    return blocks.reshape(out_ch * frames, in_ch * frames, *weight.shape[3:])


def conv3d_over_frames(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(x)`` for ``x`` of shape ``(N, C, k, H, W)`` with few frames ``k``, computed as one 2D convolution
    over the ``C * k`` stacked frames (:func:`frame_banded_weight`): the same sums (equal up to float
    rounding), 2-3x faster than ``Conv3d`` on CPU at CAKT's sizes (1-8 channels, k = 4, 15 x 15)."""
    n, c, frames, h, w = x.shape
    weight = frame_banded_weight(conv.weight, frames)
    y = F.conv2d(x.reshape(n, c * frames, h, w), weight, conv.bias.repeat_interleave(frames)
                 if conv.bias is not None else None, padding=conv.padding[1:])
    return y.view(n, conv.out_channels, frames, *y.shape[2:])


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation over the frame axis: each frame's mean, an MLP ``k -> k/2 -> k``, a sigmoid
    gate per frame (shared across channels, as the release)."""

    def __init__(self, frames: int, reduction: int = 2):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(frames, frames // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(frames // reduction, frames, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, k, H, W)
        gate = self.fc(x.mean(dim=(3, 4)))
        return x * gate.unsqueeze(-1).unsqueeze(-1)


class ResidualBlock3d(nn.Module):
    """``relu(SE(bn(conv(relu(bn(conv(x)))))) + shortcut(x))`` with 3x3x3 convolutions (``nn.Conv3d`` weights,
    computed by :func:`conv3d_over_frames`)."""

    def __init__(self, in_channels: int, channels: int, frames: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)
        self.se = SqueezeExcite(frames)
        self.downsample = (nn.Sequential(nn.Conv3d(in_channels, channels, 1, bias=False), nn.BatchNorm3d(channels))
                           if in_channels != channels else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(conv3d_over_frames(x, self.conv1)))
        out = self.se(self.bn2(conv3d_over_frames(out, self.conv2)))
        if isinstance(self.downsample, nn.Identity):
            return self.relu(out + x)
        return self.relu(out + self.downsample[1](conv3d_over_frames(x, self.downsample[0])))


class CAKT(KnowledgeTracingModel):
    """Convolution-augmented knowledge tracing: learning-curve clips through a 3D ResNet, fused with an LSTM."""

    def __init__(self, num_skills: Annotated[int, Ge(1)], frame_size: Annotated[int, Ge(1)] = 15,
                 k_frames: Annotated[int, Ge(2)] = 4, channels: tuple[Annotated[int, Ge(1)], ...] = (4, 8, 4, 1),
                 num_layers: Annotated[int, Ge(1)] = 1):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or channels[-1] != 1:
            raise ValueError(f"CAKT: channels must end with 1 (one H x H map per step), got {list(channels)}")
        if k_frames < 2:
            raise ValueError(f"CAKT: k_frames must be at least 2, got {k_frames}")
        self.num_skills, self.frame_size, self.k_frames = num_skills, frame_size, k_frames
        dim = frame_size * frame_size
        self.embedding = nn.Embedding(2 * num_skills + 1, dim, padding_idx=0)
        self.decay = nn.Parameter(torch.ones(1))                                        # S
        self.lstm_front = nn.LSTM(dim, dim, num_layers=num_layers, batch_first=True)
        widths = (1, *channels)
        self.resnet = nn.Sequential(*[ResidualBlock3d(a, b, k_frames) for a, b in zip(widths[:-1], widths[1:])])
        self.gate_conv = nn.Linear(2 * dim, dim)
        self.gate_lstm = nn.Linear(2 * dim, dim)
        self.lstm_rear = nn.LSTM(dim, dim, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(dim, num_skills)
        for m in self.modules():  # the release's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Embedding):
                nn.init.kaiming_normal_(m.weight)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    @classmethod
    def example_config(cls) -> dict:
        return {"num_skills": 7, "frame_size": 3, "k_frames": 2, "channels": [2, 1]}

    def clips(self, embedded: torch.Tensor, skills: torch.Tensor) -> torch.Tensor:
        """The decayed learning-curve clip of every step: ``(B, T, k, H*H)``."""
        history = same_skill_history(skills, self.k_frames)                            # (B, T, k)
        batch, steps, k = history.shape
        frames = embedded.gather(1, history.clamp(min=0).view(batch, steps * k, 1).expand(-1, -1, embedded.shape[-1]))
        frames = frames.view(batch, steps, k, -1)
        gap = (torch.arange(steps, device=skills.device).view(1, steps, 1) - history).to(embedded.dtype)
        weight = torch.where(history >= 0, torch.exp(-gap * self.decay), torch.zeros_like(gap))
        return frames * weight.unsqueeze(-1)

    def forward(self, batch: dict) -> torch.Tensor:
        skills, valid = batch["skills"][:, :-1], batch["mask"][:, 1:]                  # steps with a next answer
        tokens = interaction_tokens(skills, batch["responses"][:, :-1], self.num_skills).masked_fill(~valid, 0)
        embedded = self.embedding(tokens)                                              # (B, T-1, H*H)
        h, _ = self.lstm_front(embedded)                                               # zero initial state
        c = torch.zeros_like(h)
        if valid.any():
            clips = self.clips(embedded, skills.masked_fill(~valid, 0))[valid]         # (N, k, H*H)
            size = self.frame_size
            clips = clips.reshape(-1, 1, self.k_frames, size, size)
            conv = self.resnet(clips).mean(dim=2)                                      # average over frames
            c = c.masked_scatter(valid.unsqueeze(-1), conv.reshape(-1, size * size))
        both = torch.cat([c, h], dim=-1)
        z = torch.sigmoid(self.gate_conv(both)) * c + torch.sigmoid(self.gate_lstm(both)) * h
        z, _ = self.lstm_rear(z)
        return gather_next(self.out(z), batch["skills"])
