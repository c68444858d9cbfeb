"""3-D detection: average precision at IoU thresholds, in bird's-eye view and in 3-D.

The rotated-box IoU is computed here (torchvision's ``box_iou`` is axis-aligned only): the
intersection of two rotated rectangles is the convex polygon left after clipping one by the
other's four half-planes (Sutherland-Hodgman), its area by the shoelace formula; the 3-D IoU
multiplies that area by the overlap of the z extents. AP per class and threshold: predictions of
the class over the whole set sorted by score, each matched greedily to the unmatched ground
truth of its scene with the highest IoU >= threshold; AP = area under the precision-recall
curve with precision made monotone (all-point interpolation, as VOC 2010+ and Waymo's AP without
heading weighting).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from panconv.api import Evaluator


def box_corners(box: np.ndarray) -> np.ndarray:
    """The BEV corners (4, 2), counter-clockwise, of ``(x, y, z, l, w, h, yaw)``."""
    x, y, _, length, width, _, yaw = box[:7]
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[length, width], [-length, width], [-length, -width], [length, -width]]) / 2
    local = local[[2, 3, 0, 1]]  # start at (-l/2, -w/2): counter-clockwise order
    return local @ np.array([[c, s], [-s, c]]) + np.array([x, y])


def _clip(polygon: list, a: np.ndarray, b: np.ndarray) -> list:
    """The part of ``polygon`` left of the directed edge a -> b."""
    def side(p):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    out = []
    for i, p in enumerate(polygon):
        q = polygon[(i + 1) % len(polygon)]
        sp, sq = side(p), side(q)
        if sp >= 0:
            out.append(p)
        if (sp >= 0) != (sq >= 0):
            t = sp / (sp - sq)
            out.append(p + t * (q - p))
    return out


def polygon_area(polygon) -> float:
    if len(polygon) < 3:
        return 0.0
    p = np.asarray(polygon)
    return 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))))


def bev_intersection(a: np.ndarray, b: np.ndarray) -> float:
    """Area of the intersection of two rotated boxes seen from above."""
    if np.hypot(a[0] - b[0], a[1] - b[1]) > (np.hypot(a[3], a[4]) + np.hypot(b[3], b[4])) / 2:
        return 0.0
    polygon = list(box_corners(a))
    corners = box_corners(b)
    for i in range(4):
        polygon = _clip(polygon, corners[i], corners[(i + 1) % 4])
        if not polygon:
            return 0.0
    return polygon_area(polygon)


def rotated_iou(a: np.ndarray, b: np.ndarray, mode: str = "bev") -> float:
    """IoU of two boxes ``(x, y, z, l, w, h, yaw)``: ``"bev"`` (areas) or ``"3d"`` (volumes)."""
    inter = bev_intersection(a, b)
    if mode == "bev":
        union = a[3] * a[4] + b[3] * b[4] - inter
    else:
        overlap = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
        inter = inter * overlap
        union = a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter
    return float(inter / union) if union > 0 else 0.0


def average_precision(scores: np.ndarray, matched: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP of detections (``matched``: true positive) against ``num_gt`` boxes."""
    if num_gt == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = np.concatenate([[0.0], tp / num_gt, [tp[-1] / num_gt]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def match(preds: np.ndarray, gts: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Greedy matching in score order within one scene and class: which predictions are true positives."""
    matched = np.zeros(len(preds), dtype=bool)
    taken = np.zeros(len(gts), dtype=bool)
    for i in np.argsort(-preds[:, 7], kind="stable"):
        ious = np.array([-1.0 if taken[j] else rotated_iou(preds[i], gts[j], mode) for j in range(len(gts))])
        if ious.size and ious.max() >= threshold:
            taken[ious.argmax()] = True
            matched[i] = True
    return matched


class DetectionAP(Evaluator):
    """BEV and 3-D AP per class at each IoU threshold, and their means over classes (``bev_map@0.5`` ...).

    ``process`` takes the predicted boxes ``(B, M, 9)`` = ``x, y, z, l, w, h, yaw, score, label``
    (label -1: none) and ``batch["gt_boxes"]`` ``(B, G, 7)`` with ``batch["gt_labels"]`` ``(B, G)``
    (-1: padding). Partial results are the per-scene boxes, so merging workers is concatenating.
    """

    def __init__(self, class_names: Sequence[str] = ("car", "pedestrian", "cyclist"),
                 iou_thresholds: Sequence[float] = (0.5, 0.7), modes: Sequence[str] = ("bev", "3d")):
        super().__init__()
        if any(m not in ("bev", "3d") for m in modes):
            raise ValueError(f"DetectionAP: modes must be 'bev' and/or '3d', got {list(modes)}")
        self.class_names, self.iou_thresholds, self.modes = list(class_names), list(iou_thresholds), list(modes)

    def process(self, batch: dict, outputs) -> None:
        preds = torch.as_tensor(outputs).detach().cpu().double().numpy()
        gts = torch.as_tensor(batch["gt_boxes"]).detach().cpu().double().numpy()
        labels = torch.as_tensor(batch["gt_labels"]).cpu().numpy()
        for b in range(preds.shape[0]):
            keep = preds[b, :, 8] >= 0
            self.results.append((preds[b][keep], np.concatenate([gts[b], labels[b][:, None]], 1)[labels[b] >= 0]))

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = {}
        for mode in self.modes:
            for t in self.iou_thresholds:
                aps = []
                for c, name in enumerate(self.class_names):
                    scores, hits, num_gt = [], [], 0
                    for preds, gts in results:
                        p, g = preds[preds[:, 8] == c], gts[gts[:, 7] == c]
                        num_gt += len(g)
                        scores.append(p[:, 7])
                        hits.append(match(p, g, t, mode))
                    ap = average_precision(np.concatenate(scores) if scores else np.zeros(0),
                                           np.concatenate(hits) if hits else np.zeros(0, bool), num_gt)
                    metrics[f"{mode}_ap@{t}/{name}"] = ap
                    if not np.isnan(ap):
                        aps.append(ap)
                metrics[f"{mode}_map@{t}"] = float(np.mean(aps)) if aps else 0.0
        return {k: (0.0 if np.isnan(v) else v) for k, v in metrics.items()}

    @classmethod
    def example(cls):
        car = [0.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.3]
        ped = [10.0, 5.0, 1.0, 0.8, 0.8, 1.8, 0.0]
        gt1 = {"gt_boxes": torch.tensor([[car, ped]]), "gt_labels": torch.tensor([[0, 1]])}
        # scene 1: the car found exactly (score 0.9), a false car far away (0.8), the pedestrian missed
        pred1 = torch.tensor([[car + [0.9, 0], [30.0, 30.0, 1.0, 4.0, 2.0, 1.5, 0.0, 0.8, 0], [0] * 7 + [0, -1]]])
        # scene 2: one car, predicted shifted by 1 m along its length (BEV IoU 3/5 = 0.6), score 0.7
        shifted = [car[0] + np.cos(0.3), car[1] + np.sin(0.3)] + car[2:]
        gt2 = {"gt_boxes": torch.tensor([[car]]), "gt_labels": torch.tensor([[0]])}
        pred2 = torch.tensor([[shifted + [0.7, 0]]])
        kwargs = dict(class_names=["car", "pedestrian"], iou_thresholds=[0.5, 0.7], modes=["bev"])
        # car @0.5: ranked 0.9 TP, 0.8 FP, 0.7 TP of 2 gts -> AP = 0.5 * 1 + 0.5 * 2/3; @0.7: 0.5 * 1
        expected = {"bev_ap@0.5/car": 0.5 + 0.5 * 2 / 3, "bev_ap@0.7/car": 0.5, "bev_ap@0.5/pedestrian": 0.0,
                    "bev_map@0.5": (0.5 + 0.5 * 2 / 3) / 2}
        return kwargs, [(gt1, pred1), (gt2, pred2)], expected


__all__ = ["DetectionAP", "average_precision", "box_corners", "match", "polygon_area", "rotated_iou"]
