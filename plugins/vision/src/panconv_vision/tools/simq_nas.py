"""``panconv simq-nas CONFIG``: SimQ-NAS search over a trained ``vision.SimQSuperNet`` (architecture + bits).

The LINAS-style loop of the paper (see ``panconv_vision.models.simq_nas``):

1. evaluate ``--initial`` random genomes (architecture and per-layer bit-widths from 32/8/4): top-1
   accuracy of the fake-quantised sub-network on ``--eval-size`` images of the config's val split;
2. ``--iterations`` times: fit the ridge accuracy predictor on every evaluated genome; run NSGA-II
   (``pymoo``) on (1 - predicted accuracy, bit operations, model size); evaluate up to ``--per-iteration``
   not yet evaluated genomes of its final front (spread over the front by bit operations);
3. the Pareto front of the *measured* points (error, bit operations, size bytes).

Writes ``<output>/pareto.json`` (every evaluated genome with its measured accuracy, predicted accuracy,
costs and whether it is on the front; the predictor's rank correlation on the last iteration's new points)
and ``<output>/pareto.png`` (accuracy vs bit operations, marker size ~ model size, the front joined).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ._common import build_data, figure, load, save_figure, take, write_json

__all__ = ["main", "search"]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def search(model, images: torch.Tensor, labels: torch.Tensor, initial: int = 24, iterations: int = 3,
           per_iteration: int = 8, population: int = 40, generations: int = 20, seed: int = 0, log=print) -> dict:
    """Run the search; returns ``{"points": [...], "predictor_spearman": float}``."""
    from ..models.simq_nas import RidgePredictor, nsga2, pareto_mask

    model.eval()
    choices = model.gene_choices()
    upper = np.array([len(c) - 1 for c in choices])
    g = torch.Generator().manual_seed(seed)
    evaluated: dict[tuple, dict] = {}

    def evaluate(vector: np.ndarray, predicted: float | None = None) -> None:
        key = tuple(int(v) for v in vector)
        if key in evaluated:
            return
        genome = model.decode(vector)
        evaluated[key] = {"vector": list(key), "genome": asdict(genome),
                          "accuracy": model.accuracy(genome, images, labels), "predicted_accuracy": predicted,
                          **model.costs(genome, images.shape[-1])}

    for vector in ([model.encode(model.largest(8)), model.encode(model.smallest(4))]
                   + [model.encode(model.random_genome(g, bits=None)) for _ in range(initial)]):
        evaluate(vector)
    log(f"simq-nas: {len(evaluated)} initial genomes evaluated")
    spearman = float("nan")
    for it in range(iterations):
        keys = list(evaluated)
        predictor = RidgePredictor(choices, alpha=1.0).fit(np.array(keys), np.array([evaluated[k]["accuracy"]
                                                                                       for k in keys]))

        def objectives(x: np.ndarray, predictor=predictor) -> np.ndarray:
            costs = [model.costs(model.decode(v), images.shape[-1]) for v in x]
            return np.stack([1.0 - predictor.predict(x), np.array([c["bit_ops"] for c in costs]) / 1e9,
                             np.array([c["size_bytes"] for c in costs]) / 1e3], axis=1)

        front = nsga2(objectives, upper, population=population, generations=generations, seed=seed + it)
        new = [v for v in front if tuple(int(a) for a in v) not in evaluated]
        if len(new) > per_iteration:  # spread over the front by bit operations
            order = np.argsort([model.costs(model.decode(v), images.shape[-1])["bit_ops"] for v in new])
            new = [new[order[i]] for i in np.linspace(0, len(new) - 1, per_iteration).round().astype(int)]
        predicted = predictor.predict(np.array(new)) if new else np.array([])
        for v, p in zip(new, predicted):
            evaluate(v, float(p))
        if len(new) >= 3:
            measured = np.array([evaluated[tuple(int(a) for a in v)]["accuracy"] for v in new])
            spearman = _spearman(measured, predicted)
        log(f"simq-nas: iteration {it + 1}/{iterations}: front of {len(front)}, {len(new)} new evaluated, "
            f"predictor Spearman {spearman:.3f}")
    points = list(evaluated.values())
    f = np.array([[1 - p["accuracy"], p["bit_ops"], p["size_bytes"]] for p in points])
    for p, on in zip(points, pareto_mask(f)):
        p["pareto"] = bool(on)
    return {"points": points, "predictor_spearman": spearman}


def plot(points: list[dict], path: Path) -> Path:
    fig, ax = figure(figsize=(6.4, 4.4))
    bops = np.array([p["bit_ops"] for p in points]) / 1e9
    acc = np.array([p["accuracy"] for p in points]) * 100
    size = np.array([p["size_bytes"] for p in points]) / 1e3
    on = np.array([p["pareto"] for p in points])
    ax.scatter(bops[~on], acc[~on], s=10 + size[~on] / size.max() * 80, c="0.6", label="evaluated", alpha=0.7)
    ax.scatter(bops[on], acc[on], s=10 + size[on] / size.max() * 80, c="C3", label="Pareto (acc, BOPs, size)")
    order = np.argsort(bops[on])
    ax.plot(bops[on][order], acc[on][order], c="C3", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("bit operations (G, MACs x w-bits x a-bits)")
    ax.set_ylabel("top-1 accuracy (%), fake-quantised")
    ax.set_title("SimQ-NAS on MNIST: marker area ~ model size")
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
    result = search(model, images, labels, initial=args.initial, iterations=args.iterations,
                    per_iteration=args.per_iteration, population=args.population, generations=args.generations,
                    seed=args.seed)
    out = Path(args.output)
    front = sorted((p for p in result["points"] if p["pareto"]), key=lambda p: p["bit_ops"])
    write_json(out / "pareto.json", {"config": str(args.config), "checkpoint": args.checkpoint,
                                     "eval_size": len(labels), "front": front, **result})
    plot(result["points"], out / "pareto.png")
    print(f"simq-nas: {len(result['points'])} genomes evaluated, {len(front)} on the Pareto front "
          f"-> {out / 'pareto.json'}, {out / 'pareto.png'}")
    for p in front:
        print(f"  acc {p['accuracy']:.4f}  GBOPs {p['bit_ops'] / 1e9:8.4f}  size {p['size_bytes'] / 1e3:7.2f} kB  "
              f"bits {''.join({32: 'F', 8: '8', 4: '4'}[b] for b in p['genome']['bits'])}")
    return 0
