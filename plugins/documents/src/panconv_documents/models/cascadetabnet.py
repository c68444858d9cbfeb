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
from torchvision import ops

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

    With one class (the table-only detector) each table is tried as bordered and falls back to the text blocks
    (:func:`text_cells`) when no ruling lines are found. With three, overlapping table boxes of the two table
    classes are one table (non-maximum suppression across the classes at IoU 0.5: the class NMS keeps both).
    """
    keep = det.scores >= thr
    if num_classes == 3:  # one table per region: a table found both as bordered and borderless keeps its best class
        tables = torch.nonzero(keep & (det.labels != CELL)).flatten()
        kept = tables[ops.nms(det.boxes[tables], det.scores[tables], 0.5)]
        keep = keep & (det.labels == CELL)
        keep[kept] = True
    boxes, labels = det.boxes[keep].tolist(), det.labels[keep].tolist()
    cells = [b for b, lab in zip(boxes, labels) if num_classes == 3 and lab == CELL]
    tables = []
    for box, lab in zip(boxes, labels):
        if num_classes == 3 and lab == CELL:
            continue
        bordered = num_classes == 1 or lab == BORDERED
        structure = bordered_structure(gray, snap_to_rules(gray, box)) if bordered else None
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


def snap_to_rules(gray: np.ndarray, box, margin: float = 0.15) -> list[float]:
    """A detected table box moved onto its ruling lines: the connected grid of long strokes found in the box
    grown by ``margin`` of its height (and a third of that share of its width) that overlaps the box best
    (IoU >= 0.5). A detector's box is a few pixels off, and a bordered table's outer rules (its first and last
    row and column) are lost when the box cuts them; unchanged when no such grid is found."""
    import cv2

    w, h = box[2] - box[0], box[3] - box[1]
    mx, my = margin / 3 * w + 4, margin * h + 4
    ink, ox, oy = _binarise(gray, [box[0] - mx, box[1] - my, box[2] + mx, box[3] + my])
    if ink.size == 0:
        return list(box)
    _, _, horizontal, vertical = detect_lines(ink)
    grid = cv2.dilate((horizontal | vertical).astype(np.uint8), np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(grid)
    best, best_iou = list(box), 0.5
    for x, y, cw, ch, _ in stats[1:n]:
        cand = [float(x + ox + 1), float(y + oy + 1), float(x + ox + cw - 1), float(y + oy + ch - 1)]  # undo dilation
        ix = max(0.0, min(cand[2], box[2]) - max(cand[0], box[0]))
        iy = max(0.0, min(cand[3], box[3]) - max(cand[1], box[1]))
        union = w * h + (cand[2] - cand[0]) * (cand[3] - cand[1]) - ix * iy
        if union > 0 and ix * iy / union >= best_iou:
            best, best_iou = cand, ix * iy / union
    return best


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


def _bands(intervals: list[tuple[float, float]], shrink: float = 0.25) -> list[tuple[float, float]]:
    """Rows (or columns) from 1-D cell extents, shortest first, each shrunk by ``shrink`` of its length so
    touching cells stay apart (detected cell boxes touch; text blocks do not, and need no shrinking): an extent
    overlapping no band opens one, overlapping one band joins it, overlapping several is a spanning cell and
    adds nothing. Unshrunk text blocks of one height are taken by how many others they overlap, fewest first
    (a block spanning two rows overlaps both rows' blocks), then by length."""
    bands: list[list[float]] = []
    extents = [(a + (b - a) * shrink, b - (b - a) * shrink) for a, b in intervals]

    def order(ab):
        overlaps = sum(a < ab[1] and b > ab[0] for a, b in extents) if shrink == 0 else 0
        return overlaps, ab[1] - ab[0]

    for a, b in sorted(extents, key=order):
        hit = [band for band in bands if a <= band[1] and b >= band[0]]
        if not hit:
            bands.append([a, b])
        elif len(hit) == 1:
            hit[0][0], hit[0][1] = min(hit[0][0], a), max(hit[0][1], b)
    return sorted((a, b) for a, b in bands)


def borderless_structure(box, cells: list, gray: np.ndarray | None = None, shrink: float = 0.25) -> dict:
    """Rows and columns of a borderless table from its cell boxes: a row is a band of overlapping vertical
    extents, a column one of horizontal extents; a cell spans the bands its box crosses. Without cells (a
    table-only detector), the cells are the text blocks of the table (:func:`text_cells`) and their boxes
    the grid between the bands."""
    if not cells and gray is not None:
        blocks = text_cells(gray, box)
        if blocks:
            return _grid_boxes(borderless_structure(box, blocks, shrink=0.0), box)
    if not cells:
        return {"bordered": False, "box": [float(v) for v in box], "n_rows": 0, "n_cols": 0, "cells": []}
    rows = _bands([(c[1], c[3]) for c in cells], shrink)
    cols = _bands([(c[0], c[2]) for c in cells], shrink)

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


def _split_at_gaps(ink: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """``[start, end)`` runs of the ink columns of ``ink`` separated by more than ``gap`` blank columns."""
    cols = np.flatnonzero(ink.any(0))
    if len(cols) == 0:
        return []
    runs, start = [], cols[0]
    for a, b in zip(cols[:-1], cols[1:]):
        if b - a - 1 > gap:
            runs.append((start, a + 1))
            start = b
    return runs + [(start, cols[-1] + 1)]


def text_cells(gray: np.ndarray, box) -> list[list[float]]:
    """The text blocks of a borderless table: each text line (ink rows; rules of 2 px or less left out) cut
    where the ink leaves a horizontal gap wider than 0.6 x the median line height (word spaces are narrower,
    the padding between two columns wider). A line more than 1.5 x the median height holds a cell spanning
    rows (its text bridges the blank rows between them): it is cut per column first (the columns of the
    other lines' blocks), then into text lines within each column."""
    ink, ox, oy = _binarise(gray, box)
    lines = [ln for ln in _text_lines(gray, box) if ln[3] - ln[1] > 2]
    if not lines:
        return []
    height = float(np.median([ln[3] - ln[1] for ln in lines]))
    gap = max(2.0, 0.6 * height)
    out, merged = [], []
    for line in lines:
        y0, y1 = int(line[1]) - oy, int(line[3]) - oy
        if line[3] - line[1] > 1.5 * height:
            merged.append((y0, y1))
            continue
        out += [[float(a + ox), float(y0 + oy), float(b + ox), float(y1 + oy)]
                for a, b in _split_at_gaps(ink[y0:y1], gap)]
    columns = _bands([(c[0] - ox, c[2] - ox) for c in out], 0.0)
    for y0, y1 in merged:
        for k, (a, b) in enumerate(columns):  # each column from the middle of the gap before it to the next
            lo = 0 if k == 0 else int((columns[k - 1][1] + a) / 2)
            hi = ink.shape[1] if k + 1 == len(columns) else int((b + columns[k + 1][0]) / 2)
            rows = np.flatnonzero(ink[y0:y1, lo:hi].any(1))
            if len(rows) == 0:
                continue
            breaks = np.flatnonzero(np.diff(rows) > 1)
            for r0, r1 in zip(np.r_[rows[0], rows[breaks + 1]], np.r_[rows[breaks], rows[-1]] + 1):
                xs = np.flatnonzero(ink[y0 + r0:y0 + r1, lo:hi].any(0))
                out.append([float(lo + xs[0] + ox), float(y0 + r0 + oy), float(lo + xs[-1] + 1 + ox),
                            float(y0 + r1 + oy)])
    if not columns:  # every line spans rows: one block per merged line
        out = [[float(ox), float(y0 + oy), float(ink.shape[1] + ox), float(y1 + oy)] for y0, y1 in merged]
    return out


def _grid_boxes(structure: dict, box) -> dict:
    """Cell boxes of a borderless structure set to its grid: the boundary between two rows (columns) is the
    middle of the gap between their one-row (one-column) cells, the outer boundaries the table box's."""
    def bounds(start: str, span: str, lo: int, hi: int, n: int, edge0: float, edge1: float) -> list[float]:
        ext = [[np.inf, -np.inf] for _ in range(n)]
        for c in structure["cells"]:
            if c[span] == 1:
                e = ext[c[start]]
                e[0], e[1] = min(e[0], c["box"][lo]), max(e[1], c["box"][hi])
        out = [float(edge0)]
        for k in range(1, n):
            a, b = ext[k - 1][1], ext[k][0]
            out.append(float((a + b) / 2) if np.isfinite(a) and np.isfinite(b) else out[-1])
        return out + [float(edge1)]

    ys = bounds("row", "row_span", 1, 3, structure["n_rows"], box[1], box[3])
    xs = bounds("col", "col_span", 0, 2, structure["n_cols"], box[0], box[2])
    for c in structure["cells"]:
        c["box"] = [xs[c["col"]], ys[c["row"]], xs[c["col"] + c["col_span"]], ys[c["row"] + c["row_span"]]]
    return structure


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
