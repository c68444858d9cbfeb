"""RelationNet++ / BVR on the toolkit's RetinaNet, and the generated detection canvases."""

import math

import torch

from panconv import create_model
from panconv_documents.datasets.canvases import DetectionCanvases
from panconv_documents.models.bvr import BVRAttention, RetinaNetBVR, point_targets, position_embedding


def tiny(bvr=True, **kw):
    torch.manual_seed(0)
    return RetinaNetBVR(**{**RetinaNetBVR.example_config(), "bvr": bvr, **kw})


def test_bvr_starts_as_the_plain_retinanet():
    """The attention's output projection starts at zero: with the plain model's weights, BVR's detection
    outputs equal the plain RetinaNet's (the module adds relations on top of the detector, nothing else)."""
    plain, with_bvr = tiny(False), tiny(True)
    missing, unexpected = with_bvr.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("points.", "geometry.", "cls_attention.", "reg_attention."))
                                  for k in missing)
    batch = plain.example_inputs(2)
    plain.eval()
    with_bvr.eval()
    with torch.no_grad():
        a, b = plain(batch), with_bvr(batch)
    assert torch.equal(a["cls"], b["cls"]) and torch.equal(a["reg"], b["reg"])  # exactly: same kernels, same layout


def test_location_embedding_is_shared():
    model = tiny(True)
    assert model.cls_attention.geometry is model.reg_attention.geometry is model.geometry
    n_geometry = sum(p.numel() for p in model.geometry.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in set(model.parameters())) == n_total  # counted once
    assert n_geometry > 0


def test_attention_is_appearance_plus_geometry():
    torch.manual_seed(0)
    geometry = torch.nn.Linear(2, 2)
    att = BVRAttention(4, 2, lambda d: geometry(d))
    torch.nn.init.eye_(att.out.weight)
    q, k = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    qp, kp = torch.rand(1, 3, 2) * 10, torch.rand(1, 5, 2) * 10
    scale = torch.tensor([2.0])
    got = att(q, qp, scale, k, kp)
    Q = att.q(q).view(1, 3, 2, 2).transpose(1, 2)
    K = att.k(k).view(1, 5, 2, 2).transpose(1, 2)
    V = att.v(k).view(1, 5, 2, 2).transpose(1, 2)
    logits = Q @ K.transpose(-1, -2) / math.sqrt(2) + geometry((kp[:, None] - qp[:, :, None]) / 2.0).permute(0, 3, 1, 2)
    expected = q + att.out((torch.softmax(logits, -1) @ V).transpose(1, 2).reshape(1, 3, 4))
    assert torch.allclose(got, expected, atol=1e-6)


def test_keys_are_the_heatmap_peaks_at_their_refined_positions():
    model = tiny(True, num_keys=2)
    feat = torch.randn(1, 16, 8, 8)
    heat = torch.full((1, 3, 8, 8), -10.0)
    heat[0, 0, 2, 5] = 5.0  # centre peak at (x=5, y=2)
    heat[0, 0, 6, 1] = 4.0
    offset = torch.zeros(1, 6, 8, 8)
    offset[0, 0:2, 2, 5] = torch.tensor([0.25, 0.5])
    (centre_feat, centre_pos), _, _ = model._keys(feat, heat, offset, stride=8)
    assert torch.allclose(centre_pos[0], torch.tensor([[5.25 * 8, 2.5 * 8], [1 * 8.0, 6 * 8.0]]))
    assert torch.equal(centre_feat[0, 0], feat[0, :, 2, 5])


def test_point_targets_peak_at_centres_and_corners():
    boxes = [torch.tensor([[8.0, 16.0, 40.0, 48.0]])]
    heat, cells = point_targets(boxes, (8, 8), stride=8)
    cell, frac = cells[0]
    assert cell[:, 0].tolist() == [[3, 4], [1, 2], [5, 6]]  # centre (24, 32), tl (8, 16), br (40, 48) / 8
    for t, (x, y) in enumerate(cell[:, 0].tolist()):
        assert heat[0, t, y, x] == 1.0
    assert ((frac >= 0) & (frac < 1)).all()


def test_position_embedding_distinguishes_offsets():
    e = position_embedding(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 16)
    assert e.shape == (3, 16) and not torch.allclose(e[1], e[2]) and not torch.allclose(e[0], e[1])


def test_canvases_are_seeded_with_boxes_inside():
    a = DetectionCanvases(None, "train", n=5, size=64)
    b = DetectionCanvases(None, "train", n=5, size=64)
    t = DetectionCanvases(None, "test", n=5, size=64)
    assert torch.equal(a[3]["inputs"], b[3]["inputs"]) and not torch.equal(a[3]["inputs"], t[3]["inputs"])
    for i in range(5):
        boxes = a[i]["boxes"]
        assert (boxes >= 0).all() and (boxes <= 64).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_registered_small_variant_builds():
    with torch.device("meta"):
        m = create_model("documents.retinanet_bvr_small", num_classes=3)
    assert m.bvr and m.num_keys == 20
