"""LightGCN propagation equals independent computations (dense Â^k E mean, PyG LGConv)."""

import numpy as np
import pytest
import torch

from panconv_graph.kernels.spmm import (
    csr_columns,
    csr_rows,
    csr_transpose,
    lightgcn_propagate,
    normalized_adjacency,
    spmm_reference,
    spmm_sym,
)
from panconv_graph.models.lightgcn import LightGCN


def random_graph(n_users=13, n_items=17, n_edges=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_users, n_edges), rng.integers(0, n_items, n_edges), n_users, n_items


def dense_adjacency(users, items, n_users, n_items):
    """Â = D^-1/2 A D^-1/2 written out densely from the definition (independent of the CSR code)."""
    n = n_users + n_items
    a = np.zeros((n, n))
    for u, i in zip(users, items):
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    return torch.tensor(dinv[:, None] * a * dinv[None, :])


def test_adjacency_matches_definition():
    users, items, nu, ni = random_graph()
    adj = normalized_adjacency(users, items, nu, ni, dtype=torch.float64)
    assert adj.layout == torch.sparse_csr
    dense = dense_adjacency(users, items, nu, ni)
    torch.testing.assert_close(adj.to_dense(), dense, rtol=0, atol=1e-12)
    assert torch.all(torch.diagonal(adj.to_dense()) == 0)  # no self-loops
    torch.testing.assert_close(adj.to_dense(), adj.to_dense().t())


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3, 4])
def test_propagation_equals_dense_mean(n_layers):
    users, items, nu, ni = random_graph(seed=n_layers)
    adj = normalized_adjacency(users, items, nu, ni, dtype=torch.float64)
    dense = dense_adjacency(users, items, nu, ni)
    emb = torch.randn(nu + ni, 6, dtype=torch.float64)
    expected = sum(torch.linalg.matrix_power(dense, k) @ emb for k in range(n_layers + 1)) / (n_layers + 1)
    torch.testing.assert_close(lightgcn_propagate(adj, emb, n_layers), expected, rtol=0, atol=1e-6)
    rows = torch.tensor([0, 3, nu + 2, nu + 5])
    torch.testing.assert_close(lightgcn_propagate(adj, emb, n_layers, rows), expected[rows], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_layers", [1, 3])
@pytest.mark.parametrize("order", ["sorted", "unsorted"])  # sorted: backward transposes Â[rows]; else Â[:, rows]
def test_batch_rows_gradient_equals_full_gradient(n_layers, order):
    users, items, nu, ni = random_graph(seed=7)
    adj = normalized_adjacency(users, items, nu, ni, dtype=torch.float64)
    emb = torch.randn(nu + ni, 5, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([1, 2, nu, nu + 9, nu + 16] if order == "sorted" else [nu + 9, 2, nu + 16, 1, nu])
    g = torch.randn(len(rows), 5, dtype=torch.float64)
    (fast,) = torch.autograd.grad(lightgcn_propagate(adj, emb, n_layers, rows), emb, g)
    dense = dense_adjacency(users, items, nu, ni)
    full = sum(torch.linalg.matrix_power(dense, k) @ emb for k in range(n_layers + 1)) / (n_layers + 1)
    (ref,) = torch.autograd.grad(full[rows], emb, g)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda e: lightgcn_propagate(adj, e, n_layers, rows), (emb,))


def test_model_final_embeddings_match_pyg_lgconv():
    pyg = pytest.importorskip("torch_geometric.nn")
    users, items, nu, ni = random_graph(n_users=20, n_items=30, n_edges=150, seed=3)

    class Data:
        n_users, n_items = nu, ni

        @staticmethod
        def interactions():
            return users, items

    model = LightGCN(nu, ni, embed_dim=8, n_layers=3).double()
    model.attach_data(Data())
    model.adj = model.adj.to(torch.float64)
    ours = model._final_embeddings(None)
    key = np.unique(users * ni + items)
    u, i = torch.tensor(key // ni), torch.tensor(key % ni + nu)
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    conv = pyg.LGConv(normalize=True)
    x = cur = model.embedding.weight.detach()
    acc = x.clone()
    for _ in range(3):
        cur = conv(cur, edge_index)
        acc = acc + cur
    torch.testing.assert_close(ours.detach(), acc / 4, rtol=0, atol=1e-6)
    model.backend = "pyg"
    torch.testing.assert_close(model._final_embeddings(None).detach(), acc / 4, rtol=0, atol=1e-6)


def test_spmm_kernel_symmetric_backward_equals_reference():
    users, items, nu, ni = random_graph(seed=11)
    adj = normalized_adjacency(users, items, nu, ni, dtype=torch.float64)
    assert spmm_sym.select(adj, torch.zeros(nu + ni, 3, dtype=torch.float64)).name == "csr_sym"
    x = torch.randn(nu + ni, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(nu + ni, 3, dtype=torch.float64)
    y1 = spmm_sym(adj, x)
    (g1,) = torch.autograd.grad(y1, x, g)
    y2 = spmm_reference(adj.to_sparse_coo(), x)
    (g2,) = torch.autograd.grad(y2, x, g)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(g1, g2)
    (args, kwargs) = spmm_sym.make_inputs(torch.device("cpu"), torch.float32, 0)
    torch.testing.assert_close(spmm_sym(*args), spmm_reference(*args))


def test_sub_matrices():
    users, items, nu, ni = random_graph(seed=5)
    adj = normalized_adjacency(users, items, nu, ni, dtype=torch.float64)
    rows = torch.tensor([4, 0, nu + 3])
    torch.testing.assert_close(csr_rows(adj, rows).to_dense(), adj.to_dense()[rows])
    torch.testing.assert_close(csr_columns(adj, rows).to_dense(), adj.to_dense()[:, rows])
    # for sorted rows the transpose of Â[rows] is Â[:, rows] entry for entry (what the CPU backward uses)
    rows = torch.sort(rows).values
    a, b = csr_columns(adj, rows), csr_transpose(csr_rows(adj, rows))
    for part in ("crow_indices", "col_indices", "values"):
        assert torch.equal(getattr(a, part)(), getattr(b, part)())


def test_csr_mm_is_torch_sparse_mm_bitwise_and_never_reads_its_buffer(monkeypatch):
    """The CPU product of the propagation (``addmm`` into a fresh buffer, beta 0) is ``torch.sparse.mm``'s."""
    from panconv_graph.kernels.spmm import csr_mm

    users, items, nu, ni = random_graph(n_users=40, n_items=50, n_edges=400, seed=2)
    adj = normalized_adjacency(users, items, nu, ni)
    x = torch.randn(nu + ni, 64)
    rows = torch.tensor([3, 0, nu + 7, nu + 49])
    real_empty = torch.empty
    # a garbage-filled buffer: beta = 0 must not read it (NaN * 0 would stay NaN)
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    for a, b in ((adj, x), (csr_rows(adj, rows), x), (csr_columns(adj, rows), torch.randn(len(rows), 64))):
        got = csr_mm(a, b)
        assert torch.equal(got, torch.sparse.mm(a, b))
        assert not got.isnan().any()
