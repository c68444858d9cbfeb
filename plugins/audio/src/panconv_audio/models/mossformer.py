"""MossFormer: monaural speech separation with gated single-head attention.

Zhao & Ma, "MossFormer: Pushing the Performance Limit of Monaural Speech Separation using Gated
Single-Head Transformer with Convolution-Augmented Joint Self-Attentions", ICASSP 2023
(arXiv:2302.11824).

The network (paper Fig. 1) is a time-domain masking model:

    mixture -> Conv1d encoder + ReLU -> masking net -> one mask per speaker
            -> encoded mixture * mask -> ConvTranspose1d decoder -> one waveform per speaker

The masking net stacks MossFormer blocks. Each block is a *gated single-head attention* unit:
the input is token-shifted, projected by convolution-augmented feed-forward modules ("ConvM":
norm -> linear -> SiLU -> depthwise conv -> dropout) into the attentive values ``V``, the gates
``U`` and a shared query/key ``Z``; four cheap per-dimension scale+offset maps turn ``Z`` into the
queries and keys of two attentions computed *jointly*: a full (quadratic) ReLU² attention inside
non-overlapping chunks of ``group_size`` frames and a linearised attention over the whole
sequence. The outputs are combined by the triple gate ``O = (Â U ⊙ V) ⊙ σ(Â V ⊙ U)`` and
projected back by a last ConvM with a residual connection.

Layout and hyper-parameter names follow the released implementation (modelscope's
``speech_mossformer_separation_temporal_8k``); forward parity with it on shared weights is
tested in ``tests/test_mossformer.py``. The paper's configuration (24 blocks, width 512,
encoder kernel 16 / stride 8, chunks of 256 frames, query/key width 128; the constructor defaults)
has 42.1M parameters. The registered sizes (``mossformer_2spk``, ``mossformer_3spk``, ``mossformer_small``)
are data in :mod:`panconv_audio.plugin`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Model

from ..losses import SISNRPIT
from .layers import resolve_loss

__all__ = ["MossFormer", "MossFormerBlock", "map_official_state_dict"]


# --------------------------------------------------------------------------- building blocks


class ScaleNorm(nn.Module):
    """``g · x / max(‖x‖ / √d, eps)``: one learned gain (Nguyen & Salazar, 2019); ConvM's norm."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.gain


class ScaledSinusoidalEmbedding(nn.Module):
    """Sinusoidal absolute positions ``[sin(t·ω), cos(t·ω)]`` times one learned scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, length: int) -> torch.Tensor:
        """Embeddings of positions ``0..length-1``: ``(length, dim)``."""
        angles = torch.arange(length, device=self.inv_freq.device).type_as(self.inv_freq)[:, None] * self.inv_freq
        return torch.cat((angles.sin(), angles.cos()), dim=-1) * self.scale


class RotaryEmbedding(nn.Module):
    """Rotary positions (Su et al., RoFormer) on the first ``dim`` channels (partial rotary).

    Channel pairs ``(2i, 2i+1)`` are rotated by ``t · θ^(-2i/dim)``; the remaining channels pass.
    """

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., length, channels)`` with ``channels >= dim``."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=x.dtype)
        angles = (positions[:, None] * self.inv_freq.to(x.dtype)).repeat_interleave(2, dim=-1)
        rot, rest = x[..., : self.dim], x[..., self.dim:]
        pairs = rot.unflatten(-1, (-1, 2))
        rot_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((rot * angles.cos() + rot_half * angles.sin(), rest), dim=-1)


class OffsetScale(nn.Module):
    """``heads`` per-dimension affine maps of one tensor: ``Q_h = Z ⊙ γ_h + β_h`` (Hua et al., FLASH).

    MossFormer derives the four queries/keys of its joint attention from one shared ``Z`` this way.
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(heads, dim).normal_(std=0.02))
        self.beta = nn.Parameter(torch.zeros(heads, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.unsqueeze(-2) * self.gamma + self.beta).unbind(dim=-2)


class DepthwiseConvModule(nn.Module):
    """Depthwise temporal convolution with a residual: ``x + DWConv(x)`` on ``(N, L, C)``."""

    def __init__(self, dim: int, kernel_size: int = 17):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"DepthwiseConvModule: kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x.transpose(1, 2)).transpose(1, 2)


class ConvM(nn.Sequential):
    """The paper's convolution-augmented projection: ScaleNorm -> Linear -> SiLU -> DWConv -> Dropout."""

    def __init__(self, dim_in: int, dim_out: int, dropout: float = 0.1, kernel_size: int = 17):
        super().__init__(
            ScaleNorm(dim_in),
            nn.Linear(dim_in, dim_out),
            nn.SiLU(),
            DepthwiseConvModule(dim_out, kernel_size),
            nn.Dropout(dropout),
        )


class MossFormerBlock(nn.Module):
    """Gated single-head transformer block with joint local (quadratic) and global (linear) attention.

    ``x``: ``(N, L, dim)`` -> ``(N, L, dim)``.
    """

    def __init__(self, dim: int, group_size: int = 256, query_key_dim: int = 128, expansion_factor: float = 4.0,
                 dropout: float = 0.1, shift_tokens: bool = True, rotary_dim: int = 32, conv_kernel: int = 17):
        super().__init__()
        if not 0 < expansion_factor < math.inf:
            raise ValueError(f"MossFormerBlock: expansion_factor must be positive and finite, got {expansion_factor}")
        hidden = int(dim * expansion_factor)
        if hidden % 2 or hidden < 2:
            raise ValueError(f"MossFormerBlock: dim * expansion_factor must be even and >= 2, got {hidden}")
        self.group_size = group_size
        self.shift_tokens = shift_tokens
        self.to_hidden = ConvM(dim, hidden, dropout, conv_kernel)        # -> V and U (hidden/2 each)
        self.to_qk = ConvM(dim, query_key_dim, dropout, conv_kernel)     # -> shared Z
        self.qk_offset_scale = OffsetScale(query_key_dim, heads=4)       # Z -> Q_quad, Q_lin, K_quad, K_lin
        self.rotary = RotaryEmbedding(min(rotary_dim, query_key_dim))
        self.attn_drop = nn.Dropout(dropout)
        self.to_out = ConvM(hidden // 2, dim, dropout, conv_kernel)

    @staticmethod
    def token_shift(x: torch.Tensor) -> torch.Tensor:
        """Token shift: the first half of the channels is delayed by one frame (zero at ``t=0``)."""
        shifted, passed = x.chunk(2, dim=-1)
        return torch.cat((F.pad(shifted, (0, 0, 1, -1)), passed), dim=-1)

    def joint_attention(self, quad_q, lin_q, quad_k, lin_k, v, u) -> tuple[torch.Tensor, torch.Tensor]:
        """``Â V`` and ``Â U`` where ``Â`` = local ReLU² attention + global linearised attention."""
        length, g = v.shape[-2], self.group_size
        # global linear attention over the full sequence: Q_lin (K_lin^T V) / L
        lin_v = lin_q @ (lin_k.transpose(-1, -2) @ v) / length
        lin_u = lin_q @ (lin_k.transpose(-1, -2) @ u) / length
        # local quadratic attention within chunks of g frames: relu(Q K^T / g)^2. The tail is
        # zero-padded to a whole chunk; zero keys give zero attention weights, so no mask is needed.
        pad = (-length) % g
        chunks = [F.pad(t, (0, 0, 0, pad)).unflatten(-2, (-1, g)) for t in (quad_q, quad_k, v, u)]
        q, k, v_c, u_c = chunks
        attn = self.attn_drop(F.relu(q @ k.transpose(-1, -2) / g) ** 2)
        quad_v = (attn @ v_c).flatten(-3, -2)[..., :length, :]
        quad_u = (attn @ u_c).flatten(-3, -2)[..., :length, :]
        return quad_v + lin_v, quad_u + lin_u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = self.token_shift(x) if self.shift_tokens else x
        v, u = self.to_hidden(shifted).chunk(2, dim=-1)
        qk = self.to_qk(shifted)
        quad_q, lin_q, quad_k, lin_k = (self.rotary(t) for t in self.qk_offset_scale(qk))
        att_v, att_u = self.joint_attention(quad_q, lin_q, quad_k, lin_k, v, u)
        # triple gating: O = (ÂU ⊙ V) ⊙ σ(ÂV ⊙ U), then ConvM and the residual
        gated = (att_u * v) * torch.sigmoid(att_v * u)
        return x + self.to_out(gated)


# --------------------------------------------------------------------------- the network


class MossFormer(Model):
    """MossFormer separator: ``batch["mixture"]`` ``(N, T)`` -> estimated sources ``(N, S, T)``.

    Args:
        num_speakers: number of sources ``S`` (masks) estimated.
        encoder_dim: filters of the conv encoder/decoder.
        kernel_size: encoder/decoder filter length (stride ``kernel_size // 2``).
        dim: width of the MossFormer blocks.
        depth: number of MossFormer blocks.
        query_key_dim: width of the shared query/key ``Z``.
        group_size: chunk length (frames) of the local quadratic attention.
        expansion_factor: ``V``/``U`` projection width is ``dim * expansion_factor / 2`` each.
        dropout: dropout in the ConvMs and on the quadratic attention weights.
        conv_kernel: depthwise kernel of the ConvMs.
        loss: the training criterion ``loss(estimates (N, S, T), references (N, S, T)) -> scalar``;
            default ``audio.SISNRPIT()`` (negative SI-SNR with utterance-level PIT, the paper's).
    """

    #: the number of speakers follows the data set (``audio.SpeakerMixtures``) unless the config sets it
    metadata_inputs = ("num_speakers",)

    def __init__(self, num_speakers: Annotated[int, Ge(1)] = 2, encoder_dim: Annotated[int, Ge(1)] = 512,
                 kernel_size: Annotated[int, Ge(2)] = 16, dim: Annotated[int, Ge(1)] = 512,
                 depth: Annotated[int, Ge(1)] = 24, query_key_dim: Annotated[int, Ge(1)] = 128,
                 group_size: Annotated[int, Ge(1)] = 256, expansion_factor: Annotated[float, Gt(0)] = 4.0,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1, conv_kernel: Annotated[int, Ge(1)] = 17,
                 loss: nn.Module | dict | None = None):
        super().__init__()
        if min(num_speakers, encoder_dim, dim, depth, query_key_dim, group_size) < 1:
            raise ValueError(f"MossFormer: num_speakers, encoder_dim, dim, depth, query_key_dim and group_size must be "
                             f">= 1, got {num_speakers}, {encoder_dim}, {dim}, {depth}, {query_key_dim}, {group_size}")
        if kernel_size < 2 or not 0 <= dropout < 1:
            raise ValueError(f"MossFormer: need kernel_size >= 2 (stride kernel_size // 2) and 0 <= dropout < 1, got "
                             f"kernel_size={kernel_size}, dropout={dropout}")
        self.num_speakers = num_speakers
        stride = kernel_size // 2
        # conv encoder (paper: 1-D conv + ReLU)
        self.encoder = nn.Conv1d(1, encoder_dim, kernel_size, stride=stride, bias=False)
        # masking net: norm, bottleneck and absolute positions
        self.norm = nn.GroupNorm(1, encoder_dim, eps=1e-8)
        self.in_proj = nn.Conv1d(encoder_dim, dim, 1, bias=False)
        self.pos_embed = ScaledSinusoidalEmbedding(dim)
        # MossFormer blocks, a final LayerNorm, then a normalised skip around the whole stack
        self.blocks = nn.ModuleList(
            MossFormerBlock(dim, group_size, query_key_dim, expansion_factor, dropout, conv_kernel=conv_kernel)
            for _ in range(depth)
        )
        self.blocks_norm = nn.LayerNorm(dim, eps=1e-6)
        self.skip_norm = nn.GroupNorm(1, dim, eps=1e-8)
        # mask estimation: PReLU, one branch per speaker, gated output (tanh ⊙ sigmoid), ReLU masks
        self.act = nn.PReLU()
        self.mask_proj = nn.Conv1d(dim, dim * num_speakers, 1)
        self.mask_tanh = nn.Conv1d(dim, dim, 1)
        self.mask_gate = nn.Conv1d(dim, dim, 1)
        self.out_proj = nn.Conv1d(dim, encoder_dim, 1, bias=False)
        # conv decoder (transposed conv back to the waveform)
        self.decoder = nn.ConvTranspose1d(encoder_dim, 1, kernel_size, stride=stride, bias=False)
        self.criterion = resolve_loss(loss, SISNRPIT, "MossFormer")

    def masks(self, encoded: torch.Tensor) -> torch.Tensor:
        """Masking net: encoded mixture ``(N, C, L)`` -> masks ``(N, S, C, L)``."""
        x = self.in_proj(self.norm(encoded))
        x = x + self.pos_embed(x.shape[-1]).T
        y = self.blocks_norm(self._run_blocks(x.transpose(1, 2))).transpose(1, 2)
        x = self.act(self.skip_norm(y) + x)
        n, _, length = x.shape
        x = self.mask_proj(x).reshape(n * self.num_speakers, -1, length)
        x = torch.tanh(self.mask_tanh(x)) * torch.sigmoid(self.mask_gate(x))
        return F.relu(self.out_proj(x)).reshape(n, self.num_speakers, -1, length)

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(N, T)`` -> estimated sources ``(N, S, T)``."""
        n, length = mixture.shape
        encoded = F.relu(self.encoder(mixture.unsqueeze(1)))                       # (N, C, L)
        separated = encoded.unsqueeze(1) * self.masks(encoded)                     # (N, S, C, L)
        waves = self.decoder(separated.flatten(0, 1)).reshape(n, self.num_speakers, -1)
        if waves.shape[-1] < length:
            return F.pad(waves, (0, length - waves.shape[-1]))
        return waves[..., :length]

    # ---- panconv.api.Model ----
    def forward(self, batch: dict) -> torch.Tensor:
        return self.separate(batch["mixture"])

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """The criterion (default: negative SI-SNR with utterance-level PIT, the paper's objective); ``si_snr`` is
        its negation, which is the mean SI-SNR in dB for the default criterion."""
        loss = self.criterion(outputs, batch["sources"])
        return {"loss": loss, "si_snr": -loss.detach()}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs

    # ---- conformance-kit examples ----
    @classmethod
    def example_config(cls) -> dict:
        return dict(num_speakers=2, encoder_dim=16, kernel_size=8, dim=16, depth=1, query_key_dim=8,
                    group_size=16, dropout=0.0)

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        g = torch.Generator().manual_seed(0)
        sources = torch.randn(batch_size, self.num_speakers, 400, generator=g)
        return {"mixture": sources.sum(1), "sources": sources}



# ---- weights from the official code -------------------------------------------------------------
#: official (modelscope ``speech_mossformer_separation_temporal_8k``) keys without a counterpart in
#: :class:`MossFormer`, as patterns: the rotary embedding's frequencies, shared by every layer (so repeated under each
#: ``layers.{i}``) and frozen at ``1 / 10000^(2j / 32)`` (``rotary_embedding_torch``, ``learned_freq=False``); ours
#: computes the same frequencies itself (a non-persistent buffer)
OFFICIAL_DROPPED: tuple[str, ...] = (r"mask_net\.mdl\.att_mdl\.mossformerM\.layers\.\d+\.rotary_pos_emb\.freqs",)
_OFFICIAL_LAYER = re.compile(r"mask_net\.mdl\.att_mdl\.mossformerM\.layers\.(\d+)\.(.+)")
#: official names inside one MossFormerBlock -> ours (``FFConvM.mdl`` is our ``ConvM`` Sequential; ScaleNorm ``g`` is
#: ``gain``; the conv module's ``sequential.1`` DepthwiseConv1d wraps the conv as ``conv``)
_OFFICIAL_LAYER_PARTS = {
    f"{proj}.mdl.{part}": f"{proj}.{ours}"
    for proj in ("to_hidden", "to_qk", "to_out")
    for part, ours in (("0.g", "0.gain"), ("1.weight", "1.weight"), ("1.bias", "1.bias"),
                       ("3.sequential.1.conv.weight", "3.conv.weight"))
} | {"qk_offset_scale.gamma": "qk_offset_scale.gamma", "qk_offset_scale.beta": "qk_offset_scale.beta"}
#: official keys outside the blocks -> ours
_OFFICIAL_TOP = {
    "encoder.conv1d.weight": "encoder.weight", "decoder.weight": "decoder.weight",
    "mask_net.norm.weight": "norm.weight", "mask_net.norm.bias": "norm.bias",
    "mask_net.conv1d_encoder.weight": "in_proj.weight",
    "mask_net.pos_enc.scale": "pos_embed.scale", "mask_net.pos_enc.inv_freq": "pos_embed.inv_freq",
    "mask_net.mdl.att_mdl.norm.norm.weight": "blocks_norm.weight",
    "mask_net.mdl.att_mdl.norm.norm.bias": "blocks_norm.bias",
    "mask_net.mdl.att_norm.weight": "skip_norm.weight", "mask_net.mdl.att_norm.bias": "skip_norm.bias",
    "mask_net.prelu.weight": "act.weight",
    "mask_net.conv1d_out.weight": "mask_proj.weight", "mask_net.conv1d_out.bias": "mask_proj.bias",
    "mask_net.output.0.weight": "mask_tanh.weight", "mask_net.output.0.bias": "mask_tanh.bias",
    "mask_net.output_gate.0.weight": "mask_gate.weight", "mask_net.output_gate.0.bias": "mask_gate.bias",
    "mask_net.conv1_decoder.weight": "out_proj.weight",
}


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MossFormer weights (modelscope ``modelscope/models/audio/separation/mossformer.py``) ->
    :class:`MossFormer`'s keys.

    Takes the state dict of the official ``MossFormer`` (a ``TorchModel`` with ``encoder`` / ``decoder`` /
    ``mask_net``, the latter ``MossFormerMaskNet`` around ``MossFormerM``, norm ``'ln'``). The released checkpoint
    (modelscope ``damo/speech_mossformer_separation_temporal_8k``, 2 speakers, WSJ0-2mix) is three files that
    ``MossFormer.load_check_point`` loads into the three sub-modules, each an unwrapped state dict; join them under
    those prefixes first::

        state = {f"{prefix}.{k}": v for prefix, file in (("encoder", "encoder.bin"), ("decoder", "decoder.bin"),
                                                         ("mask_net", "masknet.bin"))
                 for k, v in torch.load(f"{model_dir}/{file}", map_location="cpu").items()}
        MossFormer(num_speakers=2).load_state_dict(map_official_state_dict(state))

    (the released configuration is our default: kernel 16 / stride 8, width 512, 24 blocks, query/key 128, chunks
    of 256). A ``module.`` prefix (DataParallel) is stripped. ``encoder.conv1d`` becomes ``encoder``, the mask
    net's ``norm`` / ``conv1d_encoder`` / ``pos_enc`` ``norm`` / ``in_proj`` / ``pos_embed``,
    ``mdl.att_mdl.mossformerM.layers.{i}`` ``blocks.{i}`` (each ``FFConvM``'s ``mdl.{0,1,3}`` our ``ConvM``'s
    ``{0,1,3}``, ScaleNorm ``g`` ``gain``, the conv module's ``sequential.1.conv`` ``conv``), ``mdl.att_mdl.norm.norm``
    (speechbrain LayerNorm) ``blocks_norm``, ``mdl.att_norm`` ``skip_norm``, ``prelu`` ``act``, ``conv1d_out``
    ``mask_proj``, ``output.0`` / ``output_gate.0`` ``mask_tanh`` / ``mask_gate`` and ``conv1_decoder``
    ``out_proj``. Shapes are the same on both sides. The per-layer copies of the shared, frozen rotary frequencies
    are dropped (:data:`OFFICIAL_DROPPED`); any other key the official model does not have (e.g. a decoder bias,
    ``bias=True``) raises a KeyError naming it.
    """
    out = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if any(re.fullmatch(pattern, name) for pattern in OFFICIAL_DROPPED):
            continue
        new = _OFFICIAL_TOP.get(name)
        if new is None and (m := _OFFICIAL_LAYER.fullmatch(name)) and m.group(2) in _OFFICIAL_LAYER_PARTS:
            new = f"blocks.{m.group(1)}.{_OFFICIAL_LAYER_PARTS[m.group(2)]}"
        if new is None:
            raise KeyError(f"unexpected key in an official MossFormer state dict: {key}")
        out[new] = value
    return out
