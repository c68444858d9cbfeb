"""CascadeTabNet (Prasad et al., "CascadeTabNet: An approach for end to end table detection and structure
recognition from image-based documents", CVPR Workshops 2020).

1. Detection: Cascade Mask R-CNN with an HRNetV2p-W32 backbone (the toolkit's :class:`RCNN` with the
   official config's values: anchors scale 8, ratios 0.5/1/2 on strides 4..64; stage IoUs 0.5/0.6/0.7;
   stage loss weights 1/0.5/0.25; box target stds 0.1/0.2, 0.05/0.1, 0.033/0.067; RoIAlign 7 and 14;
   2000/1000 proposals; score threshold 0.05, NMS 0.5, 100 per image). Classes, in the order of the
   official demo (``result[0][0..2]``): bordered table, cell, borderless table.
2. Iterative transfer learning: first the table detector (one class, ``classes: tables``), then its
   weights fine-tuned on the three classes (``examples/documents_cascadetabnet_{tables,cells}.yaml``).
3. Structure recognition (rule based, the paper's Section 3.4): a bordered table's rows and columns come
   from its ruling lines (morphological line detection), spans from the missing line segments; a
   borderless table's from the detected cells inside it (rows and columns are the bands where cells
   overlap). :func:`table_structure` returns a JSON-ready dict; :func:`structure_to_html` the HTML table.
"""

from __future__ import annotations

import html
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Ge, Interval

from .detection import _STDS, RCNN, Detections
from .layers import HRNET_VARIANTS

CLASS_NAMES = ("bordered", "cell", "borderless")
BORDERED, CELL, BORDERLESS = 0, 1, 2


class CascadeTabNet(RCNN):
    """Cascade Mask R-CNN + HRNetV2p for tables (bordered, borderless) and cells, with the official values.

    ``num_classes`` comes from the data set: 3 (bordered, cell, borderless) or 1 (table, the first
    iteration of transfer learning). ``structure(image, detections)`` turns one page's detections into
    table structures.
    """

    def __init__(self, num_classes: Annotated[int, Ge(1)] = 3, backbone: Literal[HRNET_VARIANTS] = "hrnet_w32",
                 neck_channels: Annotated[int, Ge(1)] = 256, fc_channels: Annotated[int, Ge(1)] = 1024,
                 mask_channels: Annotated[int, Ge(1)] = 256, with_mask: bool = True,
                 stage_ious: tuple[float, ...] = (0.5, 0.6, 0.7),
                 stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25),
                 stage_stds: tuple[tuple[float, float, float, float], ...] = _STDS,
                 anchor_scales: tuple[float, ...] = (8,), anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                 rpn_num_samples: Annotated[int, Ge(1)] = 256, rcnn_num_samples: Annotated[int, Ge(1)] = 512,
                 train_proposals: Annotated[int, Ge(1)] = 2000, test_proposals: Annotated[int, Ge(1)] = 1000,
                 score_thr: Annotated[float, Interval(ge=0, le=1)] = 0.05, max_per_img: Annotated[int, Ge(1)] = 100,
                 init_from: str | None = None, structure_thr: Annotated[float, Interval(ge=0, le=1)] = 0.85):
        super().__init__(num_classes, backbone, neck_channels, fc_channels, mask_channels, with_mask, stage_ious,
                         stage_loss_weights, stage_stds, anchor_scales, anchor_ratios, rpn_num_samples,
                         rcnn_num_samples, train_proposals, test_proposals, score_thr, max_per_img, init_from)
        #: detections kept for structure recognition (the official demo keeps scores > 0.85)
        self.structure_thr = structure_thr

    def structure(self, gray: np.ndarray, detections: Detections) -> list[dict]:
        return page_structure(gray, detections, self.num_classes, self.structure_thr)


# ----------------------------------------------------------------------------- structure recognition


def page_structure(gray: np.ndarray, det: Detections, num_classes: int = 3, thr: float = 0.85) -> list[dict]:
    """Every confident table of one page as a structure (bordered: from lines; borderless: from cells).

    With one class (the table-only detector) each table is tried as bordered and falls back to one cell
    per text line when no ruling lines are found.
    """
    keep = det.scores >= thr
    boxes, labels = det.boxes[keep].tolist(), det.labels[keep].tolist()
    cells = [b for b, lab in zip(boxes, labels) if num_classes == 3 and lab == CELL]
    tables = []
    for box, lab in zip(boxes, labels):
        if num_classes == 3 and lab == CELL:
            continue
        bordered = num_classes == 1 or lab == BORDERED
        structure = bordered_structure(gray, box) if bordered else None
        if structure is None:
            inside = [c for c in cells if _inside(c, box)]
            structure = borderless_structure(box, inside, gray)
        tables.append(structure)
    return tables


def _inside(cell, box, slack: float = 4.0) -> bool:
    cx, cy = (cell[0] + cell[2]) / 2, (cell[1] + cell[3]) / 2
    return box[0] - slack <= cx <= box[2] + slack and box[1] - slack <= cy <= box[3] + slack


def _runs(profile: np.ndarray, min_value: float) -> list[float]:
    """Centres of the runs of ``profile >= min_value``."""
    on = np.concatenate([[False], profile >= min_value, [False]])
    starts, ends = np.flatnonzero(~on[:-1] & on[1:]), np.flatnonzero(on[:-1] & ~on[1:])
    return [(s + e - 1) / 2 for s, e in zip(starts, ends)]


def detect_lines(ink: np.ndarray, min_length: int | None = None
                 ) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
    """Horizontal and vertical ruling lines of a binary table crop (CascadeTabNet's line detection: erosion
    then dilation with long thin kernels keeps only straight strokes longer than the kernel: ``min_length``,
    by default an eighth of the crop's side).

    Returns (y positions, x positions, horizontal-line mask, vertical-line mask).
    """
    import cv2

    h, w = ink.shape
    img = ink.astype(np.uint8) * 255
    kh = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, min_length or w // 8), 1))
    kv = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(3, min_length or h // 8)))
    horizontal = cv2.dilate(cv2.erode(img, kh), kh) > 0
    vertical = cv2.dilate(cv2.erode(img, kv), kv) > 0
    # a line position: a row/column where the long strokes cover a good share of some segment
    ys = _runs(horizontal.sum(1), max(3, 0.1 * w))
    xs = _runs(vertical.sum(0), max(3, 0.1 * h))
    return ys, xs, horizontal, vertical


def _binarise(gray: np.ndarray, box) -> tuple[np.ndarray, int, int]:
    h, w = gray.shape
    x0, y0 = max(int(np.floor(box[0])) - 2, 0), max(int(np.floor(box[1])) - 2, 0)
    x1, y1 = min(int(np.ceil(box[2])) + 3, w), min(int(np.ceil(box[3])) + 3, h)
    return gray[y0:y1, x0:x1] < 160, x0, y0


def _merge_close(values: list[float], gap: float) -> list[float]:
    out: list[float] = []
    for v in sorted(values):
        if out and v - out[-1] < gap:
            out[-1] = (out[-1] + v) / 2
        else:
            out.append(v)
    return out


def bordered_structure(gray: np.ndarray, box) -> dict | None:
    """Rows/columns from the ruling lines inside ``box``; spans where a grid line segment is missing.
    ``None`` when fewer than two horizontal or two vertical lines are found (not a bordered table)."""
    ink, ox, oy = _binarise(gray, box)
    if ink.size == 0:
        return None
    ys, xs, horizontal, vertical = detect_lines(ink)
    ys, xs = _merge_close(ys, 3), _merge_close(xs, 3)
    if len(ys) < 2 or len(xs) < 2:
        return None
    n_rows, n_cols = len(ys) - 1, len(xs) - 1

    def present(mask, fixed, lo, hi, axis):  # does a line run along this grid segment?
        fixed = int(round(fixed))
        lo, hi = int(round(lo)) + 2, int(round(hi)) - 1
        if hi <= lo:
            return True
        band = slice(max(fixed - 1, 0), fixed + 2)
        seg = mask[band, lo:hi] if axis == 0 else mask[lo:hi, band]
        return seg.any(axis=axis).mean() > 0.6

    parent = list(range(n_rows * n_cols))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in range(n_rows):
        for c in range(n_cols):
            if c + 1 < n_cols and not present(vertical, xs[c + 1], ys[r], ys[r + 1], 1):
                parent[find(r * n_cols + c + 1)] = find(r * n_cols + c)
            if r + 1 < n_rows and not present(horizontal, ys[r + 1], xs[c], xs[c + 1], 0):
                parent[find((r + 1) * n_cols + c)] = find(r * n_cols + c)
    groups: dict[int, list[tuple[int, int]]] = {}
    for r in range(n_rows):
        for c in range(n_cols):
            groups.setdefault(find(r * n_cols + c), []).append((r, c))
    cells = []
    for members in groups.values():
        r0, r1 = min(m[0] for m in members), max(m[0] for m in members)
        c0, c1 = min(m[1] for m in members), max(m[1] for m in members)
        if len(members) != (r1 - r0 + 1) * (c1 - c0 + 1):  # not a rectangle: keep the grid cells apart
            cells += [_cell(r, c, 1, 1, xs, ys, ox, oy, ink) for r, c in members]
        else:
            cells.append(_cell(r0, c0, r1 - r0 + 1, c1 - c0 + 1, xs, ys, ox, oy, ink))
    cells.sort(key=lambda d: (d["row"], d["col"]))
    return {"bordered": True, "box": [float(v) for v in box], "n_rows": n_rows, "n_cols": n_cols,
            "rows": [y + oy for y in ys], "cols": [x + ox for x in xs], "cells": cells}


def _cell(r, c, rs, cs, xs, ys, ox, oy, ink) -> dict:
    x0, x1, y0, y1 = xs[c], xs[c + cs], ys[r], ys[r + rs]
    inner = ink[int(y0) + 3:int(y1) - 2, int(x0) + 3:int(x1) - 2]
    return {"row": r, "col": c, "row_span": rs, "col_span": cs,
            "box": [x0 + ox, y0 + oy, x1 + ox, y1 + oy], "empty": bool(inner.sum() < 2)}


def _bands(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Rows (or columns) from 1-D cell extents, shortest first, each shrunk by a quarter of its length so
    touching cells stay apart: an extent overlapping no band opens one, overlapping one band joins it,
    overlapping several is a spanning cell and adds nothing."""
    bands: list[list[float]] = []
    for a, b in sorted(((a + (b - a) / 4, b - (b - a) / 4) for a, b in intervals), key=lambda ab: ab[1] - ab[0]):
        hit = [band for band in bands if a <= band[1] and b >= band[0]]
        if not hit:
            bands.append([a, b])
        elif len(hit) == 1:
            hit[0][0], hit[0][1] = min(hit[0][0], a), max(hit[0][1], b)
    return sorted((a, b) for a, b in bands)


def borderless_structure(box, cells: list, gray: np.ndarray | None = None) -> dict:
    """Rows and columns of a borderless table from its cell boxes: a row is a band of overlapping vertical
    extents, a column one of horizontal extents; a cell spans the bands its box crosses. Without cells,
    one cell per text line (ink rows) of the table."""
    if not cells and gray is not None:
        cells = _text_lines(gray, box)
    if not cells:
        return {"bordered": False, "box": [float(v) for v in box], "n_rows": 0, "n_cols": 0, "cells": []}
    rows = _bands([(c[1], c[3]) for c in cells])
    cols = _bands([(c[0], c[2]) for c in cells])

    def span(lo, hi, bands):
        hit = [i for i, (a, b) in enumerate(bands) if a < hi and b > lo]
        if not hit:  # nearest band
            centre = (lo + hi) / 2
            hit = [int(np.argmin([abs((a + b) / 2 - centre) for a, b in bands]))]
        return hit[0], hit[-1] - hit[0] + 1

    out = []
    for c in cells:
        r, rs = span(c[1], c[3], rows)
        k, ks = span(c[0], c[2], cols)
        out.append({"row": r, "col": k, "row_span": rs, "col_span": ks, "box": [float(v) for v in c[:4]],
                    "empty": False})
    out.sort(key=lambda d: (d["row"], d["col"]))
    return {"bordered": False, "box": [float(v) for v in box], "n_rows": len(rows), "n_cols": len(cols),
            "cells": out}


def _text_lines(gray: np.ndarray, box) -> list[list[float]]:
    ink, ox, oy = _binarise(gray, box)
    ys = np.flatnonzero(ink.any(1))
    if len(ys) == 0:
        return []
    lines, start = [], ys[0]
    for a, b in zip(ys[:-1], ys[1:]):
        if b - a > 1:
            lines.append((start, a))
            start = b
    lines.append((start, ys[-1]))
    out = []
    for a, b in lines:
        xs = np.flatnonzero(ink[a:b + 1].any(0))
        out.append([float(xs[0] + ox), float(a + oy), float(xs[-1] + 1 + ox), float(b + 1 + oy)])
    return out


def structure_to_html(structure: dict) -> str:
    """One ``<table>`` with ``rowspan``/``colspan``; a cell's text (``text`` key) escaped, else empty."""
    starts = {(c["row"], c["col"]): c for c in structure["cells"]}
    lines = ["<table>"]
    for r in range(structure["n_rows"]):
        lines.append("  <tr>")
        for c in range(structure["n_cols"]):
            cell = starts.get((r, c))
            if cell is None:
                continue
            attrs = "".join(f' {name}="{cell[key]}"' for name, key in (("rowspan", "row_span"), ("colspan", "col_span"))
                            if cell[key] > 1)
            lines.append(f"    <td{attrs}>{html.escape(cell.get('text', ''))}</td>")
        lines.append("  </tr>")
    lines.append("</table>")
    return "\n".join(lines)


def detections_from_structures(tables: list[dict], with_cells: bool = True) -> Detections:
    """Ground-truth-like detections (score 1) from structures: for tests and oracle-box evaluation."""
    boxes, labels = [], []
    for t in tables:
        boxes.append(t["box"])
        labels.append(BORDERED if t["bordered"] else BORDERLESS)
        if with_cells:
            boxes += [c["box"] for c in t["cells"] if c.get("text", "x") and not c.get("empty", False)]
            labels += [CELL] * (len(boxes) - len(labels))
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.ones(len(boxes)),
                      torch.tensor(labels, dtype=torch.long))
