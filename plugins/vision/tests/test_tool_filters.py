"""``panconv filters``: extraction counts, the database round trip, shift and degeneracy metrics."""

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from panconv_vision.models.e2gc import MobileNetV1
from panconv_vision.tools import filters


def expected_count(model, k=3):
    return sum(m.out_channels * m.in_channels // m.groups for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (k, k))


def test_extraction_counts_every_3x3_filter_of_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MobileNetV1(width_mult=0.25, in_channels=1)
    checkpoint = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    db = filters.build([tmp_path])  # a work dir: its newest checkpoint
    # stem 8 filters (1 input channel) + the depthwise 3x3 of the 13 blocks (one filter per channel)
    assert len(db.filters) == expected_count(model) == 8 + sum(
        m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    assert len(db.index) == 14 and db.index[0]["layer"] == "backbone.stem.0.weight"
    assert sum(e["count"] for e in db.index) == len(db.filters)
    stem = model.stem[0].weight.detach().reshape(-1, 9).numpy()
    np.testing.assert_array_equal(db.layer(0), stem)
    assert all(e["depthwise"] for e in db.index[1:])
    assert filters.extract(model.state_dict(), kernel_size=1).filters.shape[1] == 1  # the 1x1 pointwise


def test_database_round_trip(tmp_path):
    state = {"a.weight": torch.randn(4, 2, 3, 3), "b.weight": torch.randn(3, 4, 5, 5), "c.weight": torch.randn(5, 3)}
    db = filters.extract(state, "x.pth")
    assert len(db.filters) == 8 and [e["layer"] for e in db.index] == ["a.weight"]
    back = filters.FilterDB.load(db.save(tmp_path / "db"))
    np.testing.assert_array_equal(back.filters, db.filters)
    assert back.index == db.index


def test_distribution_shift_grows_with_the_difference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(800, 9))
    same = rng.normal(size=(800, 9))
    shifted = rng.normal(size=(800, 9)) * 3 + 1
    assert filters.distribution_shift(a, a) == pytest.approx(0.0, abs=1e-9)
    small, large = filters.distribution_shift(a, same), filters.distribution_shift(a, shifted)
    assert small < 0.1 < large


def test_degeneracy_metrics():
    rng = np.random.default_rng(0)
    random = rng.normal(size=(64, 9))
    m = filters.degeneracy(random, (8, 8, 3, 3))
    assert m["sparsity"] == 0 and m["variance_entropy"] > 0.9 and 0.5 < m["orthogonality"] < 1
    one_pattern = np.outer(rng.uniform(0.5, 2.0, size=64), rng.normal(size=9))
    one_pattern[:16] = 0  # a quarter of the filters are dead
    m = filters.degeneracy(one_pattern, (8, 8, 3, 3))
    assert m["sparsity"] == 0.25 and m["variance_entropy"] < 0.05
    eye = np.eye(9)
    assert filters.degeneracy(eye, (9, 1, 3, 3))["orthogonality"] == pytest.approx(1.0)


def test_filters_command(tmp_path):
    for i in range(2):
        torch.manual_seed(i)
        model = MobileNetV1(width_mult=0.25, in_channels=1)
        (tmp_path / f"run{i}").mkdir()
        torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in model.state_dict().items()}},
                   tmp_path / f"run{i}" / "best.pth")
    args = argparse.Namespace(paths=[str(tmp_path / "run0"), str(tmp_path / "run1" / "best.pth")],
                              output=str(tmp_path / "db"), kernel_size=3)
    assert filters.main(args) == 0
    metrics = json.loads((tmp_path / "db" / "metrics.json").read_text())
    assert len(metrics["layers"]) == 28 and len(metrics["shift"]) == 28
    assert (tmp_path / "db" / "filters.png").is_file() and (tmp_path / "db" / "report.html").is_file()
    with pytest.raises(SystemExit, match="no 7x7 convolution"):
        filters.main(argparse.Namespace(**{**vars(args), "kernel_size": 7}))
