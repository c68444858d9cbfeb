"""CNN Filter DB (Gavrikov & Keuper, "CNN Filter DB: An Empirical Investigation of Trained Convolutional
Filters", CVPR 2022) over panconv checkpoints and work dirs.

* Extraction: every 4-D convolution weight ``(out, in/groups, k, k)`` of a checkpoint's state dict with
  ``k = 3`` (``kernel_size``) contributes its ``out * in/groups`` 2-D filters, flattened to 9 values.
  No model is built: any checkpoint the engine wrote (or a bare state dict) works.
* The database: ``filters.npz`` (``filters``: ``(N, 9)`` float32) and ``index.json`` (per layer: the
  source, the parameter name, its shape, and the rows ``[start, start + count)`` of its filters).
* Distribution shift (the paper's measure, our reading): the filters are expressed in a PCA basis of
  the filters compared (9 principal components); along each component the two coefficient
  distributions are estimated on common bins (histograms) and their KL divergence is taken; the
  shift is the sum of these divergences weighted by each component's explained-variance ratio.
* Degeneracy (per layer): *sparsity*, the share of filters whose largest |weight| is below 1 % of the
  layer's largest; *variance entropy*, the entropy of the singular values of the layer's (non-sparse)
  filters normalised to [0, 1] (1: as diverse as random filters, 0: all filters one pattern);
  *orthogonality*, one minus the mean |cosine| between distinct output channels' flattened kernels.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _common


@dataclass
class FilterDB:
    filters: np.ndarray  # (N, k*k)
    index: list  # per layer: {source, layer, shape, start, count}

    def layer(self, i: int) -> np.ndarray:
        entry = self.index[i]
        return self.filters[entry["start"]:entry["start"] + entry["count"]]

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / "filters.npz", filters=self.filters)
        _common.write_json(directory / "index.json", self.index)
        return directory

    @classmethod
    def load(cls, directory) -> FilterDB:
        import json

        directory = Path(directory)
        with np.load(directory / "filters.npz") as data:
            filters = data["filters"]
        return cls(filters, json.loads((directory / "index.json").read_text()))


def _state_dict(path: Path) -> tuple[dict, str]:
    from panconv.io import load_checkpoint, model_state_dict

    if path.is_dir():
        checkpoint = next((path / n for n in ("best.pth",) if (path / n).is_file()), None) or \
            max(path.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit()
                else -1, default=None)
        if checkpoint is None:
            from panconv.errors import CheckpointError

            raise CheckpointError(f"{path}: no checkpoint in this work dir (best.pth or epoch_N.pth)")
        path = checkpoint
    return model_state_dict(load_checkpoint(path)), str(path)


def extract(state_dict: dict, source: str = "", kernel_size: int = 3) -> FilterDB:
    """The ``kernel_size`` x ``kernel_size`` filters of every 4-D convolution weight in ``state_dict``."""
    rows, index, start = [], [], 0
    for name, value in state_dict.items():
        if not name.endswith("weight") or getattr(value, "dim", lambda: 0)() != 4:
            continue
        if tuple(value.shape[-2:]) != (kernel_size, kernel_size):
            continue
        filters = value.detach().float().cpu().numpy().reshape(-1, kernel_size * kernel_size)
        rows.append(filters)
        index.append({"source": source, "layer": name, "shape": list(value.shape), "start": start,
                      "count": len(filters), "depthwise": value.shape[1] == 1})
        start += len(filters)
    filters = np.concatenate(rows) if rows else np.zeros((0, kernel_size * kernel_size), np.float32)
    return FilterDB(filters.astype(np.float32), index)


def merge(dbs: list[FilterDB]) -> FilterDB:
    filters, index, start = [], [], 0
    for db in dbs:
        for entry in db.index:
            index.append({**entry, "start": entry["start"] + start})
        filters.append(db.filters)
        start += len(db.filters)
    return FilterDB(np.concatenate(filters) if filters else np.zeros((0, 9), np.float32), index)


def build(paths, kernel_size: int = 3) -> FilterDB:
    """One database of the filters of every checkpoint / work dir in ``paths``."""
    dbs = []
    for p in paths:
        state, source = _state_dict(Path(p))
        dbs.append(extract(state, source, kernel_size))
    return merge(dbs)


# ---- metrics ----------------------------------------------------------------------------------------

def pca_basis(filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(components (k, 9), explained variance ratio (k,))`` of the filters (centred)."""
    x = filters - filters.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s ** 2
    return vt, var / var.sum()


def kl_1d(p_samples: np.ndarray, q_samples: np.ndarray, edges: np.ndarray) -> float:
    """KL(P || Q) of two 1-D samples from their histograms on common bin ``edges`` (add-half smoothing)."""
    p = np.histogram(p_samples, edges)[0] + 0.5
    q = np.histogram(q_samples, edges)[0] + 0.5
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def distribution_shift(a: np.ndarray, b: np.ndarray, basis=None, points: int = 32, max_filters: int = 4000,
                       seed: int = 0) -> float:
    """Explained-variance-weighted sum over principal components of KL(a || b) of the coefficients."""
    rng = np.random.default_rng(seed)
    a = a[rng.permutation(len(a))[:max_filters]]
    b = b[rng.permutation(len(b))[:max_filters]]
    components, ratio = basis if basis is not None else pca_basis(np.concatenate([a, b]))
    ca, cb = a @ components.T, b @ components.T
    total = 0.0
    for i in range(components.shape[0]):
        lo, hi = min(ca[:, i].min(), cb[:, i].min()), max(ca[:, i].max(), cb[:, i].max())
        edges = np.linspace(lo, hi, points + 1) if hi > lo else np.array([lo - 1, lo + 1])
        total += ratio[i] * kl_1d(ca[:, i], cb[:, i], edges)
    return float(total)


def degeneracy(filters: np.ndarray, shape, sparse_threshold: float = 0.01) -> dict:
    """Sparsity, variance entropy and orthogonality of one layer's filters (see the module docstring)."""
    peak = np.abs(filters).max(1)
    sparse = peak < sparse_threshold * max(float(peak.max()), 1e-12)
    kept = filters[~sparse]
    if len(kept) >= 2:
        s = np.linalg.svd(kept - kept.mean(0), compute_uv=False)
        p = s / max(s.sum(), 1e-12)
        p = p[p > 0]
        entropy = float(-(p * np.log(p)).sum() / np.log(filters.shape[1]))
    else:
        entropy = 0.0
    out_channels = shape[0]
    kernels = filters.reshape(out_channels, -1)
    norms = np.linalg.norm(kernels, axis=1, keepdims=True)
    unit = kernels / np.maximum(norms, 1e-12)
    if out_channels > 1 and kernels.shape[1] > 1:
        cos = np.abs(unit @ unit.T)
        orth = float(1 - (cos.sum() - np.trace(cos)) / (out_channels * (out_channels - 1)))
    else:
        orth = float("nan")
    return {"sparsity": float(sparse.mean()), "variance_entropy": entropy, "orthogonality": orth}


def report(db: FilterDB) -> list[dict]:
    return [{"source": e["source"], "layer": e["layer"], "count": e["count"],
             **degeneracy(db.layer(i), e["shape"])} for i, e in enumerate(db.index)]


# ---- the `panconv filters` command ------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    db = build(args.paths, args.kernel_size)
    if not db.index:
        raise SystemExit(f"panconv filters: no {args.kernel_size}x{args.kernel_size} convolution in {args.paths}")
    out = db.save(args.output)
    rows = report(db)
    basis = pca_basis(db.filters)
    n = len(db.index)
    shift = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and db.index[i]["count"] > 1 and db.index[j]["count"] > 1:
                shift[i, j] = distribution_shift(db.layer(i), db.layer(j), basis, points=16, max_filters=2000)
    _common.write_json(out / "metrics.json", {"layers": rows, "shift": shift.tolist(),
                                              "explained_variance_ratio": basis[1].tolist()})
    _plot(db, rows, shift, basis, out)
    table = [[r["source"], r["layer"], r["count"], r["sparsity"], r["variance_entropy"], r["orthogonality"]]
             for r in rows]
    (out / "report.html").write_text(_common.html_table(
        "CNN filter DB", ["source", "layer", "filters", "sparsity", "variance entropy", "orthogonality"], table,
        ["filters.png"]))
    print(f"{len(db.filters)} filters from {n} layers of {len(args.paths)} checkpoint(s); wrote {out}/"
          "{filters.npz,index.json,metrics.json,filters.png,report.html}")
    return 0


def _plot(db, rows, shift, basis, out):
    fig, axes = _common.figure(1, 3, figsize=(14, 4))
    components, ratio = basis
    grid = np.zeros((3 * 3 + 2, 3 * 3 + 2))
    for i in range(min(9, len(components))):
        r, c = divmod(i, 3)
        grid[r * 4:r * 4 + 3, c * 4:c * 4 + 3] = components[i].reshape(3, 3)
    axes[0].imshow(grid, cmap="bwr", vmin=-1, vmax=1)
    axes[0].set_title("principal filters (explained: " + ", ".join(f"{r:.2f}" for r in ratio[:3]) + ", ...)")
    axes[0].axis("off")
    x = np.arange(len(rows))
    for key in ("sparsity", "variance_entropy", "orthogonality"):
        axes[1].plot(x, [r[key] for r in rows], marker="o", label=key.replace("_", " "))
    axes[1].set_xlabel("layer (extraction order)")
    axes[1].legend()
    axes[1].set_title("degeneracy per layer")
    im = axes[2].imshow(shift, cmap="viridis")
    axes[2].set_title("distribution shift KL(row || column)")
    fig.colorbar(im, ax=axes[2])
    _common.save_figure(fig, Path(out) / "filters.png")
