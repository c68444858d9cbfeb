"""UniRepLKNet's video pathway: a clip laid out as one image -> UniRepLKNet (``unireplknet.py``).

UniRepLKNet (Ding et al., CVPR 2024; journal version "Scaling Up Your Kernels", TPAMI 2025) recognises
video with the *same* 2-D large-kernel ConvNet as images, by turning a clip into one image. Two layouts:

* ``"channels"`` (frames to channels): the ``T`` frames of ``C`` channels are stacked on the channel axis,
  ``(T, C, H, W) -> (T * C, H, W)`` (frame ``t``'s channels are ``t * C ... t * C + C - 1``), and the stem's
  first convolution takes ``T * C`` channels. Motion is then visible to the very first layer.
* ``"official"``: what the official Kinetics code does (AILab-CVC/UniRepLKNet,
  ``Video/engine_for_finetuning.py``: ``samples.reshape(B, C, H * 4, W * 4)`` on ``(B, C, T=16, H, W)``):
  a raw, row-major reshape of each channel's ``(T, H, W)`` block into ``(rows * H, T / rows * W)`` with
  ``rows`` the largest divisor of ``T`` not above ``sqrt(T)`` (4 x 4 for 16 frames). This is *not* a grid of
  frames: each image row holds ``T / rows`` consecutive rows of one frame side by side, and frame ``t`` fills
  image rows ``t * H / (T / rows) ...`` (the tests pin the exact index map). The stem keeps ``C`` channels.

The backbone returns the UniRepLKNet's stage outputs; a config's head classifies (``core.LinearClsHead``,
after a ``vision.PoolNorm`` neck for the official LayerNorm + linear).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Interval

from panconv.api import Backbone

from .unireplknet import BlockKernel, UniRepLKNet


def grid_rows(frames: int) -> int:
    """The largest divisor of ``frames`` not above ``sqrt(frames)`` (4 for 16 frames, as the official code)."""
    return max(r for r in range(1, math.isqrt(frames) + 1) if frames % r == 0)


class UniRepLKNetVideo(Backbone):
    """Clips ``(N, T, C, H, W)`` -> ``[(N, dims[i], H_i, W_i)]`` (module docstring).

    Args:
        num_frames, in_channels: clip length ``T`` and channels per frame ``C`` (filled from the data set).
        layout: ``"channels"`` (frames to channels) or ``"official"`` (the official code's raw reshape).
        depths, dims, kernel_sizes, drop_path_rate: the UniRepLKNet (``vision.UniRepLKNet``).
    """

    #: ``num_frames`` is the config's (default 16, the official clip length): the vision backbones' contract fills
    #: only ``in_channels`` from the data
    metadata_inputs = ("in_channels",)
    #: the classifier of the official code (UniRepLKNet's: pool, LayerNorm, linear), as for images
    paper_head = UniRepLKNet.paper_head

    def __init__(self, num_frames: Annotated[int, Ge(1)] = 16, in_channels: Annotated[int, Ge(1)] = 3,
                 layout: Literal["channels", "official"] = "channels",
                 depths: Sequence[Annotated[int, Ge(0)]] = (3, 3, 27, 3),
                 dims: Sequence[Annotated[int, Ge(4)]] = (128, 256, 512, 1024),
                 kernel_sizes: tuple[tuple[BlockKernel, ...], ...] | None = None,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if layout not in ("channels", "official"):
            raise ValueError(f"UniRepLKNetVideo: layout must be 'channels' or 'official', got {layout!r}")
        if num_frames < 1 or in_channels < 1:
            raise ValueError(f"UniRepLKNetVideo: need num_frames >= 1 and in_channels >= 1, got {num_frames}, "
                             f"{in_channels}")
        self.num_frames, self.in_channels, self.layout = num_frames, in_channels, layout
        kernels = None if kernel_sizes is None else tuple(tuple(k) for k in kernel_sizes)
        stem_in = num_frames * in_channels if layout == "channels" else in_channels
        self.backbone = UniRepLKNet(depths=tuple(depths), dims=tuple(dims), in_channels=stem_in, kernel_sizes=kernels,
                                    drop_path_rate=drop_path_rate)
        self.feature_info = list(self.backbone.feature_info)

    def to_image(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, T, C, H, W)`` -> ``(N, T * C, H, W)`` (channels) or ``(N, C, rows * H, T / rows * W)`` (official)."""
        if clips.dim() != 5 or clips.shape[1] != self.num_frames or clips.shape[2] != self.in_channels:
            raise ValueError(f"UniRepLKNetVideo: expects clips (N, {self.num_frames}, {self.in_channels}, H, W), "
                             f"got {tuple(clips.shape)}")
        n, t, c, h, w = clips.shape
        if self.layout == "channels":
            return clips.reshape(n, t * c, h, w)
        rows = grid_rows(t)
        return clips.transpose(1, 2).reshape(n, c, rows * h, t // rows * w)

    def forward(self, clips: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(self.to_image(clips))

    @torch.no_grad()
    def reparameterize(self) -> UniRepLKNetVideo:
        """The backbone's deploy form (``UniRepLKNet.reparameterize``); returns self."""
        self.backbone.reparameterize()
        return self

    @classmethod
    def example_config(cls) -> dict:
        # one frame, so that the vision plugin's generic backbone checks (the first conv takes in_channels, the
        # output width is the input width over the reduction) apply; tests/test_unireplknet_video.py covers clips
        return dict(num_frames=1, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16], kernel_sizes=[[3], [7], [5], [3]])

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.rand(batch_size, self.num_frames, self.in_channels, 64, 64, generator=g)


__all__ = ["UniRepLKNetVideo", "grid_rows"]
