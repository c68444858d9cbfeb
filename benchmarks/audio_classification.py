"""Held-out accuracy of a trained audio classification config (CMoE) per test subset, next to the
chance rate and the majority-class baseline of the training split.

Builds the test split as ``core-run`` does (``panconv.build_datasets``: the config's ``data``
section, data root and ``data.transforms``), loads the checkpoint into the config's model and
scores every held-out utterance, the real (asterisk) recordings and the synthesised ones
separately:

    core-run examples/audio_cmoe_digits.yaml --work-dir work_dirs/audio_cmoe_digits
    python benchmarks/audio_classification.py examples/audio_cmoe_digits.yaml \\
        --checkpoint work_dirs/audio_cmoe_digits/epoch_20.pth
"""

from __future__ import annotations

import argparse
import collections

import torch


def classify(cfg, checkpoint, test, metadata, batch_size=64) -> list[int]:
    from audio_baselines import predict_split  # benchmarks/ is on sys.path when this script runs

    return [int(p.argmax(-1)) for p in predict_split(cfg, checkpoint, test, metadata, batch_size)]


def main():
    from panconv import build_datasets, load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--checkpoint", required=True, help="a checkpoint of this config (core-run's work dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="the overrides the run used (as core-run's --set)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(args.config, args.set)
    data = build_datasets(cfg)
    train, test = data["train"], data["test"]
    labels = [u.label for u in test.items]
    majority = collections.Counter(u.label for u in train.items).most_common(1)[0][0]
    predictions = classify(cfg, args.checkpoint, test, train.metadata)
    subsets = {"all held-out": lambda u: True, "real (asterisk)": lambda u: u.speaker.startswith("asterisk/"),
               "synthesised (flite/espeak-ng)": lambda u: not u.speaker.startswith("asterisk/")}
    chance = 1 / train.metadata["num_classes"]
    print(f"{'subset':30s} {'n':>4s} {'accuracy':>9s} {'chance':>7s} {'majority':>9s}")
    for subset, keep in subsets.items():
        idx = [i for i, u in enumerate(test.items) if keep(u)]
        if not idx:
            continue
        acc = sum(predictions[i] == labels[i] for i in idx) / len(idx)
        maj = sum(labels[i] == majority for i in idx) / len(idx)
        print(f"{subset:30s} {len(idx):4d} {acc:9.3f} {chance:7.3f} {maj:9.3f}")


if __name__ == "__main__":
    main()
