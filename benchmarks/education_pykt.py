"""panconv-education's DKT, SAKT and DKVMN against pykt-toolkit's, measured in one run on the same batches.

Both sides get the same windows of a knowledge-tracing data set (``education.KnowledgeTracing``: 200-answer
windows of assist2009_updated by default), the same sizes, Adam (lr 1e-3) and one thread. Per model:

* **training step**: forward, loss, backward and the optimiser step. Ours: ``model(batch)``,
  ``model.loss``; pykt's: its own ``pykt.models.train_model.model_forward`` (the call, the one-hot gather
  of DKT, ``masked_select`` and its float64 BCE), then the same ``backward`` / ``step``. The two sides
  alternate step by step; the figure is the median over ``--steps`` steps after ``--warmup``.
* **activation memory**: the bytes autograd saves for backward in one training forward (deterministic;
  counted with ``torch.autograd.graph.saved_tensors_hooks``), which is what a step's memory grows with.
* **evaluation**: ``--eval-batches`` test batches in ``eval()`` / ``no_grad`` up to AUC and accuracy. Ours:
  forward, ``predict`` and ``education.KTMetrics`` (exact AUC); pykt's: its own
  ``pykt.models.evaluate_model.evaluate`` (scikit-learn's AUC). Median of ``--eval-repeats`` passes.
* **AUC after the timed steps** on the evaluation batches, as a check that both sides learn alike (one
  seed, a few steps: indicative only).

Ratios are ours / pykt's: below 1 is faster (or smaller) than pykt.

pykt-toolkit is a benchmark-only install that must not move the pinned stack: install the wheel without its
dependencies, plus pandas (the one module its model files import beyond torch/numpy/scikit-learn):

    pip install -c constraints.txt --no-deps pykt-toolkit==0.0.38 pandas==3.0.6
    PANCONV_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/education_pykt.py

pykt's package ``__init__`` imports every data pipeline it has (and wandb); this script imports only its
model modules, ``train_model`` and ``evaluate_model``, found through ``importlib.metadata`` and loaded
under a bare ``pykt`` package, never running ``pykt/__init__.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from panconv_education.datasets.knowledge_tracing import KnowledgeTracing
from panconv_education.evaluators.kt_metrics import KTMetrics
from panconv_education.models.dkt import DKT
from panconv_education.models.dkvmn import DKVMN
from panconv_education.models.sakt import SAKT


def import_pykt():
    """pykt's model, ``train_model`` and ``evaluate_model`` modules, without running ``pykt/__init__.py``."""
    try:
        dist = importlib.metadata.distribution("pykt-toolkit")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("pykt-toolkit is not installed: pip install -c constraints.txt --no-deps pykt-toolkit==0.0.38 "
                 "pandas==3.0.6")
    root = Path(dist.locate_file("pykt"))
    for name, path in (("pykt", root), ("pykt.models", root / "models"), ("pykt.datasets", root / "datasets"),
                       ("pykt.utils", root / "utils")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    modules = {m: importlib.import_module(f"pykt.models.{m}") for m in ("dkt", "sakt", "dkvmn", "train_model",
                                                                        "evaluate_model")}
    return modules, dist.version


def to_pykt(batch: dict) -> dict:
    """Our batch (1-based skills, 0 = padding) in pykt's layout: 0-based concepts, ``*_seqs`` = positions
    ``0..T-2``, ``shft_*`` = ``1..T-1``, ``masks``/``smasks`` on the real answers (pykt's data loader zeroes
    the padded ids the same way)."""
    c = (batch["skills"] - 1).clamp(min=0)
    r = batch["responses"] * batch["mask"]
    m = batch["mask"]
    zeros = torch.zeros_like(c[:, :-1])
    return {"qseqs": c[:, :-1], "cseqs": c[:, :-1], "rseqs": r[:, :-1], "tseqs": zeros,
            "shft_qseqs": c[:, 1:], "shft_cseqs": c[:, 1:], "shft_rseqs": r[:, 1:].float(), "shft_tseqs": zeros,
            "masks": m[:, :-1], "smasks": m[:, 1:] & m[:, :-1]}


def build(name: str, num_skills: int, max_len: int, pykt, dim: int | None):
    """(ours, pykt's) at equal sizes."""
    if name == "dkt":
        d = dim or 200
        return (DKT(num_skills, embed_dim=d, hidden_dim=d, dropout=0.2),
                pykt["dkt"].DKT(num_skills, emb_size=d, dropout=0.2))
    if name == "sakt":
        d = dim or 64
        return (SAKT(num_skills, max_len=max_len, embed_dim=d, num_heads=4, dropout=0.2),
                pykt["sakt"].SAKT(num_skills, seq_len=max_len, emb_size=d, num_attn_heads=4, dropout=0.2,
                                  num_en=1))
    if name == "dkvmn":
        d = dim or 200
        return (DKVMN(num_skills, memory_size=50, key_dim=d, value_dim=d, summary_dim=d),
                pykt["dkvmn"].DKVMN(num_skills, dim_s=d, size_m=50, dropout=0.2))
    raise ValueError(name)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs (the loss is discarded)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def measure(name: str, ours, peer, pykt, train_batches: list, test_batches: list, args) -> str:
    """One model's row: training step, activation memory, evaluation, AUC; ours and pykt's alternating."""
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ours, peer)]

    def step_ours(batch):
        loss = ours.loss(ours(batch), batch)["loss"]
        opts[0].zero_grad()
        loss.backward()
        opts[0].step()

    def step_peer(batch):
        loss = pykt["train_model"].model_forward(peer, to_pykt(batch))
        opts[1].zero_grad()
        loss.backward()
        opts[1].step()

    ours.train()
    peer.train()
    times = ([], [])
    for k, batch in enumerate(train_batches):
        for side, fn in enumerate((step_ours, step_peer)):
            start = time.perf_counter()
            fn(batch)
            if k >= args.warmup:
                times[side].append(time.perf_counter() - start)
    first = train_batches[0]
    mem = (saved_bytes(lambda: ours.loss(ours(first), first)["loss"]),
           saved_bytes(lambda: pykt["train_model"].model_forward(peer, to_pykt(first))))
    pykt_test = [to_pykt(b) for b in test_batches]

    def eval_ours():
        ours.eval()
        metric = KTMetrics()
        with torch.no_grad():
            for batch in test_batches:
                metric.process(batch, ours.predict(ours(batch), batch))
        return metric.compute_metrics(metric.results)["auc"]

    def eval_peer():
        with contextlib.redirect_stdout(io.StringIO()):  # pykt prints the shapes it scored
            return pykt["evaluate_model"].evaluate(peer, pykt_test, name)[0]

    eval_times, aucs = ([], []), [None, None]
    for _ in range(args.eval_repeats):
        for side, fn in enumerate((eval_ours, eval_peer)):
            start = time.perf_counter()
            aucs[side] = fn()
            eval_times[side].append(time.perf_counter() - start)
    params = [sum(p.numel() for p in m.parameters()) for m in (ours, peer)]
    t = [statistics.median(x) for x in times]
    e = [statistics.median(x) for x in eval_times]
    return (f"{name:<7}{params[0]:>10,d}/{params[1]:<9,d}{t[0] * 1e3:>10.1f} / {t[1] * 1e3:<8.1f}"
            f"{t[0] / t[1]:>7.2f}{mem[0] / 2**20:>8.1f} / {mem[1] / 2**20:<7.1f}{mem[0] / mem[1]:>7.2f}"
            f"{e[0]:>7.2f} / {e[1]:<6.2f}{e[0] / e[1]:>7.2f}{aucs[0]:>8.3f}/{aucs[1]:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("PANCONV_DATA", "/work/shared/data"))
    parser.add_argument("--dataset", default="assist2009_updated")
    parser.add_argument("--models", nargs="*", default=["dkt", "sakt", "dkvmn"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=None, help="width (default: DKT 200, SAKT 64, DKVMN 200)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pykt, pykt_version = import_pykt()

    train = KnowledgeTracing(args.data_root, split="train", name=args.dataset, val_fraction=0.0)
    test = KnowledgeTracing(args.data_root, split="test", name=args.dataset)
    rng = np.random.default_rng(args.seed)
    n_train = args.batch_size * (args.warmup + args.steps)
    train_idx = rng.choice(len(train), size=min(n_train, len(train)), replace=len(train) < n_train)
    test_idx = rng.choice(len(test), size=min(args.batch_size * args.eval_batches, len(test)), replace=False)
    train_batches = [train.collate([train[int(i)] for i in train_idx[k:k + args.batch_size]])
                     for k in range(0, len(train_idx), args.batch_size)]
    test_batches = [test.collate([test[int(i)] for i in test_idx[k:k + args.batch_size]])
                    for k in range(0, len(test_idx), args.batch_size)]
    print(f"torch {torch.__version__}, numpy {np.__version__}, pykt-toolkit {pykt_version}, "
          f"{args.threads} thread(s); {args.dataset}: {train.num_skills} skills, batch {args.batch_size} x "
          f"{train.max_len} answers, {args.steps} timed steps after {args.warmup}, "
          f"{len(test_batches)} evaluation batches")
    header = (f"{'model':<7}{'params ours/pykt':>20}{'train step ms':>22}{'ratio':>7}{'saved MiB':>18}{'ratio':>7}"
              f"{'eval s':>16}{'ratio':>7}{'AUC ours/pykt':>16}")
    print(header)
    rows = []
    for name in args.models:
        torch.manual_seed(args.seed)
        ours, peer = build(name, train.num_skills, train.max_len, pykt, args.dim)
        row = measure(name, ours, peer, pykt, train_batches, test_batches, args)
        print(row, flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
