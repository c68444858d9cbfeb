"""Held-out CER/WER of a trained speech-recognition config next to trivial baselines, per test subset.

Builds the test split exactly as ``core-run`` does (the config's ``data`` section and data root),
scores two trivial recognisers that need no audio — the empty transcript, and the most frequent
training transcript — and, with ``--checkpoint``, the trained model (greedy/beam as configured),
on every held-out utterance and on the real (asterisk) and synthesised subsets separately. Batches
go through the config's ``data.transforms`` (``panconv.build_datasets``), as in training:

    core-run examples/audio_squeezeformer_digits.yaml
    python benchmarks/audio_baselines.py examples/audio_squeezeformer_digits.yaml \\
        --checkpoint work_dirs/audio_squeezeformer_digits/epoch_60.pth
"""

from __future__ import annotations

import argparse
import collections

import torch


def score(hypotheses, references):
    from panconv_audio.evaluators.asr import CER, WER

    cer, wer = CER(), WER()
    batch = {"texts": list(references)}
    cer.process(batch, list(hypotheses))
    wer.process(batch, list(hypotheses))
    return cer.compute()["cer"], wer.compute()["wer"]


def predict_split(cfg, checkpoint, test, metadata, batch_size=32) -> list:
    """The trained model's prediction for every sample of ``test`` (``model.predict`` per batch, in order);
    ``benchmarks/audio_classification.py`` uses it too."""
    import panconv
    from panconv.io import load_checkpoint, model_state_dict

    model = panconv.create_model(cfg["model"], metadata=metadata)
    model.load_state_dict(model_state_dict(load_checkpoint(checkpoint)))
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            batch = test.collate([test[i] for i in range(start, min(start + batch_size, len(test)))])
            out += list(model.predict(model(batch), batch))
    return out


def main():
    from panconv import build_datasets, load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of this config (core-run's work_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="the overrides the run used (as core-run's --set), e.g. data.root=/tmp/pcdata")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(args.config, args.set)
    data = build_datasets(cfg)
    train, test = data["train"], data["test"]
    refs = [u.text for u in test.items]
    common = collections.Counter(u.text for u in train.items).most_common(1)[0][0]
    recognisers = {"empty transcript": [""] * len(refs),
                   f"most frequent train transcript '{common}'": [common] * len(refs)}
    if args.checkpoint:
        recognisers[f"model ({args.checkpoint})"] = predict_split(cfg, args.checkpoint, test, train.metadata)
    subsets = {"all held-out": lambda u: True, "real (asterisk)": lambda u: u.speaker.startswith("asterisk/"),
               "synthesised (flite/espeak-ng)": lambda u: not u.speaker.startswith("asterisk/")}
    print(f"{'recogniser':58s} {'subset':30s} {'n':>4s} {'CER':>7s} {'WER':>7s}")
    for name, hyps in recognisers.items():
        for subset, keep in subsets.items():
            idx = [i for i, u in enumerate(test.items) if keep(u)]
            cer, wer = score([hyps[i] for i in idx], [refs[i] for i in idx])
            print(f"{name:58s} {subset:30s} {len(idx):4d} {cer:7.3f} {wer:7.3f}")


if __name__ == "__main__":
    main()
