"""Re-estimate the batch-norm population statistics of a trained model on training batches ("precise BN").

CAKT's 3D network has batch norm. During training, each batch-norm layer keeps an exponential moving average
(momentum 0.1) of the batch statistics, and evaluation reads that average. After a short training (34 steps
per ASSIST2009 epoch at batch 80) the weights are still moving fast, so the average lags behind and no
longer matches what the current weights produce. Evaluation then scores worse than the same weights
with batch statistics. This tool keeps every weight and replaces only the running mean and variance
with their plain average over ``--batches`` training batches, computed with the final weights and no
gradient (the "precise BN" of Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). It writes a
checkpoint that ``core-run --eval-only --resume`` evaluates as usual. The re-estimation is core's
(``panconv.recompute_batchnorm``; ``panconv precise-bn`` does it for any run from the run's own config); this
tool keeps the windows the figures in the README were measured on (a seeded draw of ``--batches`` x
``--batch-size`` training windows)::

    python -m panconv_education.tools.precise_bn work_dirs/X/epoch_2.pth work_dirs/X/epoch_2_precise_bn.pth \\
        --data-root /work/shared/data --name assist2009_updated --batches 10
"""

from __future__ import annotations

import argparse

import torch

from panconv import recompute_batchnorm
from panconv.io import load_checkpoint, save_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a core-run checkpoint of education.CAKT at its default sizes")
    parser.add_argument("output", help="where to write the checkpoint with re-estimated batch-norm statistics")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--name", default="assist2009_updated", help="the knowledge-tracing data set")
    parser.add_argument("--batches", type=int, default=10, help="training batches to average over")
    parser.add_argument("--batch-size", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0, help="which training windows (seeded draw)")
    args = parser.parse_args(argv)

    from panconv_education.datasets.knowledge_tracing import KnowledgeTracing
    from panconv_education.models.cakt import CAKT

    checkpoint = load_checkpoint(args.checkpoint)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    data = KnowledgeTracing(root=args.data_root, split="train", name=args.name, max_sequences={})
    num_skills = int(data.metadata["num_skills"])
    model = CAKT(num_skills=num_skills)                 # the release's sizes (examples/education_cakt_*.yaml)
    model.load_state_dict(state)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)).tolist()
    batches = (data.collate([data[i] for i in order[j * args.batch_size:(j + 1) * args.batch_size]])
               for j in range(min(args.batches, len(order) // args.batch_size)))
    used = recompute_batchnorm(model, batches)
    checkpoint["state_dict"] = {**checkpoint["state_dict"],
                                **{prefix + k: v for k, v in model.state_dict().items()}}
    save_checkpoint(checkpoint, args.output)
    layers = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    print(f"re-estimated {layers} batch-norm layers on {used} x {args.batch_size} "
          f"training windows -> {args.output}")


if __name__ == "__main__":
    main()
