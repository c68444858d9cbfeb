"""Held-out next-nucleotide perplexity of order-k Markov chains: the baseline of the HyenaDNA pre-training run.

Same data and windows as examples/genomics_hyenadna_pretrain.yaml (genomics.DNALanguageModel: human chr17 segment,
phage lambda, human transcripts; train = the first 80 % of each source, test = the last 10 %, windows of 1024),
fitted on the train ranges of both strands (the neural runs use reverse-complement augmentation), scored on the
test windows by sequence.Perplexity exactly as the models are (a window's first positions use the context the
window holds). With ``--work-dirs`` it also prints the test perplexity of finished core-run work dirs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_lm_baselines.py \
        --work-dirs work_dirs/genomics_hyenadna_pretrain work_dirs/genomics_transformer_pretrain
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from panconv_genomics.datasets.dna import DNALanguageModel
from panconv_genomics.evaluators.markov import MarkovChain
from panconv_sequence.evaluators.language import Perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 8])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--sources", nargs="+", default=["human", "phage", "transcripts"])
    parser.add_argument("--work-dirs", nargs="*", default=[])
    args = parser.parse_args()
    train = DNALanguageModel(split="train", sources=tuple(args.sources), length=args.length)
    test = DNALanguageModel(split="test", sources=tuple(args.sources), length=args.length)
    batch = test.collate([test[i] for i in range(len(test))])
    print(f"test: {len(test)} windows of {args.length} ({len(test) * args.length} scored positions); "
          f"train: {sum(len(t) for t in train.tokens)} bases")
    print(f"{'model':<28}{'test perplexity':>16}{'bits/base':>12}")
    for order in args.orders:
        chain = MarkovChain(order, args.alpha).fit(train.tokens)
        evaluator = Perplexity()
        evaluator.process(batch, chain.log_probs(batch["inputs"]))
        result = evaluator.compute()
        print(f"{f'Markov order {order}':<28}{result['perplexity']:>16.4f}{result['nll'] / 0.6931471805599453:>12.4f}")
    for work_dir in args.work_dirs:
        metrics = json.loads((Path(work_dir) / "metrics.json").read_text())
        test_metrics = metrics.get("test") or {}
        if "perplexity" in test_metrics:
            ppl = test_metrics["perplexity"]
            print(f"{Path(work_dir).name:<28}{ppl:>16.4f}{torch.tensor(ppl).log2().item():>12.4f}")


if __name__ == "__main__":
    main()
