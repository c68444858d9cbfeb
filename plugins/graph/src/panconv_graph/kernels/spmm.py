"""Sparse propagation on the normalised user-item graph.

``normalized_adjacency`` builds Â = D^-1/2 A D^-1/2 of the bipartite graph (LightGCN Eq. 7,
no self-loops) as a ``torch.sparse_csr`` matrix. ``spmm_sym`` is the kernel ``Â @ X``: its
reference is ``torch.sparse.mm``; its implementations are custom autograd functions whose
backward is ``Â @ grad`` because Â is symmetric (no transpose is ever built):

* ``triton`` (CUDA; the CPU under ``TRITON_INTERPRET=1``): the CSR kernels of ``spmm_triton.py``;
* ``csr_sym`` (anywhere else): ``csr_mm``, i.e. ``torch.sparse.mm``'s own MKL product without its
  zero-filled output buffer.

``lightgcn_propagate`` computes the LightGCN layer combination ``mean_k Â^k E`` (Eq. 8 with
α_k = 1/(K+1)); given the rows a batch needs, the last forward hop and the first backward hop
touch only the edges of those rows, which removes two of the 2K full products per step. On the
device path (Triton) the same hops run on the row ids themselves (``_LightGCNRowsDevice``), so a
training step reads nothing back to the host; the CPU path (``_LightGCNRows``) is unchanged.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from panconv.api import Kernel

from . import spmm_triton


def make_csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` without the per-call beta/invariant warnings (inputs are valid by construction)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, tuple(shape), check_invariants=False)


def normalized_adjacency(users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor,
                         n_users: int, n_items: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Â = D^-1/2 [[0, R], [R^T, 0]] D^-1/2 as CSR over ``n_users + n_items`` nodes.

    Duplicate (user, item) pairs count once; nodes without edges get a zero row (the reference
    code's ``inf -> 0``). Users are nodes ``0..n_users-1``, items ``n_users..``. ``device``: where
    it is built (default: where ``users`` is), once, before training.
    """
    if not isinstance(users, torch.Tensor):
        users = torch.as_tensor(np.asarray(users))
    if not isinstance(items, torch.Tensor):
        items = torch.as_tensor(np.asarray(items))
    device = users.device if device is None else torch.device(device)
    users = users.to(device=device, dtype=torch.int64)
    items = items.to(device=device, dtype=torch.int64)
    n = n_users + n_items
    key = torch.unique(users * n_items + items)  # sorted, deduplicated
    u, i = key // n_items, key % n_items + n_users
    row = torch.cat([u, i])
    col = torch.cat([i, u])
    deg = torch.bincount(row, minlength=n).to(torch.float64)
    dinv = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    val = (dinv[row] * dinv[col]).to(dtype)
    order = torch.argsort(row * n + col)
    row, col, val = row[order], col[order], val[order]
    crow = torch.zeros(n + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    return make_csr(crow, col, val, (n, n))


def csr_mm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` without autograd: on the CPU the very product ``torch.sparse.mm`` makes (``addmm`` with
    beta = 0: the same MKL call, bitwise equal results, tested) written into a fresh buffer instead of a
    zero-filled one, which saves the fill and a copy: ~35% of a full Gowalla product on one thread."""
    if adj.layout != torch.sparse_csr or adj.device.type != "cpu" or x.dtype != adj.dtype or x.dim() != 2:
        return torch.sparse.mm(adj, x)
    out = torch.empty(adj.shape[0], x.shape[1], dtype=x.dtype)
    return torch.addmm(out, adj, x, beta=0, out=out)


def spmm_reference(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` with PyTorch's own sparse product (and its generic backward)."""
    return torch.sparse.mm(adj, x)


class _SymSpMM(torch.autograd.Function):
    """``Â @ X`` for a symmetric Â: the backward is ``Â @ grad`` (Â^T = Â)."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return csr_mm(adj, x)

    @staticmethod
    def backward(ctx, grad):
        return None, csr_mm(ctx.adj, grad.contiguous())


class _SymSpMMTriton(torch.autograd.Function):
    """``Â @ X`` by the Triton CSR kernel; the backward is the same kernel on the gradient (Â^T = Â)."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return spmm_triton.csr_spmm(adj, x)

    @staticmethod
    def backward(ctx, grad):
        return None, spmm_triton.csr_spmm(ctx.adj, grad)


spmm_sym = Kernel("graph.spmm_sym", reference=spmm_reference,
                  doc="Â @ X for a symmetric sparse Â (the normalised bipartite adjacency)")


def _triton_supports(adj, x) -> bool:
    return (adj.layout == torch.sparse_csr and adj.dim() == 2 and x.dim() == 2 and x.shape[0] == adj.shape[1]
            and adj.device == x.device and adj.values().dtype == torch.float32)


# registered first: on CUDA (or under TRITON_INTERPRET=1 on the CPU) it is the one selected
@spmm_sym.implementation("triton", backend="triton", dtypes=(torch.float32, torch.bfloat16, torch.float16),
                         supports=_triton_supports, atol=1e-5, rtol=1e-5)
def spmm_sym_triton(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Triton CSR x dense (``kernels/spmm_triton.py``), float32 accumulation; backward ``Â @ grad``."""
    return _SymSpMMTriton.apply(adj, x)


@spmm_sym.implementation("csr_sym", backend="torch",
                         supports=lambda adj, x: adj.layout == torch.sparse_csr and x.dim() == 2)
def spmm_sym_csr(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return _SymSpMM.apply(adj, x)


def uses_triton(adj: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``spmm_sym(adj, x)`` runs the Triton kernel here (CUDA, or the CPU under the interpreter);
    LightGCN then takes the device path (row kernels, no host synchronisation in a training step)."""
    impl = spmm_sym.select(adj, x)
    return impl is not None and impl.backend == "triton"


def _make_inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, 7, (30,), generator=g)
    items = torch.randint(0, 9, (30,), generator=g)
    adj = normalized_adjacency(users, items, 7, 9, dtype=dtype).to(device)
    return (adj, torch.randn(16, 5, generator=g, dtype=dtype).to(device)), {}


spmm_sym.make_inputs = _make_inputs


def csr_rows(adj: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The sub-matrix ``adj[rows]`` (``len(rows) x n``) of a CSR matrix, as CSR."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    start, end = crow[rows], crow[rows + 1]
    counts = end - start
    sub_crow = torch.zeros(len(rows) + 1, dtype=crow.dtype, device=crow.device)
    sub_crow[1:] = torch.cumsum(counts, 0)
    total = int(sub_crow[-1])
    # positions start[r] + 0..counts[r]-1 for every selected row, flattened
    offsets = (torch.arange(total, device=crow.device)
               - torch.repeat_interleave(sub_crow[:-1], counts, output_size=total))
    pos = torch.repeat_interleave(start, counts, output_size=total) + offsets
    return make_csr(sub_crow, col[pos], val[pos], (len(rows), adj.shape[1]))


def csr_columns(adj: torch.Tensor, cols: torch.Tensor, edge_rows: torch.Tensor | None = None) -> torch.Tensor:
    """The sub-matrix ``adj[:, cols]`` (``n x len(cols)``, columns renumbered ``0..len(cols)-1``) as CSR.

    ``cols`` must be unique. One masked pass over the edges; CSR order is kept.
    """
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    n = adj.shape[0]
    local = torch.full((adj.shape[1],), -1, dtype=col.dtype, device=col.device)
    local[cols] = torch.arange(len(cols), dtype=col.dtype, device=col.device)
    new_col = local[col]
    keep = new_col >= 0
    counts = torch.zeros(col.numel() + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(keep, 0, out=counts[1:])
    return make_csr(counts[crow], new_col[keep], val[keep], (n, len(cols)))


def csr_transpose(adj: torch.Tensor) -> torch.Tensor:
    """``adj^T`` as CSR (through the CSC form: column-sorted, no pass over anything but ``adj``'s edges)."""
    csc = adj.to_sparse_csc()
    return make_csr(csc.ccol_indices(), csc.row_indices(), csc.values(), (adj.shape[1], adj.shape[0]))


class _LightGCNRows(torch.autograd.Function):
    """``(mean_{k=0..K} Â^k E)[rows]`` with a sparse last hop forward and first hop backward.

    Forward: K-1 full products, then ``Â[rows] @ E_{K-1}``. Backward: with ``h_0`` the gradient
    scattered to ``rows``, ``h_1 = Â h_0 = Â[:, rows] g``, then K-1 full products ``h_k = Â h_{k-1}``;
    grad E = mean_k h_k (Â is symmetric, so no transpose is needed anywhere).
    """

    @staticmethod
    def forward(ctx, adj, emb, rows, n_layers):
        acc = emb[rows]
        cur = emb
        for _ in range(n_layers - 1):
            cur = csr_mm(adj, cur)
            acc = acc + cur[rows]
        ctx.sub = None
        if n_layers >= 1:
            sub = csr_rows(adj, rows)
            acc = acc + csr_mm(sub, cur)
            if len(rows) < 2 or bool((rows[1:] > rows[:-1]).all()):
                ctx.sub = sub  # sorted unique rows: Â[:, rows] = Â[rows]^T exactly (same entries, same order)
        ctx.adj, ctx.n_layers, ctx.n = adj, n_layers, emb.shape[0]
        ctx.save_for_backward(rows)
        return acc / (n_layers + 1)

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        grad = (grad / (ctx.n_layers + 1)).contiguous()
        if ctx.n_layers == 0:
            out = torch.zeros(ctx.n, grad.shape[1], dtype=grad.dtype, device=grad.device)
            return None, out.index_add_(0, rows, grad), None, None
        cols = csr_transpose(ctx.sub) if ctx.sub is not None else csr_columns(ctx.adj, rows)
        ctx.sub = None
        cur = csr_mm(cols, grad)                                     # h_1 = Â[:, rows] g
        out = cur.clone()
        out.index_add_(0, rows, grad)                                # h_0
        for _ in range(ctx.n_layers - 1):
            cur = csr_mm(ctx.adj, cur)
            out += cur
        return None, out, None, None


class _LightGCNRowsDevice(torch.autograd.Function):
    """``_LightGCNRows`` with the Triton kernels, for the GPU: the same hops, no host synchronisation.

    The last forward hop is ``csr_spmm(Â, E_{K-1}, rows)`` (row-restricted, straight from the row
    ids) and the first backward hop ``csr_scatter_rows(Â, rows, g)`` = ``Â[rows]^T g`` = ``Â[:, rows] g``;
    neither builds a sub-matrix (whose size would have to be read on the host), and ``rows`` may repeat.
    """

    @staticmethod
    def forward(ctx, adj, emb, rows, n_layers):
        acc = emb[rows]
        cur = emb
        for _ in range(n_layers - 1):
            cur = spmm_triton.csr_spmm(adj, cur)
            acc = acc + cur[rows]
        if n_layers >= 1:
            acc = acc + spmm_triton.csr_spmm(adj, cur, rows)
        ctx.adj, ctx.n_layers, ctx.n = adj, n_layers, emb.shape[0]
        ctx.save_for_backward(rows)
        return acc / (n_layers + 1)

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        grad = (grad / (ctx.n_layers + 1)).contiguous()
        if ctx.n_layers == 0:
            out = torch.zeros(ctx.n, grad.shape[1], dtype=grad.dtype, device=grad.device)
            return None, out.index_add_(0, rows, grad), None, None
        cur = spmm_triton.csr_scatter_rows(ctx.adj, rows, grad).to(grad.dtype)  # h_1 = Â[:, rows] g
        out = cur.clone()
        out.index_add_(0, rows, grad)                                            # h_0
        for _ in range(ctx.n_layers - 1):
            cur = spmm_triton.csr_spmm(ctx.adj, cur)
            out += cur
        return None, out, None, None


def lightgcn_propagate(adj: torch.Tensor, emb: torch.Tensor, n_layers: int,
                       rows: torch.Tensor | None = None) -> torch.Tensor:
    """LightGCN's final embeddings ``mean_{k=0..K} Â^k E`` (all nodes, or only ``rows``).

    ``rows`` must be unique node indices on the CPU path (``torch.sparse``); with the Triton kernel
    (CUDA, or the interpreter) they may repeat. With them the result is ``(len(rows), d)``.
    """
    if rows is not None and adj.layout == torch.sparse_csr:
        if uses_triton(adj, emb):
            return _LightGCNRowsDevice.apply(adj, emb, rows, n_layers)
        return _LightGCNRows.apply(adj, emb, rows, n_layers)
    acc = emb
    cur = emb
    for _ in range(n_layers):
        cur = spmm_sym(adj, cur)
        acc = acc + cur
    out = acc / (n_layers + 1)
    return out if rows is None else out[rows]
