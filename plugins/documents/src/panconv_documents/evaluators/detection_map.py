"""COCO-style detection mAP: AP averaged over IoU 0.50:0.05:0.95 (and AP50, AP75, per-class AP50), 101-point
interpolated precision, at most ``max_dets`` detections per image (pycocotools' ``bbox`` evaluation with the
``all`` area range; tests/test_evaluators.py checks the figures against pycocotools when installed)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge

from panconv.api import Evaluator

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter)


def _match(det: np.ndarray, gt: np.ndarray, thr: float) -> np.ndarray:
    """Greedy COCO matching of score-sorted detections: each takes the best-IoU unmatched gt with IoU >= thr."""
    tp = np.zeros(len(det), dtype=bool)
    used = np.zeros(len(gt), dtype=bool)
    iou = box_iou(det, gt)
    for d in range(len(det)):
        best, best_iou = -1, min(thr, 1 - 1e-10)
        for g in range(len(gt)):
            if not used[g] and iou[d, g] >= best_iou:
                best, best_iou = g, iou[d, g]
        if best >= 0:
            used[best] = True
            tp[d] = True
    return tp


def average_precision(images: list[dict], label: int, thr: float, max_dets: int = 100) -> float:
    """AP of one class at one IoU threshold over images of ``{boxes, scores, labels, gt_boxes, gt_labels}``;
    NaN when the class has no ground truth."""
    scores, tps, n_gt = [], [], 0
    for im in images:
        order = np.argsort(-im["scores"], kind="mergesort")[:max_dets]
        keep = order[im["labels"][order] == label]
        gt = im["gt_boxes"][im["gt_labels"] == label]
        n_gt += len(gt)
        scores.append(im["scores"][keep])
        tps.append(_match(im["boxes"][keep], gt, thr))
    if n_gt == 0:
        return float("nan")
    scores, tps = np.concatenate(scores), np.concatenate(tps)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(tps[order])
    fp = np.cumsum(~tps[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.array([precision[i] if i < len(precision) else 0.0 for i in idx])
    return float(sampled.mean())


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class DetectionMAP(Evaluator):
    """``mAP`` (AP@[.5:.95]), ``AP50``, ``AP75`` averaged over the classes that have ground truth, and
    ``AP50/<class>`` per class (names from ``class_names``, else the label index)."""

    def __init__(self, class_names: list[str] | None = None, max_dets: Annotated[int, Ge(1)] = 100):
        super().__init__()
        self.class_names = list(class_names) if class_names else None
        self.max_dets = max_dets

    def process(self, batch: dict, outputs) -> None:
        for i, det in enumerate(outputs):
            self.results.append({"boxes": _np(det.boxes).reshape(-1, 4).astype(np.float64),
                                 "scores": _np(det.scores).astype(np.float64), "labels": _np(det.labels),
                                 "gt_boxes": _np(batch["boxes"][i]).reshape(-1, 4).astype(np.float64),
                                 "gt_labels": _np(batch["labels"][i])})

    def compute_metrics(self, results: list) -> dict[str, float]:
        labels = sorted({int(v) for r in results for v in r["gt_labels"]})
        table = np.array([[average_precision(results, c, t, self.max_dets) for t in IOU_THRESHOLDS] for c in labels])
        if not len(labels):
            return {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}
        out = {"mAP": float(table.mean()), "AP50": float(table[:, 0].mean()), "AP75": float(table[:, 5].mean())}
        for c, row in zip(labels, table):
            name = self.class_names[c] if self.class_names and c < len(self.class_names) else str(c)
            out[f"AP50/{name}"] = float(row[0])
        return out

    @classmethod
    def example(cls):
        from ..models.detection import Detections

        gt = {"boxes": [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])], "labels": [torch.tensor([0, 0])]}
        # image 1: one exact hit and one box at IoU 0.625 with the second gt (a hit for thresholds <= 0.6)
        det1 = Detections(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 36]]), torch.tensor([0.9, 0.8]),
                          torch.tensor([0, 0]))
        gt2 = {"boxes": [torch.tensor([[5.0, 5, 15, 15]])], "labels": [torch.tensor([0])]}
        det2 = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))  # a miss
        # 3 gts; sorted detections: hit (0.9), then at t <= 0.6 hit (0.8): precision 1 up to recall 2/3 (67 of
        # the 101 recall points) at 3 thresholds, up to recall 1/3 (34 points) at the other 7
        ap = (3 * (67 / 101) + 7 * (34 / 101)) / 10
        return {}, [(gt, [det1]), (gt2, [det2])], {"mAP": ap, "AP50": 67 / 101}
