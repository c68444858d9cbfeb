"""LeNet-5's shapes and the paper's parameter count; the registrations and the ranges their
signatures declare, as panconv sees them."""

from pathlib import Path

import pytest
import torch

import panconv
from panconv_lenet.models.lenet import LeNet5


def test_lenet5_shapes_and_parameter_count():
    backbone = LeNet5()
    s4, c5 = backbone(torch.randn(2, 1, 28, 28))
    assert s4.shape == (2, 16, 5, 5) and c5.shape == (2, 120, 1, 1)
    # C1 156 + C3 2,416 + C5 48,120 (LeCun et al. 1998, fully connected C3)
    assert sum(p.numel() for p in backbone.parameters()) == 156 + 2416 + 48120


def test_declared_metadata_inputs_are_what_the_data_set_provides():
    from panconv_lenet.datasets.mnist import SmallMNIST

    assert set(LeNet5.metadata_inputs) <= set(SmallMNIST.metadata_keys)


def test_lenet5_composes_with_core_components_by_name():
    model = panconv.create_model({"backbone": {"type": "lenet.LeNet5", "in_channels": 3},
                                  "neck": {"type": "core.GlobalAvgPool"},
                                  "head": {"type": "core.LinearClsHead", "num_classes": 10}})
    logits = model({"inputs": torch.randn(2, 3, 28, 28)})
    assert logits.shape == (2, 10)


@pytest.mark.parametrize(("override", "key"), [
    ("data.limit=0", "data.limit"),
    ("data.limit=-5", "data.limit"),
    ("data.limit=null", "data.limit"),
    ("model.backbone.in_channels=0", "model.backbone.in_channels"),
    ("model.backbone.in_channels=1.5", "model.backbone.in_channels"),
])
def test_a_value_outside_the_declared_range_stops_at_validation(capsys, override, key):
    """`--dry-run` refuses it with one line naming the key: the ranges are in the signatures."""
    from panconv.cli import main

    config = str(Path(__file__).resolve().parents[1] / "lenet.yaml")
    try:
        code = main(["run", config, "--dry-run", "--set", override])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {config}: {key}: "), err
