"""What panconv-documents registers: every registration imports, plugin.py stays torch-free, bad values are
refused with a one-line error, the size variants carry the paper's numbers."""

import subprocess
import sys

import pytest
import torch

import panconv
from panconv import create_model


def test_every_registration_imports():
    names = []
    for kind in ("model", "backbone", "neck", "head", "dataset", "evaluator", "kernel", "transform", "loss"):
        for name in panconv.list_components(kind, "documents.*"):
            assert panconv.get_component(kind, name) is not None, name
            names.append(name)
    for expected in ("documents.CascadeTabNet", "documents.RCNN", "documents.RenderedTables", "documents.TabulaPDFs",
                     "documents.DetectionMAP", "documents.CellAdjacencyF1", "documents.Dilation", "documents.Smudge"):
        assert expected in names


def test_listing_imports_no_torch():
    code = "import sys, panconv_documents.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_hrnetv2p_w32_has_the_mmdetection_backbone_size():
    with torch.device("meta"):
        backbone = panconv.build("backbone", "documents.hrnetv2p_w32")
    n = sum(p.numel() for p in backbone.parameters())
    assert abs(n - 29.31e6) / 29.31e6 < 0.01  # HRNetV2p-W32 without the classification head
    assert [f.channels for f in backbone.feature_info] == [32, 64, 128, 256]
    assert [f.reduction for f in backbone.feature_info] == [4, 8, 16, 32]


@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"stage_ious": (0.5, 1.2, 0.7)}, {"stage_ious": ()},
                                 {"backbone": "resnet50"}])
def test_bad_values_are_refused(bad):
    config = {**panconv.get_component("model", "documents.RCNN").example_config(), **bad}
    with pytest.raises(ValueError):
        create_model("documents.RCNN", **config)


def test_one_stage_variants_are_mask_and_faster_rcnn():
    with torch.device("meta"):
        mask = create_model("documents.mask_rcnn_hrnetv2p_w32", num_classes=3)
        faster = create_model("documents.faster_rcnn_hrnetv2p_w32", num_classes=3)
        cascade = create_model("documents.cascadetabnet_hrnetv2p_w32", num_classes=3)
    assert mask.detector.roi_head.num_stages == 1 and mask.detector.roi_head.with_mask
    assert faster.detector.roi_head.num_stages == 1 and not faster.detector.roi_head.with_mask
    assert cascade.detector.roi_head.num_stages == 3
