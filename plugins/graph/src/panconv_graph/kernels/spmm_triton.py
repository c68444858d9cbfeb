"""Triton CSR x dense products behind ``graph.spmm_sym`` on the GPU (and under ``TRITON_INTERPRET=1``).

Two kernels over a CSR matrix ``A`` (``crow``, ``col``, ``val``; int32 or int64 indices) and a dense,
row-major ``X`` (``n x d``, e.g. d = 64 embeddings):

* ``csr_spmm(adj, x, rows=None)``: ``(A @ X)[rows]`` (all rows when ``rows`` is None). One program per
  output row and block of ``BLOCK_D`` columns walks the row's edges ``BLOCK_E`` at a time, gathers
  the ``BLOCK_E x BLOCK_D`` tile of ``X`` and accumulates ``val · X[col]`` in float32. ``rows`` may
  repeat and is never read on the host, so the row-restricted product needs no sub-matrix (building
  one needs its size: a device-to-host sync).
* ``csr_scatter_rows(adj, rows, g)``: ``A[rows]^T @ G`` (``n x d``, float32). For a symmetric ``A``
  this is ``A[:, rows] @ G``, the first hop of LightGCN's backward when the forward only produced the
  batch's rows. Each program adds ``val · G[i]`` into the rows ``col`` of row ``rows[i]``'s edges with
  atomic adds (the float32 summation order is not fixed on a GPU).

Rows without edges give zero rows; ``X`` in float16/bfloat16 is read as such and accumulated in
float32. The edge loop is a ``while`` over the row's extent, so a hub row of thousands of edges is
one program (Gowalla's degrees go up to ~1,300 on 70k nodes); work per program is proportional to
the row's degree.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

#: edges per step of a row's loop, and the widest column block one program handles
BLOCK_E = 32
MAX_BLOCK_D = 64

if triton is not None:
    @triton.jit
    def _csr_gather_kernel(crow_ptr, col_ptr, val_ptr, x_ptr, rows_ptr, out_ptr, D, stride_x, stride_out,
                           HAS_ROWS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
        """``out[i, d] = sum_{e in row r} val[e] * x[col[e], d]`` with ``r = rows[i]`` (or ``i``)."""
        i = tl.program_id(0)
        if HAS_ROWS:
            row = tl.load(rows_ptr + i)
        else:
            row = i
        start = tl.load(crow_ptr + row).to(tl.int64)
        end = tl.load(crow_ptr + row + 1).to(tl.int64)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        d_ok = d < D
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        e0 = start
        while e0 < end:  # (a `while`: the interpreter cannot take loaded bounds in range())
            e = e0 + tl.arange(0, BLOCK_E)
            e_ok = e < end
            c = tl.load(col_ptr + e, mask=e_ok, other=0).to(tl.int64)
            v = tl.load(val_ptr + e, mask=e_ok, other=0.0).to(tl.float32)
            tile = tl.load(x_ptr + c[:, None] * stride_x + d[None, :], mask=e_ok[:, None] & d_ok[None, :], other=0.0)
            acc += tl.sum(v[:, None] * tile.to(tl.float32), axis=0)
            e0 += BLOCK_E
        tl.store(out_ptr + i.to(tl.int64) * stride_out + d, acc.to(out_ptr.dtype.element_ty), mask=d_ok)

    @triton.jit
    def _csr_scatter_kernel(crow_ptr, col_ptr, val_ptr, g_ptr, rows_ptr, out_ptr, D, stride_g, stride_out,
                            BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
        """``out[col[e], d] += val[e] * g[i, d]`` for the edges ``e`` of row ``rows[i]`` (float32 atomics)."""
        i = tl.program_id(0)
        row = tl.load(rows_ptr + i)
        start = tl.load(crow_ptr + row).to(tl.int64)
        end = tl.load(crow_ptr + row + 1).to(tl.int64)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        d_ok = d < D
        g = tl.load(g_ptr + i.to(tl.int64) * stride_g + d, mask=d_ok, other=0.0).to(tl.float32)
        e0 = start
        while e0 < end:
            e = e0 + tl.arange(0, BLOCK_E)
            e_ok = e < end
            c = tl.load(col_ptr + e, mask=e_ok, other=0).to(tl.int64)
            v = tl.load(val_ptr + e, mask=e_ok, other=0.0).to(tl.float32)
            tl.atomic_add(out_ptr + c[:, None] * stride_out + d[None, :], v[:, None] * g[None, :],
                          mask=e_ok[:, None] & d_ok[None, :])
            e0 += BLOCK_E


def available() -> bool:
    return triton is not None


def _block_d(d: int) -> int:
    return min(MAX_BLOCK_D, max(16, triton.next_power_of_2(d)))


def _csr_parts(adj: torch.Tensor):
    if adj.layout != torch.sparse_csr or adj.dim() != 2:
        raise ValueError(f"spmm_sym (triton): expected a 2-D sparse CSR matrix, got layout {adj.layout} "
                         f"with {adj.dim()} dims")
    return adj.crow_indices(), adj.col_indices(), adj.values()


def _dense(x: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] != n:
        raise ValueError(f"spmm_sym (triton): {what} must be ({n}, d), got {tuple(x.shape)}")
    return x if x.stride(1) == 1 else x.contiguous()


def csr_spmm(adj: torch.Tensor, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``(adj @ x)[rows]`` (``rows`` None: every row) in ``x``'s dtype, accumulated in float32."""
    if triton is None:  # pragma: no cover
        raise RuntimeError("triton is not installed")
    crow, col, val = _csr_parts(adj)
    x = _dense(x, adj.shape[1], "x")
    n_out = adj.shape[0] if rows is None else rows.shape[0]
    out = torch.empty(n_out, x.shape[1], dtype=x.dtype, device=x.device)
    if n_out == 0 or x.shape[1] == 0:
        return out.zero_()
    block_d = _block_d(x.shape[1])
    grid = (n_out, triton.cdiv(x.shape[1], block_d))
    _csr_gather_kernel[grid](crow, col, val, x, crow if rows is None else rows, out, x.shape[1], x.stride(0),
                             out.stride(0), HAS_ROWS=rows is not None, BLOCK_E=BLOCK_E, BLOCK_D=block_d)
    return out


def csr_scatter_rows(adj: torch.Tensor, rows: torch.Tensor, g: torch.Tensor,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """``adj[rows]^T @ g`` as a float32 ``(adj.shape[1], d)`` matrix (added into ``out`` when given)."""
    if triton is None:  # pragma: no cover
        raise RuntimeError("triton is not installed")
    crow, col, val = _csr_parts(adj)
    g = _dense(g, rows.shape[0], "g")
    if out is None:
        out = torch.zeros(adj.shape[1], g.shape[1], dtype=torch.float32, device=g.device)
    elif out.dtype != torch.float32 or out.shape != (adj.shape[1], g.shape[1]) or not out.is_contiguous():
        raise ValueError(f"csr_scatter_rows: out must be a contiguous float32 ({adj.shape[1]}, {g.shape[1]}) "
                         f"matrix, got {out.dtype} {tuple(out.shape)}")
    if rows.shape[0] == 0 or g.shape[1] == 0:
        return out
    block_d = _block_d(g.shape[1])
    grid = (rows.shape[0], triton.cdiv(g.shape[1], block_d))
    _csr_scatter_kernel[grid](crow, col, val, g, rows, out, g.shape[1], g.stride(0), out.stride(0),
                              BLOCK_E=BLOCK_E, BLOCK_D=block_d)
    return out


__all__ = ["available", "csr_scatter_rows", "csr_spmm"]
