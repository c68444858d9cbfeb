"""Fidelity: our CascadeTabNet configuration compared value by value with the official mmdetection config
(github.com/DevashishPrasad/CascadeTabNet, ``Config/cascade_mask_rcnn_hrnetv2p_w32_20e.py``, checked at
commit 517933ccd82c3377ab35fc40f800d99d59571837).

The official values are recorded in ``fixtures/cascadetabnet_official_config.json`` (the config file is not
part of this repository). Regenerate the fixture from a checkout of the official repository::

    git clone https://github.com/DevashishPrasad/CascadeTabNet /tmp/CascadeTabNet
    PANCONV_RECORD_CASCADETABNET=1 pytest plugins/documents/tests/test_cascadetabnet_config.py

The config is read with a small evaluator of its ``dict(...)``/list/number expressions (no code runs).
"""

import ast
import functools
import json
import math
import os
from pathlib import Path

import pytest
import torch

from panconv import create_model

OFFICIAL = Path(os.environ.get("PANCONV_CASCADETABNET_OFFICIAL", "/tmp/CascadeTabNet")) / "Config" / \
    "cascade_mask_rcnn_hrnetv2p_w32_20e.py"
RECORDED = Path(__file__).parent / "fixtures" / "cascadetabnet_official_config.json"


def _value(node):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {kw.arg: _value(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _value(node.left) / _value(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _value(node.left) + _value(node.right)
    if isinstance(node, ast.Name):
        return None  # a reference to another variable (data_root): not compared
    raise ValueError(f"unsupported expression at line {node.lineno}")


def read_official(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    names = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                names[stmt.targets[0].id] = _value(stmt.value)
            except (ValueError, TypeError):
                pass
    m, train, test = names["model"], names["train_cfg"], names["test_cfg"]
    rpn = m["rpn_head"]
    pad = next(t for t in names["train_pipeline"] if t["type"] == "Pad")
    return {
        "num_stages": m["num_stages"],
        "backbone.num_channels": m["backbone"]["extra"]["stage4"]["num_channels"],
        "neck.in_channels": m["neck"]["in_channels"],
        "neck.out_channels": m["neck"]["out_channels"],
        "rpn.anchor_scales": rpn["anchor_scales"],
        "rpn.anchor_ratios": rpn["anchor_ratios"],
        "rpn.anchor_strides": rpn["anchor_strides"],
        "rpn.target_stds": rpn["target_stds"],
        "rpn.loss_bbox_beta": rpn["loss_bbox"]["beta"],
        "rpn.feat_channels": rpn["feat_channels"],
        "rpn.assigner": [train["rpn"]["assigner"][k] for k in ("pos_iou_thr", "neg_iou_thr", "min_pos_iou")],
        "rpn.sampler": [train["rpn"]["sampler"]["num"], train["rpn"]["sampler"]["pos_fraction"]],
        "rpn.train_proposals": train["rpn_proposal"]["max_num"],
        "rpn.test_proposals": test["rpn"]["max_num"],
        "rpn.nms_thr": [train["rpn_proposal"]["nms_thr"], test["rpn"]["nms_thr"]],
        "rcnn.stage_ious": [s["assigner"]["pos_iou_thr"] for s in train["rcnn"]],
        "rcnn.stage_neg_ious": [s["assigner"]["neg_iou_thr"] for s in train["rcnn"]],
        "rcnn.stage_min_pos_ious": [s["assigner"]["min_pos_iou"] for s in train["rcnn"]],
        "rcnn.stage_loss_weights": train["stage_loss_weights"],
        "rcnn.sampler": [[s["sampler"]["num"], s["sampler"]["pos_fraction"]] for s in train["rcnn"]],
        "rcnn.add_gt_as_proposals": [s["sampler"]["add_gt_as_proposals"] for s in train["rcnn"]],
        "rcnn.target_stds": [h["target_stds"] for h in m["bbox_head"]],
        "rcnn.reg_class_agnostic": [h["reg_class_agnostic"] for h in m["bbox_head"]],
        "rcnn.fc_out_channels": [h["fc_out_channels"] for h in m["bbox_head"]],
        "rcnn.num_fcs": [h["num_fcs"] for h in m["bbox_head"]],
        "rcnn.loss_bbox_beta": [h["loss_bbox"]["beta"] for h in m["bbox_head"]],
        "rcnn.roi_out_size": m["bbox_roi_extractor"]["roi_layer"]["out_size"],
        "rcnn.sample_num": m["bbox_roi_extractor"]["roi_layer"]["sample_num"],
        "rcnn.featmap_strides": m["bbox_roi_extractor"]["featmap_strides"],
        "mask.roi_out_size": m["mask_roi_extractor"]["roi_layer"]["out_size"],
        "mask.num_convs": m["mask_head"]["num_convs"],
        "mask.conv_out_channels": m["mask_head"]["conv_out_channels"],
        "mask.mask_size": [s["mask_size"] for s in train["rcnn"]],
        "test.score_thr": test["rcnn"]["score_thr"],
        "test.nms_iou": test["rcnn"]["nms"]["iou_thr"],
        "test.max_per_img": test["rcnn"]["max_per_img"],
        "test.mask_thr_binary": test["rcnn"]["mask_thr_binary"],
        "img_norm.mean": names["img_norm_cfg"]["mean"],
        "img_norm.std": names["img_norm_cfg"]["std"],
        "pad.size_divisor": pad["size_divisor"],
        "grad_clip.max_norm": names["optimizer_config"]["grad_clip"]["max_norm"],
    }


@functools.cache
def ours() -> dict:
    """The same values read off a built cascadetabnet_hrnetv2p_w32 (on the meta device: no memory)."""
    import inspect

    from panconv_documents.models.detection import paste_masks

    with torch.device("meta"):
        model = create_model("documents.cascadetabnet_hrnetv2p_w32", num_classes=3)
    det = model.detector
    roi = det.roi_head
    mask = roi.mask_heads[0]
    rpn_beta = 1.0 / 9  # TwoStageDetector.rpn_loss
    return {
        "num_stages": roi.num_stages,
        "backbone.num_channels": [f.channels for f in det.backbone.feature_info],
        "neck.in_channels": [f.channels for f in det.neck.in_features],
        "neck.out_channels": det.neck.feature_info[0].channels,
        "rpn.anchor_scales": list(det.anchors.scales),
        "rpn.anchor_ratios": list(det.anchors.ratios),
        "rpn.anchor_strides": list(det.anchors.strides),
        "rpn.target_stds": list(det.rpn_coder.stds),
        "rpn.loss_bbox_beta": rpn_beta,
        "rpn.feat_channels": det.rpn_head.conv.out_channels,
        "rpn.assigner": [det.rpn_assigner.pos_iou, det.rpn_assigner.neg_iou, det.rpn_assigner.min_pos_iou],
        "rpn.sampler": [det.rpn_sampler.num, det.rpn_sampler.pos_fraction],
        "rpn.train_proposals": det.train_proposals,
        "rpn.test_proposals": det.test_proposals,
        "rpn.nms_thr": [det.rpn_nms_iou, det.rpn_nms_iou],
        "rcnn.stage_ious": [a.pos_iou for a in roi.assigners],
        "rcnn.stage_neg_ious": [a.neg_iou for a in roi.assigners],
        "rcnn.stage_min_pos_ious": [a.min_pos_iou for a in roi.assigners],
        "rcnn.stage_loss_weights": list(roi.stage_loss_weights),
        "rcnn.sampler": [[roi.sampler.num, roi.sampler.pos_fraction]] * roi.num_stages,
        "rcnn.add_gt_as_proposals": [True] * roi.num_stages,  # CascadeRoIHead.loss prepends the gt boxes
        "rcnn.target_stds": [list(c.stds) for c in roi.coders],
        "rcnn.reg_class_agnostic": [h.reg.out_features == 4 for h in roi.box_heads],
        "rcnn.fc_out_channels": [h.fc2.out_features for h in roi.box_heads],
        "rcnn.num_fcs": [2 for _ in roi.box_heads],  # BoxHead: fc1, fc2
        "rcnn.loss_bbox_beta": [1.0] * roi.num_stages,
        "rcnn.roi_out_size": roi.box_roi.out_size,
        "rcnn.sample_num": roi.box_roi.sampling_ratio,
        "rcnn.featmap_strides": list(roi.box_roi.strides),
        "mask.roi_out_size": roi.mask_roi.out_size,
        "mask.num_convs": sum(isinstance(m, torch.nn.Conv2d) for m in mask.convs),
        "mask.conv_out_channels": mask.logits.in_channels,
        "mask.mask_size": [2 * roi.mask_roi.out_size] * roi.num_stages,
        "test.score_thr": roi.score_thr,
        "test.nms_iou": roi.nms_iou,
        "test.max_per_img": roi.max_per_img,
        "test.mask_thr_binary": inspect.signature(paste_masks).parameters["threshold"].default,
        "img_norm.mean": [round(v * 255, 3) for v in det.pixel_mean.flatten().tolist()],
        "img_norm.std": [round(v * 255, 3) for v in det.pixel_std.flatten().tolist()],
        "pad.size_divisor": det.size_divisor,
        "grad_clip.max_norm": 35.0,  # examples/documents_cascadetabnet_tables.yaml: train.grad_clip
    }


def _same(a, b) -> bool:
    """Equal values; numbers within 1e-6 relative (0.111 = 1/9 written out, float32 constants)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_CASCADETABNET"), reason="records the fixture (opt-in)")
def test_record_official_config():
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps(read_official(OFFICIAL), indent=1) + "\n")


@pytest.mark.skipif(not OFFICIAL.is_file(), reason="the official config is not checked out (see the docstring)")
def test_fixture_matches_the_official_file():
    assert read_official(OFFICIAL) == json.loads(RECORDED.read_text())


def test_config_matches_the_official_values_line_by_line():
    official = json.loads(RECORDED.read_text())
    mine = ours()
    assert sorted(official) == sorted(mine)
    differ = {k: (official[k], mine[k]) for k in official if not _same(official[k], mine[k])}
    assert not differ, f"differs from the official config (official, ours): {differ}"


def test_the_comparison_would_catch_a_changed_value():
    mine = ours()
    assert mine["rcnn.stage_ious"] == [0.5, 0.6, 0.7]
    with torch.device("meta"):
        wrong = create_model("documents.cascadetabnet_hrnetv2p_w32", num_classes=3, stage_ious=(0.5, 0.6, 0.75))
    assert [a.pos_iou for a in wrong.detector.roi_head.assigners] != json.loads(RECORDED.read_text())[
        "rcnn.stage_ious"]
