"""``graph.spmm_sym``'s Triton kernels and LightGCN's device path.

* Under the Triton interpreter (``TRITON_INTERPRET=1``, in a child process, as the conformance kit
  does): the CSR kernel against ``torch.sparse.mm`` forward and backward, on graphs with empty rows,
  in float32 and bfloat16, several widths; the row-gather and row-scatter kernels against dense
  algebra (repeated rows included); LightGCN's device path (``_LightGCNRowsDevice``, the training
  forward without ``torch.unique``) against the CPU path, values and gradients; a whole training step
  (forward, BPR loss, backward, fused Adam) that performs no host synchronisation.
* On the CPU: the device sampler and the device ranking against the CPU loader and ``FullRanking``.
* On CUDA (skipped without a GPU): the kernels against cuSPARSE (torch.sparse on CUDA), and the training
  step under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from panconv_graph.datasets.recsys import RecSysData
from panconv_graph.evaluators.ranking import DeviceRanking, FullRanking

# ---------------------------------------------------------------------------------------------
# child-process checks under the interpreter

COMMON = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import torch
    from panconv_graph.kernels import spmm_triton
    from panconv_graph.kernels.spmm import lightgcn_propagate, normalized_adjacency, spmm_reference, spmm_sym
    from panconv_graph.models.lightgcn import LightGCN

    def graph(n_users, n_items, n_edges, seed, empty_users=2, empty_items=3):
        rng = np.random.default_rng(seed)
        # the last users/items get no edge: empty CSR rows
        return (rng.integers(0, n_users - empty_users, n_edges), rng.integers(0, n_items - empty_items, n_edges),
                n_users, n_items)

    def diff(a, b):
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
''')

KERNEL_CHECK = COMMON + textwrap.dedent('''
    out = []
    for seed, (nu, ni, ne, d) in enumerate([(7, 9, 30, 5), (13, 17, 80, 64), (20, 11, 150, 70), (5, 4, 3, 16)]):
        users, items, nu, ni = graph(nu, ni, ne, seed)
        adj = normalized_adjacency(users, items, nu, ni)
        n = nu + ni
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, d, generator=g, requires_grad=True)
        grad = torch.randn(n, d, generator=g)
        impl = spmm_sym.select(adj, x)
        y = spmm_sym(adj, x)
        (gx,) = torch.autograd.grad(y, x, grad)
        xr = x.detach().clone().requires_grad_(True)
        yr = spmm_reference(adj.to_sparse_coo(), xr)
        (gr,) = torch.autograd.grad(yr, xr, grad)
        empty = torch.nonzero(adj.crow_indices().diff() == 0).flatten()
        rows = torch.randint(0, n, (11,), generator=g)
        rows[:3] = torch.tensor([empty[0], rows[4], rows[4]])  # an empty row and a repeated one
        dense = adj.to_dense().double()
        gathered = spmm_triton.csr_spmm(adj, x.detach(), rows)
        gr_rows = torch.randn(len(rows), d, generator=g)
        scattered = spmm_triton.csr_scatter_rows(adj, rows, gr_rows)
        xb = x.detach().bfloat16()
        yb = spmm_sym(adj, xb)
        out.append({"case": [nu, ni, ne, d], "selected": impl.name if impl else None, "n_empty": len(empty),
                    "y": diff(y, yr), "grad": diff(gx, gr), "empty_rows_zero": float(y[empty].abs().max()),
                    "rows": diff(gathered, (dense @ x.detach().double())[rows]),
                    "scatter": diff(scattered, dense[rows].t() @ gr_rows.double()),
                    "bf16_dtype": str(yb.dtype), "bf16": diff(yb, spmm_reference(adj, xb.float())),
                    "scale": float(yr.abs().max())})
    print(json.dumps(out))
''')

MODEL_CHECK = COMMON + textwrap.dedent('''
    out = []
    users, items, nu, ni = graph(13, 17, 70, 3)
    adj = normalized_adjacency(users, items, nu, ni)
    dense = adj.to_dense().double()
    for k in (0, 1, 3):
        emb = torch.randn(nu + ni, 6, generator=torch.Generator().manual_seed(k), requires_grad=True)
        rows = torch.tensor([0, 4, 4, nu - 1, nu + 2, nu + 16, 0])  # repeats, an empty user and item
        g = torch.randn(len(rows), 6, generator=torch.Generator().manual_seed(10 + k))
        y = lightgcn_propagate(adj, emb, k, rows)
        (gy,) = torch.autograd.grad(y, emb, g)
        e = emb.detach().double().requires_grad_(True)
        full = sum(torch.linalg.matrix_power(dense, j) @ e for j in range(k + 1)) / (k + 1)
        (ge,) = torch.autograd.grad(full[rows], e, g.double())
        out.append({"what": f"propagate K={k}", "y": diff(y, full[rows]), "grad": diff(gy, ge)})

    class Data:
        n_users, n_items = nu, ni

        @staticmethod
        def interactions():
            return users, items

    batch = {"users": torch.tensor([0, 1, 1, 5, 9]), "pos": torch.tensor([2, 3, 3, 0, 13]),
             "neg": torch.tensor([4, 4, 6, 7, 16])}

    def step(kernels):
        os.environ["PANCONV_KERNELS"] = kernels
        torch.manual_seed(0)
        model = LightGCN(nu, ni, embed_dim=8, n_layers=3)
        model.attach_data(Data())
        device_path = spmm_sym.select(model.adj, model.embedding.weight)
        losses = model.loss(model(batch), batch)
        total = losses["loss"] + losses["loss_reg"]
        total.backward()
        return (device_path.name if device_path else None), total.detach(), model.embedding.weight.grad

    dev_name, dev_loss, dev_grad = step("")
    cpu_name, cpu_loss, cpu_grad = step("reference")
    out.append({"what": "training step", "device_path": dev_name, "cpu_path": cpu_name,
                "loss": diff(dev_loss, cpu_loss), "grad": diff(dev_grad, cpu_grad),
                "grad_scale": float(cpu_grad.abs().max())})
    print(json.dumps(out))
''')

SYNC_CHECK = COMMON + textwrap.dedent('''
    from torch.utils._python_dispatch import TorchDispatchMode
    from panconv_graph.kernels.spmm import uses_triton

    # aten ops that make the host wait for a CUDA device: they read a value (or an output size) back
    SYNCING = {"aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal", "aten.nonzero",
               "aten.masked_select", "aten._unique", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive",
               "aten.bincount", "aten.histc", "aten.allclose"}
    PY_SYNCING = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")

    def from_interpreter():
        """Called from Triton's CPU interpreter (its own host copies stand in for a GPU launch)."""
        frame = sys._getframe(1)
        while frame is not None:
            if "/triton/" in frame.f_code.co_filename.replace(os.sep, "/"):
                return True
            frame = frame.f_back
        return False

    class SyncRecorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
            flat = list(args) + list(kwargs.values())
            idx = [a for a in flat for a in (a if isinstance(a, (list, tuple)) else [a])
                   if isinstance(a, torch.Tensor)]
            bad = name in SYNCING
            if name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
                bad = any(t.dtype == torch.bool for t in idx)  # boolean-mask indexing = nonzero
            if name == "aten.repeat_interleave" and kwargs.get("output_size") is None and len(args) < 3:
                bad = True
            if name == "aten._to_copy" and kwargs.get("device") not in (None, args[0].device):
                bad = True
            if bad and not from_interpreter():
                self.found.append(name)
            return func(*args, **kwargs)

    originals = {attr: getattr(torch.Tensor, attr) for attr in PY_SYNCING}
    py_found = []

    def guard(on):
        """Tensor methods that read a value back to the host record their name while ``on``."""
        for attr, original in originals.items():
            if not on:
                setattr(torch.Tensor, attr, original)
                continue

            def patched(self, *a, _attr=attr, _orig=original, **k):
                if not from_interpreter():
                    py_found.append(_attr)
                return _orig(self, *a, **k)

            setattr(torch.Tensor, attr, patched)

    from panconv_graph.datasets.recsys import RecSysData
    import tempfile
    train = RecSysData(split="train", **RecSysData.example(tempfile.mkdtemp()))
    results = {}
    for kernels in ("", "reference"):  # the device path, then the CPU path as the control
        os.environ["PANCONV_KERNELS"] = kernels
        py_found.clear()
        torch.manual_seed(0)
        model = LightGCN(train.n_users, train.n_items, embed_dim=8, n_layers=3)
        model.attach_data(train)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        # setup (sampling the epoch: one flag read) may read the host; the training step may not
        users, pos, neg = train.device_sampler("cpu").sample_epoch(0)
        order = torch.randperm(len(users), generator=torch.Generator().manual_seed(0))
        guard(True)
        # the training step, as benchmarks/graph_gpu_run.py runs it, twice (the second with Adam state)
        loss_sum = torch.zeros(())
        with SyncRecorder() as rec:
            for start in (0, 4):
                idx = order[start:start + 4]
                batch = {"users": users[idx], "pos": pos[idx], "neg": neg[idx]}
                losses = model.loss(model(batch), batch)
                loss = losses["loss"] + losses["loss_reg"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
            if kernels:
                float(loss_sum)  # the control also reads the loss, as a logging loop would
        guard(False)
        results[kernels or "device"] = {"device_path": uses_triton(model.adj, model.embedding.weight),
                                        "aten": sorted(set(rec.found)), "python": sorted(set(py_found)),
                                        "loss": float(loss_sum)}
    print(json.dumps(results))
''')


def _run_interpreted(script: str) -> dict | list:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PANCONV_KERNELS": "",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_triton_kernels_match_torch_sparse_under_the_interpreter():
    results = _run_interpreted(KERNEL_CHECK)
    assert len(results) == 4
    for r in results:
        assert r["selected"] == "triton", r
        assert r["n_empty"] >= 5, r  # the graphs have empty rows (users and items without edges)
        assert r["y"] < 1e-5 and r["grad"] < 1e-5, r
        assert r["empty_rows_zero"] == 0.0, r
        assert r["rows"] < 1e-5 and r["scatter"] < 1e-5, r
        assert r["bf16_dtype"] == "torch.bfloat16", r
        assert r["bf16"] < 0.02 * max(r["scale"], 1.0), r
        assert r["scale"] > 0.1, r  # the products are not trivially zero


def test_device_path_equals_cpu_path_under_the_interpreter():
    results = _run_interpreted(MODEL_CHECK)
    for r in results[:-1]:
        assert r["y"] < 1e-5 and r["grad"] < 1e-5, r
    step = results[-1]
    assert step["device_path"] == "triton" and step["cpu_path"] is None, step
    assert step["loss"] < 1e-6 and step["grad"] < 1e-6, step
    assert step["grad_scale"] > 0, step


def test_training_step_does_not_synchronise_with_the_host():
    """The device path's step reads nothing back; the same recorder flags the CPU path's reads (the control)."""
    results = _run_interpreted(SYNC_CHECK)
    r = results["device"]
    assert r["device_path"] is True, r
    assert r["aten"] == [] and r["python"] == [], r
    assert np.isfinite(r["loss"]) and r["loss"] > 0, r
    control = results["reference"]
    assert control["device_path"] is False, control
    assert "aten._unique2" in control["aten"] or "aten._unique" in control["aten"], control  # torch.unique
    assert "aten._local_scalar_dense" in control["aten"], control  # int(sub_crow[-1]) in csr_rows, float(loss)
    assert "__float__" in control["python"], control
    assert abs(control["loss"] - r["loss"]) < 1e-5, (control, r)  # same computation, other kernels


# ---------------------------------------------------------------------------------------------
# device sampler and device ranking (plain CPU tensors)

def test_device_sampler_draws_valid_reproducible_triples(tmp_path):
    train = RecSysData(split="train", **RecSysData.example(tmp_path))
    sampler = train.device_sampler("cpu")
    users, pos, neg = sampler.sample_epoch(3)
    assert users.shape == pos.shape == neg.shape == (train.n_interactions,)
    seen = {(u, i) for u, i in zip(*train.interactions())}
    assert all((u, p) in seen for u, p in zip(users.tolist(), pos.tolist()))
    assert not any((u, n) in seen for u, n in zip(users.tolist(), neg.tolist()))
    again = sampler.sample_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip((users, pos, neg), again))
    other = sampler.sample_epoch(4)
    assert not all(torch.equal(a, b) for a, b in zip((users, pos, neg), other))


def test_device_sampler_negatives_are_uniform_over_unseen_items(tmp_path):
    folder = tmp_path / "recsys" / "dense"
    folder.mkdir(parents=True)
    # user 0 has seen 6 of 8 items: 2 candidates, each drawn half the time; the rounds run out often
    (folder / "train.txt").write_text("0 0 1 2 3 4 5\n1 6 7\n")
    (folder / "test.txt").write_text("0 6\n")
    train = RecSysData(tmp_path, "train", name="dense")
    sampler = train.device_sampler("cpu")
    sampler.rounds = 0  # the exactness loop alone
    counts = np.zeros(train.n_items)
    for epoch in range(300):
        users, _, neg = sampler.sample_epoch(epoch)
        np.add.at(counts, neg[users == 0].numpy(), 1)
    assert counts[:6].sum() == 0
    share = counts[6] / counts[6:].sum()
    assert 0.4 < share < 0.6, counts


def test_device_sampler_interaction_mode_walks_every_interaction(tmp_path):
    train = RecSysData(split="train", sampling="interaction", **RecSysData.example(tmp_path))
    users, pos, _ = train.device_sampler("cpu").sample_epoch(0)
    got = sorted(zip(users.tolist(), pos.tolist()))
    assert got == sorted(zip(*(a.tolist() for a in train.interactions())))


@pytest.mark.parametrize("block_elements", [7, 1 << 24])
def test_device_ranking_equals_full_ranking(tmp_path, block_elements):
    folder = tmp_path / "recsys" / "rand"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    lines_train, lines_val, lines_test = [], [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        lines_train.append(" ".join(map(str, [u, *items[:rng.integers(1, 12)]])))
        lines_val.append(" ".join(map(str, [u, *items[12:14]])))
        if u % 3:
            lines_test.append(" ".join(map(str, [u, *items[14:14 + rng.integers(1, 6)]])))
    (folder / "train.txt").write_text("\n".join(lines_train) + "\n")
    (folder / "valid.txt").write_text("\n".join(lines_val) + "\n")
    (folder / "test.txt").write_text("\n".join(lines_test) + "\n")
    test = RecSysData(tmp_path, "test", name="rand")
    user_emb, item_emb = torch.randn(n_users, 8), torch.randn(n_items, 8)
    ranking = DeviceRanking(test, "cpu", ks=[5, 20], block_elements=block_elements)
    got, per_user = ranking(user_emb, item_emb, per_user=True)
    from panconv_graph.evaluators.ranking import UserItemScores

    ev = FullRanking(ks=[5, 20])
    for start in range(0, len(test), 6):
        batch = test.collate(test.__getitems__(list(range(start, min(start + 6, len(test))))))
        ev.process(batch, UserItemScores(user_emb[batch["users"]], item_emb))
    want = ev.compute()
    assert set(got) == set(want)
    for name in want:
        assert abs(got[name] - want[name]) < 1e-12, (name, got[name], want[name])
    assert per_user["recall@20"].shape == (len(test),)
    assert 0 < want["recall@20"] < 1


# ---------------------------------------------------------------------------------------------
# on a GPU

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_triton_kernels_match_cusparse_on_gpu():
    pytest.importorskip("triton")
    from panconv_graph.kernels import spmm_triton
    from panconv_graph.kernels.spmm import normalized_adjacency, spmm_sym

    rng = np.random.default_rng(0)
    n_users, n_items = 3000, 2000
    # power-law item popularity: hub rows of hundreds of edges next to empty rows
    items = np.minimum(rng.zipf(1.3, 60_000) - 1, n_items - 1)
    users = rng.integers(0, n_users - 50, 60_000)
    adj = normalized_adjacency(users, items, n_users, n_items, device="cuda")
    n = n_users + n_items
    for d in (64, 70):
        x = torch.randn(n, d, device="cuda", requires_grad=True)
        g = torch.randn(n, d, device="cuda")
        assert spmm_sym.select(adj, x).name == "triton"
        y = spmm_sym(adj, x)
        (gx,) = torch.autograd.grad(y, x, g)
        xr = x.detach().clone().requires_grad_(True)
        yr = torch.sparse.mm(adj, xr)  # cuSPARSE
        (gr,) = torch.autograd.grad(yr, xr, g)
        torch.testing.assert_close(y, yr, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(gx, gr, atol=1e-5, rtol=1e-4)
        rows = torch.randint(0, n, (4096,), device="cuda")
        torch.testing.assert_close(spmm_triton.csr_spmm(adj, x.detach(), rows), yr.detach()[rows], atol=1e-5, rtol=1e-4)
        gr_rows = torch.randn(len(rows), d, device="cuda")
        dense_rows = torch.sparse.mm(adj, torch.zeros(n, d, device="cuda").index_add_(0, rows, gr_rows))
        torch.testing.assert_close(spmm_triton.csr_scatter_rows(adj, rows, gr_rows), dense_rows, atol=1e-4, rtol=1e-4)
        yb = spmm_sym(adj, x.detach().bfloat16())
        torch.testing.assert_close(yb.float(), yr.detach(), atol=0.05, rtol=0.02)


@cuda
def test_training_step_has_no_host_sync_on_gpu(tmp_path):
    pytest.importorskip("triton")
    from panconv_graph.models.lightgcn import LightGCN

    train = RecSysData(split="train", **RecSysData.example(tmp_path))
    model = LightGCN(train.n_users, train.n_items, embed_dim=64, n_layers=3).cuda()
    model.attach_data(train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    users, pos, neg = train.device_sampler("cuda").sample_epoch(0)
    for i in range(3):  # the first step builds kernels and optimiser state
        if i == 1:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            batch = {"users": users, "pos": pos, "neg": neg}
            losses = model.loss(model(batch), batch)
            loss = losses["loss"] + losses["loss_reg"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()
