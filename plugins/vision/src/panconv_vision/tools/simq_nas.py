"""``panconv simq-nas CONFIG``: SimQ-NAS search over a trained ``vision.SimQSuperNet`` (architecture + bits).

The LINAS-style loop of the paper (see ``panconv_vision.models.simq_nas``):

1. evaluate ``--initial`` random genomes (architecture and per-layer bit-widths from 32/8/4): top-1
   accuracy of the fake-quantised sub-network on ``--eval-size`` images of the config's val split;
2. ``--iterations`` times: fit the ridge accuracy predictor on every evaluated genome; run NSGA-II
   (``pymoo``) on (1 - predicted accuracy, bit operations, model size); evaluate up to ``--per-iteration``
   not yet evaluated genomes of its final front (spread over the front by bit operations);
3. the Pareto front of the *measured* points (error, bit operations, size bytes).

With ``--latency measured`` the latency objective is measured instead of the bit-operations proxy:

0. ``--latency-samples`` random genomes (+ the largest and smallest, fp32 and all-INT4) are timed
   (:meth:`SimQSuperNet.measure_latency`: ``run`` with the genome's fake-quant / float layers, a fixed batch of
   ``--latency-batch`` images, median of ``--latency-repeats`` runs, ``--latency-threads`` threads,
   ``--latency-clock wall`` (elapsed) or ``cpu`` (the process's CPU time: robust to other processes' load)); a quarter
   is held out to score the :class:`LatencyPredictor` fitted on the rest (R², Spearman; the bit-operations
   proxy's Spearman on the same genomes; a re-measurement of the held-out genomes gives the noise ceiling);
   it is then refitted on all of them;
1-2. NSGA-II minimises (1 - predicted accuracy, predicted latency ms, size); every evaluated genome is also
   timed and joins the latency predictor's training set at the next refit;
3. the front is that of the measured points (error, measured latency, size).

The machine's load average (``os.getloadavg``) before and after the timing is recorded: on a shared machine
the timings carry that noise.

Writes ``<output>/pareto.json`` (every evaluated genome with its measured accuracy, predicted accuracy,
costs, measured/predicted latency and whether it is on the front; the accuracy predictor's rank correlation on
the last iteration's new points; the latency predictor's fit) and ``<output>/pareto.png`` (accuracy vs bit
operations or measured latency, marker size ~ model size, the front joined).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ._common import build_data, figure, load, save_figure, take, write_json

__all__ = ["main", "search"]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def fit_latency(model, vectors: list[np.ndarray], input_size: int, batch: int = 32, repeats: int = 7,
                warmup: int = 2, holdout: float = 0.25, seed: int = 0, log=print, clock: str = "wall") -> tuple:
    """Time ``vectors``' sub-networks, score a :class:`LatencyPredictor` on a held-out share, refit on all.

    Returns ``(predictor, samples, report)``: ``samples`` maps each genome key to its measured ms; ``report``
    holds the held-out R² / Spearman of the predictor, the bit-operations proxy's Spearman on the same genomes,
    the re-measurement (test-retest) R² / Spearman of those genomes, and the load averages around the timing.
    """
    from ..models.simq_nas import LatencyPredictor, r2_score, spearman

    load_before = _load()
    genomes = [model.decode(v) for v in vectors]
    ms = np.array([model.measure_latency(g, input_size, batch, repeats, warmup, clock) for g in genomes])
    feats = np.stack([model.latency_features(g, input_size) for g in genomes])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(genomes))
    n_test = max(3, int(round(holdout * len(genomes)))) if len(genomes) >= 8 else 0
    test, train = order[:n_test], order[n_test:]
    report = {"samples": len(genomes), "batch": batch, "repeats": repeats, "warmup": warmup, "clock": clock,
              "threads": torch.get_num_threads(), "features": list(model.LATENCY_FEATURES),
              "latency_ms_range": [float(ms.min()), float(ms.max())]}
    if n_test:
        held = LatencyPredictor().fit(feats[train], ms[train])
        pred = held.predict(feats[test])
        again = np.array([model.measure_latency(genomes[i], input_size, batch, repeats, warmup, clock)
                          for i in test])
        bops = np.array([model.costs(genomes[i], input_size)["bit_ops"] for i in test])
        report.update({"train": len(train), "held_out": len(test),
                       "held_out_r2": r2_score(ms[test], pred), "held_out_spearman": spearman(ms[test], pred),
                       "proxy_bit_ops_spearman": spearman(ms[test], bops),
                       "retest_r2": r2_score(ms[test], again), "retest_spearman": spearman(ms[test], again)})
    report["load_average_before"], report["load_average_after"] = load_before, _load()
    predictor = LatencyPredictor().fit(feats, ms)
    report["coefficients_ms_per_sd"] = dict(zip(model.LATENCY_FEATURES, (float(c) for c in predictor.coef)))
    if n_test:
        log(f"simq-nas: latency predictor on {len(test)} held-out genomes: R2 {report['held_out_r2']:.3f}, "
            f"Spearman {report['held_out_spearman']:.3f} (bit-ops proxy Spearman "
            f"{report['proxy_bit_ops_spearman']:.3f}; re-measurement R2 {report['retest_r2']:.3f}, Spearman "
            f"{report['retest_spearman']:.3f}); load average {load_before} -> {report['load_average_after']}")
    samples = {tuple(int(a) for a in v): float(t) for v, t in zip(vectors, ms)}
    return predictor, samples, report


def search(model, images: torch.Tensor, labels: torch.Tensor, initial: int = 24, iterations: int = 3,
           per_iteration: int = 8, population: int = 40, generations: int = 20, seed: int = 0, log=print,
           latency: str = "proxy", latency_samples: int = 120, latency_batch: int = 32, latency_repeats: int = 7,
           latency_warmup: int = 2, latency_clock: str = "wall") -> dict:
    """Run the search; returns ``{"points": [...], "predictor_spearman": float, "latency": {...}}``.

    ``latency="proxy"``: the second objective is bit operations (exact); ``"measured"``: measured latency via
    :class:`LatencyPredictor` (see the module docstring).
    """
    from ..models.simq_nas import LatencyPredictor, RidgePredictor, nsga2, pareto_mask, spearman

    if latency not in ("proxy", "measured"):
        raise ValueError(f"simq-nas: latency must be 'proxy' or 'measured', got {latency!r}")
    measured = latency == "measured"
    model.eval()
    side = images.shape[-1]
    choices = model.gene_choices()
    upper = np.array([len(c) - 1 for c in choices])
    g = torch.Generator().manual_seed(seed)
    evaluated: dict[tuple, dict] = {}
    timings: dict[tuple, float] = {}
    latency_report: dict = {"objective": "bit_ops (exact proxy)"}
    lat_predictor = None
    if measured:
        sample_gen = torch.Generator().manual_seed(seed + 1000)
        vectors = [model.encode(model.largest(32)), model.encode(model.smallest(32)), model.encode(model.largest(4)),
                   model.encode(model.smallest(4))]
        vectors += [model.encode(model.random_genome(sample_gen, bits=None)) for _ in range(latency_samples)]
        lat_predictor, timings, latency_report = fit_latency(model, vectors, side, latency_batch, latency_repeats,
                                                             latency_warmup, seed=seed, log=log, clock=latency_clock)
        latency_report["objective"] = "measured latency (ms), LatencyPredictor"

    def evaluate(vector: np.ndarray, predicted: float | None = None, predicted_ms: float | None = None) -> None:
        key = tuple(int(v) for v in vector)
        if key in evaluated:
            return
        genome = model.decode(vector)
        point = {"vector": list(key), "genome": asdict(genome),
                 "accuracy": model.accuracy(genome, images, labels), "predicted_accuracy": predicted,
                 **model.costs(genome, side)}
        if measured:
            if key not in timings:
                timings[key] = model.measure_latency(genome, side, latency_batch, latency_repeats, latency_warmup,
                                                     latency_clock)
            point.update(latency_ms=timings[key], predicted_latency_ms=predicted_ms)
        evaluated[key] = point

    for vector in ([model.encode(model.largest(8)), model.encode(model.smallest(4))]
                   + [model.encode(model.random_genome(g, bits=None)) for _ in range(initial)]):
        evaluate(vector)
    log(f"simq-nas: {len(evaluated)} initial genomes evaluated")
    spearman_acc = float("nan")
    for it in range(iterations):
        keys = list(evaluated)
        predictor = RidgePredictor(choices, alpha=1.0).fit(np.array(keys), np.array([evaluated[k]["accuracy"]
                                                                                       for k in keys]))
        if measured:   # refit on every timed genome (the samples and the evaluated ones)
            tk = list(timings)
            lat_predictor = LatencyPredictor().fit(
                np.stack([model.latency_features(model.decode(k), side) for k in tk]), np.array([timings[k]
                                                                                                for k in tk]))

        def second(x: np.ndarray, lat=lat_predictor) -> np.ndarray:
            if lat is not None:
                return lat.predict(np.stack([model.latency_features(model.decode(v), side) for v in x]))
            return np.array([model.costs(model.decode(v), side)["bit_ops"] for v in x]) / 1e9

        def objectives(x: np.ndarray, predictor=predictor) -> np.ndarray:
            sizes = np.array([model.costs(model.decode(v), side)["size_bytes"] for v in x]) / 1e3
            return np.stack([1.0 - predictor.predict(x), second(x), sizes], axis=1)

        front = nsga2(objectives, upper, population=population, generations=generations, seed=seed + it)
        new = [v for v in front if tuple(int(a) for a in v) not in evaluated]
        if len(new) > per_iteration:  # spread over the front by the latency objective
            order = np.argsort(second(np.array(new)))
            new = [new[order[i]] for i in np.linspace(0, len(new) - 1, per_iteration).round().astype(int)]
        predicted = predictor.predict(np.array(new)) if new else np.array([])
        predicted_ms = second(np.array(new)) if (new and measured) else [None] * len(new)
        for v, p, pm in zip(new, predicted, predicted_ms):
            evaluate(v, float(p), None if pm is None else float(pm))
        if len(new) >= 3:
            got = np.array([evaluated[tuple(int(a) for a in v)]["accuracy"] for v in new])
            spearman_acc = spearman(got, predicted)
        log(f"simq-nas: iteration {it + 1}/{iterations}: front of {len(front)}, {len(new)} new evaluated, "
            f"predictor Spearman {spearman_acc:.3f}")
    points = list(evaluated.values())
    axis = "latency_ms" if measured else "bit_ops"
    f = np.array([[1 - p["accuracy"], p[axis], p["size_bytes"]] for p in points])
    for p, on in zip(points, pareto_mask(f)):
        p["pareto"] = bool(on)
    if measured:
        searched = [p for p in points if p["predicted_latency_ms"] is not None]
        if len(searched) >= 3:
            latency_report["search_points_spearman"] = spearman(
                np.array([p["latency_ms"] for p in searched]), np.array([p["predicted_latency_ms"] for p in searched]))
        latency_report["load_average_end"] = _load()
    return {"points": points, "predictor_spearman": spearman_acc, "latency": latency_report}


def plot(points: list[dict], path: Path, note: str = "") -> Path:
    fig, ax = figure(figsize=(6.4, 4.4))
    measured = all("latency_ms" in p for p in points)
    bops = np.array([p["latency_ms"] if measured else p["bit_ops"] / 1e9 for p in points])
    acc = np.array([p["accuracy"] for p in points]) * 100
    size = np.array([p["size_bytes"] for p in points]) / 1e3
    on = np.array([p["pareto"] for p in points])
    ax.scatter(bops[~on], acc[~on], s=10 + size[~on] / size.max() * 80, c="0.6", label="evaluated", alpha=0.7)
    ax.scatter(bops[on], acc[on], s=10 + size[on] / size.max() * 80, c="C3",
               label=f"Pareto (acc, {'latency' if measured else 'BOPs'}, size)")
    from ..models.simq_nas import pareto_mask

    two = pareto_mask(np.stack([-acc, bops], axis=1))   # the line: the accuracy-vs-cost front (size left out)
    order = np.argsort(bops[two])
    ax.plot(bops[two][order], acc[two][order], c="C3", lw=0.8, label="front of accuracy vs the x axis")
    ax.set_xscale("log")
    ax.set_xlabel("measured latency (ms, median; fake-quant as simulated)" if measured
                  else "bit operations (G, MACs x w-bits x a-bits)")
    ax.set_ylabel("top-1 accuracy (%), fake-quantised")
    ax.set_title("SimQ-NAS on MNIST: marker area ~ model size" + (f"\n{note}" if note else ""), fontsize=9)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def main(args) -> int:
    torch.manual_seed(args.seed)
    cfg, model = load(args.config, args.checkpoint, args.device, args.data_root)
    if not hasattr(model, "gene_choices"):
        raise SystemExit(f"simq-nas: {args.config}: model.type must be a vision.SimQSuperNet (size), got "
                         f"{type(model).__name__}")
    dataset = build_data(cfg, "val", args.data_root) or build_data(cfg, "test", args.data_root)
    if dataset is None:
        raise SystemExit(f"simq-nas: {args.config} has no val or test data split to evaluate sub-networks on")
    batch = take(dataset, args.eval_size)
    images, labels = batch["inputs"].to(args.device), batch["labels"].to(args.device)
    latency = getattr(args, "latency", "proxy")
    threads = getattr(args, "latency_threads", None)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = search(model, images, labels, initial=args.initial, iterations=args.iterations,
                        per_iteration=args.per_iteration, population=args.population, generations=args.generations,
                        seed=args.seed, latency=latency,
                        latency_samples=getattr(args, "latency_samples", None) or 120,
                        latency_batch=getattr(args, "latency_batch", None) or 32,
                        latency_repeats=getattr(args, "latency_repeats", None) or 7,
                        latency_clock=getattr(args, "latency_clock", None) or "wall")
    finally:
        torch.set_num_threads(previous)
    out = Path(args.output)
    axis = "latency_ms" if latency == "measured" else "bit_ops"
    front = sorted((p for p in result["points"] if p["pareto"]), key=lambda p: p[axis])
    write_json(out / "pareto.json", {"config": str(args.config), "checkpoint": args.checkpoint,
                                     "eval_size": len(labels), "front": front, **result})
    lat = result["latency"]
    note = (f"{lat['clock']} clock, {threads or previous} thread(s), batch {lat['batch']}, load average "
            f"{lat['load_average_before']}"
            if latency == "measured" else "")
    plot(result["points"], out / "pareto.png", note=note)
    print(f"simq-nas: {len(result['points'])} genomes evaluated, {len(front)} on the Pareto front "
          f"-> {out / 'pareto.json'}, {out / 'pareto.png'}")
    for p in front:
        cost = f"{p['latency_ms']:7.2f} ms" if latency == "measured" else f"GBOPs {p['bit_ops'] / 1e9:8.4f}"
        print(f"  acc {p['accuracy']:.4f}  {cost}  size {p['size_bytes'] / 1e3:7.2f} kB  "
              f"bits {''.join({32: 'F', 8: '8', 4: '4'}[b] for b in p['genome']['bits'])}")
    return 0
