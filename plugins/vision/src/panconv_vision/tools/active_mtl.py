"""``panconv active-mtl``: active multi-task representation learning with the Lasso relevance estimate
("Improved Active Multi-Task Representation Learning via Lasso", Wang, Chen, Jamieson, Du, ICML 2023).

Setting (both papers): ``M`` source tasks and one target task share a representation ``phi``; task ``m``
predicts with a linear head ``w_m``; the target head is (approximately) a combination of source heads,
``w_0 = W nu``. Sampling source data where ``nu`` is large learns the part of ``phi`` the target needs with
fewer source samples. The loop (the papers' multi-round algorithm, here with a fixed budget per round):

1. round 0: ``n0`` samples of every source task (uniform exploration);
2. train ``phi`` and the source heads on all source data collected so far (cross-entropy); fit the target
   head on the few target samples with ``phi`` frozen;
3. estimate ``nu`` from the heads and draw the round's budget of new source samples in proportion to
   ``p_m``:
   * ``lasso`` (nu^1, Wang et al.): ``nu = argmin ||W nu - w_0||^2 / (2D) + alpha ||nu||_1``, ``p_m ~ |nu_m|``;
   * ``l2`` (nu^2, Chen et al. 2022): the least-squares / minimum-norm ``nu = W^+ w_0``, ``p_m ~ nu_m^2``;
   * ``uniform``: ``p_m = 1/M``;
4. after the last round, retrain ``phi`` on everything collected, fit the target head, report the target's
   test accuracy. Every strategy gets the same total source budget and the same training steps.

Heads are compared after centring over classes (a softmax head is defined up to a shared shift), as
flattened ``K x C`` vectors (``D = K C``). Data: ``datasets/multitask.py`` (MNIST with per-task corruptions
and label maps).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import _common

STRATEGIES = ("lasso", "l2", "uniform")

# ---- relevance estimates and sampling -----------------------------------------------------------------


def lasso_relevance(heads: np.ndarray, target: np.ndarray, alpha: float | None = None,
                    alpha_ratio: float = 0.05) -> np.ndarray:
    """The nu^1 estimate: Lasso regression of the target head on the source heads.

    ``heads (M, D)``: source heads as rows; ``target (D,)``. Solves ``min 1/(2D) ||heads^T nu - target||^2 +
    alpha ||nu||_1`` (scikit-learn's ``Lasso``, no intercept); ``alpha`` defaults to ``alpha_ratio`` times the
    smallest alpha giving ``nu = 0`` (``max |heads target| / D``)."""
    from sklearn.linear_model import Lasso

    x, y = np.asarray(heads, float).T, np.asarray(target, float)
    if alpha is None:
        alpha = alpha_ratio * float(np.abs(x.T @ y).max()) / len(y)
    model = Lasso(alpha=max(alpha, 1e-12), fit_intercept=False, max_iter=50_000, tol=1e-8)
    return model.fit(x, y).coef_


def l2_relevance(heads: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The nu^2 estimate of Chen et al. 2022: the minimum-norm least-squares solution of ``heads^T nu = target``."""
    return np.linalg.pinv(np.asarray(heads, float).T) @ np.asarray(target, float)


def sampling_probabilities(nu: np.ndarray | None, strategy: str, num_tasks: int | None = None) -> np.ndarray:
    """``p_m``: ``|nu_m| / ||nu||_1`` (lasso), ``nu_m^2 / ||nu||_2^2`` (l2) or uniform (also when ``nu = 0``)."""
    if strategy == "uniform" or nu is None:
        return np.full(num_tasks if nu is None else len(nu), 1.0 / (num_tasks if nu is None else len(nu)))
    weight = np.abs(nu) if strategy == "lasso" else np.asarray(nu) ** 2 if strategy == "l2" else None
    if weight is None:
        raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    total = weight.sum()
    return weight / total if total > 0 else np.full(len(nu), 1.0 / len(nu))


def allocate(budget: int, probs: np.ndarray) -> np.ndarray:
    """Integer sample counts summing to ``budget`` that follow ``probs`` (largest-remainder rounding:
    ``|n_m - budget p_m| < 1``)."""
    probs = np.asarray(probs, float)
    if budget < 0 or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
        raise ValueError("allocate: budget >= 0 and probabilities >= 0 summing to 1")
    exact = budget * probs
    counts = np.floor(exact).astype(int)
    rest = budget - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


# ---- training -----------------------------------------------------------------------------------------

def train_representation(model, inputs: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor, steps: int,
                         seed: int, lr: float = 1e-3, batch_size: int = 128) -> None:
    """Cross-entropy training of the encoder and the source heads on the collected source samples."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for n, p in model.named_parameters()], lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (min(batch_size, len(labels)),), generator=g)
        loss = F.cross_entropy(model({"inputs": inputs[idx], "task": tasks[idx]}), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def fit_target_head(model, inputs: torch.Tensor, labels: torch.Tensor, steps: int = 300, weight_decay: float = 1e-3):
    """Fit the target head (softmax regression, full batch) on frozen features; the encoder is unchanged."""
    model.eval()
    with torch.no_grad():
        phi = model.features(inputs)
    w = torch.zeros(model.feature_dim, model.num_classes, requires_grad=True)
    b = torch.zeros(model.num_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(phi @ w + b, labels) + weight_decay * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        model.head_weight[model.num_tasks] = w
        model.head_bias[model.num_tasks] = b


@torch.no_grad()
def target_accuracy(model, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    out = torch.cat([model({"inputs": x}) for x in _common.batches(inputs, 1000)])
    return float((out.argmax(-1) == labels).float().mean())


def head_vectors(model) -> tuple[np.ndarray, np.ndarray]:
    """``(source heads (M, K C), target head (K C,))``, centred over classes."""
    with torch.no_grad():
        w = model.head_weight - model.head_weight.mean(-1, keepdim=True)
        flat = w.reshape(len(w), -1).double().numpy()
    return flat[:-1], flat[-1]


# ---- the experiment -----------------------------------------------------------------------------------

class TaskPool:
    """Draws of source-task samples: task ``m`` takes images from its own seeded permutation of the pool."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sources, seed: int):
        self.images, self.labels, self.sources = images, labels, list(sources)
        rng = np.random.default_rng(seed)
        self.order = [torch.from_numpy(rng.permutation(len(labels))) for _ in self.sources]
        self.seed = seed

    def collect(self, counts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first ``counts[m]`` samples of every task ``m`` (inputs, labels, task ids)."""
        from ..datasets.multitask import make_task

        xs, ys, ts = [], [], []
        for m, (task, n) in enumerate(zip(self.sources, counts)):
            if n == 0:
                continue
            idx = self.order[m][: int(n)]
            x, y = make_task(self.images[idx], self.labels[idx], task, self.seed)
            xs.append(x), ys.append(y), ts.append(torch.full((len(y),), m))
        return torch.cat(xs), torch.cat(ys), torch.cat(ts)


def run_strategy(strategy: str, seed: int, pool: TaskPool, target_train, target_test, opts: dict) -> dict:
    """One active-learning run; returns the final target accuracy, the counts and the relevance estimates."""
    from ..models.multitask import MultiTaskNet

    num_tasks = len(pool.sources)
    counts = np.full(num_tasks, opts["n0"])
    history = []
    for rnd in range(opts["rounds"] + 1):
        torch.manual_seed(1000 * seed + rnd)
        model = MultiTaskNet(num_tasks=num_tasks, encoder=opts["encoder"], hidden=opts["hidden"],
                             feature_dim=opts["feature_dim"])
        x, y, t = pool.collect(counts)
        train_representation(model, x, y, t, opts["steps"], seed=seed * 7 + rnd)
        fit_target_head(model, *target_train)
        acc = target_accuracy(model, *target_test)
        entry = {"round": rnd, "counts": counts.tolist(), "target_accuracy": acc}
        if rnd == opts["rounds"]:
            history.append(entry)
            break
        heads, target = head_vectors(model)
        nu = None
        if strategy == "lasso":
            nu = lasso_relevance(heads, target, alpha_ratio=opts["alpha_ratio"])
        elif strategy == "l2":
            nu = l2_relevance(heads, target)
        probs = sampling_probabilities(nu, strategy, num_tasks)
        counts = counts + allocate(opts["budget"], probs)
        entry.update(nu=None if nu is None else nu.tolist(), probs=probs.tolist())
        history.append(entry)
    return {"strategy": strategy, "seed": seed, "accuracy": history[-1]["target_accuracy"],
            "total_source_samples": int(counts.sum()), "history": history}


DEFAULTS = dict(output="active_mtl_out", seeds=3, rounds=2, n0=50, budget=1200, target_size=50, test_size=2000,
                steps=300, encoder="mlp", hidden=256, feature_dim=64, alpha_ratio=0.2, target=None, sources=None,
                strategies="lasso,l2,uniform", data_root=None, file=None)


def main(args) -> int:
    from ..datasets.multitask import DEFAULT_SOURCES, DEFAULT_TARGET, make_task, raw_digits

    opts = {**DEFAULTS, **{k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}}
    sources = tuple(opts["sources"].split(",")) if opts["sources"] else DEFAULT_SOURCES
    target = opts["target"] or DEFAULT_TARGET
    strategies = opts["strategies"].split(",")
    out = Path(opts["output"])
    out.mkdir(parents=True, exist_ok=True)
    from panconv.api import default_data_root

    root = opts["data_root"] or default_data_root()
    train_images, train_labels = raw_digits(root, "train", opts["file"])
    test_images, test_labels = raw_digits(root, "test", opts["file"])
    runs = []
    start = time.time()
    for seed in range(opts["seeds"]):
        rng = np.random.default_rng(10_000 + seed)
        tidx = torch.from_numpy(rng.permutation(len(train_labels))[: opts["target_size"]])
        target_train = make_task(train_images[tidx], train_labels[tidx], target, seed + 100)
        n_test = min(opts["test_size"], len(test_labels))
        target_test = make_task(test_images[:n_test], test_labels[:n_test], target, seed + 200)
        pool = TaskPool(train_images, train_labels, sources, seed)
        for strategy in strategies:
            run = run_strategy(strategy, seed, pool, target_train, target_test, opts)
            runs.append(run)
            print(f"seed {seed} {strategy:8s} target accuracy {run['accuracy']:.4f} "
                  f"(rounds: {[round(h['target_accuracy'], 4) for h in run['history']]}, "
                  f"{time.time() - start:.0f}s)", flush=True)
    summary = summarize(runs, strategies, sources)
    results = {"options": {**opts, "sources": list(sources), "target": target}, "summary": summary, "runs": runs}
    _common.write_json(out / "results.json", results)
    plot(results, out)
    lines = ["| strategy | target accuracy (mean +- std over seeds) | per seed |", "|---|---|---|"]
    for s in strategies:
        lines.append(f"| {s} | {summary[s]['mean']:.4f} +- {summary[s]['std']:.4f} | "
                     f"{', '.join(f'{a:.4f}' for a in summary[s]['per_seed'])} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def summarize(runs, strategies, sources) -> dict:
    out = {}
    for s in strategies:
        accs = [r["accuracy"] for r in runs if r["strategy"] == s]
        rounds = np.array([[h["target_accuracy"] for h in r["history"]] for r in runs if r["strategy"] == s])
        final_counts = np.mean([r["history"][-1]["counts"] for r in runs if r["strategy"] == s], 0)
        out[s] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "per_seed": accs,
                  "per_round_mean": rounds.mean(0).tolist(),
                  "mean_final_counts": dict(zip(sources, final_counts.round(1).tolist()))}
    return out


def plot(results: dict, out: Path) -> None:
    summary, sources = results["summary"], results["options"]["sources"]
    strategies = list(summary)
    fig, (ax1, ax2) = _common.figure(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 2.2]})
    for s in strategies:
        per_round = summary[s]["per_round_mean"]
        ax1.plot(range(len(per_round)), per_round, "o-", label=f"{s}: {summary[s]['mean']:.3f}")
    ax1.set_xlabel("round")
    ax1.set_ylabel("target test accuracy (mean over seeds)")
    ax1.set_title(f"target {results['options']['target']}")
    ax1.legend()
    width = 0.8 / len(strategies)
    pos = np.arange(len(sources))
    for i, s in enumerate(strategies):
        ax2.bar(pos + i * width, list(summary[s]["mean_final_counts"].values()), width, label=s)
    ax2.set_xticks(pos + 0.4 - width / 2, sources, rotation=75, fontsize=7)
    ax2.set_ylabel("source samples collected (mean)")
    ax2.legend()
    _common.save_figure(fig, out / "active_mtl.png")
