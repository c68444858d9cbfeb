"""Collating point clouds of different sizes into padded batches.

An item is ``{"inputs": {"points": (n, C)}, ...}`` plus per-point fields (``labels`` (n,)) and/or
per-object fields (``gt_boxes`` (m, 7), ``gt_labels`` (m,)). The batch pads points to the longest
cloud with a ``mask`` (``inputs = {"points": (B, N, C), "mask": (B, N)}``), per-point labels with
-1 and objects with zero boxes labelled -1, so every field keeps a leading batch axis.
"""

from __future__ import annotations

import torch

#: fields padded along their first axis, and their padding value
PADDED = {"labels": -1, "gt_boxes": 0.0, "gt_labels": -1}


def pad_stack(tensors: list[torch.Tensor], value) -> torch.Tensor:
    length = max((t.shape[0] for t in tensors), default=0)
    out = tensors[0].new_full((len(tensors), length, *tensors[0].shape[1:]), value)
    for i, t in enumerate(tensors):
        out[i, :t.shape[0]] = t
    return out


def collate_point_clouds(samples: list[dict]) -> dict:
    points = [s["inputs"]["points"] for s in samples]
    lengths = torch.tensor([p.shape[0] for p in points])
    mask = torch.arange(int(lengths.max()) if len(points) else 0)[None, :] < lengths[:, None]
    batch = {"inputs": {"points": pad_stack(points, 0.0), "mask": mask}}
    for key in samples[0]:
        if key == "inputs":
            continue
        values = [s[key] for s in samples]
        if key in PADDED:
            batch[key] = pad_stack(values, PADDED[key])
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


__all__ = ["PADDED", "collate_point_clouds", "pad_stack"]
