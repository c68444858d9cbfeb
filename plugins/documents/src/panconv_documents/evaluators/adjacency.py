"""Cell adjacency F1 (ICDAR 2019 cTDaR track B; Göbel et al., ICDAR 2013's adjacency relations).

A table's relations: for every non-empty cell, its nearest non-empty neighbour to the right in each
row it covers and below in each column it covers (empty cells are skipped over). A predicted cell is
identified with the ground-truth cell it overlaps with IoU >= t (one-to-one, best first); a predicted
relation is correct when both its cells map to the two cells of a ground-truth relation of the same
direction. Precision, recall and F1 are summed over every table of the data (tables matched at box
IoU >= 0.5); ``F1@t`` for t in 0.6, 0.7, 0.8, 0.9 and their IoU-weighted average ``WAvgF1``, as track B
reports.
"""

from __future__ import annotations

import numpy as np

from panconv.api import Evaluator

from .detection_map import box_iou

IOUS = (0.6, 0.7, 0.8, 0.9)


def filled(cells: list[dict]) -> list[dict]:
    """The non-empty cells: a ground-truth cell with text, a predicted cell not marked empty."""
    return [c for c in cells if c.get("text", "x") != "" and not c.get("empty", False)]


def adjacency_relations(cells: list[dict]) -> set[tuple[int, int, str]]:
    """(i, j, "h" | "v") for cell j the nearest filled neighbour right of / below filled cell i."""
    occupant: dict[tuple[int, int], int] = {}
    for i, c in enumerate(cells):
        for r in range(c["row"], c["row"] + c["row_span"]):
            for k in range(c["col"], c["col"] + c["col_span"]):
                occupant.setdefault((r, k), i)
    n_cols = max((c["col"] + c["col_span"] for c in cells), default=0)
    n_rows = max((c["row"] + c["row_span"] for c in cells), default=0)
    relations = set()
    for i, c in enumerate(cells):
        for r in range(c["row"], c["row"] + c["row_span"]):
            for k in range(c["col"] + c["col_span"], n_cols):
                j = occupant.get((r, k))
                if j is not None and j != i:
                    relations.add((i, j, "h"))
                    break
        for k in range(c["col"], c["col"] + c["col_span"]):
            for r in range(c["row"] + c["row_span"], n_rows):
                j = occupant.get((r, k))
                if j is not None and j != i:
                    relations.add((i, j, "v"))
                    break
    return relations


def match_boxes(pred: list, gt: list, thr: float) -> dict[int, int]:
    """One-to-one matching pred index -> gt index by descending IoU, IoU >= thr."""
    iou = box_iou(np.asarray(pred, dtype=float).reshape(-1, 4), np.asarray(gt, dtype=float).reshape(-1, 4))
    pairs = sorted(((iou[p, g], p, g) for p, g in zip(*np.nonzero(iou >= thr))), reverse=True)
    out, used = {}, set()
    for _, p, g in pairs:
        if p not in out and g not in used:
            out[p] = g
            used.add(g)
    return out


def table_counts(pred: dict | None, gt: dict | None, thr: float) -> tuple[int, int, int]:
    """(correct, predicted, ground-truth) relation counts of one table pair (either may be None)."""
    pred_cells = filled(pred["cells"]) if pred else []
    gt_cells = filled(gt["cells"]) if gt else []
    pred_rel, gt_rel = adjacency_relations(pred_cells), adjacency_relations(gt_cells)
    if not pred or not gt:
        return 0, len(pred_rel), len(gt_rel)
    to_gt = match_boxes([c["box"] for c in pred_cells], [c["box"] for c in gt_cells], thr)
    mapped = {(to_gt[i], to_gt[j], d) for i, j, d in pred_rel if i in to_gt and j in to_gt}
    return len(mapped & gt_rel), len(pred_rel), len(gt_rel)


def page_counts(pred_tables: list[dict], gt_tables: list[dict]) -> dict[float, tuple[int, int, int]]:
    """Per cell IoU threshold, the counts over one page (tables matched at box IoU >= 0.5)."""
    pairs = match_boxes([t["box"] for t in pred_tables], [t["box"] for t in gt_tables], 0.5)
    out = {}
    for thr in IOUS:
        total = np.zeros(3, dtype=int)
        for p, t in enumerate(pred_tables):
            total += table_counts(t, gt_tables[pairs[p]] if p in pairs else None, thr)
        matched = set(pairs.values())
        for g, t in enumerate(gt_tables):
            if g not in matched:
                total += table_counts(None, t, thr)
        out[thr] = tuple(int(v) for v in total)
    return out


def f1_from_counts(correct: int, n_pred: int, n_gt: int) -> tuple[float, float, float]:
    p = correct / n_pred if n_pred else 0.0
    r = correct / n_gt if n_gt else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


class CellAdjacencyF1(Evaluator):
    """``process(batch, outputs)``: ``batch["tables"]`` and ``outputs`` (or ``outputs["tables"]``) are, per
    page, lists of table structures (``box`` and ``cells`` with row/col/row_span/col_span/box)."""

    def process(self, batch: dict, outputs) -> None:
        preds = outputs["tables"] if isinstance(outputs, dict) else outputs
        for pred_tables, gt_tables in zip(preds, batch["tables"]):
            self.results.append(page_counts(pred_tables, gt_tables))

    def compute_metrics(self, results: list) -> dict[str, float]:
        out = {}
        for thr in IOUS:
            total = np.sum([r[thr] for r in results], axis=0) if results else np.zeros(3)
            p, r, f = f1_from_counts(*total)
            out[f"P@{thr}"], out[f"R@{thr}"], out[f"F1@{thr}"] = p, r, f
        out["WAvgF1"] = sum(t * out[f"F1@{t}"] for t in IOUS) / sum(IOUS)
        return out

    @classmethod
    def example(cls):
        def cell(r, c, box, rs=1, cs=1):
            return {"row": r, "col": c, "row_span": rs, "col_span": cs, "box": box, "text": "x"}

        gt = {"box": [0, 0, 20, 20], "cells": [cell(0, 0, [0, 0, 10, 10]), cell(0, 1, [10, 0, 20, 10]),
                                                 cell(1, 0, [0, 10, 20, 20], cs=2)]}
        # gt relations: 0-h-1, 0-v-2, 1-v-2. The prediction splits the spanning cell: relations 0-h-1,
        # 2-h-3, 0-v-2, 1-v-3; cell 2 ([0,10,10,20]) has IoU 0.5 with gt cell 2 (< 0.6): unmatched.
        pred = {"box": [0, 0, 20, 20], "cells": [cell(0, 0, [0, 0, 10, 10]), cell(0, 1, [10, 0, 20, 10]),
                                                   cell(1, 0, [0, 10, 10, 20]), cell(1, 1, [10, 10, 20, 20])]}
        # over both pages: 4 correct of 7 predicted, 6 ground-truth relations, at every IoU threshold
        f1 = 2 * (4 / 7) * (4 / 6) / (4 / 7 + 4 / 6)
        return {}, [({"tables": [[gt]]}, [[pred]]), ({"tables": [[gt]]}, [[gt]])], {"F1@0.6": f1, "WAvgF1": f1}
