"""UniRepLKNet's point-cloud pathway: the top-view projection, and the vision backbone it feeds."""

import torch

from panconv_pointcloud.models.layers import example_point_batch
from panconv_pointcloud.models.unireplknet_points import UniRepLKNetPoints


def test_projection_max_pools_point_encodings_into_their_pixels():
    model = UniRepLKNetPoints(**UniRepLKNetPoints.example_config()).eval()
    points = torch.tensor([[[-5.9, -5.9, 0.0, 0.1], [-5.8, -5.85, 1.0, 0.2], [5.9, 0.1, 0.5, 0.3]]])
    flat, batch_idx = points[0], torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        enc, grid, _ = model.project(flat, batch_idx, 1)
    size = model.map_size
    # the first two points share the bottom-left pixel (row 0, column 0); the third is at row size/2, last column
    torch.testing.assert_close(grid[0, :, 0, 0], torch.maximum(enc[0], enc[1]))
    torch.testing.assert_close(grid[0, :, size // 2, size - 1], enc[2])
    occupied = (grid[0].abs().sum(0) > 0).sum()
    assert occupied == 2


def test_features_are_per_sample_and_use_the_vision_backbone():
    from panconv_vision.models.unireplknet import UniRepLKNet

    model = UniRepLKNetPoints(**UniRepLKNetPoints.example_config()).eval()
    assert isinstance(model.backbone, UniRepLKNet)
    batch = example_point_batch(2, channels=4)["inputs"]
    with torch.no_grad():
        both = model(batch)[0]
        alone = model({"points": batch["points"][1:], "mask": batch["mask"][1:]})[0]
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)
    assert (both[1, :, 40:] == 0).all()  # padding
