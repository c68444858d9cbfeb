"""HiRes-LLaVA (Huang et al. 2024, "HiRes-LLaVA: Restoring Fragmentation Input in High-Resolution Large
Vision-Language Models"), scaled down to train here: a small ViT, a small causal language decoder.

The high-resolution image is cut into ``grid x grid`` slices of ``slice_size`` pixels; each slice and a
low-resolution global view (the whole image resized to one slice) go through the same ViT. Cutting
fragments every object on a slice boundary. The paper's two parts:

- **SliceRestore adapter** (``SliceRestoreAdapter``), in the ViT's blocks, in parallel with
  self-attention on the slices: *merge* the slices' token maps back into the whole image's map,
  *capture* local context with a 3 x 3 depthwise convolution and global context with self-attention on a
  down-sampled map (then up-sampled), *restore* by cutting the result back into slices. Its output
  projection starts at zero, so an untrained adapter leaves the ViT unchanged.
- **Self-Mining Sampler** (``SelfMiningSampler``): compress each view's tokens by ``ratio`` x ``ratio``
  with queries mined from the tokens themselves (average-pooled token map, so each query keeps its
  place) attending to all the view's tokens; against ``pool`` (the pooled tokens alone) and ``qformer``
  (learned queries, which lose the position; the paper's motivation).

Then a projector (MLP) into the decoder's width and a causal transformer decoder reading
``[global view tokens, slice tokens, question]`` that predicts the one-word answer at the last position
(cross-entropy on the answer token only, as LLaVA's instruction tuning; with several questions about one
image, the image is encoded once and every question decoded on its own, the loss on every answer).
``restore=False`` is the naive slicing baseline at the same token budget.

What is scaled down: CLIP ViT-L/14-336 -> ``vit_dim`` x ``vit_depth`` ViT trained from scratch; the
LLM (Vicuna) -> a ``lm_depth``-layer decoder; 336 px slices -> ``slice_size`` px (32 for the generated
EntityGrid-QA); no pre-training stages. Batch: ``inputs`` ``(B, 3, grid*slice, grid*slice)``,
``question`` ``(B, Lq)`` left-padded token ids (0 = pad), ``answer`` ``(B,)``; or ``Q`` questions per image:
``question`` ``(B, Q, Lq)``, ``answer`` ``(B, Q)``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from annotated_types import Ge

__all__ = ["HiResLLaVA", "SelfMiningSampler", "SliceRestoreAdapter", "merge_slices", "split_slices"]


def merge_slices(tokens: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """``(B, grid*grid, side*side, D)`` slice tokens (row-major slices, row-major tokens) -> the whole
    map ``(B, D, grid*side, grid*side)``."""
    b, g, n, d = tokens.shape
    if g != grid * grid or n != side * side:
        raise ValueError(f"merge_slices: expected (B, {grid * grid}, {side * side}, D) tokens, "
                         f"got {tuple(tokens.shape)}")
    x = tokens.reshape(b, grid, grid, side, side, d).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, d, grid * side, grid * side)


def split_slices(feature_map: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`merge_slices`: ``(B, D, H, W)`` -> ``(B, grid*grid, (H/grid)*(W/grid), D)``."""
    b, d, h, w = feature_map.shape
    side = h // grid
    x = feature_map.reshape(b, d, grid, side, grid, side).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, grid * grid, side * side, d)


class SliceRestoreAdapter(nn.Module):
    """Merge the slices, local (depthwise 3 x 3) + global (self-attention at 1/``pool`` resolution,
    up-sampled) context on the whole map, cut back into slices; zero-initialised output projection."""

    def __init__(self, dim: int, grid: int, side: int, heads: int = 4, pool: int = 2):
        super().__init__()
        if side % pool:
            raise ValueError(f"SliceRestoreAdapter: the token map side {side} is not divisible by pool={pool}")
        self.grid, self.side, self.pool = grid, side, pool
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.pos = nn.Parameter(torch.zeros(1, (grid * side // pool) ** 2, dim))
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, grid*grid, side*side, D)`` -> the same shape."""
        whole = merge_slices(tokens, self.grid, self.side)
        local = self.local(whole)
        small = F.avg_pool2d(whole, self.pool)
        hs, ws = small.shape[-2:]
        seq = self.norm(small.flatten(2).transpose(1, 2)) + self.pos
        glob = self.attn(seq, seq, seq, need_weights=False)[0].transpose(1, 2).reshape(small.shape)
        glob = F.interpolate(glob, scale_factor=self.pool, mode="nearest")
        return self.proj(split_slices(local + glob, self.grid))


class _Block(nn.Module):
    """Pre-norm ViT block; with an adapter, ``x + attn(ln x) + adapter(ln x)`` on the slice views."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, adapter: SliceRestoreAdapter | None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.adapter = adapter

    def forward(self, x: torch.Tensor, slices_of: int | None = None) -> torch.Tensor:
        """``x`` ``(V, N, D)``; ``slices_of``: the views are ``B`` images x ``grid*grid`` slices (adapter on)."""
        h = self.norm1(x)
        out = x + self.attn(h, h, h, need_weights=False)[0]
        if self.adapter is not None and slices_of is not None:
            out = out + self.adapter(h.reshape(slices_of, -1, *h.shape[1:])).reshape(h.shape)
        return out + self.mlp(self.norm2(out))


class SelfMiningSampler(nn.Module):
    """Queries = the view's token map average-pooled by ``ratio`` (each keeps its place); they attend to
    all the view's tokens; ``query + attention``. ``(V, side*side, D)`` -> ``(V, (side/ratio)**2, D)``."""

    def __init__(self, dim: int, side: int, ratio: int, heads: int = 4):
        super().__init__()
        self.side, self.ratio = side, ratio
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        v, _, d = tokens.shape
        grid = tokens.transpose(1, 2).reshape(v, d, self.side, self.side)
        return F.avg_pool2d(grid, self.ratio).flatten(2).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.pooled(tokens)
        kv = self.norm_kv(tokens)
        return q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]


class _PoolSampler(SelfMiningSampler):
    """The pooled tokens alone (no attention): the naive compression at the same token budget."""

    def __init__(self, dim: int, side: int, ratio: int, heads: int = 4):
        nn.Module.__init__(self)
        self.side, self.ratio = side, ratio

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pooled(tokens)


class _QFormerSampler(nn.Module):
    """Learned queries (as many as the other samplers keep) attending to the tokens: positions are lost."""

    def __init__(self, dim: int, side: int, ratio: int, heads: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, (side // ratio) ** 2, dim) * 0.02)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        q = self.queries.expand(tokens.shape[0], -1, -1)
        return q + self.attn(q, kv, kv, need_weights=False)[0]


_SAMPLERS = {"sms": SelfMiningSampler, "pool": _PoolSampler, "qformer": _QFormerSampler}


class HiResLLaVA(nn.Module):
    """Sliced high-resolution ViT (+ SliceRestore adapters) -> sampler -> projector -> causal decoder.

    Args:
        vocab_size: the question/answer vocabulary (from the data set's metadata).
        question_length: the padded question length (from the data set's metadata).
        grid: slices per side (the paper: up to 4 slices + the global view, here 2 x 2).
        slice_size / patch_size: pixels per slice side / per ViT patch side.
        vit_dim / vit_depth / vit_heads: the vision encoder.
        restore: SliceRestore adapters in the blocks listed by ``restore_blocks`` (default: all);
            ``False`` is naive slicing.
        sampler: ``sms`` (Self-Mining Sampler), ``pool`` or ``qformer``; ``ratio``: token-map reduction per
            side (``1``: no sampler, every token).
        lm_dim / lm_depth / lm_heads: the causal language decoder.
    """

    metadata_inputs = ("vocab_size", "question_length")

    def __init__(self, vocab_size: Annotated[int, Ge(2)] = 32, question_length: Annotated[int, Ge(1)] = 8,
                 grid: Annotated[int, Ge(1)] = 2, slice_size: Annotated[int, Ge(4)] = 32,
                 patch_size: Annotated[int, Ge(1)] = 4, vit_dim: Annotated[int, Ge(8)] = 64,
                 vit_depth: Annotated[int, Ge(1)] = 4, vit_heads: Annotated[int, Ge(1)] = 4,
                 restore: bool = True, restore_blocks: list[int] | None = None,
                 sampler: Literal["sms", "pool", "qformer"] = "sms", ratio: Annotated[int, Ge(1)] = 2,
                 lm_dim: Annotated[int, Ge(8)] = 128, lm_depth: Annotated[int, Ge(1)] = 2,
                 lm_heads: Annotated[int, Ge(1)] = 4, mlp_ratio: Annotated[float, Ge(1)] = 4.0):
        super().__init__()
        if slice_size % patch_size:
            raise ValueError(f"slice_size {slice_size} is not divisible by patch_size {patch_size}")
        side = slice_size // patch_size
        if side % ratio:
            raise ValueError(f"the token map side {side} (slice_size / patch_size) is not divisible by ratio {ratio}")
        if vit_dim % vit_heads or lm_dim % lm_heads:
            raise ValueError(f"vit_dim ({vit_dim}) and lm_dim ({lm_dim}) must be divisible by their heads "
                             f"({vit_heads}, {lm_heads})")
        blocks = list(range(vit_depth)) if restore_blocks is None else list(restore_blocks)
        if any(not 0 <= i < vit_depth for i in blocks):
            raise ValueError(f"restore_blocks {blocks} must be block indices in 0..{vit_depth - 1}")
        pool = 2 if (grid * side) % 2 == 0 and side % 2 == 0 else 1
        self.vocab_size, self.question_length = vocab_size, question_length
        self.grid, self.slice_size = grid, slice_size
        self.patch_size, self.side, self.restore, self.ratio = patch_size, side, bool(restore), ratio
        self.patch = nn.Conv2d(3, vit_dim, patch_size, stride=patch_size)
        self.vit_pos = nn.Parameter(torch.randn(1, side * side, vit_dim) * 0.02)
        self.view_embed = nn.Parameter(torch.zeros(grid * grid + 1, vit_dim))  # global view + each slice's place
        self.blocks = nn.ModuleList(
            _Block(vit_dim, vit_heads, mlp_ratio,
                   SliceRestoreAdapter(vit_dim, grid, side, vit_heads, pool) if restore and i in blocks else None)
            for i in range(vit_depth))
        self.vit_norm = nn.LayerNorm(vit_dim)
        self.sampler = _SAMPLERS[sampler](vit_dim, side, ratio, vit_heads) if ratio > 1 else None
        self.projector = nn.Sequential(nn.Linear(vit_dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))
        self.visual_tokens = (grid * grid + 1) * (side // ratio) ** 2
        self.embed = nn.Embedding(vocab_size, lm_dim, padding_idx=0)
        # GPT/LLaMA's 0.02, not nn.Embedding's N(0, 1): with unit-variance rows (norm ~sqrt(lm_dim)) the text
        # tokens' residual streams dwarf what attention brings from the visual tokens (norm ~2 at initialisation)
        # and the decoder answers from the question alone for hundreds of steps.
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.lm_pos = nn.Parameter(torch.randn(1, self.visual_tokens + question_length, lm_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(lm_dim, lm_heads, int(lm_dim * mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, lm_depth, enable_nested_tensor=False)
        self.lm_norm = nn.LayerNorm(lm_dim)
        self.lm_head = nn.Linear(lm_dim, vocab_size)

    # ------------------------------------------------------------------ vision
    def views(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, 1 + grid*grid, 3, slice, slice)``: the global view, then the slices."""
        b, c, h, w = images.shape
        full = self.grid * self.slice_size
        if c != 3 or h != full or w != full:
            raise ValueError(f"HiResLLaVA: expected images (B, 3, {full}, {full}) (grid {self.grid} x slice "
                             f"{self.slice_size}), got {tuple(images.shape)}")
        glob = F.interpolate(images, size=(self.slice_size, self.slice_size), mode="bilinear",
                             align_corners=False, antialias=True)
        s = self.slice_size
        slices = images.reshape(b, c, self.grid, s, self.grid, s).permute(0, 2, 4, 1, 3, 5)
        return torch.cat([glob[:, None], slices.reshape(b, self.grid * self.grid, c, s, s)], 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``(B, visual_tokens, lm_dim)`` (global view first, then the slices row-major)."""
        views = self.views(images)
        b, v = views.shape[:2]
        x = self.patch(views.flatten(0, 1)).flatten(2).transpose(1, 2) + self.vit_pos
        x = (x.reshape(b, v, *x.shape[1:]) + self.view_embed[None, :, None]).reshape(b * v, *x.shape[1:])
        for block in self.blocks:
            glob = block(x.reshape(b, v, *x.shape[1:])[:, 0])
            slices = block(x.reshape(b, v, *x.shape[1:])[:, 1:].flatten(0, 1), slices_of=b)
            x = torch.cat([glob[:, None], slices.reshape(b, v - 1, *slices.shape[1:])], 1).flatten(0, 1)
        x = self.vit_norm(x)
        if self.sampler is not None:
            x = self.sampler(x)
        return self.projector(x).reshape(b, -1, self.projector[-1].out_features)

    # ------------------------------------------------------------------ language
    def forward(self, batch: dict) -> torch.Tensor:
        """Answer logits ``(B, vocab_size)`` at the question's last position. With several questions per image
        (``question`` ``(B, Q, Lq)``) the image is encoded once and each question is decoded on its own after the
        visual tokens, exactly as a one-question batch: logits ``(B, Q, vocab_size)``."""
        question, lq = batch["question"], self.question_length
        if question.dim() not in (2, 3) or question.shape[-1] != lq:
            raise ValueError(f"HiResLLaVA: expected question (B, {lq}) token ids (or (B, Q, {lq}): Q questions per "
                             f"image), got {tuple(question.shape)}")
        visual = self.encode(batch["inputs"])
        if question.dim() == 3:
            visual = visual.repeat_interleave(question.shape[1], 0)
        text = question.reshape(-1, lq)
        seq = torch.cat([visual, self.embed(text)], 1) + self.lm_pos
        n = seq.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=seq.device), 1)
        pad = torch.cat([torch.zeros(visual.shape[:2], dtype=torch.bool, device=seq.device), text == 0], 1)
        hidden = self.decoder(seq, mask=causal, src_key_padding_mask=pad)
        logits = self.lm_head(self.lm_norm(hidden[:, -1]))
        return logits.reshape(*question.shape[:-1], -1)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict:
        """Cross-entropy on the answer token only (of every question, with several per image)."""
        return {"loss": F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), batch["answer"].reshape(-1))}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> dict:
        """The answer token (greedy) and the logits."""
        return {"answer": outputs.argmax(-1), "logits": outputs}

    # ------------------------------------------------------------------ conformance kit
    @classmethod
    def example_config(cls) -> dict:
        return {"vocab_size": 12, "question_length": 4, "slice_size": 8, "patch_size": 2, "vit_dim": 16,
                "vit_depth": 2, "vit_heads": 2, "lm_dim": 16, "lm_depth": 1, "lm_heads": 2, "mlp_ratio": 2.0}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        side = self.grid * self.slice_size
        question = torch.randint(1, self.vocab_size, (batch_size, self.question_length), generator=g)
        question[:, 0] = 0  # left padding
        return {"inputs": torch.rand(batch_size, 3, side, side, generator=g), "question": question,
                "answer": torch.randint(0, self.vocab_size, (batch_size,), generator=g)}
