"""UniRepLKNet's time-series pathway: an embedded series reshaped to a 2-D map -> panconv-vision's UniRepLKNet.

UniRepLKNet (Ding et al., CVPR 2024; journal version "Scaling Up Your Kernels", TPAMI 2025) feeds a time
series to the *same* large-kernel ConvNet as images. The official forecasting code (AILab-CVC/UniRepLKNet,
``Time-Series/models/Corrformer.py``, Global Temperature / Wind) normalises each series over time
(instance normalisation: subtract the mean, divide by the standard deviation, then a learnt per-channel
affine), embeds it with Corrformer's ``DataEmbedding`` (``TokenEmbedding``: a bias-free circular Conv1d of
kernel 3 from the ``K`` channels to ``d_model``, plus fixed sinusoidal positions, plus calendar and
station-position embeddings) into ``(L, d_model)``, and **reshapes that matrix, row-major, into a
one-channel square image** (48 steps x 768 = 192 x 192) for a UniRepLKNet with ``in_chans=1``, whose
output the Corrformer decoder then reads.

This module is that embedding map for classification and any per-series task: instance normalisation with
its affine, the token embedding and the sinusoidal positions (the calendar and station embeddings need
time stamps and station coordinates, which classification sets such as UCR's do not have), the row-major
reshape into ``1 x map_size x map_size`` (zero-padded at the end when ``L * d_model`` is not a square;
``ValueError`` when it does not fit) and ``panconv_vision``'s UniRepLKNet. It returns the stage outputs,
maps ``(N, C, h, w)`` of the image (their ``feature_info`` reductions are relative to the map, not to the
series); ``core.LinearClsHead`` (global average pool + linear) classifies. Padded (unequal-length) batches
are read as the zero-padded series they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Backbone

#: the kernel sizes vision.UniRepLKNet accepts per block (its BlockKernel; 0: no block)
BlockKernel = Literal[0, 3, 5, 7, 9, 11, 13, 15, 17]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """``(length, dim)``: sin on even, cos on odd channels, frequencies ``10000^(-2i/dim)`` (Transformer)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return pe


class UniRepLKNetSeries(Backbone):
    """``(N, L, C)`` series -> ``[(N, dims[i], h_i, w_i)]`` (module docstring).

    Args:
        in_channels: channels ``C`` of the series (filled from the data set).
        d_model: width of the token embedding (official 768).
        map_size: side of the square image the ``(L, d_model)`` embedding is laid out in (official 192).
        instance_norm: normalise each series over time with a learnt per-channel affine (official).
        depths, dims, kernel_sizes, drop_path_rate: the UniRepLKNet (panconv-vision's ``vision.UniRepLKNet``).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 1, d_model: Annotated[int, Ge(2)] = 768,
                 map_size: Annotated[int, Ge(8)] = 192, instance_norm: bool = True,
                 depths: Sequence[Annotated[int, Ge(0)]] = (3, 3, 27, 3),
                 dims: Sequence[Annotated[int, Ge(4)]] = (96, 192, 384, 768),
                 kernel_sizes: Sequence[Sequence[BlockKernel]] | None = None,
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        try:
            from panconv_vision.models.unireplknet import UniRepLKNet
        except ImportError as exc:
            raise ImportError("sequence.UniRepLKNetSeries needs panconv-vision (its UniRepLKNet), which is not "
                              "installed: pip install 'panconv-sequence[unireplknet]' (from a source checkout: "
                              "pip install ./plugins/vision)") from exc

        if in_channels < 1 or d_model < 2 or map_size < 8:
            raise ValueError(f"UniRepLKNetSeries: need in_channels >= 1, d_model >= 2 and map_size >= 8, got "
                             f"{in_channels}, {d_model}, {map_size}")
        self.in_channels, self.d_model, self.map_size = in_channels, d_model, map_size
        self.instance_norm = instance_norm
        self.affine_weight = nn.Parameter(torch.ones(in_channels)) if instance_norm else None
        self.affine_bias = nn.Parameter(torch.zeros(in_channels)) if instance_norm else None
        self.token = nn.Conv1d(in_channels, d_model, 3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.token.weight, mode="fan_in", nonlinearity="leaky_relu")
        kernels = None if kernel_sizes is None else tuple(tuple(k) for k in kernel_sizes)
        self.backbone = UniRepLKNet(depths=tuple(depths), dims=tuple(dims), in_channels=1, kernel_sizes=kernels,
                                    drop_path_rate=drop_path_rate)
        self.feature_info = list(self.backbone.feature_info)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, C)`` -> the token + position embedding ``(N, L, d_model)``."""
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"UniRepLKNetSeries: expects series (N, L, {self.in_channels}), got {tuple(x.shape)}")
        x = x.float()
        if self.instance_norm:
            x = x - x.mean(1, keepdim=True).detach()
            x = x / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
            x = x * self.affine_weight + self.affine_bias
        tokens = self.token(x.transpose(1, 2)).transpose(1, 2)
        return tokens + sinusoidal_positions(x.shape[1], self.d_model).to(tokens)

    def to_map(self, emb: torch.Tensor) -> torch.Tensor:
        """The row-major reshape of ``(N, L, d_model)`` into ``(N, 1, map_size, map_size)`` (zero-padded)."""
        n, length, dim = emb.shape
        area = self.map_size ** 2
        if length * dim > area:
            raise ValueError(f"UniRepLKNetSeries: a series of {length} steps x d_model {dim} = {length * dim} values "
                             f"does not fit a {self.map_size} x {self.map_size} map ({area}); raise map_size to at "
                             f"least {math.ceil(math.sqrt(length * dim))}")
        flat = F.pad(emb.reshape(n, length * dim), (0, area - length * dim))
        return flat.view(n, 1, self.map_size, self.map_size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(self.to_map(self.embed(x)))

    @torch.no_grad()
    def reparameterize(self) -> UniRepLKNetSeries:
        """The backbone's deploy form (``UniRepLKNet.reparameterize``: one large kernel per block); returns self."""
        self.backbone.reparameterize()
        return self

    @classmethod
    def example_config(cls) -> dict:
        return dict(in_channels=2, d_model=8, map_size=16, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16],
                    kernel_sizes=[[3], [7], [5], [3]])

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 24, self.in_channels, generator=g)


__all__ = ["UniRepLKNetSeries", "sinusoidal_positions"]
