"""CenterPoint targets / decoding, the segmentation head, rotated IoU, AP and mIoU."""

import math

import numpy as np
import pytest
import torch

from panconv.api import FeatureInfo
from panconv_pointcloud.evaluators.detection import DetectionAP, average_precision, rotated_iou
from panconv_pointcloud.evaluators.segmentation import MeanIoU
from panconv_pointcloud.models.centerpoint import CenterHead, gaussian_radius
from panconv_pointcloud.models.layers import PointSegHead


def test_rotated_iou_known_values():
    a = np.array([0, 0, 0, 4, 2, 2, 0.0])
    assert rotated_iou(a, a) == pytest.approx(1.0)
    shifted = a.copy()
    shifted[0] = 1.0
    assert rotated_iou(a, shifted) == pytest.approx(6 / 10)  # overlap 3 x 2 of union 8 + 8 - 6
    square, turned = np.array([0, 0, 0, 2, 2, 1, 0.0]), np.array([0, 0, 0, 2, 2, 1, math.pi / 4])
    octagon = 8 * (math.sqrt(2) - 1)  # a square and itself rotated 45 degrees overlap in a regular octagon
    assert rotated_iou(square, turned) == pytest.approx(octagon / (8 - octagon))
    assert rotated_iou(a, np.array([0, 0, 0, 4, 2, 2, math.pi])) == pytest.approx(1.0)
    up = a.copy()
    up[2] = 1.0  # half the height overlaps
    assert rotated_iou(a, up, "bev") == pytest.approx(1.0) and rotated_iou(a, up, "3d") == pytest.approx(1 / 3)
    far = a.copy()
    far[:2] = 50
    assert rotated_iou(a, far) == 0.0


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 2) == pytest.approx(0.25)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


def test_detection_ap_on_perfect_predictions():
    boxes = torch.tensor([[[0, 0, 1, 4, 2, 1.5, 0.3], [5, 5, 1, 0.8, 0.8, 1.8, 1.0]]])
    labels = torch.tensor([[0, 1]])
    preds = torch.cat([boxes, torch.tensor([[[0.9], [0.8]]]), labels[..., None].float()], -1)
    metrics = DetectionAP(class_names=["car", "pedestrian"]).compute_metrics([])  # empty: zeros, no crash
    assert metrics["bev_map@0.5"] == 0.0
    ev = DetectionAP(class_names=["car", "pedestrian"])
    ev.process({"gt_boxes": boxes, "gt_labels": labels}, preds)
    metrics = ev.compute()
    assert metrics["bev_map@0.7"] == pytest.approx(1.0) and metrics["3d_map@0.7"] == pytest.approx(1.0)


def test_mean_iou_ignores_unlabelled_points():
    ev = MeanIoU()
    probs = torch.eye(2)[torch.tensor([[0, 1, 1, 0]])]
    ev.process({"labels": torch.tensor([[0, 1, -1, -1]])}, probs)
    assert ev.compute()["miou"] == pytest.approx(1.0)


def test_gaussian_radius_grows_with_the_box():
    assert gaussian_radius(10, 5, 0.1) > gaussian_radius(5, 2.5, 0.1) > 0


def head():
    return CenterHead([FeatureInfo(8, 1)], **CenterHead.example_config())


def test_center_head_targets_peak_at_box_centres():
    h = head()
    boxes = torch.tensor([[[2.3, -3.6, 0.8, 4.0, 2.0, 1.6, 0.5]]])
    heat, (ix, iy), reg, keep = h.targets(boxes, torch.tensor([[1]]), (16, 16))
    # cell of (2.3, -3.6) in a 1 m grid starting at -8: (10, 4)
    assert (ix.item(), iy.item()) == (10, 4) and heat[0, 1, 4, 10] == 1.0 and heat[0, 0].max() == 0
    torch.testing.assert_close(reg[0, 0, :2], torch.tensor([0.3, 0.4]), atol=1e-5, rtol=0)
    torch.testing.assert_close(reg[0, 0, 3:6], torch.tensor([4.0, 2.0, 1.6]).log())


def test_center_head_decodes_its_own_targets():
    """Outputs equal to the encoded targets decode back to the boxes."""
    h = head().eval()
    boxes = torch.tensor([[[2.3, -3.6, 0.8, 4.0, 2.0, 1.6, 0.5], [-5.5, 4.2, 0.9, 0.8, 0.7, 1.8, -2.0]]])
    labels = torch.tensor([[0, 2]])
    heat, (ix, iy), reg, keep = h.targets(boxes, labels, (16, 16))
    outputs = {"heatmap": torch.logit(heat.clamp(1e-6, 1 - 1e-6))}
    dense = torch.zeros(1, 8, 16, 16)
    for m in range(2):
        dense[0, :, iy[0, m], ix[0, m]] = reg[0, m]
    for name, part in zip(("reg", "height", "dim", "rot"), dense.split([2, 1, 3, 2], dim=1)):
        outputs[name] = part
    pred = h.predict(outputs)
    found = pred[0][pred[0, :, 8] >= 0]
    assert len(found) == 2
    found = found[found[:, 8].argsort()]
    torch.testing.assert_close(found[:, :7], boxes[0], atol=1e-4, rtol=1e-4)
    # and the loss on these outputs is the smallest the focal loss allows at the peaks
    losses = h.loss(outputs, {"gt_boxes": boxes, "gt_labels": labels})
    assert losses["loss_bbox"].item() < 1e-5


def test_center_head_learns_a_box():
    torch.manual_seed(0)
    h = head()
    features, batch = h.example_inputs(2)
    opt = torch.optim.Adam(h.parameters(), lr=0.01)
    first = None
    for _ in range(60):
        loss = sum(h.loss(h(features), batch).values())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_seg_head_loss_ignores_padding():
    h = PointSegHead([FeatureInfo(6, 1)], num_classes=3, hidden=[8])
    features, batch = h.example_inputs(2)
    out = h(features)
    full = h.loss(out, batch)["loss_seg"]
    batch["labels"][:, 10:] = -1
    part = h.loss(out, batch)["loss_seg"]
    want = torch.nn.functional.cross_entropy(out[:, :, :10], batch["labels"][:, :10])
    torch.testing.assert_close(part, want)
    assert not torch.isclose(full, part)
    assert h.predict(out).shape == (2, 20, 3)
