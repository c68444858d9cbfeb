"""Data-scaling sweep (after Sun et al., "Revisiting Unreasonable Effectiveness of Data in Deep Learning
Era", ICCV 2017: performance grows linearly in the logarithm of the training-set size).

``panconv sweep CONFIG`` trains the config through the engine (``core-run``) on log-spaced fractions
of its training set, evaluates every run on the config's own test split (unchanged), fits
``metric = a + b log10(n)`` and writes ``sweep.json`` and ``sweep.png``.

The training subset: the data set's ``limit`` argument (its first ``n`` samples) or, for data sets
without one, ``train_fraction`` (graph.RecSysData: a seeded fraction of the training interactions;
evaluation splits unchanged). ``limit`` applies to every split, so each run's own validation/test
numbers use limited splits; the sweep therefore re-evaluates every run's final checkpoint on the full
test split (``core-run --eval-only``). ``--min-steps N`` raises ``train.epochs``
for the small subsets so every run makes at least ``N`` optimiser steps (a schedule sized in steps,
such as OneCycleLR's ``total_steps``, must then be overridden too).
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import panconv

from . import _common


def log_fractions(count: int, smallest: float) -> list[float]:
    """``count`` fractions from ``smallest`` to 1, evenly spaced in log scale."""
    if count < 1 or not 0 < smallest <= 1:
        raise ValueError(f"sweep: need count >= 1 and 0 < min_fraction <= 1, got {count}, {smallest}")
    return [float(f) for f in np.geomspace(smallest, 1.0, count)] if count > 1 else [1.0]


def fit_log_linear(sizes, values) -> dict:
    """Least squares ``value = a + b log10(size)``, with R^2."""
    x, y = np.log10(np.asarray(sizes, dtype=float)), np.asarray(values, dtype=float)
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    total = ((y - y.mean()) ** 2).sum()
    return {"intercept": float(a), "slope_per_decade": float(b),
            "r2": float(1 - (residual ** 2).sum() / total) if total > 0 else 1.0}


def epochs_for(n: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """The config's ``epochs``, raised so that a run on ``n`` examples makes at least ``min_steps``
    optimiser steps (``ceil(n / batch_size)`` per epoch): small subsets otherwise stop after a handful of
    steps and the curve measures under-training, not data."""
    if n < 1 or batch_size < 1 or epochs < 1 or min_steps < 0:
        raise ValueError(f"sweep: need n, batch_size, epochs >= 1 and min_steps >= 0, got {n}, {batch_size}, "
                         f"{epochs}, {min_steps}")
    per_epoch = -(-n // batch_size)
    return max(epochs, -(-min_steps // per_epoch))


def subset_option(cfg) -> str | None:
    """How the config's data set takes a training subset: ``limit`` (its first ``n`` samples, every
    split) or ``train_fraction`` (a seeded fraction of the training split only, e.g. graph.RecSysData's
    interactions); None when it takes neither."""
    factory = panconv.get_component("dataset", cfg["data"]["type"])
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in ("limit", "train_fraction") if name in parameters), None)


def _core_run() -> list[str]:
    script = Path(sys.executable).with_name("core-run")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "panconv.cli", "run"]


def _metric(path: Path, name: str) -> float:
    data = json.loads(path.read_text())
    test = data.get("test")
    test = test[-1] if isinstance(test, list) else test
    if not test or name not in test:
        raise SystemExit(f"panconv sweep: {path} has no test {name!r} (metrics: {sorted(test or {})})")
    return float(test[name])


def _checkpoint(work_dir: Path) -> Path:
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        path = Path(marker.read_text().strip())
        return path if path.is_absolute() else work_dir / path
    return max(work_dir.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))


def main(args: argparse.Namespace) -> int:
    cfg = panconv.load_config(args.config, args.overrides)
    option = subset_option(cfg)
    if option is None:
        raise SystemExit(f"panconv sweep: {cfg['data']['type']} has no `limit` or `train_fraction` argument to take "
                         "a training subset with (docs/analysis-tools.md)")
    train = _common.build_data(cfg, "train", args.data_root)
    full = len(train)
    out = Path(args.output)
    common = [args.config, "--quiet"] + [f"--set={o}" for o in args.overrides]
    if args.data_root:
        common += ["--data-root", args.data_root]
    runs = []
    for fraction in log_fractions(args.fractions, args.min_fraction):
        n = max(1, int(round(fraction * full)))
        work_dir = out / f"n{n}"
        epochs = epochs_for(n, int(cfg["data"].get("batch_size", 32)), int(cfg["train"].get("epochs", 1)),
                            args.min_steps)
        subset = f"--set=data.limit={n}" if option == "limit" else f"--set=data.train_fraction={fraction!r}"
        subprocess.run(_core_run() + common + [subset, f"--set=train.epochs={epochs}", "--work-dir", str(work_dir)],
                       check=True)
        subprocess.run(_core_run() + common + ["--eval-only", "--resume", str(_checkpoint(work_dir)),
                                               "--work-dir", str(work_dir)], check=True)
        value = _metric(work_dir / "eval" / "metrics.json", args.metric)
        runs.append({"fraction": fraction, "train_size": n, "epochs": epochs, args.metric: value,
                     "work_dir": str(work_dir)})
        print(f"n = {n:7d} ({fraction:.4f} of {full}, {epochs} epochs): test {args.metric} {value:.4f}", flush=True)
    fit = fit_log_linear([r["train_size"] for r in runs], [r[args.metric] for r in runs]) if len(runs) > 1 else {}
    _common.write_json(out / "sweep.json", {"config": str(args.config), "overrides": args.overrides,
                                            "metric": args.metric, "min_steps": args.min_steps,
                                            "full_train_size": full, "runs": runs, "fit": fit})
    plot(runs, fit, args.metric, out / "sweep.png")
    if fit:
        print(f"{args.metric} = {fit['intercept']:.4f} + {fit['slope_per_decade']:.4f} log10(n)  (R^2 {fit['r2']:.3f})")
    print(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return 0


def plot(runs, fit, metric, path) -> None:
    fig, ax = _common.figure(figsize=(5, 3.5))
    sizes = np.array([r["train_size"] for r in runs], dtype=float)
    ax.semilogx(sizes, [r[metric] for r in runs], "o", label="runs")
    if fit:
        grid = np.geomspace(sizes.min(), sizes.max(), 50)
        ax.semilogx(grid, fit["intercept"] + fit["slope_per_decade"] * np.log10(grid), "-",
                    label=f"{fit['slope_per_decade']:.3f} per decade, R$^2$ {fit['r2']:.2f}")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"test {metric}")
    ax.legend()
    _common.save_figure(fig, path)
