"""FCOS (anchor-free one-stage detector) with and without RelationNet++'s BVR: the identity of an untrained BVR,
FCOS's target assignment (inside / centre sampling, scale ranges, smallest area), centre-ness, the losses."""

import math

import pytest
import torch

from panconv import create_model
from panconv_documents.models.fcos import (
    FCOSBVR,
    PAPER_RANGES,
    centerness_target,
    distance_to_box,
    fcos_targets,
    locations,
)

STRIDES = [8, 16, 32, 64, 128]


def tiny(bvr=True, **kw):
    torch.manual_seed(0)
    return FCOSBVR(**{**FCOSBVR.example_config(), "bvr": bvr, **kw})


def grid(size=128):
    return locations([(math.ceil(size / s), math.ceil(size / s)) for s in STRIDES], STRIDES)


def targets(boxes, labels, size=128, center_sampling=1.5, ranges=PAPER_RANGES, num_classes=3):
    pts = grid(size)
    lab, ltrb, assigned = fcos_targets(pts, STRIDES, ranges, torch.tensor(boxes, dtype=torch.float32),
                                       torch.tensor(labels), num_classes, center_sampling)
    level = torch.cat([torch.full((len(p),), i) for i, p in enumerate(pts)])
    return torch.cat(pts), lab, ltrb, assigned, level


@pytest.mark.parametrize("batch_size", [1, 2])
def test_bvr_starts_as_the_plain_fcos_exactly(batch_size):
    """The BVR attention's output projection starts at zero: loaded with the plain FCOS's weights, the model with
    BVR gives bit-identical class, box and centre-ness outputs (BVR only adds relations on top)."""
    plain, with_bvr = tiny(False), tiny(True)
    missing, unexpected = with_bvr.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    assert all(k.startswith(("points.", "geometry.", "cls_attention.", "reg_attention.")) for k in missing)
    plain.eval()
    with_bvr.eval()
    batch = plain.example_inputs(batch_size)
    with torch.no_grad():
        a, b = plain(batch), with_bvr(batch)
    for key in ("cls", "reg", "centerness", "points"):
        assert torch.equal(a[key], b[key]), key
    # and the attention does act once its projection is not zero
    torch.nn.init.normal_(with_bvr.cls_attention.out.weight, std=0.1)
    with torch.no_grad():
        assert not torch.allclose(with_bvr(batch)["cls"], a["cls"])


def test_locations_are_cell_centres_of_every_level():
    pts = locations([(2, 3), (1, 2)], [8, 16])
    assert pts[0].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert pts[1].tolist() == [[8, 8], [24, 8]]


def test_targets_inside_the_box_with_hand_computed_distances():
    """Without centre sampling, exactly the stride-8 locations strictly inside a 40 x 30 box are positive, with
    l, t, r, b = their distances to the four sides, and the box's label."""
    pts, lab, ltrb, assigned, level = targets([[10.0, 10.0, 50.0, 40.0]], [2], center_sampling=0)
    pos = lab < 3
    x, y = pts[:, 0], pts[:, 1]
    inside = (x > 10) & (x < 50) & (y > 10) & (y < 40) & (level == 0)
    assert torch.equal(pos, inside) and int(pos.sum()) == 5 * 4
    assert (lab[pos] == 2).all() and (assigned[pos] == 0).all() and (assigned[~pos] == -1).all()
    i = int(((x == 20) & (y == 28) & (level == 0)).nonzero())
    assert ltrb[i].tolist() == [10.0, 18.0, 30.0, 12.0]
    assert torch.equal(distance_to_box(pts[pos], ltrb[pos]), torch.tensor([[10.0, 10.0, 50.0, 40.0]]).expand(20, 4))


def test_centre_sampling_keeps_locations_near_the_centre():
    """Centre sampling (radius 1.5 strides): of a 64 x 48 box at (4, 4), only the stride-8 locations within 12 px
    of its centre (36, 28) are positive; the box's border locations become background."""
    box = [[4.0, 4.0, 68.0, 52.0]]
    pts, lab, *_ , level = targets(box, [0], center_sampling=1.5)
    pos = lab < 3
    near = ((pts[:, 0] - 36).abs() < 12) & ((pts[:, 1] - 28).abs() < 12) & (level == 0)
    assert torch.equal(pos, near) and int(pos.sum()) == 3 * 3
    pts, lab, *_ , level = targets(box, [0], center_sampling=0)
    assert int((lab < 3).sum()) == 7 * 5  # x = 12..60, y = 12..44


def test_scale_ranges_put_each_box_on_one_level():
    """FCOS's scale ranges: a location regresses a box only on the level whose range holds max(l, t, r, b);
    a 40-px box lives on P3, a 200-px box on P4-P5 (its centre's reach is 100 > 64), never on P3."""
    _, lab, ltrb, _, level = targets([[4.0, 4.0, 44.0, 44.0]], [1], center_sampling=0)
    assert set(level[lab < 3].tolist()) == {0}
    _, lab, ltrb, _, level = targets([[8.0, 8.0, 208.0, 208.0]], [1], size=256, center_sampling=0)
    pos = lab < 3
    assert 0 not in level[pos].tolist() and pos.any()
    lo = torch.tensor([r[0] for r in PAPER_RANGES])[level[pos]]
    hi = torch.tensor([r[1] for r in PAPER_RANGES])[level[pos]]
    reach = ltrb[pos].max(1).values
    assert ((reach >= lo) & (reach <= hi)).all()


def test_ambiguous_locations_take_the_smallest_box():
    big, small = [0.0, 0.0, 60.0, 60.0], [16.0, 16.0, 40.0, 40.0]
    pts, lab, ltrb, assigned, level = targets([big, small], [0, 1], center_sampling=0)
    both = (pts[:, 0] > 16) & (pts[:, 0] < 40) & (pts[:, 1] > 16) & (pts[:, 1] < 40) & (level == 0)
    assert both.any() and (assigned[both] == 1).all() and (lab[both] == 1).all()
    only_big = (level == 0) & (pts[:, 0] < 16) & (pts[:, 1] < 16)
    assert (assigned[only_big] == 0).all()


def test_no_boxes_means_all_background():
    pts = grid(64)
    lab, ltrb, assigned = fcos_targets(pts, STRIDES, PAPER_RANGES, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                       3, 1.5)
    assert (lab == 3).all() and (assigned == -1).all() and (ltrb == 0).all()


def test_centerness_target_formula():
    ltrb = torch.tensor([[10.0, 5.0, 10.0, 5.0], [10.0, 18.0, 30.0, 12.0], [1.0, 4.0, 9.0, 4.0]])
    expected = [1.0, math.sqrt(10 / 30 * 12 / 18), math.sqrt(1 / 9)]
    assert torch.allclose(centerness_target(ltrb), torch.tensor(expected))


def test_losses_are_small_for_the_true_boxes_and_large_otherwise():
    """With the true distances and confident class / centre-ness logits the GIoU term is 0 and the focal term
    near 0; shifting the predicted distances raises the box loss."""
    model = tiny(False)
    model.eval()
    batch = model.example_inputs(1)
    with torch.no_grad():
        out = model(batch)
    pts = model._split_points(out)
    lab, ltrb, _ = fcos_targets(pts, model.strides, model.regress_ranges, batch["boxes"][0], batch["labels"][0],
                                model.num_classes, model.center_sampling)
    pos = lab < model.num_classes
    assert pos.any()
    cls = torch.full_like(out["cls"], -12.0)
    cls[0, pos, lab[pos]] = 12.0
    reg = out["reg"].clone()
    reg[0, pos] = ltrb[pos]
    ctr = out["centerness"].clone()
    ctr[0, pos] = torch.logit(centerness_target(ltrb[pos]).clamp(1e-4, 1 - 1e-4))
    good = model.loss({**out, "cls": cls, "reg": reg, "centerness": ctr}, batch)
    assert good["loss_bbox"] < 1e-5 and good["loss_cls"] < 1e-3
    bad = model.loss({**out, "cls": cls, "reg": reg * 1.5 + 3, "centerness": ctr}, batch)
    assert bad["loss_bbox"] > 0.05


def test_predict_decodes_confident_locations_to_their_boxes():
    model = tiny(False)
    batch = model.example_inputs(1)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    pts = out["points"]
    cls = torch.full_like(out["cls"], -10.0)
    i = int(((pts[:, 0] == 28) & (pts[:, 1] == 20)).nonzero()[0])  # a stride-8 location in the first box
    cls[0, i, 1] = 10.0
    reg = torch.zeros_like(out["reg"])
    reg[0, i] = torch.tensor([20.0, 12.0, 12.0, 10.0])
    det = model.predict({**out, "cls": cls, "reg": reg, "centerness": torch.full_like(out["centerness"], 10.0)})[0]
    assert det.labels.tolist() == [1] and torch.allclose(det.boxes, torch.tensor([[8.0, 8.0, 40.0, 30.0]]))
    assert det.scores[0] > 0.99


def test_one_training_step_backpropagates_into_bvr():
    model = tiny(True)
    model.train()
    batch = model.example_inputs(2)
    losses = model.loss(model(batch), batch)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness", "loss_points", "loss_offset"}
    sum(losses.values()).backward()
    assert model.cls_attention.out.weight.grad.abs().sum() > 0
    assert model.reg_attention.out.weight.grad.abs().sum() > 0
    assert model.points.heat.weight.grad.abs().sum() > 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="regress_ranges"):
        tiny(regress_ranges=((64, 0),))
    with pytest.raises(ValueError, match="divisible"):
        tiny(channels=16, heads=3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny()({"inputs": torch.rand(3, 64, 64)})


def test_registered_small_variant():
    with torch.device("meta"):
        model = create_model("documents.fcos_bvr_small", num_classes=3)
        plain = create_model("documents.fcos_bvr_small", num_classes=3, bvr=False)
    assert model.bvr and model.num_keys == 20 and model.strides == STRIDES
    assert sum(p.numel() for p in model.parameters()) == 2_088_218
    assert sum(p.numel() for p in plain.parameters()) == 1_979_053


def test_point_loss_weight_scales_the_heatmap_term_only():
    batch = tiny(True).example_inputs(2)
    losses = []
    for w in (1.0, 0.25):
        model = tiny(True, point_loss_weight=w)
        model.train()
        losses.append(model.loss(model(batch), batch))
    assert torch.allclose(losses[1]["loss_points"], 0.25 * losses[0]["loss_points"])
    for key in ("loss_offset", "loss_cls", "loss_bbox", "loss_centerness"):
        assert torch.allclose(losses[1][key], losses[0][key])
