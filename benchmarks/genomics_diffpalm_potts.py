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
5. A reference for what the sample allows (``oracle``, it knows the generator): the maximum-likelihood pairing
   under the *true* Potts model (``oracle_pairing``). The likelihood of a within-species pairing is proportional to
   ``exp(sum_i E_AB(A_i, B_perm(i)))`` (the fields and intra-family terms do not depend on it), so the pairing that
   maximises the summed true inter-family couplings is the most probable one; found exactly over all permutations
   (by the Hungarian algorithm above 8 paralogs). It shows how much pairing signal a strength leaves in a sample at
   all (a ceiling up to noise: the most probable pairing is not exactly the one with the most expected correct
   pairs).
6. The coevolution baselines the paper compares with, both the Iterative Pairing Algorithm of Bitbol et al. from a
   random start: MI-IPA (mutual information, ``mi_ipa``) and DCA-IPA (mean-field Potts couplings, ``dca_ipa``), on
   the same test MSAs and on larger MSAs of the same Potts model (``--ipa-species``: more species of ``--paralogs``
   each), where counting statistics need many pairs.

7. With ``--runs K [K ...]``, the read-out of the pairing: the single DiffPALM run read off by the Hungarian algorithm
   (``hungarian``: the exact maximum-weight permutation of the learned scores, the paper's hard assignment) instead
   of greedily (the ``trained`` row); and, for every ``K > 1``, ``K`` independent runs of the same optimisation
   (masking seeds ``trial + k * RUN_SEED_STRIDE``; run 0 is the ``trained`` row's run) combined before the Hungarian
   read-out (``combine_runs``): ``averaged@K`` takes the mean of the runs' soft permutations (Sinkhorn at the final
   temperature), ``voted@K`` the fraction of runs whose Hungarian pairing has each pair. Several ``K`` share the
   runs (the first ``K`` of ``max(K)``), so ``--runs 3 5`` costs 5 runs per test MSA.
8. With ``--target-loss N``, the objective itself (the paper's "target loss"): the frozen MSA LM's masked-LM loss
   of every row's pairing of each test MSA, and of the true pairing, each the mean over the same ``N`` random masks
   (A and B tokens, probability 0.3, as during the optimisation). A pairing that scores below the truth
   means the optimiser found what the objective asks for and the LM prefers a wrong pairing; one above it means the
   optimisation stopped short of the truth's loss.
9. ``--estimator straight_through`` runs every DiffPALM row with the paper's gradient bypass (the forward pass feeds
   the hard Hungarian permutation of the current scores, the backward pass the soft one) instead of the soft
   relaxation both ways (the default, ``soft``); same masks, steps and temperatures.
10. ``--recipe paper`` runs every DiffPALM call (the trained, iterative, equal-budget, untrained and ``--runs`` rows)
   with the official code's optimisation at the paper's example-notebook settings (``OfficialRecipe``: A permuted
   and masked alone with p 0.7, straight-through, Adadelta lr 9 with weight decay 0.1 and the plateau schedule,
   tau 1, scores from zero, scaled and scheduled Gumbel noise, random tie-breaking; :data:`PAPER_RECIPE`) instead
   of ours (``default``), with ``epochs`` = the call's steps: the same number of optimiser steps, each one LM
   forward + backward pass on one mask, as the default recipe's; the official loop evaluates one more mask at the
   end (a forward pass only). The combined ``--runs`` rows then average at the recipe's tau (1).

With several seeds, a summary table gives each row's mean over the seeds' MSAs, the per-seed means, and the mean
± std over seeds. ``--skip`` leaves rows out (e.g. ``--skip untrained`` to save CPU).

``--inter-coupling X [X ...]`` sweeps the strength of the inter-family (A <-> B) couplings, the only ones that carry
the pairing signal: for each value, steps 1-6 run again for every seed with a Potts model that differs from the
default one only in those couplings (same fields, same linked positions, same favoured letter permutations, the
intra-family couplings kept at ``--coupling``), with its own MSA LM (cached per strength); a final table gives every
row's mean ± std over seeds at each strength.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py --inter-coupling 1.5 0.75 0.375
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py --rounds 1 --runs 3 5 --skip untrained
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_potts.py --seeds 0 1 2 --trials 3 --rounds 1 \
        --recipe paper
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from panconv.io import atomic_write
from panconv_genomics.models.diffpalm import (
    RUN_SEED_STRIDE,
    MSATransformer,
    OfficialRecipe,
    PottsPairs,
    combine_runs,
    dca_ipa,
    diffpalm_iterative,
    diffpalm_pairing,
    diffpalm_scores,
    greedy_assignment,
    hungarian_assignment,
    mask_tokens,
    mi_ipa,
    pairing_precision,
    train_msa_lm,
)

METHODS = ("trained", "iterative", "equal_budget", "untrained", "mi_ipa", "dca_ipa", "oracle", "hungarian",
           "averaged", "voted")
RUN_ROWS = ("hungarian", "averaged", "voted")       # read off --runs independent DiffPALM runs
# --recipe paper: the official optimisation at the paper's example notebook's settings (the other fields of
# OfficialRecipe default to the notebook's: p_mask 0.7, tau 1, 10 Sinkhorn iterations, batch 1, Adadelta, noise 0.1)
PAPER_RECIPE = {"std_init": 0.0, "lr": 9.0, "weight_decay": 0.1, "noise_std": True, "noise_scheduler": True,
                "rand_perm": True}


def diffpalm_options(args, steps: int) -> dict:
    """The keyword arguments of a DiffPALM call of ``steps`` optimiser steps (``diffpalm_scores``,
    ``diffpalm_pairing``, ``diffpalm_iterative``) under ``--recipe``: ours (``steps``, ``--estimator``), or the
    paper's ``OfficialRecipe`` with ``epochs=steps`` (it replaces ``steps`` and the estimator)."""
    if getattr(args, "recipe", "default") == "paper":
        return {"recipe": OfficialRecipe(epochs=steps, **PAPER_RECIPE)}
    return {"steps": steps, "estimator": getattr(args, "estimator", "soft")}


def test_msa(potts: PottsPairs, species: int, paralogs: int, seed: int):
    """Rows of A, shuffled rows of B and the true pairing of every species."""
    return potts.pairing_task(species, paralogs, seed=seed, sample_seed=10_000 + seed)


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5


def oracle_pairing(potts: PottsPairs, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor],
                   exact_up_to: int = 8) -> list[torch.Tensor]:
    """The most probable pairing of every species under the true Potts model (``perm[i]``: the B row of A row i).

    ``scores[i, j] = sum_{p in A, r in B} J_pr(A_i[p], B_j[r])``; the permutation maximising
    ``sum_i scores[i, perm(i)]`` is searched over all permutations up to ``exact_up_to`` rows, above by the
    Hungarian algorithm (also exact).
    """
    la, q = potts.la, potts.q
    cross = potts.couplings[:la, la:].double()                            # (la, lb, q, q)
    perms = []
    for a, b in zip(a_rows, b_rows):
        scores = torch.einsum("ipx,prxy,jry->ij", F.one_hot(a, q).double(), cross, F.one_hot(b, q).double())
        m = len(a)
        if m > exact_up_to:
            perms.append(hungarian_assignment(scores))
            continue
        candidates = torch.tensor(list(itertools.permutations(range(m))))   # (m!, m)
        totals = scores[torch.arange(m), candidates].sum(-1)
        perms.append(candidates[int(totals.argmax())])
    return perms


@torch.no_grad()
def lm_pairing_loss(model: MSATransformer, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor],
                    perms: list[torch.Tensor], masks: int = 64, mask_prob: float = 0.3, seed: int = 0) -> float:
    """The frozen LM's masked-LM loss of the MSA paired by ``perms`` (A row ``i`` with B row ``perms[s][i]``): the
    mean over ``masks`` random masks of the cross-entropy on the masked A and B tokens. The masks depend on the seed
    and the MSA's shape only, so every pairing of one MSA is scored on the same masks."""
    model.eval()
    rows = torch.cat([torch.cat([a, b[perm]], dim=1) for a, b, perm in zip(a_rows, b_rows, perms)])
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(masks):
        inputs, chosen = mask_tokens(rows, mask_prob, model.mask_id, g)
        chosen[0, 0] = True                                         # never an empty mask
        inputs[0, 0] = model.mask_id
        total += float(F.cross_entropy(model(inputs[None])[0][chosen], rows[chosen]))
    return total / masks


def potts_model(args, inter: float, seed: int) -> PottsPairs:
    """The seeded Potts model with inter-family couplings of strength ``inter``, intra-family ``args.coupling``.

    ``PottsPairs`` draws its fields, linked positions and letter permutations from the seed alone (the strength only
    scales the blocks), so the model of strength ``inter`` supplies the A <-> B blocks and the default one the rest.
    """
    potts = PottsPairs(args.la, args.lb, args.q, args.links, args.coupling, seed=seed)
    if inter != args.coupling:
        cross = PottsPairs(args.la, args.lb, args.q, args.links, inter, seed=seed).couplings
        la = args.la
        potts.couplings[:la, la:], potts.couplings[la:, :la] = cross[:la, la:], cross[la:, :la]
    return potts


def trained_lm(args, potts: PottsPairs, seed: int,
               inter: float | None = None) -> tuple[MSATransformer, MSATransformer, str, float]:
    """The MSA LM of this seed (trained, or loaded from ``--lm-cache``), its untrained initialisation, a line
    describing it and its final masked-LM loss (mean of the last 20 steps)."""
    torch.manual_seed(seed)
    model = MSATransformer(args.q, args.la + args.lb)
    untrained = MSATransformer(args.q, args.la + args.lb)
    untrained.load_state_dict(model.state_dict())
    cache = None
    strength = "" if inter is None or inter == args.coupling else f"_inter{inter:g}"
    if args.lm_cache:
        cache = Path(args.lm_cache) / (f"msa_lm_la{args.la}_lb{args.lb}_q{args.q}_links{args.links}_"
                                       f"c{args.coupling:g}{strength}_steps{args.train_steps}_seed{seed}.pt")
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
    return model, untrained, info, mean_std(losses[-20:])[0]


def run_seed(args, seed: int, methods: list[str],
             inter: float | None = None) -> tuple[dict, dict, dict, float, dict]:
    """Precisions per row (one value per test MSA), seconds per row, pairs per MSA of each row, for one seed;
    the MSA LM's final masked-LM loss (mean of its last 20 steps); with ``--target-loss``, per row (and ``truth``)
    the frozen LM's masked-LM loss of its pairing of each test MSA (:func:`lm_pairing_loss`; else empty)."""
    inter = args.coupling if inter is None else inter
    potts = potts_model(args, inter, seed)
    if {"trained", "iterative", "equal_budget", "untrained", *RUN_ROWS} & set(methods):
        model, untrained, info, final_loss = trained_lm(args, potts, seed, inter)
    else:                                                   # only the IPAs / the oracle: no MSA LM to train or load
        model = untrained = None
        info, final_loss = "no MSA LM (no DiffPALM row)", float("nan")
    strength = "" if inter == args.coupling else f" (inter-family {inter:g})"
    options = diffpalm_options(args, args.pairing_steps)
    if "recipe" in options:
        how = f"DiffPALM recipe: paper ({options['recipe']})"
    else:
        how = f"DiffPALM estimator: {options['estimator']}"
    print(f"\n## seed {seed}: Potts la={args.la} lb={args.lb} q={args.q} links={args.links} "
          f"coupling={args.coupling}{strength}; {info}; {how}", flush=True)
    run_keys = run_rows(args, methods)
    results: dict[str, list[float]] = {name: [] for name in methods if name not in RUN_ROWS}
    results.update({key: [] for key in run_keys})
    seconds = dict.fromkeys(list(results), 0.0)
    # without the iterative row, the DiffPALM row is read off the first of the --runs runs (the same run)
    trained_from_runs = bool(run_keys) and "iterative" not in methods
    target_masks = getattr(args, "target_loss", 0) if model is not None else 0
    lm_losses: dict[str, list[float]] = {}
    for trial in range(args.trials):
        a_rows, b_rows, truths = test_msa(potts, args.species, args.paralogs, seed=seed + trial)

        def record(key: str, perms: list[torch.Tensor], a_rows=a_rows, b_rows=b_rows, truths=truths,
                   trial=trial) -> None:
            results[key].append(pairing_precision(perms, truths))
            if target_masks:
                lm_losses.setdefault(key, []).append(lm_pairing_loss(model, a_rows, b_rows, perms, target_masks,
                                                                     seed=trial))

        if target_masks:
            lm_losses.setdefault("truth", []).append(lm_pairing_loss(model, a_rows, b_rows, truths, target_masks,
                                                                     seed=trial))
        if run_keys:
            runs, run_seconds = [], []
            for k in range(max(args.runs)):
                started = time.perf_counter()
                runs.append(diffpalm_scores(model, a_rows, b_rows, args.la, seed=trial + k * RUN_SEED_STRIDE,
                                            **options))
                run_seconds.append(time.perf_counter() - started)
            if trained_from_runs and "trained" in results:
                record("trained", [greedy_assignment(x) for x in runs[0]])
                seconds["trained"] += run_seconds[0]
            for key in run_keys:
                name, _, count = key.partition("@")
                if name == "hungarian":
                    perms = [hungarian_assignment(x) for x in runs[0]]
                else:
                    tau = options["recipe"].tau if "recipe" in options else 0.2    # the final temperature
                    combined = combine_runs(runs[:int(count)], tau, "soft" if name == "averaged" else "hard")
                    perms = [hungarian_assignment(x) for x in combined]
                record(key, perms)
                seconds[key] += sum(run_seconds[:int(count) if count else 1])
        for name in methods:
            started = time.perf_counter()
            if name in RUN_ROWS or (name == "trained" and trained_from_runs):
                continue                                # read off the --runs runs above
            if name in ("trained", "iterative"):
                if name == "iterative" and "trained" in methods:
                    continue                            # read off the run below
                # the iterative procedure's first round *is* DiffPALM (same seed): run once, read both rows off it
                rounds = diffpalm_iterative(model, a_rows, b_rows, args.la,
                                            rounds=args.rounds if "iterative" in methods else 1,
                                            seed=trial, return_rounds=True, **options)
                if "trained" in methods:
                    record("trained", rounds[0])
                if "iterative" in methods:
                    record("iterative", rounds[-1])
                seconds[name] += time.perf_counter() - started
                continue
            if name == "mi_ipa":
                perms = mi_ipa(a_rows, b_rows, args.q, seed=trial)
            elif name == "dca_ipa":
                perms = dca_ipa(a_rows, b_rows, args.q, seed=trial)
            elif name == "oracle":
                perms = oracle_pairing(potts, a_rows, b_rows)
            elif name == "equal_budget":
                perms = diffpalm_pairing(model, a_rows, b_rows, args.la, seed=trial,
                                         **diffpalm_options(args, args.rounds * args.pairing_steps))
            else:
                perms = diffpalm_pairing(untrained, a_rows, b_rows, args.la, seed=trial, **options)
            seconds[name] += time.perf_counter() - started
            record(name, perms)
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
    return results, seconds, pairs, final_loss, lm_losses


def print_target_losses(lm_losses: list[dict], results: list[dict], rounds: int, masks: int, title: str) -> None:
    """Per row: its pairings' masked-LM loss under the frozen LM minus the true pairing's (mean over the MSAs), and on
    how many MSAs the row's pairing scores at or below the truth (the objective prefers it to the truth)."""
    if not lm_losses or not lm_losses[0]:
        return
    truth = [v for losses in lm_losses for v in losses["truth"]]
    print(f"\n{title}: the frozen MSA LM's masked-LM loss of each pairing ({masks} masks per MSA, the same for every "
          f"pairing); the true pairing's: {sum(truth) / len(truth):.4f} (mean over {len(truth)} MSAs)")
    oracle = [v for losses in lm_losses for v in losses.get("oracle", [])]
    print("| pairing method | precision | loss - truth's loss (mean over MSAs) | MSAs scoring at or below the truth |"
          + (" MSAs scoring at or below the oracle's pairing |" if oracle else ""))
    print("|---|---|---|---|" + ("---|" if oracle else ""))
    for key in lm_losses[0]:
        if key == "truth":
            continue
        values = [v for losses in lm_losses for v in losses[key]]
        gaps = [v - t for v, t in zip(values, truth)]
        precision = [p for res in results for p in res[key]]
        below_oracle = f" {sum(v <= o + 1e-9 for v, o in zip(values, oracle))} of {len(values)} |" if oracle else ""
        print(f"| {label(key, rounds)} | {sum(precision) / len(precision):.3f} | {sum(gaps) / len(gaps):+.4f} | "
              f"{sum(g <= 1e-9 for g in gaps)} of {len(gaps)} |{below_oracle}")


def run_rows(args, methods: list[str]) -> list[str]:
    """The rows read off the ``--runs`` runs: ``hungarian`` (run 1 alone), ``averaged@K`` / ``voted@K`` per K > 1."""
    if not args.runs:
        return []
    keys = ["hungarian"] if "hungarian" in methods else []
    for count in sorted(set(args.runs)):
        keys += [f"{name}@{count}" for name in ("averaged", "voted") if name in methods and count > 1]
    return keys


def label(key: str, rounds: int) -> str:
    names = {"trained": "DiffPALM, trained MSA LM", "iterative": f"DiffPALM, trained, {rounds} rounds fixing",
             "equal_budget": f"DiffPALM, trained, 1 round of {rounds}x the steps (no fixing)",
             "untrained": "DiffPALM, untrained MSA LM", "mi_ipa": "MI-IPA (same MSAs)",
             "dca_ipa": "DCA-IPA (same MSAs)",
             "oracle": "true-coupling maximum likelihood (oracle, same MSAs)",
             "hungarian": "DiffPALM, trained, Hungarian read-out of the same run"}
    if key.startswith(("averaged@", "voted@")):
        name, runs = key.split("@")
        how = "mean soft permutation" if name == "averaged" else "vote of the Hungarian pairings"
        return f"DiffPALM, trained, {runs} runs combined ({how}) + Hungarian"
    if "@" in key:
        name, species = key.split("@")
        return f"{'MI-IPA' if name == 'mi_ipa' else 'DCA-IPA'}, {species} species"
    return names[key]


def run_strength(args, methods: list[str], inter: float) -> tuple[list[dict], dict, list[float]]:
    """Every seed at one inter-family strength: its tables; the per-seed results, pairs per row, final LM losses."""
    per_seed, losses, lm_losses = [], [], []
    for seed in args.seeds:
        results, seconds, pairs, final_loss, seed_lm_losses = run_seed(args, seed, methods, inter)
        per_seed.append(results)
        losses.append(final_loss)
        lm_losses.append(seed_lm_losses)
        print(f"{args.trials} test MSAs x {args.species} species x {args.paralogs} paralogs "
              f"({args.species * args.paralogs} pairs each):")
        print("| pairing method | pairs per MSA | precision (mean ± std) | per MSA | s per MSA |")
        print("|---|---|---|---|---|")
        for key, values in results.items():
            mean, std = mean_std(values)
            if key == "trained" and "iterative" in results:
                secs = "round 1 of the next row"           # the DiffPALM row is read off the iterative run
            elif key == "hungarian" and trained_from_runs_of(args, results):
                secs = "read off the DiffPALM row's run"
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
    print_target_losses(lm_losses, per_seed, args.rounds, getattr(args, "target_loss", 0),
                        f"## target loss, seeds {args.seeds}")
    return per_seed, pairs, losses


def trained_from_runs_of(args, results: dict) -> bool:
    """Whether the DiffPALM row was read off the first of the ``--runs`` runs (then it holds that run's time)."""
    return "hungarian" in results and "trained" in results and "iterative" not in results


def print_sweep(args, sweep: dict) -> None:
    """One row per pairing method, one column per inter-family strength: mean ± std over seeds of the seed means."""
    strengths = sorted(sweep, reverse=True)                  # strongest first, whatever order they ran in
    first, pairs, _ = sweep[strengths[0]]
    print(f"\n## sweep of the inter-family coupling (intra-family {args.coupling:g}); seeds {args.seeds}, "
          f"{args.trials} test MSAs each; mean ± std over seeds")
    print("| pairing method | pairs per MSA | " + " | ".join(f"inter {c:g}" for c in strengths) + " |")
    print("|---|---|" + "---|" * len(strengths))
    for key in first[0]:
        cells = []
        for inter in strengths:
            mean, std = mean_std([mean_std(results[key])[0] for results in sweep[inter][0]])
            cells.append(f"{mean:.3f} ± {std:.3f}")
        print(f"| {label(key, args.rounds)} | {pairs[key]:,} | " + " | ".join(cells) + " |")
    chance = f"{1 / args.paralogs:.3f}"
    print("| chance (random permutation within species) | | " + " | ".join(chance for _ in strengths) + " |")
    cells = []
    for inter in strengths:
        mean, std = mean_std(sweep[inter][2])
        cells.append(f"{mean:.3f} ± {std:.3f}")
    if all(cell.startswith("nan") for cell in cells):
        return
    print(f"| MSA LM masked-LM loss, last 20 steps (ln q = {torch.tensor(args.q).log():.3f}) | | "
          + " | ".join(cells) + " |")


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
    parser.add_argument("--runs", type=int, nargs="*", default=[],
                        help="Hungarian read-out and combinations of K independent DiffPALM runs, for each K given "
                             "(rows hungarian, averaged@K, voted@K; default: none of these rows)")
    parser.add_argument("--estimator", default="soft", choices=("soft", "straight_through"),
                        help="DiffPALM's gradient: the soft permutation both ways (default) or the paper's "
                             "straight-through (hard Hungarian permutation forward, soft backward)")
    parser.add_argument("--recipe", default="default", choices=("default", "paper"),
                        help="DiffPALM's optimisation: ours (default) or the official code's at the paper's notebook "
                             "settings (OfficialRecipe, epochs = the steps; straight-through already)")
    parser.add_argument("--target-loss", type=int, default=0, metavar="N",
                        help="also score every pairing (and the true one) by the frozen MSA LM's masked-LM loss, "
                             "mean over N random masks (default 0: off)")
    parser.add_argument("--inter-coupling", type=float, nargs="+", default=None,
                        help="strengths of the inter-family couplings to sweep (intra-family stay at --coupling; "
                             "default: --coupling alone)")
    args = parser.parse_args()
    if args.target_loss < 0:
        parser.error(f"--target-loss takes a number of masks >= 0, got {args.target_loss}")
    if any(k < 1 for k in args.runs):
        parser.error(f"--runs takes counts >= 1, got {args.runs}")
    if args.recipe == "paper" and args.estimator != "soft":
        parser.error("--estimator straight_through does not apply with --recipe paper: the paper's recipe is "
                     "straight-through already (drop --estimator)")
    methods = [m for m in METHODS if m not in args.skip and (m != "iterative" or args.rounds > 1)
               and (m != "equal_budget" or (args.equal_budget and args.rounds > 1))]
    started = time.perf_counter()
    strengths = args.inter_coupling or [args.coupling]
    sweep = {}
    for inter in strengths:
        if len(strengths) > 1:
            print(f"\n# inter-family coupling {inter:g} (intra-family {args.coupling:g})", flush=True)
        sweep[inter] = run_strength(args, methods, inter)
    if len(strengths) > 1:
        print_sweep(args, sweep)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
