"""DiffPALM's official optimisation, ours vs the official code: seconds per iteration, peak memory and the losses.

Ours is ``diffpalm_scores(..., recipe=OfficialRecipe(epochs, **PAPER_RECIPE))`` (the paper example notebook's
settings, :data:`genomics_diffpalm_potts.PAPER_RECIPE`); the official one is Bitbol-Lab/DiffPALM's
``DiffPALM(species_sizes, p_mask, random_seed).train(...)`` at the same settings, fetched into ``--official DIR``
(never committed) and run as ``plugins/genomics/tests/make_diffpalm_fixture.py`` runs it (imported from there: a
stub ``esm`` module puts our MSA model behind the official one-hot interface, ``plot_real_time`` is patched out;
the official progress bar is written to a discarded buffer). Both run on the same MSA model and the same paired
MSA, with the same seed, in the same process, alternating which goes first.

The MSA model is ``MSATransformer(q=4, length=la + lb)`` at its default size (d 48, 2 layers, 4 heads: the one
``benchmarks/genomics_diffpalm_potts.py`` trains), *randomly initialised* (seed 0; timing and parity do not need a
trained one). For every ``SxP`` of ``--sizes`` (species x paralogs) the paired MSA is ``S`` species of ``P`` pairs
sampled from that benchmark's default Potts model (``PottsPairs(la, lb, 4, 8 links, coupling 1.5, seed 0)``), B
rows shuffled within each species. One iteration is one LM forward + backward pass on one mask (the loop runs
``(epochs + 1) x batch_size`` of them: the last batch only evaluates). Printed per size, after one unmeasured
warm-up run of each implementation: the median over ``--repeats`` runs of the seconds per iteration (the whole
call / iterations, so set-up is included) and of the peak resident-set growth over the call (``PeakRSS`` of
``benchmarks/sequence_throughput.py``, with glibc's ``MALLOC_MMAP_THRESHOLD_`` lowered so freed tensors leave the
resident set), each with the ratio ours / official (< 1: ours faster / smaller); and the largest absolute
difference between the two runs' per-iteration losses over all repeats (the parity check, at sizes beyond the
fixture's 3 + 4 rows).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/genomics_diffpalm_official.py --official /tmp/diffpalm_official
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "plugins" / "genomics" / "tests"))
import make_diffpalm_fixture as official_io  # noqa: E402
from genomics_diffpalm_potts import PAPER_RECIPE  # noqa: E402
from sequence_throughput import PeakRSS  # noqa: E402

from panconv_genomics.models.diffpalm import (  # noqa: E402
    MSATransformer,
    OfficialRecipe,
    PottsPairs,
    diffpalm_scores,
)

Q = len(official_io.LETTERS)        # the adapter maps our q letters to the official alphabet's columns 4..4+q-1
FETCH = ("mkdir -p DIR/diffpalm && for f in __init__.py core.py gumbel_sinkhorn_utils.py; do git -C "
         "<Bitbol-Lab/DiffPALM checkout> show HEAD:diffpalm/$f > DIR/diffpalm/$f; done")


def parse_size(text: str) -> tuple[int, int]:
    """``"4x6"`` -> ``(4, 6)``: species x paralogs."""
    try:
        species, paralogs = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not SPECIESxPARALOGS, e.g. 4x6") from None
    if species < 1 or paralogs < 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: need >= 1 species of >= 2 paralogs")
    return species, paralogs


def official_error(directory: str | None) -> str | None:
    """Why ``--official`` cannot be used (one line), or None."""
    if directory is None:
        return f"--official DIR is required: the directory holding the fetched official diffpalm package ({FETCH})"
    if not (Path(directory) / "diffpalm" / "core.py").is_file():
        return f"--official {directory}: no diffpalm/core.py there; fetch it with: {FETCH.replace('DIR', directory)}"
    return None


def paired_msa(species: int, paralogs: int, la: int, lb: int):
    """A rows and shuffled B rows per species, from the Potts model of genomics_diffpalm_potts.py's defaults."""
    potts = PottsPairs(la, lb, Q, 8, 1.5, seed=0)
    a_rows, b_rows, _ = potts.pairing_task(species, paralogs, seed=0, sample_seed=10_000)
    return a_rows, b_rows


def run_ours(model, a_rows, b_rows, la: int, recipe: OfficialRecipe, seed: int) -> list[float]:
    history: dict = {}
    diffpalm_scores(model, a_rows, b_rows, la, seed=seed, recipe=recipe, history=history)
    return list(history["loss"])


def run_official(core, a_rows, b_rows, recipe: OfficialRecipe, seed: int) -> list[float]:
    left = official_io.official_onehot(torch.cat(a_rows))
    right = official_io.official_onehot(torch.cat(b_rows))
    with contextlib.redirect_stderr(io.StringIO()):          # the official tqdm progress bar
        _, (losses, *_) = official_io.official_train(core, [len(a) for a in a_rows], recipe, seed, left, right)
    return [float(x) for x in losses]


def measure(run) -> tuple[float, int, list[float]]:
    """Seconds, peak resident-set growth (bytes) and the losses of one call of ``run``."""
    with PeakRSS() as rss:
        start = time.perf_counter()
        losses = run()
        seconds = time.perf_counter() - start
    return seconds, rss.growth, losses


def compare(model, core, species: int, paralogs: int, args) -> dict:
    """Both implementations ``--repeats`` times on one paired MSA (alternating which goes first)."""
    a_rows, b_rows = paired_msa(species, paralogs, args.la, args.lb)
    recipe = OfficialRecipe(epochs=args.epochs, **PAPER_RECIPE)
    runs = {"ours": lambda: run_ours(model, a_rows, b_rows, args.la, recipe, args.seed),
            "official": lambda: run_official(core, a_rows, b_rows, recipe, args.seed)}
    seconds, memory, losses = {k: [] for k in runs}, {k: [] for k in runs}, {k: [] for k in runs}
    for r in range(args.repeats):
        for name in (("ours", "official") if r % 2 == 0 else ("official", "ours")):
            s, m, lo = measure(runs[name])
            seconds[name].append(s)
            memory[name].append(m)
            losses[name].append(lo)
    iterations = len(losses["ours"][0])
    diff = max(max(abs(x - y) for x, y in zip(ours, theirs)) if len(ours) == len(theirs) else float("inf")
               for ours in losses["ours"] for theirs in losses["official"])
    return {"iterations": iterations,
            "s_per_it": {k: statistics.median(v) / iterations for k, v in seconds.items()},
            "peak_mb": {k: statistics.median(v) / 2**20 for k, v in memory.items()},
            "loss_diff": diff, "loss": (losses["ours"][0][0], losses["ours"][0][-1])}


def warm_up(model, core, args) -> None:
    """One unmeasured run of each implementation (one epoch, the first size): lazy imports and first-call set-up."""
    a_rows, b_rows = paired_msa(*args.sizes[0], args.la, args.lb)
    recipe = OfficialRecipe(epochs=1, **PAPER_RECIPE)
    run_ours(model, a_rows, b_rows, args.la, recipe, args.seed)
    run_official(core, a_rows, b_rows, recipe, args.seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=None, help="directory holding the fetched official diffpalm package")
    parser.add_argument("--epochs", type=int, default=20, help="optimiser steps per run (OfficialRecipe.epochs)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(2, 6), (4, 6), (8, 12), (16, 12)],
                        help="species x paralogs, e.g. 2x6 4x6 8x12 16x12")
    parser.add_argument("--repeats", type=int, default=5, help="runs per implementation and size (median counts)")
    parser.add_argument("--la", type=int, default=8)
    parser.add_argument("--lb", type=int, default=8)
    parser.add_argument("--seed", type=int, default=100, help="the optimisation's seed (the official random_seed)")
    args = parser.parse_args(argv)
    error = official_error(args.official)
    if error:
        sys.exit(error)
    if args.epochs < 1 or args.repeats < 1:
        parser.error(f"--epochs and --repeats must be >= 1, got {args.epochs}, {args.repeats}")
    if argv is None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    sys.path.insert(0, str(Path(args.official).resolve()))
    torch.manual_seed(0)
    model = MSATransformer(Q, args.la + args.lb).eval()         # random init, d 48, 2 layers, 4 heads
    try:
        core = official_io.official_core(model)
    except ImportError as exc:
        sys.exit(f"the official diffpalm package in {args.official} failed to import: {exc} "
                 "(it needs scipy, tqdm and matplotlib)")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"threads={torch.get_num_threads()} MSATransformer(q={Q}, length={args.la + args.lb}) random init, "
          f"{n_params} parameters; recipe OfficialRecipe(epochs={args.epochs}, "
          f"{', '.join(f'{k}={v}' for k, v in PAPER_RECIPE.items())}); seed {args.seed}; "
          f"median of {args.repeats} runs each")
    print(f"{'size':>6} {'rows':>5} {'iters':>5} {'ours s/it':>10} {'official s/it':>13} {'time ratio':>10} "
          f"{'ours MB':>8} {'official MB':>11} {'mem ratio':>9} {'loss max|diff|':>14}  loss first -> last")
    warm_up(model, core, args)
    for species, paralogs in args.sizes:
        result = compare(model, core, species, paralogs, args)
        t, m = result["s_per_it"], result["peak_mb"]
        mem_ratio = f"{m['ours'] / m['official']:.2f}" if m["official"] > 0 else "n/a"
        size = f"{species}x{paralogs}"
        print(f"{size:>6} {species * paralogs:>5} {result['iterations']:>5} {t['ours']:>10.4f} "
              f"{t['official']:>13.4f} {t['ours'] / t['official']:>10.2f} {m['ours']:>8.1f} {m['official']:>11.1f} "
              f"{mem_ratio:>9} {result['loss_diff']:>14.2e}  {result['loss'][0]:.4f} -> {result['loss'][1]:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
