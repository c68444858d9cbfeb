"""HRVMamba's pose form on generated keypoints: the triangle generator, the heat-map head, PCK."""

from __future__ import annotations

import math

import pytest
import torch

from panconv.api import FeatureInfo
from panconv_vision.datasets.keypoints import TriangleKeypoints, triangle_corners
from panconv_vision.evaluators.keypoints import KeypointPCK
from panconv_vision.models.hrvmamba import HRHeatmapHead, HRVMamba


def _angles(corners: torch.Tensor) -> list[float]:
    out = []
    for i in range(3):
        a, b, c = corners[i], corners[(i + 1) % 3], corners[(i + 2) % 3]
        u, v = b - a, c - a
        out.append(math.degrees(math.acos(float(u @ v / (u.norm() * v.norm())))))
    return out


def _cross(corners: torch.Tensor) -> float:
    (ax, ay), (bx, by), (cx, cy) = corners.tolist()
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


@pytest.mark.parametrize("angle", [0.0, 1.0, 2.5, 4.0, 5.5])
def test_corners_are_apex_then_clockwise(angle):
    corners = triangle_corners(20.0, 30.0, angle, (24.0, 24.0))
    angles = _angles(corners)
    assert angles[0] == pytest.approx(30.0) and min(angles[1:]) > 70       # the apex is the sharpest corner
    assert _cross(corners) > 0           # clockwise on the screen (y down) = positive cross product
    torch.testing.assert_close(corners.mean(0), torch.tensor([24.0, 24.0], dtype=torch.float64))
    upright = triangle_corners(20.0, 30.0, 0.0, (0.0, 0.0))
    assert upright[0, 1] < upright[1, 1] and upright[1, 0] > upright[2, 0]    # apex up, then the right corner


def test_images_show_the_triangle_inside_the_canvas():
    data = TriangleKeypoints(length=20, size=40, noise=0.0)
    for i in range(20):
        item = data[i]
        image, corners = item["inputs"][0], item["keypoints"]
        assert image.shape == (40, 40) and corners.shape == (3, 2)
        assert float(corners.min()) >= 1 - 1e-4 and float(corners.max()) <= 38 + 1e-4
        cx, cy = corners.mean(0).round().long().tolist()
        assert image[cy, cx] >= 0.6                                           # the centroid is filled
        assert image[0, 0] == 0 and 0.01 < float((image > 0).float().mean()) < 0.3
    assert torch.equal(data[3]["inputs"], TriangleKeypoints(length=20, size=40, noise=0.0)[3]["inputs"])
    other = TriangleKeypoints(length=20, size=40, noise=0.0, seed=1)
    assert not torch.equal(data[3]["keypoints"], other[3]["keypoints"])
    with pytest.raises(IndexError):
        data[20]
    with pytest.raises(ValueError, match="min_height <= max_height"):
        TriangleKeypoints(min_height=0.7, max_height=0.5)


def test_decoding_the_target_heat_maps_recovers_the_keypoints():
    head = HRHeatmapHead([FeatureInfo(8, 4, "branches.0")], num_keypoints=3, sigma=2.0)
    torch.manual_seed(0)
    keypoints = 6 + torch.rand(5, 3, 2) * 34                # nearest heat-map pixels off the border (no shift there)
    target = head.target(keypoints, (12, 12))
    assert target.shape == (5, 3, 12, 12) and float(target.max()) <= 1
    decoded = head.predict(target)["keypoints"]
    # arg-max within half a heat-map pixel, the quarter-pixel shift towards the true side: <= 1/4 pixel * stride
    assert float((decoded - keypoints).abs().max()) <= 0.25 * 4 + 1e-5
    centre = head.target(torch.tensor([[[8.0, 20.0]]]), (12, 12))[0, 0]
    assert centre[5, 2] == 1 and centre.flatten().argmax() == 5 * 12 + 2    # (x, y) / stride = (2, 5)


def test_heat_map_head_on_a_tiny_backbone_learns(single_thread):
    torch.manual_seed(0)
    data = TriangleKeypoints(length=8, size=32, noise=0.0)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("inputs", "keypoints")}
    backbone = HRVMamba(channels=(8, 16, 24, 32), stage1_channels=8, stem_channels=16, modules=(1, 1, 1), blocks=1,
                        in_channels=1, block="basic", multiscale_output=False)
    head = HRHeatmapHead(backbone.feature_info, num_keypoints=3)
    assert [f.reduction for f in backbone.feature_info] == [4]
    opt = torch.optim.Adam(list(backbone.parameters()) + list(head.parameters()), lr=3e-3)
    losses = []
    for _ in range(60):
        out = head(backbone(batch["inputs"]))
        loss = head.loss(out, batch)["loss_heatmap"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert out.shape == (8, 3, 8, 8)
    assert losses[-1] < 0.5 * losses[0]


def test_pck_and_errors():
    evaluator = KeypointPCK(thresholds=(2, 5))
    truth = torch.zeros(2, 2, 2)
    evaluator.process({"keypoints": truth}, {"keypoints": torch.tensor([[[1.0, 0.0], [3.0, 4.0]],
                                                                         [[0.0, 0.0], [0.0, 6.0]]])})
    metrics = evaluator.compute()
    assert metrics["pck_2px"] == 50.0 and metrics["pck_5px"] == 75.0
    assert metrics["error_px"] == 3.0 and metrics["error_px_0"] == 0.5 and metrics["error_px_1"] == 5.5
    with pytest.raises(ValueError, match="must both be"):
        evaluator.process({"keypoints": truth}, {"keypoints": torch.zeros(2, 3, 2)})
    with pytest.raises(ValueError, match="positive"):
        KeypointPCK(thresholds=())


def test_bad_heads_and_keypoints_are_rejected():
    with pytest.raises(ValueError, match="num_keypoints"):
        HRHeatmapHead([FeatureInfo(8, 4, "branches.0")], num_keypoints=0)
    head = HRHeatmapHead([FeatureInfo(8, 4, "branches.0")], num_keypoints=3)
    with pytest.raises(ValueError, match=r"\(N, 3, 2\)"):
        head.loss(torch.zeros(2, 3, 8, 8), {"keypoints": torch.zeros(2, 4, 2)})


def test_the_heat_map_head_is_the_head_the_pose_table_counts(single_thread):
    # HRVMamba-T's COCO pose model: backbone with stage 4 fused into branch 0 + a 17-keypoint 1x1 conv = 2,151,297
    with torch.device("meta"):
        backbone = HRVMamba(channels=(16, 32, 64, 128), stage1_channels=32, multiscale_output=False)
        head = HRHeatmapHead(backbone.feature_info, num_keypoints=17)
    assert sum(p.numel() for p in (*backbone.parameters(), *head.parameters())) == 2_151_297
