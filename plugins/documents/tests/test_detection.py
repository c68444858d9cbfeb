"""The two-stage detection toolkit: box coder, anchors, assigner, sampler, RoI extractor, mask targets, the
cascade's stage IoUs and loss weights, and a tiny detector that learns."""

import math

import pytest
import torch
from torchvision import ops

from panconv_documents.models.detection import (
    RCNN,
    AnchorGenerator,
    BoxCoder,
    CascadeRoIHead,
    MaxIoUAssigner,
    RandomSampler,
    RoIExtractor,
    mask_targets,
)


def random_boxes(n, size=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2), (0.033, 0.033, 0.067, 0.067)])
def test_box_coder_round_trip(stds):
    coder = BoxCoder(stds=stds)
    boxes, targets = random_boxes(50, seed=1), random_boxes(50, seed=2)
    assert torch.allclose(coder.decode(boxes, coder.encode(boxes, targets)), targets, atol=1e-4)


def test_box_coder_known_delta_and_clipping():
    coder = BoxCoder(stds=(0.1, 0.1, 0.2, 0.2))
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    target = torch.tensor([[5.0, 0.0, 15.0, 40.0]])  # centre +5 in x (half a width), height doubled
    expected = torch.tensor([[0.5 / 0.1, 0.5 / 0.1, 0.0, math.log(2) / 0.2]])
    assert torch.allclose(coder.encode(box, target), expected, atol=1e-6)
    out = coder.decode(box, torch.tensor([[0.0, 0.0, 100.0, 100.0]]), max_shape=(30, 25))
    assert out[0, 0] >= 0 and out[0, 2] <= 25 and out[0, 3] <= 30


def test_anchors_sizes_ratios_and_grid():
    gen = AnchorGenerator(strides=(4, 8), ratios=(0.5, 1.0, 2.0), scales=(8,))
    base = gen.base_anchors(4)
    w, h = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    assert torch.allclose(w * h, torch.full((3,), 32.0**2))  # area (stride * scale)^2 for every ratio
    assert torch.allclose(h / w, torch.tensor([0.5, 1.0, 2.0]))
    grids = gen.grid_anchors([(3, 5), (2, 3)], torch.device("cpu"))
    assert [len(g) for g in grids] == [3 * 5 * 3, 2 * 3 * 3]
    centres = (grids[0][:, :2] + grids[0][:, 2:]) / 2
    assert {round(v, 3) for v in centres[:, 0].tolist()} == {0.0, 4.0, 8.0, 12.0, 16.0}


def test_assigner_positive_negative_ignored_and_low_quality():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # IoU 1 -> gt 0
                          [0.0, 0.0, 10.0, 14.0],   # IoU 0.714 -> gt 0
                          [0.0, 0.0, 10.0, 20.0],   # IoU 0.5 -> ignored at 0.7/0.3
                          [30.0, 30.0, 40.0, 40.0],  # IoU 0 -> negative
                          [50.0, 50.0, 60.0, 75.0]])  # IoU 0.4 with gt 1: its best box -> low-quality positive
    assigned, _ = MaxIoUAssigner(0.7, 0.3, 0.3).assign(boxes, gt)
    assert assigned.tolist() == [0, 0, -2, -1, 1]
    assigned, _ = MaxIoUAssigner(0.7, 0.3, 0.5).assign(boxes, gt)
    assert assigned.tolist()[4] == -2  # below min_pos_iou: stays ignored


@pytest.mark.parametrize("n_pos,n_neg", [(1000, 1000), (10, 1000), (1000, 5)])
def test_sampler_ratios(n_pos, n_neg):
    assigned = torch.cat([torch.zeros(n_pos, dtype=torch.long), torch.full((n_neg,), -1), torch.full((7,), -2)])
    pos, neg = RandomSampler(512, 0.25).sample(assigned, torch.Generator().manual_seed(0))
    assert len(pos) == min(n_pos, 128)
    assert len(neg) == min(n_neg, 512 - len(pos))
    assert (assigned[pos] >= 0).all() and (assigned[neg] == -1).all()
    assert len(set(pos.tolist())) == len(pos) and len(set(neg.tolist())) == len(neg)


def test_cascade_stages_assign_at_increasing_iou():
    head = CascadeRoIHead(8, (4, 8, 16, 32), num_classes=2, num_samples=10_000, pos_fraction=1.0)
    gt = random_boxes(4, seed=3)
    jitter = torch.randn(400, 4, generator=torch.Generator().manual_seed(4)) * 4
    p = gt.repeat(100, 1) + jitter
    proposals = torch.stack([torch.minimum(p[:, 0], p[:, 2]), torch.minimum(p[:, 1], p[:, 3]),
                             torch.maximum(p[:, 0], p[:, 2]) + 1, torch.maximum(p[:, 1], p[:, 3]) + 1], 1)
    n_pos = []
    for t, thr in enumerate((0.5, 0.6, 0.7)):
        (boxes, assigned, is_gt, pos), = head.sample(t, [proposals], [gt])
        iou = ops.box_iou(boxes, gt)
        assert (iou[torch.arange(pos), assigned[:pos]] >= thr - 1e-6).all()
        assert (iou[pos:].max(1).values < thr).all()
        assert is_gt.sum() == len(gt)  # the gt boxes are proposals at every stage
        n_pos.append(pos)
    assert n_pos[0] > n_pos[1] > n_pos[2]
    assert head.stage_loss_weights == (1.0, 0.5, 0.25)
    assert [c.stds for c in head.coders] == [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]


def test_stage_losses_are_weighted():
    torch.manual_seed(0)
    model = RCNN(**{**RCNN.example_config(), "stage_loss_weights": (1.0, 0.5, 0.25)})
    model.detector.sampling_seed = 0
    batch = model.example_inputs(2)
    base = model(batch)
    model.detector.roi_head.stage_loss_weights = (1.0, 1.0, 1.0)
    torch.manual_seed(0)
    unit = model(batch)
    for t, w in enumerate((1.0, 0.5, 0.25)):
        for name in ("loss_cls", "loss_bbox", "loss_mask"):
            assert torch.allclose(base[f"s{t}.{name}"], w * unit[f"s{t}.{name}"], rtol=1e-4, atol=1e-7)


def test_roi_extractor_levels_follow_scale():
    ext = RoIExtractor(7, (4, 8, 16, 32))
    rois = torch.tensor([[0, 0, 0, 50, 50], [0, 0, 0, 112, 112], [0, 0, 0, 224, 224], [0, 0, 0, 900, 900.]])
    assert ext.levels(rois).tolist() == [0, 1, 2, 3]
    feats = [torch.randn(1, 3, 64 // s, 64 // s) for s in (1, 2, 4, 8)]
    assert ext(feats, rois).shape == (4, 3, 7, 7)


def test_mask_targets_from_boxes_equal_the_rasterised_mask():
    gt = torch.tensor([[10.0, 12.0, 40.0, 30.0]])
    mask = torch.zeros(1, 64, 64)
    mask[0, 12:30, 10:40] = 1
    roi = torch.tensor([[8.0, 8.0, 44.0, 36.0]])
    from_box = mask_targets(roi, gt, None, 28)
    from_mask = mask_targets(roi, gt, mask, 28)
    assert (from_box != from_mask).float().mean() < 0.03  # they differ only on the boundary cells
    assert from_box.sum() > 0


@pytest.mark.slow
def test_a_tiny_detector_learns():
    """40 AdamW steps on two pages with one dark box each: the loss halves and the top box finds the box."""
    torch.manual_seed(0)
    model = RCNN(**{**RCNN.example_config(), "num_classes": 1})
    images = torch.ones(2, 3, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.tensor([[20.0, 24.0, 56.0, 60.0]])]
    for img, b in zip(images, boxes):
        x0, y0, x1, y1 = b[0].long().tolist()
        img[:, y0:y1, x0:x1] = 0.0
    batch = {"inputs": images, "boxes": boxes, "labels": [torch.tensor([0]), torch.tensor([0])]}
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    first = None
    for _ in range(40):
        losses = model(batch)
        total = sum(v for k, v in losses.items() if "loss" in k)
        first = float(total) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(total) < 0.5 * first
    model.eval()
    with torch.no_grad():
        det = model.predict(model(batch))
    top = det[0].boxes[det[0].scores.argmax()]
    assert ops.box_iou(top[None], boxes[0]).item() > 0.5
