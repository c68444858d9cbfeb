"""UniRepLKNet's audio pathway: a spectrogram as a one-channel image -> panconv-vision's UniRepLKNet.

UniRepLKNet (Ding et al., CVPR 2024, "A Universal Perception Large-Kernel ConvNet for Audio, Video,
Point Cloud, Time-Series and Image Recognition"; journal version "Scaling Up Your Kernels", TPAMI 2025)
feeds audio to the *same* large-kernel ConvNet as images. The official code (AILab-CVC/UniRepLKNet,
``Audio/src/models/ast_models.py``, Speech Commands V2) computes a Kaldi-compatible log-mel filterbank
(128 bins, 25 ms / 10 ms), pads or crops it to a fixed number of frames (``audio_length=128``),
normalises it, and reads the ``(frames, bins)`` matrix as a ``1 x bins x frames`` image
(``x.unsqueeze(1).transpose(2, 3)``: frequency is the image height, time its width) for a UniRepLKNet
with ``in_chans=1``; the classifier is a LayerNorm + linear layer on the pooled last stage.

This module is that embedding map (the front-end + pad/crop + transpose), feeding ``panconv_vision``'s
``UniRepLKNet``; it returns the stage outputs (a backbone), so the classifier is a config's head
(``core.LinearClsHead`` after a ``vision.PoolNorm`` neck is the official LayerNorm + linear). Differences
from the official recipe, all configurable: the front-end normalises each utterance (mean/std over its
frames) instead of dividing by fixed data-set statistics, and SpecAugment (2 frequency masks of up to
``n_mels // 8`` bins, 2 time masks of up to 5 %) replaces the official 48-bin/48-frame masks and mixup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from panconv.api import Backbone

from ..transforms import SpecAugment, build_frontend
from .layers import waveforms_or_features

#: the kernel sizes vision.UniRepLKNet accepts per block (its BlockKernel; 0: no block)
BlockKernel = Literal[0, 3, 5, 7, 9, 11, 13, 15, 17]


class UniRepLKNetAudio(Backbone):
    """Waveforms ``(N, T)`` or features ``(N, frames, n_mels)`` -> ``[(N, dims[i], H_i, W_i)]`` (module docstring).

    Args:
        sample_rate, n_mels: of the front-end (``frontend``: ``"fbank"`` = Kaldi filterbank as the official
            code, ``"logmel"``, or None when ``data.transforms`` computed the features).
        target_frames: frames the spectrogram is zero-padded or cropped to (the image width; official 128).
        spec_augment: SpecAugment in training mode.
        depths, dims, kernel_sizes, drop_path_rate: the UniRepLKNet (panconv-vision's ``vision.UniRepLKNet``).
    """

    metadata_inputs = ("sample_rate",)

    def __init__(self, sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000,
                 n_mels: Annotated[int, Ge(8)] = 128, frontend: str | None = "fbank",
                 target_frames: Annotated[int, Ge(8)] = 128, spec_augment: bool = True,
                 depths: Sequence[Annotated[int, Ge(0)]] = (3, 3, 27, 3),
                 dims: Sequence[Annotated[int, Ge(4)]] = (96, 192, 384, 768),
                 kernel_sizes: Sequence[Sequence[BlockKernel]] | None = None,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        try:
            from panconv_vision.models.unireplknet import UniRepLKNet
        except ImportError as exc:
            raise ImportError("audio.UniRepLKNetAudio needs panconv-vision (its UniRepLKNet), which is not "
                              "installed: pip install 'panconv-audio[unireplknet]' (from a source checkout: "
                              "pip install ./plugins/vision)") from exc

        if n_mels < 8 or target_frames < 8:
            raise ValueError(f"UniRepLKNetAudio: n_mels and target_frames must be >= 8, got {n_mels}, {target_frames}")
        self.frontend = build_frontend(frontend, sample_rate, n_mels) if frontend is not None else None
        self.specaug = SpecAugment(2, n_mels // 8, 2, 0.05) if spec_augment else None
        self.sample_rate, self.n_mels, self.target_frames = sample_rate, n_mels, target_frames
        kernels = None if kernel_sizes is None else tuple(tuple(k) for k in kernel_sizes)
        self.backbone = UniRepLKNet(depths=tuple(depths), dims=tuple(dims), in_channels=1, kernel_sizes=kernels,
                                    drop_path_rate=drop_path_rate)
        self.feature_info = list(self.backbone.feature_info)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """The embedding map: features ``(N, frames, n_mels)`` -> ``(N, 1, n_mels, target_frames)``."""
        x = inputs
        if waveforms_or_features(x, self.frontend, self.n_mels, "UniRepLKNetAudio"):
            with torch.no_grad():
                x, _ = self.frontend(x, None)
        if self.specaug is not None and self.training:
            x, _ = self.specaug(x, None)
        frames = x.shape[1]
        if frames < self.target_frames:  # zero-pad at the end (the official ZeroPad2d((0, 0, 0, p)))
            x = F.pad(x, (0, 0, 0, self.target_frames - frames))
        x = x[:, : self.target_frames]
        return x.unsqueeze(1).transpose(2, 3)

    def forward(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(self.embed(inputs))

    @torch.no_grad()
    def reparameterize(self) -> UniRepLKNetAudio:
        """The backbone's deploy form (``UniRepLKNet.reparameterize``: one large kernel per block); returns self."""
        self.backbone.reparameterize()
        return self

    @classmethod
    def example_config(cls) -> dict:
        return dict(sample_rate=8000, n_mels=32, target_frames=32, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16],
                    kernel_sizes=[[3], [7], [5], [3]])

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        wav = torch.randn(batch_size, self.sample_rate // 4, generator=g) * 0.1
        if self.frontend is None:  # features, as a data.transforms front-end would give them
            return torch.randn(batch_size, self.target_frames - 3, self.n_mels, generator=g)
        return wav


__all__ = ["UniRepLKNetAudio"]
