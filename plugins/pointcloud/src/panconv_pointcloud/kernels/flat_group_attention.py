"""``pointcloud.flat_group_attention``: FlatFormer's sort -> equal-size groups -> attention -> scatter.

Shapes: ``q``, ``k``, ``v`` are ``(P, H, D)`` per-token projections in the tokens' own (flat)
order; ``slots`` is ``(G * group_size,)``: the token that sits in each slot of the sorted,
padded sequence (slot ``s`` belongs to group ``s // group_size``; the padding that fills a
sample's last group repeats tokens of that sample, as the official FlatFormer does);
``slot_of`` is ``(P,)``: the one slot whose result each token takes (``slots[slot_of[t]] == t``).

    out[t] = softmax(q_s k_G^T / sqrt(D)) v_G   with s = slot_of[t], G = the slots of s's group

(every head separately). So every token is *attended* (computes its output) exactly once, in
one group of exactly ``group_size`` slots; the padding copies only serve as extra keys.

The reference gathers the slots into a ``(G, H, group_size, D)`` tensor, runs
``scaled_dot_product_attention`` and gathers each token's slot back. The Triton kernel fuses
the three: one program per (group, head) loads the group's rows of ``q``/``k``/``v`` through
``slots`` (no gathered copy) and runs an online softmax over the group's keys in blocks (flash-
attention style, float32 on chip; a third grid axis splits groups larger than 64 query slots),
then writes each result row straight to its token when that slot is the token's own
(``slot_of[slots[s]] == s``): no padded tensor, no separate scatter. Its backward
recomputes through the reference (autograd of the gather-SDPA-gather chain).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from panconv.api import Kernel


def _check(q, k, v, slots, slot_of, group_size) -> None:
    if q.dim() != 3 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"flat_group_attention: q, k, v must be (P, H, D) of one shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if group_size < 1 or slots.dim() != 1 or slots.numel() % group_size:
        raise ValueError(f"flat_group_attention: slots must be 1-D with a multiple of group_size={group_size} "
                         f"entries, got {tuple(slots.shape)}")
    if slot_of.shape != (q.shape[0],):
        raise ValueError(f"flat_group_attention: slot_of must be (P,) = ({q.shape[0]},), got {tuple(slot_of.shape)}")


def flat_group_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
                                   slot_of: torch.Tensor, group_size: int) -> torch.Tensor:
    """Gather into groups, ``scaled_dot_product_attention`` per group and head, gather back."""
    _check(q, k, v, slots, slot_of, group_size)
    heads, dim = q.shape[1:]
    groups = slots.numel() // group_size

    def grouped(t):
        return t[slots].view(groups, group_size, heads, dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(grouped(q), grouped(k), grouped(v))  # (G, H, g, D)
    out = out.transpose(1, 2).reshape(groups * group_size, heads, dim)
    return out[slot_of]


flat_group_attention = Kernel(
    "pointcloud.flat_group_attention", reference=flat_group_attention_reference,
    doc="FlatFormer's flattened-window attention: tokens gathered by slot into equal-size groups, softmax "
        "attention per group and head, each token's own slot scattered back (SDPA reference; fused Triton)")


def _make_inputs(device, dtype, seed):
    """Two samples of 23 and 9 tokens, group size 8: the second sample's only group is padded by repeats."""
    g = torch.Generator().manual_seed(seed)
    heads, dim, group = (2, 16, 8) if seed == 0 else (1, 8, 5)
    counts = (23, 9) if seed == 0 else (11,)
    slots, slot_of, start, start_p = [], [], 0, 0
    for n in counts:
        order = torch.randperm(n, generator=g) + start
        padded = -(-n // group) * group
        local = torch.arange(padded)
        local = torch.where(local < n, local, torch.where(torch.tensor(n >= group), local - group, local % n))
        slots.append(order[local])
        inv = torch.empty(n, dtype=torch.long)
        inv[order - start] = torch.arange(n) + start_p
        slot_of.append(inv)
        start, start_p = start + n, start_p + padded
    total = sum(counts)
    q, k, v = (torch.randn(total, heads, dim, generator=g, dtype=dtype).to(device) for _ in range(3))
    return (q, k, v, torch.cat(slots).to(device), torch.cat(slot_of).to(device), group), {}


flat_group_attention.make_inputs = _make_inputs


# ---- Triton: fused gather + group attention + scatter ----
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

if triton is not None:
    @triton.jit
    def _flat_group_attention_kernel(q_ptr, k_ptr, v_ptr, slots_ptr, slot_of_ptr, out_ptr, H, D, scale,
                                     GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                     BLOCK_D: tl.constexpr):
        """One program per (group, head, block of BLOCK_M query slots): online-softmax attention over the group's
        key slots in blocks of BLOCK_N (flash-attention style, float32), written to the tokens whose own slot it
        is. GROUP is a compile-time constant (one compilation per group size)."""
        group = tl.program_id(0)
        head = tl.program_id(1)
        cols = tl.arange(0, BLOCK_D)
        in_dim = cols < D
        rows = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        in_group = rows < GROUP
        slot = group * GROUP + rows
        token = tl.load(slots_ptr + slot, mask=in_group, other=0)
        q_base = (token.to(tl.int64) * H + head) * D
        q = tl.load(q_ptr + q_base[:, None] + cols[None, :], mask=in_group[:, None] & in_dim[None, :],
                    other=0.0).to(tl.float32)
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for start in range(0, GROUP, BLOCK_N):
            keys = start + tl.arange(0, BLOCK_N)
            in_keys = keys < GROUP
            key_token = tl.load(slots_ptr + group * GROUP + keys, mask=in_keys, other=0)
            kv_base = (key_token.to(tl.int64) * H + head) * D
            kv_mask = in_keys[:, None] & in_dim[None, :]
            k = tl.load(k_ptr + kv_base[:, None] + cols[None, :], mask=kv_mask, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + kv_base[:, None] + cols[None, :], mask=kv_mask, other=0.0).to(tl.float32)
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # fp32 products (no TF32)
            scores = tl.where(in_keys[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            m_i = m_new
        out = acc / l_i[:, None]
        own = tl.load(slot_of_ptr + token, mask=in_group, other=-1) == slot  # the token's own slot (not padding)
        tl.store(out_ptr + q_base[:, None] + cols[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=in_group[:, None] & in_dim[None, :] & own[:, None])

    def _fused(q, k, v, slots, slot_of, group_size):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        tokens, heads, dim = q.shape
        out = torch.empty_like(q)
        groups = slots.numel() // group_size
        block = min(64, max(16, triton.next_power_of_2(group_size)))
        block_d = max(16, triton.next_power_of_2(dim))
        if groups:
            grid = (groups, heads, triton.cdiv(group_size, block))
            _flat_group_attention_kernel[grid](q, k, v, slots.contiguous(), slot_of.contiguous(), out, heads, dim,
                                               1.0 / math.sqrt(dim), GROUP=group_size, BLOCK_M=block, BLOCK_N=block,
                                               BLOCK_D=block_d)
        return out
else:  # pragma: no cover
    def _fused(q, k, v, slots, slot_of, group_size):
        raise RuntimeError("triton is not installed")


class _FusedFlatGroupAttention(torch.autograd.Function):
    """Triton forward; backward by autograd through the reference (recomputed)."""

    @staticmethod
    def forward(ctx, q, k, v, slots, slot_of, group_size):
        ctx.save_for_backward(q, k, v, slots, slot_of)
        ctx.group_size = group_size
        return _fused(q, k, v, slots, slot_of, group_size)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, slots, slot_of = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip((q, k, v), ctx.needs_input_grad[:3])]
            out = flat_group_attention_reference(*leaves, slots, slot_of, ctx.group_size)
            wanted = [t for t in leaves if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad))
        return (*(next(grads) if t.requires_grad else None for t in leaves), None, None, None)


#: widest head the fused kernel keeps on chip (BLOCK_D = next power of two)
TRITON_MAX_HEAD_DIM = 128


def _triton_supports(q, k, v, slots, slot_of, group_size) -> bool:
    return (q.dim() == 3 and k.shape == q.shape and v.shape == q.shape and q.dtype == k.dtype == v.dtype
            and group_size >= 1 and q.shape[-1] <= TRITON_MAX_HEAD_DIM and slots.device == q.device)


@flat_group_attention.implementation("triton", backend="triton", dtypes=(torch.float32,), supports=_triton_supports,
                                     atol=1e-4, rtol=1e-4)
def flat_group_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
                                slot_of: torch.Tensor, group_size: int) -> torch.Tensor:
    """The fused kernel (differentiable); same conventions as :func:`flat_group_attention_reference`."""
    _check(q, k, v, slots, slot_of, group_size)
    return _FusedFlatGroupAttention.apply(q, k, v, slots, slot_of, group_size)


__all__ = ["TRITON_MAX_HEAD_DIM", "flat_group_attention", "flat_group_attention_reference",
           "flat_group_attention_triton"]
