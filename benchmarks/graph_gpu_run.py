"""LightGCN on Gowalla on one GPU, end to end on the device: the paper's schedule with early stopping, and RecBole.

What runs (everything on ``--device``; the training step never waits for the host):

* data: ``train.txt`` minus a validation split carved from it (``--val-fraction`` of each user's training
  items, at least one, for users with two or more; seeded), written with the untouched ``test.txt`` to a
  scratch folder; ``--val-fraction 0`` trains on the whole of ``train.txt`` and selects on test.txt, which
  is what the paper's code does (it reports test figures during training);
* model: ``graph.LightGCN`` (64-dim, 3 layers, reg 1e-4, N(0, 0.1) init), Adam lr 1e-3 (fused on CUDA;
  ``--cuda-graph`` replays the whole step as one CUDA graph, checked against an eager step first),
  batch 2048, the paper's hyper-parameters; Â built once and kept on the device; propagation by
  ``graph.spmm_sym``'s Triton kernels (``PANCONV_KERNELS=reference`` switches to torch.sparse/cuSPARSE);
* BPR sampling: ``RecSysData.device_sampler`` draws each epoch's triples on the device;
* evaluation every ``--eval-every`` epochs: ``DeviceRanking`` (all users, every item scored, training items
  masked, top-20, block by block on the device) on the validation split and on test.txt (the test curve is
  reported, never used for selection when a validation split exists); early stopping after ``--patience``
  evaluations without a better validation Recall@20, or when ``--time-budget`` seconds of training are
  spent; the best validation checkpoint's test figures are the result;
* checks: the first epoch's steps (after the first) run under ``torch.cuda.set_sync_debug_mode("error")``
  (any host synchronisation raises), and ``--profile-steps`` steps under ``torch.profiler`` count the
  synchronisations and device-to-host copies and list the top kernels;
* ``--recbole``: RecBole 1.2.1's LightGCN on the same GPU, same triples, same initial weights: one epoch of
  its ``calculate_loss`` + Adam steps and one full-sort evaluation of every test user by its own Trainer code
  (history masked in place, ``Collector``, ``Evaluator``), next to ours, as ratios (< 1: ours is faster).

    python benchmarks/graph_gpu_run.py --data-root ../shared/data --json out.json     # on a GPU machine
    bash benchmarks/graph_gpu_run.sh                                                  # the prepared device run

The machine needs torch and triton; panconv and the plugin from this checkout (``PYTHONPATH``) and, for the
comparison, recbole (``graph_gpu_run.sh`` installs the wheels it carries).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PAPER = {"recall@20": 0.1830, "ndcg@20": 0.1554}


def carve_validation(src: Path, dest: Path, fraction: float, seed: int) -> dict:
    """Copy ``src``'s split to ``dest`` with ``fraction`` of each user's training items moved to ``valid.txt``."""
    from panconv_graph.datasets.recsys import read_interactions

    records = read_interactions(src / "train.txt")
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    train_lines, valid_lines, moved = [], [], 0
    for u, a, b in zip(records.users.tolist(), records.offsets[:-1].tolist(), records.offsets[1:].tolist()):
        items = records.items[a:b]
        k = max(1, round(fraction * len(items))) if len(items) >= 2 and fraction > 0 else 0
        picked = rng.permutation(len(items))[:k]
        keep = np.ones(len(items), dtype=bool)
        keep[picked] = False
        train_lines.append(" ".join(map(str, [u, *items[keep].tolist()])))
        if k:
            valid_lines.append(" ".join(map(str, [u, *items[~keep].tolist()])))
            moved += k
    (dest / "train.txt").write_text("\n".join(train_lines) + "\n")
    (dest / "valid.txt").write_text("\n".join(valid_lines) + "\n")
    (dest / "test.txt").write_bytes((src / "test.txt").read_bytes())
    return {"moved_to_valid": moved, "valid_users": len(valid_lines), "train_interactions": len(records.items) - moved}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loss_of(model, batch):
    losses = model.loss(model(batch), batch)
    return losses["loss"] + losses["loss_reg"]


def eager_step(model, opt, batch, set_to_none=True):
    loss = loss_of(model, batch)
    opt.zero_grad(set_to_none=set_to_none)
    loss.backward()
    opt.step()
    return loss.detach()


class GraphStep:
    """The whole training step (forward, backward, fused Adam) as one replayed CUDA graph.

    Possible because the step never synchronises with the host. Full batches only: ``__call__`` copies
    the batch into static inputs and replays. Built on the model's current weights, which it restores
    after the warm-up and capture (``snapshot``/``restore`` in place, so the graph's addresses stay valid),
    then checked: one replayed step must give the eager step's weights (atol 1e-5), else ``ValueError``.
    """

    def __init__(self, model, opt, batch_size, device, probe):
        self.model, self.opt = model, opt
        self.static = {k: torch.zeros(batch_size, dtype=torch.int64, device=device) for k in ("users", "pos", "neg")}
        saved = self.snapshot()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                eager_step(model, opt, self.static)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = loss_of(model, self.static)
            self.loss.backward()
            opt.step()
        self.restore(saved)
        self(probe)
        replayed = model.embedding.weight.detach().clone()
        self.restore(saved)
        eager_step(model, opt, probe, set_to_none=False)  # keep the graph's gradient tensors
        diff = float((model.embedding.weight.detach() - replayed).abs().max())
        self.restore(saved)
        if not diff < 1e-5:
            raise ValueError(f"a replayed step differs from the eager step by {diff:.3g}")
        self.check_diff = diff

    def snapshot(self):
        tensors = [self.model.embedding.weight] + [t for st in self.opt.state.values() for t in st.values()
                                                   if isinstance(t, torch.Tensor)]
        return [(t, t.detach().clone()) for t in tensors]

    def restore(self, saved):
        with torch.no_grad():
            for t, value in saved:
                t.copy_(value)
            for group in self.opt.param_groups:
                for p in group["params"]:
                    for t in self.opt.state.get(p, {}).values():
                        if isinstance(t, torch.Tensor) and not any(t is s for s, _ in saved):
                            t.zero_()  # state created by the warm-up: as if no step was taken

    def __call__(self, batch):
        for k, v in self.static.items():
            v.copy_(batch[k])
        self.graph.replay()
        return self.loss.detach()


def train_epoch(model, opt, sampler, epoch, batch_size, device, sync_debug=False, profile_steps=0, graph=None):
    """One epoch of BPR steps on the device; returns the mean loss (a device tensor) and the profile, if any.

    With ``graph`` (a :class:`GraphStep`) full batches replay the captured step; the last, partial batch of
    the epoch (1,168 of Gowalla's 810,128 triples) is dropped: a graph replays fixed shapes.
    """
    users, pos, neg = sampler.sample_epoch(epoch)
    order = torch.randperm(len(users), device=device, generator=sampler.generator(epoch + 10**6))
    loss_sum = torch.zeros((), device=device)
    steps = len(users) // batch_size if graph is not None else math.ceil(len(users) / batch_size)
    prof = None
    for step in range(steps):
        if sync_debug and step == 1:
            torch.cuda.set_sync_debug_mode("error")
        if profile_steps and step == 1:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                      torch.profiler.ProfilerActivity.CUDA])
            prof.__enter__()
        idx = order[step * batch_size:(step + 1) * batch_size]
        batch = {"users": users[idx], "pos": pos[idx], "neg": neg[idx]}
        loss_sum += graph(batch) if graph is not None else eager_step(model, opt, batch)
        if prof is not None and step == profile_steps:
            sync(device)
            prof.__exit__(None, None, None)
            profile_steps = 0
    if sync_debug:
        torch.cuda.set_sync_debug_mode(0)
    return loss_sum / steps, prof


def profile_summary(prof, steps: int) -> dict:
    events = prof.key_averages()
    syncs = sum(e.count for e in events if "Synchronize" in e.key)
    d2h = sum(e.count for e in events if "Memcpy DtoH" in e.key)
    kernels = sorted((e for e in events if getattr(e, "device_time_total", 0) > 0 and not e.key.startswith("cuda")),
                     key=lambda e: -e.device_time_total)[:8]
    return {"steps": steps, "synchronize_calls": syncs, "device_to_host_copies": d2h,
            "top_kernels_ms_per_step": [(e.key[:60], round(e.device_time_total / 1000 / steps, 4)) for e in kernels]}


# ----------------------------------------------------------------------------- RecBole on the same device
def recbole_timings(train, test, init, sampler, device, batch_size, ranking_of_ours):
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):  # RecBole 1.2.1 calls a private scipy method removed in scipy 1.12
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)
    if "float" not in np.__dict__:  # RecBole 1.2.1's NDCG uses np.float, removed in numpy 1.24
        np.float = float
    from recbole.evaluator import Collector, Evaluator
    from recbole.model.general_recommender.lightgcn import LightGCN as RBLightGCN

    class Data:
        def __init__(self):
            users, items = train.interactions()
            self.coo = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                                     shape=(train.n_users, train.n_items))

        def num(self, field):
            return train.n_users if field == "user_id" else train.n_items

        def inter_matrix(self, form="coo"):
            return self.coo

    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "NEG_PREFIX": "neg_", "device": device,
              "embedding_size": 64, "n_layers": 3, "reg_weight": 1e-4, "require_pow": False}
    t = time.perf_counter()
    model = RBLightGCN(config, Data()).to(device)
    setup = time.perf_counter() - t
    with torch.no_grad():
        model.user_embedding.weight.copy_(init[: train.n_users])
        model.item_embedding.weight.copy_(init[train.n_users:])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    users, pos, neg = sampler.sample_epoch(0)
    model.train()

    def step(idx):
        opt.zero_grad()
        model.calculate_loss({"user_id": users[idx], "item_id": pos[idx], "neg_item_id": neg[idx]}).backward()
        opt.step()

    step(torch.arange(batch_size, device=device))  # warm-up
    sync(device)
    t = time.perf_counter()
    for start in range(0, len(users), batch_size):
        step(torch.arange(start, min(start + batch_size, len(users)), device=device))
    sync(device)
    epoch = time.perf_counter() - t
    # its evaluation: Trainer._full_sort_batch_eval + Collector + Evaluator, on batches of 2048 test users
    model.eval()
    model.restore_user_e = model.restore_item_e = None
    rb_config = {"eval_args": {"mode": {"valid": "full", "test": "full"}}, "topk": [20], "device": device,
                 "metrics": ["Recall", "NDCG"], "metric_decimal_place": 6}
    collector, evaluator = Collector(rb_config), Evaluator(rb_config)
    batches = [test.collate(test.__getitems__(list(range(s, min(s + 2048, len(test))))))
               for s in range(0, len(test), 2048)]
    rows = lambda off: torch.repeat_interleave(torch.arange(len(off) - 1), off.diff()).to(device)
    batches = [(b["users"].to(device), (rows(b["seen_offsets"]), b["seen_items"].to(device)),
                rows(b["held_offsets"]), b["held_items"].to(device)) for b in batches]
    sync(device)
    t = time.perf_counter()
    with torch.no_grad():
        for batch_users, history, positive_u, positive_i in batches:
            scores = model.full_sort_predict({"user_id": batch_users}).view(len(batch_users), -1)
            scores[history] = -np.inf
            collector.eval_batch_collect(scores, None, positive_u, positive_i)
        result = evaluator.evaluate(collector.get_data_struct())
    sync(device)
    evaluation = time.perf_counter() - t
    # our epoch and evaluation on the same triples and initial weights, timed the same way
    from panconv_graph.models.lightgcn import LightGCN

    ours = LightGCN(train.n_users, train.n_items).to(device)
    with torch.no_grad():
        ours.embedding.weight.copy_(init)
    ours.attach_data(train)
    ours_opt = torch.optim.Adam(ours.parameters(), lr=1e-3, fused=device.type == "cuda")

    def ours_step(idx):
        batch = {"users": users[idx], "pos": pos[idx], "neg": neg[idx]}
        losses = ours.loss(ours(batch), batch)
        ours_opt.zero_grad(set_to_none=True)
        (losses["loss"] + losses["loss_reg"]).backward()
        ours_opt.step()

    ours_step(torch.arange(batch_size, device=device))
    sync(device)
    t = time.perf_counter()
    for start in range(0, len(users), batch_size):
        ours_step(torch.arange(start, min(start + batch_size, len(users)), device=device))
    sync(device)
    ours_epoch = time.perf_counter() - t
    ours.eval()
    with torch.no_grad():  # the same weights as RecBole's evaluation: RecBole's trained ones
        ours.embedding.weight.copy_(torch.cat([model.user_embedding.weight, model.item_embedding.weight]))
    sync(device)
    t = time.perf_counter()
    u, i = ours.all_embeddings()
    ours_metrics = ranking_of_ours(u, i)
    ours_eval = time.perf_counter() - t
    return {"recbole_setup_s": setup, "recbole_epoch_s": epoch, "recbole_eval_s": evaluation,
            "ours_epoch_s": ours_epoch, "ours_eval_s": ours_eval,
            "epoch_ratio": ours_epoch / epoch, "eval_ratio": ours_eval / evaluation,
            "recbole_metrics": {k: float(v) for k, v in result.items()},
            "ours_metrics_same_weights": {k: ours_metrics[k] for k in ("recall@20", "ndcg@20")}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None, help="folder holding recsys/<name> (default: the shared data)")
    p.add_argument("--name", default="gowalla")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=1000, help="the paper's schedule")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=5, help="evaluations without a better validation Recall@20")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--time-budget", type=float, default=330, help="seconds of training before stopping")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--no-sync-check", action="store_true")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay the training step as one CUDA graph (full batches; the epoch's last partial batch "
                        "is dropped); checked against an eager step first, eager if capture fails")
    p.add_argument("--recbole", action="store_true", help="time RecBole's LightGCN on the same device")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    t_start = time.perf_counter()

    from panconv.testing import shared_data_root
    from panconv_graph.datasets.recsys import RecSysData
    from panconv_graph.evaluators.ranking import DeviceRanking
    from panconv_graph.kernels.spmm import spmm_sym
    from panconv_graph.models.lightgcn import LightGCN

    root = Path(args.data_root or shared_data_root() or "")
    src = root / "recsys" / args.name
    scratch = Path(tempfile.mkdtemp(prefix="lightgcn_gpu_"))
    if args.val_fraction > 0:
        carve = carve_validation(src, scratch / "recsys" / args.name, args.val_fraction, args.seed)
        data_root, val_split = scratch, "val"
    else:
        carve, data_root, val_split = {}, root, "test"
    train = RecSysData(data_root, "train", name=args.name, seed=args.seed)
    val = RecSysData(data_root, val_split, name=args.name)
    test = RecSysData(data_root, "test", name=args.name)
    torch.manual_seed(args.seed)
    model = LightGCN(train.n_users, train.n_items, embed_dim=64, n_layers=3, reg=1e-4).to(device)
    init = model.embedding.weight.detach().clone()
    model.attach_data(train)
    adj = model._graph()
    impl = spmm_sym.select(adj, model.embedding.weight)
    sampler = train.device_sampler(device)
    val_rank, test_rank = DeviceRanking(val, device), DeviceRanking(test, device)
    adam = dict(lr=1e-3, fused=True, capturable=True) if device.type == "cuda" else dict(lr=1e-3)
    opt = torch.optim.Adam(model.parameters(), **adam)
    graph, graph_note = None, "off"
    if args.cuda_graph and device.type == "cuda":
        users, pos, neg = sampler.sample_epoch(10**7)
        probe = {"users": users[:args.batch_size], "pos": pos[:args.batch_size], "neg": neg[:args.batch_size]}
        try:
            graph = GraphStep(model, opt, args.batch_size, device, probe)
            graph_note = f"on (replayed step vs eager: max weight diff {graph.check_diff:.2g})"
        except Exception as exc:  # capture unsupported here: train eagerly, from the untouched initial weights
            graph = None
            graph_note = f"failed, eager instead: {type(exc).__name__}: {str(exc)[:200]}"
            torch.manual_seed(args.seed)
            model = LightGCN(train.n_users, train.n_items, embed_dim=64, n_layers=3, reg=1e-4).to(device)
            model.attach_data(train)
            opt = torch.optim.Adam(model.parameters(), **adam)
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "cuda_graph": graph_note,
              "spmm_sym": impl.name if impl else "reference (torch.sparse)", "n_users": train.n_users,
              "n_items": train.n_items, "train_interactions": train.n_interactions, **carve,
              "setup_s": round(time.perf_counter() - t_start, 1)}
    print(json.dumps(header), flush=True)

    curve, best, best_state, bad, train_time, profile = [], None, None, 0, 0.0, None
    model.train()
    for epoch in range(args.epochs):
        sync(device)
        t = time.perf_counter()
        loss, prof = train_epoch(model, opt, sampler, epoch, args.batch_size, device,
                                 sync_debug=epoch == 0 and device.type == "cuda" and not args.no_sync_check,
                                 profile_steps=args.profile_steps if epoch == 1 else 0, graph=graph)
        sync(device)
        epoch_s = time.perf_counter() - t
        train_time += epoch_s
        if prof is not None:
            profile = profile_summary(prof, args.profile_steps)
            print(json.dumps({"profile": profile}), flush=True)
        last = epoch + 1 == args.epochs or train_time > args.time_budget
        if (epoch + 1) % args.eval_every == 0 or last:
            model.eval()
            t = time.perf_counter()
            u, i = model.all_embeddings()
            v = val_rank(u, i)
            eval_s = time.perf_counter() - t
            te = test_rank(u, i)
            model.train()
            row = {"epoch": epoch + 1, "loss": round(float(loss), 5), "epoch_s": round(epoch_s, 3),
                   "train_s": round(train_time, 1), "eval_s": round(eval_s, 3),
                   "val_recall@20": round(v["recall@20"], 4), "val_ndcg@20": round(v["ndcg@20"], 4),
                   "test_recall@20": round(te["recall@20"], 4), "test_ndcg@20": round(te["ndcg@20"], 4)}
            curve.append(row)
            print(json.dumps(row), flush=True)
            if best is None or v["recall@20"] > best["val_recall@20"]:
                best, bad = row, 0
                best_state = model.embedding.weight.detach().clone()
            else:
                bad += 1
            if bad >= args.patience:
                print(f"early stop: {bad} evaluations without a better validation Recall@20", flush=True)
                break
        if train_time > args.time_budget:
            print(f"time budget reached after {epoch + 1} epochs ({train_time:.0f} s of training)", flush=True)
            break
    result = {**header, "epochs_run": curve[-1]["epoch"] if curve else 0, "train_s": round(train_time, 1),
              "best": best, "paper": PAPER, "curve": curve, "profile": profile,
              "stopped": "early" if bad >= args.patience else ("budget" if train_time > args.time_budget else "epochs")}
    if best_state is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(best_state)
    if args.recbole:
        try:
            rb = recbole_timings(train, test, init, sampler, device, args.batch_size, test_rank)
        except ImportError as exc:
            rb = {"skipped": f"recbole not importable: {exc}"}
        result["recbole"] = rb
        print(json.dumps({"recbole": rb}), flush=True)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    print("\nepoch  loss     val R@20  val N@20  test R@20  test N@20  train s")
    for r in curve:
        print(f"{r['epoch']:5d}  {r['loss']:.4f}   {r['val_recall@20']:.4f}    {r['val_ndcg@20']:.4f}    "
              f"{r['test_recall@20']:.4f}     {r['test_ndcg@20']:.4f}     {r['train_s']:.0f}")
    if best:
        print(f"best (validation): epoch {best['epoch']}: test Recall@20 {best['test_recall@20']:.4f}, "
              f"NDCG@20 {best['test_ndcg@20']:.4f} (paper, 1000 epochs: {PAPER['recall@20']} / {PAPER['ndcg@20']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
