"""Detection mAP against pycocotools (when installed) and hand-computed cases; cell adjacency F1 cases."""

import contextlib
import io

import numpy as np
import pytest
import torch

from panconv_documents.evaluators.adjacency import CellAdjacencyF1, adjacency_relations, page_counts
from panconv_documents.evaluators.detection_map import DetectionMAP, average_precision
from panconv_documents.models.detection import Detections


def random_case(seed, n_images=6, n_classes=3):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_images):
        k = rng.integers(1, 6)
        xy = rng.uniform(0, 80, (k, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 40, (k, 2))], 1)
        labels = rng.integers(0, n_classes, k)
        det = gt[rng.permutation(k)] + rng.normal(0, 4, (k, 4))  # shifted copies, some of the wrong gt
        det = np.concatenate([det, rng.uniform(0, 100, (3, 4)).cumsum(1)[:, [0, 1, 2, 3]]])
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        scores = rng.uniform(0, 1, len(det))
        det_labels = np.concatenate([labels[rng.permutation(k)], rng.integers(0, n_classes, 3)])
        batches.append(({"boxes": [torch.tensor(gt)], "labels": [torch.tensor(labels)]},
                        [Detections(torch.tensor(det), torch.tensor(scores), torch.tensor(det_labels))]))
    return batches


def coco_eval(batches):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (batch, (det,)) in enumerate(batches):
        images.append({"id": i, "width": 200, "height": 200})
        for box, lab in zip(batch["boxes"][0].tolist(), batch["labels"][0].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": lab, "bbox": [box[0], box[1], w, h],
                         "area": w * h, "iscrowd": 0})
        for box, s, lab in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            dets.append({"image_id": i, "category_id": lab, "bbox": [box[0], box[1], box[2] - box[0],
                                                                      box[3] - box[1]], "score": s})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        result = gt.loadRes(dets)
        ev = COCOeval(gt, result, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1], ev.stats[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools(seed):
    pytest.importorskip("pycocotools")
    batches = random_case(seed)
    ev = DetectionMAP()
    for batch, out in batches:
        ev.process(batch, out)
    got = ev.compute()
    ref = coco_eval(batches)
    assert got["mAP"] == pytest.approx(ref[0], abs=1e-9)
    assert got["AP50"] == pytest.approx(ref[1], abs=1e-9)
    assert got["AP75"] == pytest.approx(ref[2], abs=1e-9)


def test_ap_hand_computed():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    image = {"gt_boxes": gt, "gt_labels": np.array([0, 0]), "boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60.],
                                                                               [20, 20, 30, 30]]),
             "scores": np.array([0.9, 0.8, 0.7]), "labels": np.array([0, 0, 0])}
    # hit, miss, hit: precision 1 up to recall 0.5 (51 points), then 2/3 up to recall 1 (50 points)
    assert average_precision([image], 0, 0.5) == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert np.isnan(average_precision([image], 1, 0.5))  # no ground truth for class 1


def cell(r, c, box, rs=1, cs=1, text="x"):
    return {"row": r, "col": c, "row_span": rs, "col_span": cs, "box": box, "text": text}


def test_adjacency_relations_skip_empty_cells_and_follow_spans():
    cells = [cell(0, 0, [0, 0, 1, 1]), cell(0, 1, [1, 0, 2, 1], text=""), cell(0, 2, [2, 0, 3, 1]),
             cell(1, 0, [0, 1, 3, 2], cs=3)]
    filled = [c for c in cells if c["text"]]
    rel = adjacency_relations(filled)
    # 0 -h-> 2 across the empty cell; both see the spanning cell below
    assert rel == {(0, 1, "h"), (0, 2, "v"), (1, 2, "v")}


def test_perfect_and_missed_tables():
    gt = [{"box": [0, 0, 2, 2], "cells": [cell(0, 0, [0, 0, 1, 1]), cell(0, 1, [1, 0, 2, 1]),
                                         cell(1, 0, [0, 1, 1, 2]), cell(1, 1, [1, 1, 2, 2])]}]
    assert page_counts(gt, gt)[0.9] == (4, 4, 4)
    assert page_counts([], gt)[0.6] == (0, 0, 4)
    ev = CellAdjacencyF1()
    ev.process({"tables": [gt, gt]}, [gt, []])
    assert ev.compute()["F1@0.6"] == pytest.approx(2 * 1 * 0.5 / 1.5)
