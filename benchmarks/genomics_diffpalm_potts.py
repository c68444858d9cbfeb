"""DiffPALM on a seeded Potts model of two coupled families: pairing precision vs chance (scaled-down replication).

For every generator seed in ``--seeds`` (the Potts model, the MSA LM's initialisation and training, the test MSAs):

1. A Potts model over A|B (``--la``/``--lb`` positions, alphabet ``--q``, ``--links`` inter-family couplings of
   strength ``--coupling``; panconv_genomics.models.diffpalm.PottsPairs, seeded) generates sequences by Gibbs
   sampling; each sample is one interacting pair (A_i, B_i).
2. A small MSA Transformer (axial row/column attention) is trained by masked language modelling on random paired
   MSAs of these samples (``--train-steps``; with ``--lm-cache DIR`` the trained weights are kept there and reused
   by later runs with the same Potts model, seed and steps).
3. Held-out test MSAs: ``--species`` species with ``--paralogs`` pairs each (fresh samples); the B rows of every
   species are shuffled. DiffPALM learns the within-species soft permutations that minimise the frozen model's
   masked-LM loss and reads off hard pairings. Printed: pairing precision over ``--trials`` test MSAs, beside the
   chance level (1 / paralogs: a random permutation) and the same DiffPALM run with an *untrained* (random-init)
   MSA Transformer (the loss carries no coevolution signal).
4. The paper's iterative procedure (``--rounds``: after each round the most confident pairs are fixed and enter the
   next round as paired context; ``diffpalm_iterative``) on the same test MSAs, same steps per round; with
   ``--equal-budget`` also one DiffPALM round of ``rounds x pairing-steps`` steps (no fixing, the same optimisation
   budget as the iterative run).
5. The coevolution baselines the paper compares with, both the Iterative Pairing Algorithm of Bitbol et al. from a
   random start: MI-IPA (mutual information, ``mi_ipa``) and DCA-IPA (mean-field Potts couplings, ``dca_ipa``), on
   the same test MSAs and on larger MSAs of the same Potts model (``--ipa-species``: more species of ``--paralogs``
   each), where counting statistics need many pairs.

With several seeds, a summary table gives each row's mean over the seeds' MSAs, the per-seed means, and the mean
± std over seeds. ``--skip`` leaves rows out (e.g. ``--skip untrained`` to save CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from panconv.io import atomic_write
from panconv_genomics.models.diffpalm import (
    MSATransformer,
    PottsPairs,
    dca_ipa,
    diffpalm_iterative,
    diffpalm_pairing,
    mi_ipa,
    pairing_precision,
    train_msa_lm,
)

METHODS = ("trained", "iterative", "equal_budget", "untrained", "mi_ipa", "dca_ipa")


def test_msa(potts: PottsPairs, species: int, paralogs: int, seed: int):
    """Rows of A, shuffled rows of B and the true pairing of every species."""
    return potts.pairing_task(species, paralogs, seed=seed, sample_seed=10_000 + seed)


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5


def trained_lm(args, potts: PottsPairs, seed: int) -> tuple[MSATransformer, MSATransformer, str]:
    """The MSA LM of this seed (trained, or loaded from ``--lm-cache``) and its untrained initialisation."""
    torch.manual_seed(seed)
    model = MSATransformer(args.q, args.la + args.lb)
    untrained = MSATransformer(args.q, args.la + args.lb)
    untrained.load_state_dict(model.state_dict())
    cache = None
    if args.lm_cache:
        cache = Path(args.lm_cache) / (f"msa_lm_la{args.la}_lb{args.lb}_q{args.q}_links{args.links}_"
                                       f"c{args.coupling:g}_steps{args.train_steps}_seed{seed}.pt")
    if cache is not None and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        losses, seconds, origin = saved["losses"].tolist(), float(saved["seconds"]), f"loaded from {cache}"
    else:
        started = time.perf_counter()
        losses = train_msa_lm(model, potts, steps=args.train_steps, seed=seed)
        seconds, origin = time.perf_counter() - started, "trained"
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            record = {"state_dict": model.state_dict(), "losses": torch.tensor(losses), "seconds": seconds}
            atomic_write(cache, lambda f: torch.save(record, f))
    info = (f"MSA Transformer {sum(p.numel() for p in model.parameters())} params, masked-LM loss "
            f"{mean_std(losses[:20])[0]:.3f} -> {mean_std(losses[-20:])[0]:.3f} "
            f"(ln q = {torch.tensor(args.q).log():.3f}), "
            f"{seconds:.0f} s of training ({origin})")
    return model, untrained, info


def run_seed(args, seed: int, methods: list[str]) -> tuple[dict, dict, dict]:
    """Precisions per row (one value per test MSA), seconds per row, pairs per MSA of each row, for one seed."""
    potts = PottsPairs(args.la, args.lb, args.q, args.links, args.coupling, seed=seed)
    model, untrained, info = trained_lm(args, potts, seed)
    print(f"\n## seed {seed}: Potts la={args.la} lb={args.lb} q={args.q} links={args.links} "
          f"coupling={args.coupling}; {info}", flush=True)
    results: dict[str, list[float]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for trial in range(args.trials):
        a_rows, b_rows, truths = test_msa(potts, args.species, args.paralogs, seed=seed + trial)
        for name in methods:
            started = time.perf_counter()
            if name in ("trained", "iterative"):
                if name == "iterative" and "trained" in methods:
                    continue                            # read off the run below
                # the iterative procedure's first round *is* DiffPALM (same seed): run once, read both rows off it
                rounds = diffpalm_iterative(model, a_rows, b_rows, args.la,
                                            rounds=args.rounds if "iterative" in methods else 1,
                                            steps=args.pairing_steps, seed=trial, return_rounds=True)
                if "trained" in methods:
                    results["trained"].append(pairing_precision(rounds[0], truths))
                if "iterative" in methods:
                    results["iterative"].append(pairing_precision(rounds[-1], truths))
                seconds[name] += time.perf_counter() - started
                continue
            if name == "mi_ipa":
                perms = mi_ipa(a_rows, b_rows, args.q, seed=trial)
            elif name == "dca_ipa":
                perms = dca_ipa(a_rows, b_rows, args.q, seed=trial)
            elif name == "equal_budget":
                perms = diffpalm_pairing(model, a_rows, b_rows, args.la, steps=args.rounds * args.pairing_steps,
                                         seed=trial)
            else:
                perms = diffpalm_pairing(untrained, a_rows, b_rows, args.la, steps=args.pairing_steps, seed=trial)
            seconds[name] += time.perf_counter() - started
            results[name].append(pairing_precision(perms, truths))
    pairs = dict.fromkeys(results, args.species * args.paralogs)
    for species in args.ipa_species:
        for name, method in (("mi_ipa", mi_ipa), ("dca_ipa", dca_ipa)):
            if name not in methods:
                continue
            key = f"{name}@{species}"
            results[key], started = [], time.perf_counter()
            for trial in range(args.trials):
                a_rows, b_rows, truths = test_msa(potts, species, args.paralogs, seed=1_000 + seed + trial)
                results[key].append(pairing_precision(method(a_rows, b_rows, args.q, seed=trial), truths))
            seconds[key], pairs[key] = time.perf_counter() - started, species * args.paralogs
    return results, seconds, pairs


def label(key: str, rounds: int) -> str:
    names = {"trained": "DiffPALM, trained MSA LM", "iterative": f"DiffPALM, trained, {rounds} rounds fixing",
             "equal_budget": f"DiffPALM, trained, 1 round of {rounds}x the steps (no fixing)",
             "untrained": "DiffPALM, untrained MSA LM", "mi_ipa": "MI-IPA (same MSAs)",
             "dca_ipa": "DCA-IPA (same MSAs)"}
    if "@" in key:
        name, species = key.split("@")
        return f"{'MI-IPA' if name == 'mi_ipa' else 'DCA-IPA'}, {species} species"
    return names[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--la", type=int, default=8)
    parser.add_argument("--lb", type=int, default=8)
    parser.add_argument("--q", type=int, default=4)
    parser.add_argument("--links", type=int, default=8)
    parser.add_argument("--coupling", type=float, default=1.5)
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--species", type=int, default=4)
    parser.add_argument("--paralogs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--pairing-steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the iterative DiffPALM (<= 1: skip it)")
    parser.add_argument("--equal-budget", action="store_true",
                        help="also one DiffPALM round of rounds x pairing-steps steps (no fixing)")
    parser.add_argument("--ipa-species", "--mi-species", type=int, nargs="*", default=[20, 50, 200],
                        help="larger MSAs (species of --paralogs each) for MI-IPA and DCA-IPA alone")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="generator seeds (one LM per seed)")
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS, help="rows to leave out")
    parser.add_argument("--lm-cache", default=None, help="directory to keep / reuse the trained MSA LMs")
    args = parser.parse_args()
    methods = [m for m in METHODS if m not in args.skip and (m != "iterative" or args.rounds > 1)
               and (m != "equal_budget" or (args.equal_budget and args.rounds > 1))]
    started = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        results, seconds, pairs = run_seed(args, seed, methods)
        per_seed.append(results)
        print(f"{args.trials} test MSAs x {args.species} species x {args.paralogs} paralogs "
              f"({args.species * args.paralogs} pairs each):")
        print("| pairing method | pairs per MSA | precision (mean ± std) | per MSA | s per MSA |")
        print("|---|---|---|---|---|")
        for key, values in results.items():
            mean, std = mean_std(values)
            if key == "trained" and "iterative" in results:
                secs = "round 1 of the next row"           # the DiffPALM row is read off the iterative run
            else:                                           # whose time (all rounds) is booked under "trained"
                secs = seconds["trained" if key == "iterative" and "trained" in seconds else key]
                secs = f"{secs / len(values):.1f}"
            print(f"| {label(key, args.rounds)} | {pairs[key]:,} | {mean:.3f} ± {std:.3f} | "
                  f"{', '.join(f'{v:.2f}' for v in values)} | {secs} |", flush=True)
        print(f"| chance (random permutation within species) | | {1 / args.paralogs:.3f} | | |")
    if len(args.seeds) > 1:
        print(f"\n## over seeds {args.seeds} ({args.trials} test MSAs each)")
        print("| pairing method | pairs per MSA | mean over all MSAs | per-seed means | mean ± std over seeds |")
        print("|---|---|---|---|---|")
        for key in per_seed[0]:
            means = [mean_std(results[key])[0] for results in per_seed]
            everything = [v for results in per_seed for v in results[key]]
            mean, std = mean_std(means)
            print(f"| {label(key, args.rounds)} | {pairs[key]:,} | {mean_std(everything)[0]:.3f} | "
                  f"{', '.join(f'{m:.3f}' for m in means)} | {mean:.3f} ± {std:.3f} |")
        print(f"| chance (random permutation within species) | | {1 / args.paralogs:.3f} | | |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
