"""Combiner: Full Attention Transformer with Sparse Computation Cost (Ren et al., NeurIPS 2021, arXiv:2107.05768).

Each query ``i`` attends *directly* to a local set ``Omega_i^0`` and, for every other region
``Omega_i^r`` of a partition of the rest of the attended positions, to the region's *summary*:

    p(j | i) = softmax(q_i . k_j / sqrt(h))                 j in Omega_i^0
    p(j | i) = p(Omega_i^r | i) * q(j | Omega_i^r)          j in Omega_i^r

normalised jointly over the direct keys and the region summaries. The summary key of a region is the
mean of its keys, scored with ``+ log |Omega|`` (``sum_j exp(q.k_j) ~ |Omega| exp(q.k_mean)``); the
within-region distribution ``q(j | Omega) = softmax_j(k_j . u)`` (``u`` a learned vector per head) does
not depend on the query, so every summary value ``sum_j q(j|Omega) v_j`` is computed once and shared.
Every position ``j <= i`` (causal) or every ``j`` (bidirectional) gets a non-zero probability — full
attention support — at the cost of a sparse pattern. The partitions ("factorizations"):

* ``fixed`` (Combiner-Fixed): blocks of ``b`` positions; the query's own block is direct, every other
  (causal: every earlier) block is a region. ``b ~ sqrt(L)``: ``O(L sqrt L)``.
* ``axial`` (Combiner-Axial): the sequence as rows of ``b``; the query's row is direct; each column
  restricted to the rows before the query's row is a region (bidirectional: also the column restricted
  to the rows after it). ``O(L sqrt L)``.
* ``logsparse`` (Combiner-Logsparse): leaf blocks of ``b``; the query's leaf block is direct, and the rest
  is partitioned into dyadic regions whose size doubles with the distance: at each level ``l`` of the binary
  tree over the blocks, the sibling of the query's ancestor (causal: only when it lies before the query).
  ``log2(L / b)`` summaries per query, all computable in ``O(L log L)``.

Positions are rotary-embedded on queries and keys before anything is summarised.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from .layers import SequenceBackbone, rotary

FACTORIZATIONS = ("fixed", "axial", "logsparse")


def _summaries(k: torch.Tensor, v: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor):
    """Summaries of groups ``(N, H, G, S, h)`` with within-group logits ``(N, H, G, S)`` and ``valid (G, S)``.

    Returns the mean key ``(N, H, G, h)``, the summary value ``sum_j softmax_j(logits) v_j`` ``(N, H, G, h)``
    and ``log |group|`` ``(G,)`` (``-inf`` for an empty group).
    """
    count = valid.sum(-1)
    k_mean = (k * valid[..., None]).sum(-2) / count.clamp(min=1)[..., None]
    weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)
    v_sum = (weights[..., None] * v).sum(-2)
    return k_mean, v_sum, count.to(k.dtype).log()


def _exclusive_cumsum(t: torch.Tensor, dim: int, reverse: bool = False) -> torch.Tensor:
    """Sum over the entries strictly before (``reverse``: strictly after) each index along ``dim``."""
    t = t.flip(dim) if reverse else t
    s = t.cumsum(dim) - t
    return s.flip(dim) if reverse else s


class CombinerAttention(nn.Module):
    """Multi-head Combiner self-attention ``(N, L, d) -> (N, L, d)`` (see the module docstring).

    :meth:`attend` is the factorised attention on projected heads ``(N, H, L, h)``; ``within_logits`` gives
    the logits of ``q(j | Omega)`` so that tests can rebuild the implied dense attention matrix.
    """

    def __init__(self, d_model: int, n_heads: int = 4, factorization: str = "fixed", block_size: int | None = None,
                 causal: bool = False):
        super().__init__()
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization must be one of {', '.join(FACTORIZATIONS)}, got {factorization!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.factorization, self.block_size, self.causal = factorization, block_size, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.u = nn.Parameter(torch.randn(n_heads, self.head_dim) / math.sqrt(self.head_dim))

    def block_for(self, length: int) -> int:
        """The block/row/leaf size used at ``length``: ``block_size``, else ``~sqrt(L)`` (``16`` for logsparse)."""
        if self.block_size is not None:
            return self.block_size
        if self.factorization == "logsparse":
            return 16
        return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(length)))))

    def within_logits(self, k: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(j | Omega)`` for keys ``(N, H, ..., h)``."""
        shape = (1, self.n_heads) + (1,) * (k.dim() - 3) + (self.head_dim,)
        return (k * self.u.view(shape)).sum(-1) / math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = (t.view(n, length, self.n_heads, self.head_dim).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        pos = torch.arange(length, device=x.device)
        q, k = rotary(q, pos), rotary(k, pos)
        return self.out(self.attend(q, k, v).transpose(1, 2).reshape(n, length, d))

    # ------------------------------------------------------------------ factorised attention
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        length = q.shape[2]
        b = min(self.block_for(length), length)
        if self.factorization == "logsparse":
            blocks = 2 ** math.ceil(math.log2(math.ceil(length / b)))
        else:
            blocks = math.ceil(length / b)
        padded = blocks * b
        valid = torch.arange(padded, device=q.device) < length
        q, k, v = (F.pad(t, (0, 0, 0, padded - length)) for t in (q, k, v))
        n, heads, _, h = q.shape
        qb, kb, vb = (t.view(n, heads, blocks, b, h) for t in (q, k, v))
        vmask = valid.view(blocks, b)
        scale = 1.0 / math.sqrt(h)
        # direct: the query's own block / row (causal: keys up to the query); the diagonal is always allowed,
        # so padded queries never see an empty row
        direct = torch.einsum("nagie,nagje->nagij", qb, kb) * scale
        eye = torch.eye(b, dtype=torch.bool, device=q.device)
        allowed = torch.ones(b, b, dtype=torch.bool, device=q.device).tril() if self.causal \
            else vmask[:, None, :] | eye                                             # (b, b) or (G, b, b)
        direct = direct.masked_fill(~allowed, float("-inf"))
        logits_in = self.within_logits(kb)                                           # (N, H, G, b)
        if self.factorization == "fixed":
            k_sum, v_sum, logc = _summaries(kb, vb, logits_in, vmask)                   # (N, H, G, h), (G,)
            summary = torch.einsum("nagie,nare->nagir", qb, k_sum) * scale + logc
            g = torch.arange(blocks, device=q.device)
            ok = (g[None, :] < g[:, None]) if self.causal else (g[None, :] != g[:, None])
            ok = ok & torch.isfinite(logc)[None, :]                                     # (G, R)
            summary = summary.masked_fill(~ok[:, None, :], float("-inf"))
            p = torch.softmax(torch.cat([direct, summary], -1), -1)
            out = p[..., :b] @ vb + torch.einsum("nagir,nare->nagie", p[..., b:], v_sum)
        elif self.factorization == "axial":
            keys, values, logcs = self._column_summaries(kb, vb, logits_in, vmask)      # each (N, H, G, b, h)/(G, b)
            summary = torch.cat([torch.einsum("nagie,nagce->nagic", qb, kk) * scale + lc[None, None, :, None, :]
                                 for kk, lc in zip(keys, logcs)], -1)
            p = torch.softmax(torch.cat([direct, summary], -1), -1)
            out = p[..., :b] @ vb
            for i, vv in enumerate(values):
                out = out + torch.einsum("nagic,nagce->nagie", p[..., b * (i + 1):b * (i + 2)], vv)
        else:
            levels = int(math.log2(blocks))
            g = torch.arange(blocks, device=q.device)
            keys, values, logcs = [], [], []
            for level in range(levels):
                size = b << level
                k_sum, v_sum, logc = _summaries(k.view(n, heads, blocks >> level, size, h),
                                                v.view(n, heads, blocks >> level, size, h),
                                                logits_in.reshape(n, heads, blocks >> level, size),
                                                vmask.reshape(blocks >> level, size))
                sibling = (g >> level) ^ 1                                               # (G,)
                lc = logc[sibling]
                if self.causal:  # the sibling lies before the query's ancestor exactly when bit `level` is set
                    lc = lc.masked_fill(((g >> level) & 1) == 0, float("-inf"))
                keys.append(k_sum[:, :, sibling])
                values.append(v_sum[:, :, sibling])
                logcs.append(lc)
            if levels:
                ks, vs, lcs = torch.stack(keys, 3), torch.stack(values, 3), torch.stack(logcs, 1)  # (N,H,G,T,h), (G,T)
                summary = torch.einsum("nagie,nagte->nagit", qb, ks) * scale + lcs[None, None, :, None, :]
                p = torch.softmax(torch.cat([direct, summary], -1), -1)
                out = p[..., :b] @ vb + torch.einsum("nagit,nagte->nagie", p[..., b:], vs)
            else:
                out = torch.softmax(direct, -1) @ vb
        return out.reshape(n, heads, padded, h)[:, :, :length]

    def _column_summaries(self, kb, vb, logits, vmask):
        """Axial regions: per (row, column), the column over the rows before (and, bidirectional, after) the row."""
        scans = [False] if self.causal else [False, True]
        keys, values, logcs = [], [], []
        valid = vmask.to(kb.dtype)                                                   # (R, C)
        stable = logits.masked_fill(~vmask, float("-inf")).amax(2, keepdim=True).detach().nan_to_num(0.0)
        weights = torch.exp(logits - stable) * valid                                 # (N, H, R, C)
        for reverse in scans:
            count = _exclusive_cumsum(valid, 0, reverse)                             # (R, C)
            k_mean = _exclusive_cumsum(kb * valid[..., None], 2, reverse) / count.clamp(min=1)[..., None]
            v_sum = (_exclusive_cumsum(weights[..., None] * vb, 2, reverse)
                     / _exclusive_cumsum(weights, 2, reverse).clamp(min=1e-30)[..., None])
            logc = count.log()
            keys.append(k_mean)
            values.append(v_sum)
            logcs.append(logc)
        return keys, values, logcs


class Combiner(SequenceBackbone):
    """Combiner backbone: pre-norm blocks whose mixer is :class:`CombinerAttention`.

    Args:
        n_heads: attention heads.
        factorization: ``fixed``, ``axial`` or ``logsparse`` (see the module docstring).
        block_size: the direct block / row / leaf size (default: ``~sqrt(L)`` for fixed and axial, 16 for
            logsparse).
        causal: attend to positions ``<= t`` only (language modelling).
    """

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 2,
                 n_heads: Annotated[int, Ge(1)] = 4, factorization: Literal["fixed", "axial", "logsparse"] = "fixed",
                 block_size: Annotated[int, Ge(1)] | None = None, causal: bool = False,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 mlp_ratio: Annotated[float, Ge(0)] = 2.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization must be one of {', '.join(FACTORIZATIONS)}, got {factorization!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.n_heads, self.factorization, self.block_size, self.causal = n_heads, factorization, block_size, causal
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return CombinerAttention(self.d_model, self.n_heads, self.factorization, self.block_size, self.causal)

    @classmethod
    def example_config(cls) -> dict:
        return {"d_model": 16, "n_layers": 2, "vocab_size": 11, "n_heads": 2, "factorization": "logsparse",
                "block_size": 4, "causal": True}
