"""FlatFormer (Liu et al., CVPR 2023, "FlatFormer: Flattened Window Attention for Efficient Point Cloud
Transformer").

Pipeline (the paper's Fig. 3 and the official Waymo config ``flatformer_waymo_D1_2x_3class.py``):

1. dynamic voxelisation into pillars and a dynamic VFE (``layers.DynamicVFE``);
2. **window-based sorting** (Sec. 4.1): pillars are ordered window by window, windows in a
   snake order along one axis and the pillars inside a window in a snake order too
   (:func:`window_sort_key`); the four orders ``x``, ``x_shift``, ``y``, ``y_shift`` sort along
   x or y, with the window grid shifted by half a window or not;
3. **equal-size grouping** (Sec. 4.1, "flattened window"): the sorted sequence of each sample is
   cut into groups of exactly ``group_size`` pillars (the last one padded by repeating the
   pillars one group earlier, as the official code does), *not* into windows of equal shape;
4. **self-attention within groups** (Sec. 4.2): post-norm layers ``x = LN(x + MHA(x + pe, x + pe, x))``,
   ``x = LN(x + FFN(x))`` (FFN ratio 2, GELU), sinusoidal positional encoding of the pillar
   coordinates; one FlatFormer block = four such layers with the **sorting axis alternating**
   (x, x shifted, y, y shifted);
5. the BEV scatter, then (for detection) ``layers.SECONDFPN`` and ``centerpoint.CenterHead``;
   for segmentation each point takes its pillar's feature plus its first-VFE-layer feature.

The grouping produces ``slots`` (token in each slot) and ``slot_of`` (each token's own slot), the
arguments of the ``pointcloud.flat_group_attention`` kernel that fuses gather, attention and scatter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from panconv.api import Backbone, FeatureInfo

from ..kernels.flat_group_attention import flat_group_attention
from .layers import DynamicVFE, Positive, dynamic_pillars, flatten_points, grid_shape, scatter_bev, unflatten_points

#: the four orders of one FlatFormer block (official ``BasicBlock``): axis, shifted
ORDERS = (("x", False), ("x", True), ("y", False), ("y", True))


def window_sort_key(coords: torch.Tensor, window: Sequence[int], axis: str, shifted: bool,
                    grid: Sequence[int]) -> torch.Tensor:
    """An int64 key whose ascending order is FlatFormer's window-based order of the pillars.

    ``coords`` is ``(V, 3)`` = ``(batch, iy, ix)``; ``window`` = ``(wx, wy)``; ``grid`` = ``(nx, ny)``.
    Shifted: the window grid moves by half a window (``ix + wx // 2``, ``iy + wy // 2``).
    Along x: samples in order, then window rows ``y1``, within a row the windows by ``x1``
    (ascending on even rows, descending on odd rows: a snake), within a window the columns ``x2``
    and in a column the rows ``y2`` snake the same way (the whole in-window order reversed on odd
    window rows). Along y: the same with x and y exchanged. Each key is unique per pillar.
    """
    wx, wy = window
    b, iy, ix = coords[:, 0], coords[:, 1], coords[:, 2]
    if shifted:
        ix, iy = ix + wx // 2, iy + wy // 2
    x1, x2, y1, y2 = ix // wx, ix % wx, iy // wy, iy % wy
    nx1, ny1 = grid[0] // wx + 2, grid[1] // wy + 2
    if axis == "x":  # lexicographic (b, y1, s*x1, s*x2, s*t*y2), s = (-1)^y1, t = (-1)^x2
        major, minor, inner, last, n_major, n_minor, n_inner, n_last = y1, x1, x2, y2, ny1, nx1, wx, wy
    else:  # (b, x1, s*y1, s*y2, s*t*x2), s = (-1)^x1, t = (-1)^y2
        major, minor, inner, last, n_major, n_minor, n_inner, n_last = x1, y1, y2, x2, nx1, ny1, wy, wx
    s = 1 - 2 * (major % 2)
    t = 1 - 2 * (inner % 2)
    key = b * n_major + major
    key = key * (2 * n_minor) + (s * minor + n_minor)
    key = key * (2 * n_inner) + (s * inner + n_inner)
    return key * (2 * n_last) + (s * t * last + n_last)


def equal_size_groups(order: torch.Tensor, counts: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each sample's sorted tokens into groups of exactly ``group_size`` slots.

    ``order`` (V,): tokens in sorted order, samples contiguous in the order of ``counts`` (B,).
    A sample of ``n`` tokens takes ``ceil(n / g) * g`` slots; padding slot ``j >= n`` repeats the
    token of slot ``j - g`` (one group earlier; the official ``flat2win``), or of slot ``j mod n``
    when the sample has fewer than ``g`` tokens. Returns ``(slots, slot_of)``: the token of every
    slot, and every token's own slot (``slots[slot_of] == arange(V)``).
    """
    g = group_size
    padded = (counts + g - 1) // g * g
    start = F.pad(counts.cumsum(0), (1, 0))[:-1]
    start_p = F.pad(padded.cumsum(0), (1, 0))[:-1]
    sample = torch.repeat_interleave(torch.arange(counts.numel(), device=order.device), padded)
    j = torch.arange(int(padded.sum()), device=order.device) - start_p[sample]
    n = counts[sample]
    local = torch.where(j < n, j, torch.where(n >= g, j - g, j % n.clamp_min(1)))
    slots = order[start[sample] + local]
    token_sample = torch.repeat_interleave(torch.arange(counts.numel(), device=order.device), counts)
    rank = torch.arange(order.numel(), device=order.device) - start[token_sample]
    slot_of = torch.empty_like(order)
    slot_of[order] = start_p[token_sample] + rank
    return slots, slot_of


class FlatWindowMapping(nn.Module):
    """The four (slots, slot_of) groupings of one set of pillars (official ``FlattenedWindowMapping``)."""

    def __init__(self, window_shape: Sequence[int], grid: Sequence[int], group_size: int):
        super().__init__()
        self.window_shape, self.grid, self.group_size = tuple(window_shape), tuple(grid), group_size

    @torch.no_grad()
    def forward(self, coords: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        counts = torch.bincount(coords[:, 0], minlength=batch_size)
        groupings = []
        for axis, shifted in ORDERS:
            order = torch.sort(window_sort_key(coords, self.window_shape, axis, shifted, self.grid), stable=True)[1]
            groupings.append(equal_size_groups(order, counts, self.group_size))
        return groupings


def sinusoidal_position(coords: torch.Tensor, channels: int, temperature: float = 10000.0,
                        grid: Sequence[int] | None = None, dtype=torch.float32) -> torch.Tensor:
    """The official PositionalEmbedding: interleaved sin/cos of ``ix`` and of ``iy`` (``C // 4 * 2`` each), zero pad.

    With ``grid`` the coordinates are first scaled to ``[0, 2 pi)`` (``normalize_pos``).
    """
    x, y = coords[:, 2].to(torch.float32), coords[:, 1].to(torch.float32)
    if grid is not None:
        x, y = x / grid[0] * 2 * 3.1415, y / grid[1] * 2 * 3.1415
    length = channels // 4 * 2
    freq = temperature ** (2 * (torch.arange(length, device=coords.device) // 2) / length)

    def encode(u):
        u = u[:, None] / freq[None, :]
        return torch.stack([u[:, ::2].sin(), u[:, 1::2].cos()], dim=-1).flatten(1)

    pe = torch.cat([encode(x), encode(y)], dim=-1)
    return F.pad(pe, (0, channels - pe.shape[1])).to(dtype)


class GroupAttentionLayer(nn.Module):
    """One post-norm FlatFormer layer over one grouping (official ``BasicLayer``)."""

    def __init__(self, channels: int, num_heads: int, group_size: int, ffn_ratio: int = 2, activation: str = "gelu"):
        super().__init__()
        self.num_heads, self.group_size = num_heads, group_size
        self.in_proj = nn.Linear(channels, 3 * channels)  # q, k, v stacked, as nn.MultiheadAttention's in_proj
        self.out_proj = nn.Linear(channels, channels)
        self.fc1 = nn.Linear(channels, ffn_ratio * channels)
        self.fc2 = nn.Linear(ffn_ratio * channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()

    def attention(self, x: torch.Tensor, pe: torch.Tensor, slots: torch.Tensor, slot_of: torch.Tensor):
        tokens, channels = x.shape
        w_qk, w_v = self.in_proj.weight.split([2 * channels, channels])
        b_qk, b_v = self.in_proj.bias.split([2 * channels, channels])
        q, k = F.linear(x + pe, w_qk, b_qk).view(tokens, 2, self.num_heads, -1).unbind(1)
        v = F.linear(x, w_v, b_v).view(tokens, self.num_heads, -1)
        out = flat_group_attention(q, k, v, slots, slot_of, self.group_size)
        return self.out_proj(out.reshape(tokens, channels))

    def forward(self, x, pe, slots, slot_of):
        x = self.norm1(x + self.attention(x, pe, slots, slot_of))
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class FlatFormerBlock(nn.Module):
    """Four layers, one per order of :data:`ORDERS` (the sorting axis alternates, windows shift)."""

    def __init__(self, channels: int, num_heads: int, group_size: int, ffn_ratio: int = 2, activation: str = "gelu"):
        super().__init__()
        self.layers = nn.ModuleList(GroupAttentionLayer(channels, num_heads, group_size, ffn_ratio, activation)
                                    for _ in ORDERS)

    def forward(self, x, pe, groupings):
        for layer, (slots, slot_of) in zip(self.layers, groupings):
            x = layer(x, pe, slots, slot_of)
        return x


class FlatFormer(Backbone):
    """FlatFormer backbone on padded point batches ``{"points": (B, N, C), "mask": (B, N)}``.

    Args:
        in_channels: per-point input channels (``x, y, z`` first).
        point_cloud_range: ``(x0, y0, z0, x1, y1, z1)`` in metres; points outside get no pillar.
        voxel_size: pillar size ``(vx, vy, vz)``; ``vz`` must cover the z range (one voxel high).
        vfe_channels: DynamicVFE widths; the last one is the transformer width.
        num_heads, num_blocks: heads; FlatFormer blocks (each four layers: x, x shifted, y, y shifted).
        window_shape: ``(wx, wy)`` pillars per window for the sorting.
        group_size: pillars per attention group (every group exactly this size).
        ffn_ratio, activation: the layers' FFN.
        pos_temperature, normalize_pos: the sinusoidal position encoding.
        outputs: which features ``forward`` returns, in order: ``"points"`` (per point, ``(B, C + C0, N)``:
            its pillar's feature and its first VFE feature; zeros for points outside the range) and
            ``"bev"`` (the pillar canvas ``(B, C, ny, nx)``).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(3)] = 5,
                 point_cloud_range: Sequence[float] = (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0),
                 voxel_size: Sequence[Positive] = (0.32, 0.32, 6.0),
                 vfe_channels: Sequence[Annotated[int, Ge(1)]] = (64, 128),
                 num_heads: Annotated[int, Ge(1)] = 8, num_blocks: Annotated[int, Ge(0)] = 2,
                 window_shape: Sequence[Annotated[int, Ge(1)]] = (13, 13), group_size: Annotated[int, Ge(1)] = 144,
                 ffn_ratio: Annotated[int, Ge(1)] = 2, activation: Literal["gelu", "relu"] = "gelu",
                 pos_temperature: Annotated[float, Ge(1)] = 10000.0, normalize_pos: bool = False,
                 outputs: Sequence[Literal["points", "bev"]] = ("points", "bev")):
        super().__init__()
        if len(point_cloud_range) != 6 or len(voxel_size) != 3 or len(window_shape) != 2:
            raise ValueError("FlatFormer: point_cloud_range needs 6 values, voxel_size 3, window_shape 2")
        if any(point_cloud_range[i + 3] <= point_cloud_range[i] for i in range(3)):
            raise ValueError(f"FlatFormer: point_cloud_range {tuple(point_cloud_range)} is empty along an axis")
        if voxel_size[2] < point_cloud_range[5] - point_cloud_range[2] - 1e-6:
            raise ValueError("FlatFormer: pillars only: voxel_size[2] must cover the z range")
        channels = vfe_channels[-1] if vfe_channels else 0
        if not vfe_channels or channels % num_heads:
            raise ValueError(f"FlatFormer: the width vfe_channels[-1]={channels} must be a multiple of num_heads")
        if not outputs or len(set(outputs)) != len(outputs):
            raise ValueError(f"FlatFormer: outputs must name 'points' and/or 'bev' once each, got {outputs}")
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.grid = grid_shape(self.point_cloud_range, self.voxel_size)
        self.pos_temperature, self.normalize_pos = float(pos_temperature), normalize_pos
        self.outputs = tuple(outputs)
        self.vfe = DynamicVFE(in_channels, vfe_channels, self.voxel_size, self.point_cloud_range)
        self.mapping = FlatWindowMapping(window_shape, self.grid, group_size)
        self.blocks = nn.ModuleList(FlatFormerBlock(channels, num_heads, group_size, ffn_ratio, activation)
                                    for _ in range(num_blocks))
        self.channels = channels
        widths = {"points": channels + vfe_channels[0], "bev": channels}
        self.feature_info = [FeatureInfo(widths[name], 1, name) for name in self.outputs]
        for p in self.blocks.parameters():  # the official _reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, x: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The transformer on pillar features ``x`` (V, C) at ``coords`` (V, 3) (the official middle encoder)."""
        pe = sinusoidal_position(coords, self.channels, self.pos_temperature,
                                 self.grid if self.normalize_pos else None, x.dtype)
        groupings = self.mapping(coords, batch_size)
        for block in self.blocks:
            x = block(x, pe, groupings)
        return x

    def forward(self, inputs: dict) -> list[torch.Tensor]:
        points, mask = inputs["points"], inputs.get("mask")
        batch_size, length = points.shape[:2]
        flat, batch_idx = flatten_points(points, mask)
        point_to_pillar, coords, inside = dynamic_pillars(flat[:, :3], batch_idx, self.point_cloud_range,
                                                          self.voxel_size)
        pillars, first = self.vfe(flat[inside], point_to_pillar[inside], coords)
        pillars = self.encode(pillars, coords, batch_size)
        features = []
        for name in self.outputs:
            if name == "bev":
                features.append(scatter_bev(pillars, coords, batch_size, *self.grid))
            else:
                per_point = flat.new_zeros((flat.shape[0], self.feature_info[self.outputs.index(name)].channels))
                per_point[inside] = torch.cat([pillars[point_to_pillar[inside]], first], dim=1)
                features.append(unflatten_points(per_point, mask, (batch_size, length)).transpose(1, 2))
        return features

    @classmethod
    def example_config(cls) -> dict:
        return dict(in_channels=4, point_cloud_range=[-6.0, -6.0, -1.0, 6.0, 6.0, 3.0], voxel_size=[0.5, 0.5, 4.0],
                    vfe_channels=[8, 16], num_heads=2, num_blocks=1, window_shape=[4, 4], group_size=8)

    def example_inputs(self, batch_size: int = 2) -> dict:
        from .layers import example_point_batch

        return example_point_batch(batch_size, channels=self.vfe.layers[0][0].in_features - 6)["inputs"]


__all__ = ["FlatFormer", "FlatFormerBlock", "FlatWindowMapping", "GroupAttentionLayer", "ORDERS",
           "equal_size_groups", "sinusoidal_position", "window_sort_key"]
