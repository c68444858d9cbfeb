"""LightGCN speed on Gowalla: panconv-graph vs RecBole's LightGCN vs the reference code.

Measures, on the same data and hyper-parameters (64-dim, 3 layers, batch 2048, Adam lr 1e-3,
reg 1e-4), for each implementation:

* setup: building the normalised adjacency from the training interactions;
* one training epoch: ``--batches`` optimisation steps timed and extrapolated to the full epoch
  (ceil(810,128 / 2048) = 396 steps), plus the epoch's BPR sampling timed separately;
* one full-ranking evaluation (scores of all items for every test user, training items masked,
  top-20): all test users for panconv and RecBole, ``--ref-eval-batches`` batches of the
  reference code's 100-user test batches extrapolated to all users for the reference code.

It also checks that the three compute the same final embeddings from the same weights.
Wall-clock and process CPU seconds are both printed (on a shared machine CPU seconds are the
stabler figure). Peers are optional:

    # RecBole into the environment (--recbole) or a separate location (--recbole-path), without its deps' pins:
    pip install --no-deps recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 texttable==1.7.0
    pip install --target /tmp/recbole_pkgs --no-deps recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 texttable==1.7.0
    # the reference code (gusye1234/LightGCN-PyTorch), only its code/ folder, outside the repo:
    git clone https://github.com/gusye1234/LightGCN-PyTorch /tmp/lgref
    python benchmarks/lightgcn_speed.py --threads 2 --recbole-path /tmp/recbole_pkgs --reference-code /tmp/lgref/code

RecBole's LightGCN is driven directly (model, loss, ``full_sort_predict``) through a minimal stand-in
for its dataset/config objects, so its data-loader overhead is *not* counted (in its favour); its
evaluation is RecBole's own (history masking as its Trainer does it, its ``Collector`` and ``Evaluator``),
on the same user batches as ours.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def batches_of(data, n, batch_size, seed=0):
    order = np.random.default_rng(seed).permutation(len(data))
    for b in range(n):
        yield data.collate(data.__getitems__(order[b * batch_size:(b + 1) * batch_size].tolist()))


# ----------------------------------------------------------------------------- panconv
def bench_ours(args, train, test, init):
    from panconv_graph.evaluators.ranking import FullRanking
    from panconv_graph.models.lightgcn import LightGCN

    model = LightGCN(train.n_users, train.n_items, embed_dim=64, n_layers=3, reg=1e-4)
    with torch.no_grad():
        model.embedding.weight.copy_(init)
    with Timer() as setup:
        model.attach_data(train)
    with Timer() as sampling:
        train.set_epoch(1)
        _ = train.samples
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    final = model._final_embeddings(None).detach()
    it = batches_of(train, args.batches + 1, 2048)
    step = lambda b: (opt.zero_grad(), sum(model.loss(model(b), b).values()).backward(), opt.step())
    step(next(it))  # warm-up
    with Timer() as steps:
        for b in it:
            step(b)
    model.eval()
    with torch.no_grad():
        model.embedding.weight.copy_(args.eval_weights)
    evaluator = FullRanking(ks=[20])
    with Timer() as ev, torch.no_grad():
        for start in range(0, len(test), args.eval_batch):
            batch = test.collate(test.__getitems__(list(range(start, min(start + args.eval_batch, len(test))))))
            evaluator.process(batch, model.predict(model(batch), batch))
    return dict(setup=setup, sampling=sampling, steps=steps, eval=ev, final=final, metrics=evaluator.compute())


# ----------------------------------------------------------------------------- RecBole
class _RecBoleData:
    def __init__(self, train):
        import scipy.sparse as sp

        self.train = train
        users, items = train.interactions()
        self._coo = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                                  shape=(train.n_users, train.n_items))

    def num(self, field):
        return self.train.n_users if field == "user_id" else self.train.n_items

    def inter_matrix(self, form="coo"):
        return self._coo


def bench_recbole(args, train, test, init):
    if args.recbole_path:
        sys.path.insert(0, args.recbole_path)
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):  # RecBole 1.2.1 calls a private scipy method removed in scipy 1.12
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)
    if "float" not in np.__dict__:  # RecBole 1.2.1's NDCG uses np.float, removed in numpy 1.24
        np.float = float
    from recbole.model.general_recommender.lightgcn import LightGCN as RBLightGCN

    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "NEG_PREFIX": "neg_",
              "device": torch.device("cpu"),
              "embedding_size": 64, "n_layers": 3, "reg_weight": 1e-4, "require_pow": False}
    data = _RecBoleData(train)
    with Timer() as setup:
        model = RBLightGCN(config, data)
    with torch.no_grad():
        model.user_embedding.weight.copy_(init[: train.n_users])
        model.item_embedding.weight.copy_(init[train.n_users:])
    final = torch.cat(model.forward()).detach()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    it = batches_of(train, args.batches + 1, 2048)

    def step(b):
        opt.zero_grad()
        model.calculate_loss({"user_id": b["users"], "item_id": b["pos"], "neg_item_id": b["neg"]}).backward()
        opt.step()

    step(next(it))
    with Timer() as steps:
        for b in it:
            step(b)
    model.eval()
    with torch.no_grad():
        model.user_embedding.weight.copy_(args.eval_weights[: train.n_users])
        model.item_embedding.weight.copy_(args.eval_weights[train.n_users:])
    model.restore_user_e = model.restore_item_e = None
    # RecBole's own full-sort evaluation: Trainer._full_sort_batch_eval (scores, history masked in
    # place) + Collector.eval_batch_collect (top-k, positives) + Evaluator (Recall/NDCG in numpy),
    # with our user batches (RecBole would batch eval_batch_size // n_items users; we give it ours).
    from recbole.evaluator import Collector, Evaluator

    rb_config = {"eval_args": {"mode": {"valid": "full", "test": "full"}}, "topk": [20], "device": torch.device("cpu"),
                 "metrics": ["Recall", "NDCG"], "metric_decimal_place": 6}
    collector, evaluator = Collector(rb_config), Evaluator(rb_config)
    with Timer() as ev, torch.no_grad():
        for start in range(0, len(test), args.eval_batch):
            batch = test.collate(test.__getitems__(list(range(start, min(start + args.eval_batch, len(test))))))
            rows = lambda offsets: torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets.diff())
            history = (rows(batch["seen_offsets"]), batch["seen_items"])
            positive_u, positive_i = rows(batch["held_offsets"]), batch["held_items"]
            scores = model.full_sort_predict({"user_id": batch["users"]}).view(len(batch["users"]), -1)
            scores[history] = -np.inf
            collector.eval_batch_collect(scores, None, positive_u, positive_i)
        result = evaluator.evaluate(collector.get_data_struct())
    metrics = {"recall@20": float(result["recall@20"]), "ndcg@20": float(result["ndcg@20"])}
    return dict(setup=setup, sampling=None, steps=steps, eval=ev, final=final, metrics=metrics)


# ----------------------------------------------------------------------------- reference code
def load_reference(code, data_root, name, train, cached_adjacency=False):
    """Import the reference code's modules (they parse ``sys.argv`` at import) with the paper's settings.

    Returns ``(modules, data_dir)``: ``modules`` has ``dataloader``, ``model``, ``utils``, ``world``;
    ``data_dir`` is a scratch copy of the split that the caller removes. With ``cached_adjacency`` the
    reference finds its own cache file ``s_pre_adj_mat.npz`` there (our Â, saved in its format).
    """
    import types

    code = Path(code).resolve()
    data_dir = Path(tempfile.mkdtemp(prefix="lgref_data_"))
    src = Path(data_root) / "recsys" / name
    for f in ("train.txt", "test.txt"):
        shutil.copy(src / f, data_dir / f)
    if cached_adjacency:
        import scipy.sparse as sp

        from panconv_graph.kernels.spmm import normalized_adjacency

        adj = normalized_adjacency(*train.interactions(), train.n_users, train.n_items)
        sp.save_npz(data_dir / "s_pre_adj_mat.npz", sp.csr_matrix(
            (adj.values().numpy(), adj.col_indices().numpy(), adj.crow_indices().numpy()), shape=adj.shape))
    argv, cwd = sys.argv, os.getcwd()
    sys.argv = ["main.py", "--testbatch", "100", "--layer", "3", "--recdim", "64", "--lr", "0.001",
                "--decay", "1e-4", "--bpr_batch", "2048", "--tensorboard", "0"]
    sys.path.insert(0, str(code))
    os.chdir(code)
    try:
        import dataloader
        import model
        import utils
        import world
    finally:
        sys.argv = argv
        os.chdir(cwd)
    world.config["A_split"] = False
    return types.SimpleNamespace(dataloader=dataloader, model=model, utils=utils, world=world), data_dir


def bench_reference(args, train, test, init):
    ref, data_dir = load_reference(args.reference_code, args.data_root, args.name, train, args.ref_cached_adjacency)
    try:
        return _bench_reference(args, train, init, ref, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _bench_reference(args, train, init, ref, data_dir):
    dataloader, ref_model, utils, world = ref.dataloader, ref.model, ref.utils, ref.world
    with Timer() as load:
        dataset = dataloader.Loader(config=world.config, path=str(data_dir))
    with Timer() as setup:
        net = ref_model.LightGCN(world.config, dataset)  # builds the normalised adjacency
    with torch.no_grad():
        net.embedding_user.weight.copy_(init[: train.n_users])
        net.embedding_item.weight.copy_(init[train.n_users:])
    final = torch.cat(net.computer()).detach()
    loss_fn = utils.BPRLoss(net, world.config)
    fraction = args.ref_sample_fraction or 1.0

    class _Part:  # the reference's python sampler on a fraction of an epoch, extrapolated
        trainDataSize = int(dataset.trainDataSize * fraction)
        n_users, m_items, allPos = dataset.n_users, dataset.m_items, dataset.allPos

    with Timer() as sampling:
        S = utils.UniformSample_original_python(_Part())
    sampling.wall /= fraction
    sampling.cpu /= fraction
    S = torch.as_tensor(np.asarray(S), dtype=torch.long)
    net.train()
    loss_fn.stageOne(S[:2048, 0], S[:2048, 1], S[:2048, 2])  # warm-up
    with Timer() as steps:
        for b in range(1, args.batches + 1):
            part = S[b * 2048:(b + 1) * 2048]
            loss_fn.stageOne(part[:, 0], part[:, 1], part[:, 2])
    net.eval()
    with torch.no_grad():
        net.embedding_user.weight.copy_(args.eval_weights[: train.n_users])
        net.embedding_item.weight.copy_(args.eval_weights[train.n_users:])
    users = list(dataset.testDict.keys())
    n_batches = math.ceil(len(users) / 100)
    done = min(args.ref_eval_batches, n_batches)
    with Timer() as ev, torch.no_grad():  # the body of Procedure.Test for `done` batches
        for b in range(done):
            batch_users = users[b * 100:(b + 1) * 100]
            all_pos = dataset.getUserPosItems(batch_users)
            truth = [dataset.testDict[u] for u in batch_users]
            rating = net.getUsersRating(torch.tensor(batch_users).long())
            ex_i, ex_items = [], []
            for i, items in enumerate(all_pos):
                ex_i.extend([i] * len(items))
                ex_items.extend(items)
            rating[ex_i, ex_items] = -(1 << 10)
            _, top = torch.topk(rating, k=20)
            r = utils.getLabel(truth, top.numpy())
            utils.RecallPrecision_ATk(truth, r, 20)
            utils.NDCGatK_r(truth, r, 20)
    ev.wall *= n_batches / done
    ev.cpu *= n_batches / done
    setup.wall += load.wall
    setup.cpu += load.cpu
    return dict(setup=setup, sampling=sampling, steps=steps, eval=ev, final=final, metrics=None,
                note=f"eval extrapolated from {done}/{n_batches} test batches")


def main():
    from panconv.testing import shared_data_root
    from panconv_graph.datasets.recsys import RecSysData

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=str(shared_data_root() or ""))
    p.add_argument("--name", default="gowalla")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=10, help="timed training steps (extrapolated to an epoch)")
    p.add_argument("--eval-batch", type=int, default=2048)
    p.add_argument("--recbole-path", default=None, help="folder where recbole is installed (pip --target)")
    p.add_argument("--recbole", action="store_true", help="compare with the recbole installed in this environment")
    p.add_argument("--reference-code", default=None, help="LightGCN-PyTorch/code folder")
    p.add_argument("--ref-eval-batches", type=int, default=20, help="reference test batches timed (x100 users)")
    p.add_argument("--ref-sample-fraction", type=float, default=0.1,
                   help="fraction of the reference's python BPR sampler timed (0: the whole epoch)")
    p.add_argument("--ref-cached-adjacency", action="store_true",
                   help="give the reference code its adjacency cache file (s_pre_adj_mat.npz) so that its ~146 s, "
                        "~11 GB scipy build is skipped; its setup time then excludes building the adjacency")
    p.add_argument("--weights", default=None,
                   help="a panconv LightGCN checkpoint (e.g. work_dirs/lightgcn/best.pth): evaluate these trained "
                        "weights, so that the implementations are compared at real metric values")
    p.add_argument("--no-recbole", action="store_true")
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train = RecSysData(args.data_root, "train", name=args.name, seed=2020)
    test = RecSysData(args.data_root, "test", name=args.name)
    steps_per_epoch = math.ceil(len(train) / 2048)
    init = torch.randn(train.n_users + train.n_items, 64, generator=torch.Generator().manual_seed(2020)) * 0.1
    args.eval_weights = init
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)["state_dict"]
        args.eval_weights = state["model.embedding.weight"].float()

    def done(name, r):  # progress line per implementation (the table follows at the end)
        print(f"[{name}] setup {r['setup'].wall:.1f}s, {args.batches} steps {r['steps'].wall:.1f}s "
              f"(cpu {r['steps'].cpu:.1f}s), eval {r['eval'].wall:.1f}s (cpu {r['eval'].cpu:.1f}s)", flush=True)
        return r

    runs = {"panconv-graph": done("panconv-graph", bench_ours(args, train, test, init))}
    if (args.recbole_path or args.recbole) and not args.no_recbole:
        runs["RecBole 1.2.1"] = done("RecBole 1.2.1", bench_recbole(args, train, test, init))
    if args.reference_code:
        runs["LightGCN-PyTorch (ref)"] = done("LightGCN-PyTorch (ref)", bench_reference(args, train, test, init))

    ours = runs["panconv-graph"]
    rows = []
    for name, r in runs.items():
        per_step = r["steps"].wall / args.batches, r["steps"].cpu / args.batches
        sample = (r["sampling"].wall, r["sampling"].cpu) if r["sampling"] else (0.0, 0.0)
        epoch = tuple(per_step[i] * steps_per_epoch + sample[i] for i in range(2))
        parity = float((r["final"] - ours["final"]).abs().max())
        rows.append(dict(impl=name, setup_s=r["setup"].wall, epoch_s=epoch[0], epoch_cpu_s=epoch[1],
                         step_s=per_step[0], sampling_s=sample[0], eval_s=r["eval"].wall, eval_cpu_s=r["eval"].cpu,
                         max_abs_diff_final_emb=parity, metrics=r["metrics"], note=r.get("note", "")))
    base = rows[0]
    print(f"\nGowalla ({train.n_users} users, {train.n_items} items, {len(train)} train interactions), "
          f"{args.threads} threads, {args.batches} timed steps x {steps_per_epoch} steps/epoch")
    head = f"{'implementation':24s} {'setup s':>8s} {'epoch s':>9s} {'(cpu)':>9s} {'eval s':>8s} {'(cpu)':>8s} " \
           f"{'ours/peer epoch':>15s} {'ours/peer eval':>14s} {'emb diff':>9s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['impl']:24s} {r['setup_s']:8.1f} {r['epoch_s']:9.1f} {r['epoch_cpu_s']:9.1f} {r['eval_s']:8.1f} "
              f"{r['eval_cpu_s']:8.1f} {base['epoch_cpu_s'] / r['epoch_cpu_s']:15.2f} "
              f"{base['eval_cpu_s'] / r['eval_cpu_s']:14.2f} {r['max_abs_diff_final_emb']:9.1e}")
    weights = args.weights or "the untrained init"
    for r in rows:
        if r["note"]:
            print(f"  {r['impl']}: {r['note']}")
        if r["metrics"]:
            print(f"  {r['impl']}: metrics of {weights} (same weights): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items()))
    print("ratios use CPU seconds; < 1 means panconv-graph is faster")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
