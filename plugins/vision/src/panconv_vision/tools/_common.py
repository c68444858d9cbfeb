"""What the analysis tools (issue 21: probe, lrp, filters, profile, unlearnable, sweep) share.

Like ``panconv cam``, every tool reaches the config and the model only through the core's public
API: ``panconv.load_config``, ``panconv.load_model`` (a trained checkpoint or work dir) or
``panconv.create_model`` (random weights, when no checkpoint is given), and
``panconv.build_datasets`` for the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import panconv


def build_data(cfg, stage: str, data_root: str | None = None):
    """The config's data set of ``stage`` (``None`` when the config has no data set or that stage)."""
    if not (cfg.get("data") or {}).get("type"):
        return None
    return panconv.build_datasets(cfg, stages=(stage,), data_root=data_root).get(stage)


def load(config: str, checkpoint: str | None = None, device: str = "cpu", data_root: str | None = None):
    """``(cfg, model)``: the config's model in eval mode, trained (``checkpoint``) or with random weights.

    Without a checkpoint the model's metadata inputs (``num_classes``, ``in_channels``) come from
    the config's first data split found (train, val, test).
    """
    cfg = panconv.load_config(config)
    if checkpoint is not None:
        return cfg, panconv.load_model(checkpoint, config=config, device=device, data_root=data_root)
    metadata: dict = {}
    for stage in ("train", "val", "test"):
        dataset = build_data(cfg, stage, data_root)
        if dataset is not None:
            metadata = dict(getattr(dataset, "metadata", {}) or {})
            break
    model = panconv.create_model(dict(cfg["model"]), metadata=metadata)
    return cfg, model.to(device).eval()


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a composed model (the model itself for a whole model)."""
    return model.backbone if hasattr(model, "backbone") else model


def take(dataset, limit: int | None = None, offset: int = 0) -> dict:
    """The first ``limit`` samples of ``dataset`` (from ``offset``) collated into one batch."""
    n = len(dataset) - offset if limit is None else min(limit, len(dataset) - offset)
    samples = [dataset[i] for i in range(offset, offset + n)]
    collate = getattr(dataset, "collate", None) or torch.utils.data.default_collate
    return collate(samples)


def batches(x: torch.Tensor, size: int):
    for start in range(0, len(x), size):
        yield x[start:start + size]


def write_json(path: str | Path, data: Any) -> Path:
    from panconv.io import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure(*args, **kwargs):
    """A matplotlib figure on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def html_table(title: str, columns: list[str], rows: list[list[Any]], images: list[str] = ()) -> str:
    """A self-contained HTML report: a heading, PNG figures (relative paths) and one table."""
    from html import escape

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else escape(str(v))

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    figs = "".join(f'<p><img src="{escape(i)}"></p>' for i in images)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
            "tr:nth-child(even){background:#f3f3f3}</style></head>"
            f"<body><h1>{escape(title)}</h1>{figs}<table><tr>{head}</tr>\n{body}</table></body></html>\n")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2)
