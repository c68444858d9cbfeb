"""Recall@20 / NDCG@20 per epoch on Gowalla for LightGCN, MF-BPR (and NGCF) at the same budget.

A plain training loop over the plugin's components (the same computation ``core-run`` performs,
without checkpoints and plots): paper hyper-parameters (Adam lr 1e-3, reg 1e-4, batch 2048, 64-dim,
3 layers), model seed 2020, BPR sampling seed 2020, epoch ``e``'s batches in a fixed permutation;
full-ranking evaluation on test.txt after every epoch. One JSON line per epoch:

    python benchmarks/lightgcn_trajectory.py --model LightGCN --epochs 8
    python benchmarks/lightgcn_trajectory.py --model MF --epochs 8

``--impl reference --reference-code /tmp/lgref/code`` trains the reference implementation instead
(gusye1234/LightGCN-PyTorch, fetched outside the repository): its model, its ``BPRLoss`` (Adam), its
python BPR sampler and shuffling, seeded with its ``utils.set_seed(--seed)``, the same hyper-parameters;
after every epoch its final embeddings are ranked by ``graph.FullRanking`` (the same Recall/NDCG
definitions as its ``Procedure.Test``, ~20x faster than its per-100-user re-propagation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch


def main():
    from panconv.testing import shared_data_root
    from panconv_graph.datasets.recsys import RecSysData
    from panconv_graph.evaluators.ranking import FullRanking
    from panconv_graph.models.lightgcn import LightGCN
    from panconv_graph.models.mf import MF
    from panconv_graph.models.ngcf import NGCF

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["LightGCN", "MF", "NGCF"], default="LightGCN")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--name", default="gowalla")
    p.add_argument("--data-root", default=str(shared_data_root() or ""))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--impl", choices=["panconv", "reference"], default="panconv")
    p.add_argument("--reference-code", default=None, help="LightGCN-PyTorch/code folder (--impl reference)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train = RecSysData(args.data_root, "train", name=args.name, seed=args.seed)
    test = RecSysData(args.data_root, "test", name=args.name)
    if args.impl == "reference":
        if args.model != "LightGCN" or not args.reference_code:
            p.error("--impl reference trains the reference LightGCN: give --reference-code")
        return reference_trajectory(args, train, test)
    torch.manual_seed(args.seed)
    model = {"LightGCN": LightGCN, "MF": MF, "NGCF": NGCF}[args.model](train.n_users, train.n_items)
    model.attach_data(train)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    def evaluate():
        model.eval()
        ev = FullRanking(ks=[20])
        with torch.no_grad():
            for start in range(0, len(test), 2048):
                batch = test.collate(test.__getitems__(list(range(start, min(start + 2048, len(test))))))
                ev.process(batch, model.predict(model(batch), batch))
        model.train()
        return ev.compute()

    model.train()
    for epoch in range(args.epochs):
        wall, cpu = time.time(), time.process_time()
        train.set_epoch(epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(train), 2048):
            batch = train.collate(train.__getitems__(order[start:start + 2048].tolist()))
            losses = model.loss(model(batch), batch)
            opt.zero_grad()
            (losses["loss"] + losses["loss_reg"]).backward()
            opt.step()
        train_wall, train_cpu = time.time() - wall, time.process_time() - cpu
        wall, cpu = time.time(), time.process_time()
        metrics = evaluate()
        report(args, epoch, train_wall, train_cpu, wall, cpu, metrics)


def report(args, epoch, train_wall, train_cpu, wall, cpu, metrics):
    print(json.dumps({"impl": args.impl, "model": args.model, "seed": args.seed, "epoch": epoch + 1,
                      "train_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
                      "eval_s": round(time.time() - wall, 1), "eval_cpu_s": round(time.process_time() - cpu, 1),
                      **{k: round(v, 4) for k, v in metrics.items()}}), flush=True)


def rank(user_emb, item_emb, test):
    from panconv_graph.evaluators.ranking import FullRanking, UserItemScores

    ev = FullRanking(ks=[20])
    for start in range(0, len(test), 2048):
        batch = test.collate(test.__getitems__(list(range(start, min(start + 2048, len(test))))))
        ev.process(batch, UserItemScores(user_emb[batch["users"]], item_emb))
    return ev.compute()


def reference_trajectory(args, train, test):
    """The reference code's own training loop (``Procedure.BPR_train_original``), epoch by epoch."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lightgcn_speed import load_reference

    ref, data_dir = load_reference(args.reference_code, args.data_root, args.name, train, cached_adjacency=True)
    try:
        ref.world.seed = args.seed
        ref.utils.set_seed(args.seed)
        dataset = ref.dataloader.Loader(config=ref.world.config, path=str(data_dir))
        net = ref.model.LightGCN(ref.world.config, dataset)
        bpr = ref.utils.BPRLoss(net, ref.world.config)
        for epoch in range(args.epochs):
            wall, cpu = time.time(), time.process_time()
            net.train()
            sample = torch.as_tensor(ref.utils.UniformSample_original_python(dataset)).long()
            users, pos, neg = ref.utils.shuffle(sample[:, 0], sample[:, 1], sample[:, 2])
            for u, i, j in ref.utils.minibatch(users, pos, neg, batch_size=2048):
                bpr.stageOne(u, i, j)
            train_wall, train_cpu = time.time() - wall, time.process_time() - cpu
            wall, cpu = time.time(), time.process_time()
            net.eval()
            with torch.no_grad():
                user_emb, item_emb = net.computer()
                metrics = rank(user_emb, item_emb, test)
            report(args, epoch, train_wall, train_cpu, wall, cpu, metrics)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
