"""Recall@20 / NDCG@20 per epoch on Gowalla for LightGCN, MF-BPR (and NGCF) at the same budget.

A plain training loop over the plugin's components (the same computation ``core-run`` performs,
without checkpoints and plots): paper hyper-parameters (Adam lr 1e-3, reg 1e-4, batch 2048, 64-dim,
3 layers), model seed 2020, BPR sampling seed 2020, epoch ``e``'s batches in a fixed permutation;
full-ranking evaluation on test.txt after every epoch. One JSON line per epoch:

    python benchmarks/lightgcn_trajectory.py --model LightGCN --epochs 8
    python benchmarks/lightgcn_trajectory.py --model MF --epochs 8
"""

from __future__ import annotations

import argparse
import json
import time

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
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train = RecSysData(args.data_root, "train", name=args.name, seed=args.seed)
    test = RecSysData(args.data_root, "test", name=args.name)
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
        print(json.dumps({"model": args.model, "epoch": epoch + 1, "train_s": round(train_wall, 1),
                          "train_cpu_s": round(train_cpu, 1), "eval_s": round(time.time() - wall, 1),
                          "eval_cpu_s": round(time.process_time() - cpu, 1),
                          **{k: round(v, 4) for k, v in metrics.items()}}), flush=True)


if __name__ == "__main__":
    main()
