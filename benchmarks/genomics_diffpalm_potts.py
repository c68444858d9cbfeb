"""DiffPALM on a seeded Potts model of two coupled families: pairing precision vs chance (scaled-down replication).

1. A Potts model over A|B (``--la``/``--lb`` positions, alphabet ``--q``, ``--links`` inter-family couplings of
   strength ``--coupling``; panconv_genomics.models.diffpalm.PottsPairs, seeded) generates sequences by Gibbs
   sampling; each sample is one interacting pair (A_i, B_i).
2. A small MSA Transformer (axial row/column attention) is trained by masked language modelling on random paired
   MSAs of these samples (``--train-steps``).
3. Held-out test MSAs: ``--species`` species with ``--paralogs`` pairs each (fresh samples); the B rows of every
   species are shuffled. DiffPALM learns the within-species soft permutations that minimise the frozen model's
   masked-LM loss and reads off hard pairings. Printed: pairing precision over ``--trials`` test MSAs, beside the
   chance level (1 / paralogs: a random permutation) and the same DiffPALM run with an *untrained* (random-init)
   MSA Transformer (the loss carries no coevolution signal).
4. The paper's iterative procedure (``--rounds``: after each round the most confident pairs are fixed and enter the
   next round as paired context; ``diffpalm_iterative``) on the same test MSAs, same steps per round.
5. The coevolution baseline the paper compares with: MI-IPA (Bitbol et al. 2016; mutual-information iterative
   pairing from a random start, ``mi_ipa``) on the same test MSAs, and on larger MSAs of the same Potts model
   (``--mi-species``: more species of ``--paralogs`` each), where counting statistics need many pairs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py
"""

from __future__ import annotations

import argparse
import time

import torch

from panconv_genomics.models.diffpalm import (
    MSATransformer,
    PottsPairs,
    diffpalm_iterative,
    diffpalm_pairing,
    mi_ipa,
    pairing_precision,
    train_msa_lm,
)


def test_msa(potts: PottsPairs, species: int, paralogs: int, seed: int):
    """Rows of A, shuffled rows of B and the true pairing of every species."""
    g = torch.Generator().manual_seed(seed)
    pairs = potts.sample(species * paralogs, seed=10_000 + seed)
    a_rows, b_rows, truths = [], [], []
    for s in range(species):
        block = pairs[s * paralogs:(s + 1) * paralogs]
        shuffle = torch.randperm(paralogs, generator=g)
        a_rows.append(block[:, :potts.la])
        b_rows.append(block[shuffle, potts.la:])
        truths.append(torch.argsort(shuffle))        # A row i's partner sits at the position shuffle maps i to
    return a_rows, b_rows, truths


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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the iterative DiffPALM (0: skip it)")
    parser.add_argument("--mi-species", type=int, nargs="*", default=[20, 50, 200],
                        help="larger MSAs (species of --paralogs each) for MI-IPA alone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    potts = PottsPairs(args.la, args.lb, args.q, args.links, args.coupling, seed=args.seed)
    started = time.perf_counter()
    model = MSATransformer(args.q, args.la + args.lb)
    untrained = MSATransformer(args.q, args.la + args.lb)
    untrained.load_state_dict(model.state_dict())
    losses = train_msa_lm(model, potts, steps=args.train_steps, seed=args.seed)
    print(f"Potts: la={args.la} lb={args.lb} q={args.q} links={args.links} coupling={args.coupling}; "
          f"MSA Transformer {sum(p.numel() for p in model.parameters())} params, masked-LM loss "
          f"{sum(losses[:20]) / 20:.3f} -> {sum(losses[-20:]) / 20:.3f} (ln q = {torch.tensor(args.q).log():.3f}) "
          f"in {time.perf_counter() - started:.0f} s")
    names = {"trained": "DiffPALM, trained MSA LM", "iterative": f"DiffPALM, trained, {args.rounds} rounds fixing",
             "untrained": "DiffPALM, untrained MSA LM", "mi_ipa": "MI-IPA (same MSAs)"}
    results: dict[str, list[float]] = {name: [] for name in names if name != "iterative" or args.rounds > 1}
    seconds = dict.fromkeys(results, 0.0)
    for trial in range(args.trials):
        a_rows, b_rows, truths = test_msa(potts, args.species, args.paralogs, seed=args.seed + trial)
        for name in results:
            started = time.perf_counter()
            if name == "mi_ipa":
                perms = mi_ipa(a_rows, b_rows, args.q, seed=trial)
            elif name == "trained" and "iterative" in results:
                # the iterative procedure's first round *is* DiffPALM (same seed): run once, read both rows off it
                rounds = diffpalm_iterative(model, a_rows, b_rows, args.la, rounds=args.rounds,
                                            steps=args.pairing_steps, seed=trial, return_rounds=True)
                perms = rounds[0]
                results["iterative"].append(pairing_precision(rounds[-1], truths))
            elif name == "iterative":
                continue
            else:
                perms = diffpalm_pairing(model if name == "trained" else untrained, a_rows, b_rows, args.la,
                                         steps=args.pairing_steps, seed=trial)
            seconds[name] += time.perf_counter() - started
            results[name].append(pairing_precision(perms, truths))
    chance = 1 / args.paralogs
    print(f"{args.trials} test MSAs x {args.species} species x {args.paralogs} paralogs "
          f"({args.species * args.paralogs} pairs each):")
    print("| pairing method | pairs per MSA | precision (mean ± std) | per MSA | s per MSA |")
    print("|---|---|---|---|---|")

    def row(label: str, pairs: int, values: list[float], secs: float) -> None:
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
        print(f"| {label} | {pairs} | {mean:.3f} ± {std:.3f} | {', '.join(f'{v:.2f}' for v in values)} | "
              f"{secs / len(values):.1f} |", flush=True)

    for name, values in results.items():  # the iterative row's time includes its first round (the DiffPALM row)
        row(names[name], args.species * args.paralogs, values, seconds["trained" if name == "iterative" else name])
    for species in args.mi_species:
        values, started = [], time.perf_counter()
        for trial in range(args.trials):
            a_rows, b_rows, truths = test_msa(potts, species, args.paralogs, seed=1_000 + args.seed + trial)
            values.append(pairing_precision(mi_ipa(a_rows, b_rows, args.q, seed=trial), truths))
        row(f"MI-IPA, {species} species", species * args.paralogs, values, time.perf_counter() - started)
    print(f"| chance (random permutation within species) | | {chance:.3f} | | |")

if __name__ == "__main__":
    main()
