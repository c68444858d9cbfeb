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

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py
"""

from __future__ import annotations

import argparse
import time

import torch

from panconv_genomics.models.diffpalm import (
    MSATransformer,
    PottsPairs,
    diffpalm_pairing,
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
    results = {"trained": [], "untrained": []}
    for trial in range(args.trials):
        a_rows, b_rows, truths = test_msa(potts, args.species, args.paralogs, seed=args.seed + trial)
        for name, lm in (("trained", model), ("untrained", untrained)):
            perms = diffpalm_pairing(lm, a_rows, b_rows, args.la, steps=args.pairing_steps, seed=trial)
            results[name].append(pairing_precision(perms, truths))
    chance = 1 / args.paralogs
    print(f"{args.trials} test MSAs x {args.species} species x {args.paralogs} paralogs:")
    for name, values in results.items():
        mean = sum(values) / len(values)
        print(f"  DiffPALM, {name + ' MSA LM':<20} precision {mean:.3f}  (per MSA: "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    print(f"  chance (random permutation)     precision {chance:.3f}")


if __name__ == "__main__":
    main()
