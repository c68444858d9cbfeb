"""Frozen in Time: a joint video and image encoder for text retrieval (Bain et al., ICCV 2021).

"Frozen in Time: A Joint Video and Image Encoder for End-to-End Retrieval" (official code m-bain/frozen-in-time).

* **Space-time Transformer** (:class:`SpaceTimeTransformer`, paper Sec. 3.1, Fig. 2): a video ``(B, T, C, H, W)``
  is cut into ``P x P`` patches per frame, linearly embedded (a strided conv), given a learned spatial position
  embedding (shared by every frame) plus a learned temporal embedding (shared by every patch of a frame), and
  a ``[CLS]`` token is prepended. Each block does *divided* space-time attention, the official variant
  (``attention_style='frozen-in-time'``): temporal attention (each patch attends to the same patch in every
  frame, plus [CLS]) and then spatial attention (each patch attends to the patches of its own frame, plus [CLS])
  on the result, the [CLS] query attending to every token in both; the residual of the spatial attention is
  taken from the block's *input* (``x + space(norm1(x + time(norm3(x))))``), then the MLP. Images are
  one-frame videos. The temporal attention is initialised to output zero (``time_init="zeros"``: its qkv
  weights zero, its output projection ones, the official default), so a fresh model is an image ViT on every
  frame: "Frozen" starts from ViT weights and the extra layers learn time. The video embedding is the
  final-LayerNorm'd [CLS] token. Parameter names equal the official ``SpaceTimeTransformer``'s (and timm's
  ViT for the spatial part), so either's state dict loads as is.
* **Text encoder**: a BERT-style encoder (:class:`panconv_vision.models.align.BertEncoder`; the paper's
  DistilBERT-base is 6 layers of 768, 12 heads), the first token's last hidden state.
* **Projections** ("minimal", the official default): video ``Linear(D, 256)``, text ``ReLU -> Linear(768, 256)``.
* **Loss** (paper Eq. 1-3): the normalised-softmax (InfoNCE) loss in both directions over the batch's cosine
  similarities at temperature 0.05 (:class:`panconv_vision.losses.NormalizedSoftmaxLoss`, fixed temperature;
  it averages the two directions, the official ``NormSoftmaxLoss`` sums them: twice ours).
* **Curriculum** (paper Sec. 3.3): train on images / single frames first, then on longer clips.
  ``curriculum`` lists the frames per stage (``[1, 4, 8]``) and ``curriculum_steps`` the training step at
  which each later stage starts; in training, ``k`` frames are sampled from the clip as the official
  ``'rand'`` sampling does (the clip cut into ``k`` equal segments, one random frame of each), in evaluation
  the middle frame of each of ``eval_frames`` segments (``'uniform'``). The step counter is the buffer
  ``curriculum_step`` (saved in checkpoints; counts training forward passes). Moving from 1 to more frames
  needs no new weights: the temporal embedding has ``num_frames`` rows from the start (the official inflates
  a smaller one by zero-padding, ``load_temporal_fix='zeros'``).
* **Baseline** (``temporal="mean_pool"``): the same ViT on each frame as an image (no temporal attention, one
  temporal embedding), the frames' projected embeddings averaged.

Encoders live under ``video_model.`` / ``vid_proj.`` and ``text_model.`` / ``txt_proj.`` (the official names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Backbone, FeatureInfo, Model

from ..losses import NormalizedSoftmaxLoss
from .align import PAD, BertEncoder
from .layers import drop_path

__all__ = ["DividedAttention", "FrozenInTime", "SpaceTimeBlock", "SpaceTimeTransformer", "sample_frames"]


class DividedAttention(nn.Module):
    """Multi-head attention over one axis of the ``(frames, patches)`` grid; [CLS] attends to everything.

    ``forward(x, frames, axis)``: ``x`` ``(B, 1 + T*N, D)`` ([CLS] first, then frame-major patches);
    ``axis="space"``: each patch attends to [CLS] and the ``N`` patches of its frame; ``axis="time"``: to
    [CLS] and the same patch position in the ``T`` frames. ``initialize="zeros"``: qkv zero, output projection
    ones (the official temporal init: the attention outputs 0 until it learns).
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, initialize: str = "random"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"DividedAttention: dim {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if initialize == "zeros":
            self.zero_init()

    @torch.no_grad()
    def zero_init(self) -> None:
        self.qkv.weight.zero_()
        if self.qkv.bias is not None:
            self.qkv.bias.zero_()
        self.proj.weight.fill_(1.0)
        self.proj.bias.zero_()

    def forward(self, x: torch.Tensor, frames: int, axis: Literal["space", "time"]) -> torch.Tensor:
        b, length, dim = x.shape
        n = (length - 1) // frames
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)              # [CLS]: every token

        def grid(t):                                                              # (b, h, groups, members, d)
            t = t[:, :, 1:].unflatten(2, (frames, n))
            return t if axis == "space" else t.transpose(2, 3)

        qg, kg, vg = grid(q), grid(k), grid(v)
        shape = (*kg.shape[:3], 1, kg.shape[-1])
        kg = torch.cat([k[:, :, None, :1].expand(shape), kg], 3)                 # [CLS] joins every group
        vg = torch.cat([v[:, :, None, :1].expand(shape), vg], 3)
        out = F.scaled_dot_product_attention(qg, kg, vg)
        out = (out if axis == "space" else out.transpose(2, 3)).flatten(2, 3)
        out = torch.cat([cls_out, out], 2).transpose(1, 2).reshape(b, length, dim)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SpaceTimeBlock(nn.Module):
    """Divided space-time block (the official 'frozen-in-time' style); ``temporal=False``: a plain ViT block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 temporal: bool = True, time_init: str = "zeros", eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = DividedAttention(dim, heads, qkv_bias)
        if temporal:
            self.timeattn = DividedAttention(dim, heads, qkv_bias, initialize=time_init)
            self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.temporal = temporal
        self.drop_path = drop_path(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        time_residual = x + self.timeattn(self.norm3(x), frames, "time") if self.temporal else x
        x = x + self.drop_path(self.attn(self.norm1(time_residual), frames, "space"))   # residual from x
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sample_frames(total: int, count: int, random: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``count`` frames of a ``total``-frame clip: the clip cut into ``count`` equal segments, a
    random frame of each (``random``, the official 'rand') or its middle frame (the official 'uniform')."""
    count = min(count, total)
    edges = torch.linspace(0, total, count + 1)
    start, stop = edges[:-1].long(), edges[1:].long().clamp(min=edges[:-1].long() + 1)
    if random:
        return start + (torch.rand(count, generator=generator) * (stop - start)).long()
    return (start + stop - 1) // 2


class SpaceTimeTransformer(Backbone):
    """The space-time Transformer (see the module docstring): ``(B, T, C, H, W)`` video or ``(B, C, H, W)``
    image -> ``[cls (B, D)]``. ``T <= num_frames``; ``H = W = img_size``.

    Args:
        img_size / patch_size / in_channels: input resolution, patch side, channels.
        embed_dim / depth / heads / mlp_ratio / qkv_bias: ViT's size (ViT-B/16: 768 / 12 / 12 / 4 / True).
        num_frames: the longest clip (rows of the temporal embedding). ``temporal``: divided space-time
            blocks (False: plain ViT blocks, an image encoder). ``time_init``: "zeros" (official default) or
            "random" (the ViT init). ``drop_path_rate``: stochastic depth, linear over the blocks.
    """

    metadata_inputs = ("in_channels",)
    #: the classifier timm's ViT-B/16 counts (the paper trains for retrieval, with no classification head)
    paper_head = {"head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, img_size: Annotated[int, Ge(1)] = 224, patch_size: Annotated[int, Ge(1)] = 16,
                 in_channels: Annotated[int, Ge(1)] = 3, embed_dim: Annotated[int, Ge(1)] = 768,
                 depth: Annotated[int, Ge(1)] = 12, heads: Annotated[int, Ge(1)] = 12,
                 mlp_ratio: Annotated[float, Gt(0)] = 4.0, qkv_bias: bool = True,
                 num_frames: Annotated[int, Ge(1)] = 4, temporal: bool = True,
                 time_init: Literal["zeros", "random"] = "zeros",
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"SpaceTimeTransformer: img_size {img_size} is not a multiple of patch_size {patch_size}")
        if embed_dim % heads:
            raise ValueError(f"SpaceTimeTransformer: embed_dim {embed_dim} is not a multiple of {heads} heads")
        if time_init not in ("zeros", "random"):
            raise ValueError(f"SpaceTimeTransformer: time_init must be 'zeros' or 'random', got {time_init!r}")
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f"SpaceTimeTransformer: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.img_size, self.patch_size, self.in_channels = img_size, patch_size, in_channels
        self.num_frames, self.embed_dim = num_frames, embed_dim
        self.patches_per_frame = (img_size // patch_size) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches_per_frame + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(SpaceTimeBlock(embed_dim, heads, mlp_ratio, qkv_bias, r, temporal, time_init)
                                    for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.feature_info = [FeatureInfo(embed_dim, 1, "cls_token")]
        # ViT's init (timm): trunc-normal 0.02 for linear weights and embeddings, zero biases; then the
        # temporal attention's zero init (the official time_init='zeros')
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if temporal and time_init == "zeros":
            for blk in self.blocks:
                blk.timeattn.zero_init()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:                                        # an image is a one-frame video
            x = x[:, None]
        if x.dim() != 5 or x.shape[2] != self.in_channels or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"SpaceTimeTransformer: expected (B, T, {self.in_channels}, {self.img_size}, "
                             f"{self.img_size}) or (B, C, H, W), got {tuple(x.shape)}")
        b, frames = x.shape[:2]
        if frames > self.num_frames:
            raise ValueError(f"SpaceTimeTransformer: {frames} frames, more than num_frames={self.num_frames}")
        tokens = self.patch_embed.proj(x.flatten(0, 1)).flatten(2).transpose(1, 2)     # (B*T, N, D)
        pos = self.pos_embed[:, 1:, None] + self.temporal_embed[:, None, :frames]      # (1, N, T, D)
        tokens = tokens.unflatten(0, (b, frames)) + pos.transpose(1, 2)                 # (B, T, N, D)
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(b, -1, -1), tokens.flatten(1, 2)], 1)
        for blk in self.blocks:
            x = blk(x, frames)
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_features(x)]

    @classmethod
    def example_config(cls) -> dict:
        return {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 2, "heads": 2, "num_frames": 3,
                "time_init": "random"}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.num_frames, self.in_channels, self.img_size, self.img_size)


class FrozenInTime(Model):
    """Frozen in Time dual encoder (see the module docstring).

    Batches: ``inputs`` ``(B, T, C, H, W)`` clips (or ``(B, C, H, W)`` images), ``captions`` ``(B, L)`` token ids
    (``PAD`` = 0, the first token BERT's [CLS]). ``predict`` -> ``video_embeddings`` / ``text_embeddings``
    (normalised, for ``vision.Retrieval``) and ``features`` (the video embedding).

    Args:
        vocab_size / max_caption_length / in_channels: from the data set.
        img_size, patch_size, embed_dim, depth, heads, mlp_ratio, num_frames, time_init, drop_path_rate: the
            :class:`SpaceTimeTransformer`. ``temporal``: "divided" (Frozen) or "mean_pool" (the baseline: a
            per-frame image ViT, frame embeddings averaged).
        text_hidden / text_layers / text_heads / text_intermediate / text_dropout: the BERT-style text encoder
            (DistilBERT-base: 768 / 6 / 12 / 3072); ``type_vocab_size`` 1 (DistilBERT has no segments).
        projection_dim: the joint embedding (256). ``temperature``: the loss's (0.05, fixed unless
            ``learnable_temperature``).
        curriculum / curriculum_steps: frames per stage and the training step starting each later stage
            (``[1, 4, 8]`` / ``[300, 600]``; empty: all ``eval_frames`` frames always). ``eval_frames``: frames
            sampled in evaluation (default: the last stage's, else ``num_frames``).
    """

    metadata_inputs = ("vocab_size", "max_caption_length", "in_channels")
    running_buffers = ("curriculum_step",)

    def __init__(self, vocab_size: Annotated[int, Ge(4)] = 30522, max_caption_length: Annotated[int, Ge(2)] = 512,
                 in_channels: Annotated[int, Ge(1)] = 3, img_size: Annotated[int, Ge(1)] = 224,
                 patch_size: Annotated[int, Ge(1)] = 16, embed_dim: Annotated[int, Ge(1)] = 768,
                 depth: Annotated[int, Ge(1)] = 12, heads: Annotated[int, Ge(1)] = 12,
                 mlp_ratio: Annotated[float, Gt(0)] = 4.0, num_frames: Annotated[int, Ge(1)] = 4,
                 temporal: Literal["divided", "mean_pool"] = "divided",
                 time_init: Literal["zeros", "random"] = "zeros",
                 drop_path_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 text_hidden: Annotated[int, Ge(1)] = 768, text_layers: Annotated[int, Ge(1)] = 6,
                 text_heads: Annotated[int, Ge(1)] = 12, text_intermediate: Annotated[int, Ge(1)] = 3072,
                 type_vocab_size: Annotated[int, Ge(1)] = 1,
                 text_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 projection_dim: Annotated[int, Ge(1)] = 256, temperature: Annotated[float, Gt(0)] = 0.05,
                 learnable_temperature: bool = False,
                 curriculum: Sequence[Annotated[int, Ge(1)]] = (),
                 curriculum_steps: Sequence[Annotated[int, Ge(1)]] = (),
                 eval_frames: Annotated[int, Ge(1)] | None = None):
        super().__init__()
        if temporal not in ("divided", "mean_pool"):
            raise ValueError(f"FrozenInTime: temporal must be 'divided' or 'mean_pool', got {temporal!r}")
        curriculum, curriculum_steps = [int(c) for c in curriculum], [int(s) for s in curriculum_steps]
        if curriculum and len(curriculum_steps) != len(curriculum) - 1:
            raise ValueError(f"FrozenInTime: curriculum has {len(curriculum)} stages, so curriculum_steps needs "
                             f"{len(curriculum) - 1} start steps, got {len(curriculum_steps)}")
        if curriculum_steps != sorted(curriculum_steps) or any(s < 1 for s in curriculum_steps):
            raise ValueError(f"FrozenInTime: curriculum_steps must be increasing positive steps, "
                             f"got {curriculum_steps}")
        if any(not 1 <= c <= num_frames for c in curriculum):
            raise ValueError(f"FrozenInTime: every curriculum stage needs 1..num_frames={num_frames} frames, "
                             f"got {curriculum}")
        self.eval_frames = eval_frames or (curriculum[-1] if curriculum else num_frames)
        if self.eval_frames > num_frames:
            raise ValueError(f"FrozenInTime: eval_frames {self.eval_frames} > num_frames {num_frames}")
        self.temporal, self.num_frames, self.in_channels = temporal, num_frames, in_channels
        self.curriculum, self.curriculum_steps = curriculum, curriculum_steps
        divided = temporal == "divided"
        self.video_model = SpaceTimeTransformer(img_size, patch_size, in_channels, embed_dim, depth, heads, mlp_ratio,
                                                True, num_frames if divided else 1, divided, time_init,
                                                drop_path_rate)
        self.text_model = BertEncoder(vocab_size, text_hidden, text_layers, text_heads, text_intermediate,
                                      max_caption_length, type_vocab_size, text_dropout)
        self.txt_proj = nn.Sequential(nn.ReLU(), nn.Linear(text_hidden, projection_dim))
        self.vid_proj = nn.Sequential(nn.Linear(embed_dim, projection_dim))
        self.criterion = NormalizedSoftmaxLoss(temperature, learnable=learnable_temperature)
        self.register_buffer("curriculum_step", torch.zeros((), dtype=torch.long))

    # ---- the curriculum ----
    def frames_now(self) -> int:
        """Frames per clip at this point of training (the curriculum's stage), or in evaluation."""
        if not self.training or not self.curriculum:
            return self.eval_frames
        stage = sum(int(self.curriculum_step) >= s for s in self.curriculum_steps)
        return self.curriculum[stage]

    # ---- encoders ----
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() == 4:
            video = video[:, None]
        if video.dim() != 5 or video.shape[2] != self.in_channels:
            raise ValueError(f"FrozenInTime: expected clips (B, T, {self.in_channels}, H, W) or images "
                             f"(B, {self.in_channels}, H, W), got {tuple(video.shape)}")
        if self.temporal == "mean_pool":                        # each frame an image, embeddings averaged
            b, t = video.shape[:2]
            return self.vid_proj(self.video_model.forward_features(video.flatten(0, 1))).view(b, t, -1).mean(1)
        return self.vid_proj(self.video_model.forward_features(video))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"FrozenInTime: expected token ids (B, L) of integers, got {tuple(ids.shape)} {ids.dtype}")
        return self.txt_proj(self.text_model(ids)[:, 0])

    # ---- Model contract ----
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        video = batch["inputs"]
        if video.dim() == 5:
            index = sample_frames(video.shape[1], self.frames_now(), random=self.training)
            video = video[:, index.to(video.device)]
        if self.training and self.curriculum:
            self.curriculum_step += 1
        out = {"video_embeddings": self.encode_video(video)}
        if batch.get("captions") is not None:
            out["text_embeddings"] = self.encode_text(batch["captions"])
        return out

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "text_embeddings" not in outputs:
            raise ValueError("FrozenInTime: the batch has no 'captions' to train on")
        return {"loss": self.criterion(outputs["text_embeddings"], outputs["video_embeddings"]),
                "frames": torch.tensor(float(self.frames_now()))}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        out = {"video_embeddings": F.normalize(outputs["video_embeddings"], dim=-1),
               "features": outputs["video_embeddings"]}
        if "text_embeddings" in outputs:
            out["text_embeddings"] = F.normalize(outputs["text_embeddings"], dim=-1)
        return out

    @classmethod
    def example_config(cls) -> dict:
        return {"vocab_size": 12, "max_caption_length": 8, "in_channels": 1, "img_size": 16, "patch_size": 8,
                "embed_dim": 16, "depth": 1, "heads": 2, "num_frames": 4, "time_init": "random", "text_hidden": 16,
                "text_layers": 1, "text_heads": 2, "text_intermediate": 32, "projection_dim": 8,
                "curriculum": [2, 4], "curriculum_steps": [2]}

    def example_inputs(self, batch_size: int = 2) -> dict:
        vocab = self.text_model.word_embeddings.num_embeddings
        length = self.text_model.position_embeddings.num_embeddings
        captions = torch.randint(3, vocab, (batch_size, length))
        captions[:, 0], captions[:, -2:] = 1, torch.tensor([2, PAD])
        size = self.video_model.img_size
        return {"inputs": torch.rand(batch_size, self.num_frames, self.in_channels, size, size),
                "captions": captions}
