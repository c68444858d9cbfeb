"""CascadeTabNet: its image transformations, the rule-based structure recognition (on rendered pages with
exact truth), JSON/HTML output, transfer learning between the two iterations, and ``panconv tables``."""

import json
import shutil

import numpy as np
import pytest
import torch

from panconv import create_model
from panconv.errors import CheckpointError
from panconv_documents.evaluators.adjacency import CellAdjacencyF1
from panconv_documents.models.cascadetabnet import (
    bordered_structure,
    borderless_structure,
    detections_from_structures,
    page_structure,
    structure_to_html,
)
from panconv_documents.transforms import Dilation, Smudge, dilate_page, smudge_page


def test_dilation_matches_the_opencv_procedure():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    page = np.full((40, 50), 255, np.uint8)
    page[rng.integers(0, 40, 60), rng.integers(0, 50, 60)] = rng.integers(0, 230, 60)
    # the paper's procedure, written out with OpenCV: threshold 220 (inverse), dilate 2x2 once, invert
    _, mask = cv2.threshold(page, 220, 255, cv2.THRESH_BINARY_INV)
    expected = cv2.bitwise_not(cv2.dilate(mask, np.ones((2, 2), np.uint8), iterations=1))
    assert np.array_equal(dilate_page(torch.from_numpy(page).float()).numpy().astype(np.uint8), expected)


def test_smudge_spreads_ink_by_distance():
    pytest.importorskip("cv2")
    page = np.full((41, 41), 255, np.uint8)
    page[20, 20] = 0
    out = smudge_page(page)
    assert out.min() == 0 and out.max() == pytest.approx(1.0) and out[20, 20] == 0
    assert 0 < out[20, 22] < out[20, 26] < out[20, 32]  # grows with the distance to the ink


def test_page_transforms_keep_boxes_and_apply_with_probability():
    sample = {"inputs": torch.ones(3, 20, 20), "boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([0])}
    sample["inputs"][:, 5:8, 5:8] = 0
    out = Dilation(prob=1.0)(sample)
    assert out["boxes"] is sample["boxes"] and (out["inputs"] == 0).sum() > (sample["inputs"] == 0).sum()
    assert Smudge(prob=0.0)(sample) is sample
    with pytest.raises(ValueError):
        Dilation(prob=1.5)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    pytest.importorskip("reportlab")
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils (pdftoppm) not installed")
    from panconv_documents.datasets.tables import RenderedTables

    return RenderedTables(tmp_path_factory.mktemp("docs"), "test", eval_pages=12, dpi=72)


@pytest.mark.parametrize("bordered", [True, False])
def test_structure_recognition_on_rendered_pages_with_true_boxes(rendered, bordered):
    """Given the true table (and, for borderless tables, cell) boxes, the rules recover the structure."""
    ev = CellAdjacencyF1()
    for i in range(len(rendered)):
        gt = [t for t in rendered.structures[rendered.coco.images[i]["id"]] if t["bordered"] == bordered]
        pred = page_structure(rendered.image(i), detections_from_structures(gt), 3, 0.5)
        assert [p["bordered"] for p in pred] == [t["bordered"] for t in gt]
        ev.process({"tables": [gt]}, [pred])
    assert ev.compute()["F1@0.6"] > 0.95


def test_bordered_structure_finds_spans(rendered):
    for i in range(len(rendered)):
        for t in rendered.structures[rendered.coco.images[i]["id"]]:
            spans = [(c["row"], c["col"], c["row_span"], c["col_span"]) for c in t["cells"]
                     if c["row_span"] > 1 or c["col_span"] > 1]
            if t["bordered"] and spans:
                got = bordered_structure(rendered.image(i), t["box"])
                assert (got["n_rows"], got["n_cols"]) == (len(t["rows"]) - 1, len(t["cols"]) - 1)
                found = {(c["row"], c["col"], c["row_span"], c["col_span"]) for c in got["cells"]}
                assert set(spans) <= found
                return
    pytest.skip("no bordered table with a span among the rendered pages")


def test_borderless_rows_and_columns_from_cells():
    cells = [[0, 0, 10, 10], [12, 0, 22, 10], [0, 12, 22, 22], [0, 24, 10, 34], [12, 24, 22, 34]]
    s = borderless_structure([0, 0, 22, 34], cells)
    assert (s["n_rows"], s["n_cols"]) == (3, 2)
    spanning = [c for c in s["cells"] if c["col_span"] == 2]
    assert len(spanning) == 1 and spanning[0]["row"] == 1


def test_html_has_spans_and_escapes_text():
    s = {"n_rows": 2, "n_cols": 2, "cells": [
        {"row": 0, "col": 0, "row_span": 1, "col_span": 2, "text": "a<b"},
        {"row": 1, "col": 0, "row_span": 1, "col_span": 1, "text": "1"},
        {"row": 1, "col": 1, "row_span": 1, "col_span": 1}]}
    html = structure_to_html(s)
    assert '<td colspan="2">a&lt;b</td>' in html and html.count("<tr>") == 2 and html.count("<td") == 3


def run_tables(*argv):
    """``panconv tables ARGV`` in-process, through the parser the plugin registers."""
    import argparse

    from panconv_documents import plugin

    parser = argparse.ArgumentParser(prog="panconv")
    plugin.panconv_add_commands(parser.add_subparsers())
    args = parser.parse_args(["tables", *argv])
    return args.func(args)


def test_transfer_learning_keeps_all_but_the_class_layers(tmp_path):
    config = dict(create_model("documents.CascadeTabNet", num_classes=1).example_config(), num_classes=1)
    first = create_model("documents.CascadeTabNet", **config)
    path = tmp_path / "tables.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in first.state_dict().items()}}, path)
    second = create_model("documents.CascadeTabNet", **{**config, "num_classes": 3, "init_from": str(path)})
    skipped = second.skipped_at_init
    assert skipped and all(".cls." in k or ".logits." in k for k in skipped)
    same = second.state_dict()["detector.backbone.body.conv1.weight"]
    assert torch.equal(same, first.state_dict()["detector.backbone.body.conv1.weight"])
    with pytest.raises(CheckpointError, match="missing.pth"):
        create_model("documents.CascadeTabNet", **{**config, "init_from": str(tmp_path / "missing.pth")})


def test_tables_command_on_a_rendered_pdf(tmp_path):
    pytest.importorskip("reportlab")
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils (pdftoppm) not installed")
    from panconv_documents.datasets.render import layout_page, register_fonts, render_pdf

    page = layout_page(11, register_fonts())
    render_pdf([page], tmp_path / "page.pdf")
    bordered = [t for t in page.tables if t.bordered]
    assert run_tables(str(tmp_path / "page.pdf"), "-o", str(tmp_path / "out"), "--lines-only", "--dpi", "72") == 0
    out = json.loads((tmp_path / "out" / "page_p1.json").read_text())
    shapes = sorted((t["n_rows"], t["n_cols"]) for t in out["tables"])
    assert shapes == sorted((t.n_rows, t.n_cols) for t in bordered)
    texts = {c.get("text") for t in out["tables"] for c in t["cells"]}
    assert {c.text for t in bordered for c in t.cells if c.text} <= texts  # from the PDF's text layer
    assert (tmp_path / "out" / "page_p1.html").read_text().count("<table>") == len(bordered)


def test_tables_command_needs_a_model_or_lines_only(capsys):
    assert run_tables("x.png") == 2
    assert "--model" in capsys.readouterr().err
