"""``benchmarks/documents_structure.py``: the detector runs at its training resolution and the structure rules at
a higher one, the boxes scaled between the two; the same pages rasterised at both resolutions line up."""

import shutil
from pathlib import Path

import pytest
import torch

from panconv.testing import load_script
from panconv_documents.evaluators.adjacency import CellAdjacencyF1
from panconv_documents.models.cascadetabnet import detections_from_structures, page_structure

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "documents_structure.py"


def _benchmark():
    return load_script(BENCHMARK, "documents_structure_benchmark")


class TrueBoxDetector:
    """Stands in for a trained detector: the true tables and cells of the page it is shown, in its pixels."""

    num_classes = 3

    def __init__(self, structures: list[dict], scale: float):
        self.structures, self.scale = structures, scale
        self.seen: list[tuple[int, int]] = []

    def __call__(self, batch):
        self.seen.append(tuple(batch["inputs"].shape[-2:]))
        det = detections_from_structures(self.structures)
        return {"det": det}

    def predict(self, outputs, batch=None):
        det = outputs["det"]
        det.boxes = det.boxes * self.scale
        return [det]


@pytest.fixture(scope="module")
def two_resolutions(tmp_path_factory):
    pytest.importorskip("reportlab")
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils (pdftoppm) not installed")
    from panconv_documents.datasets.tables import RenderedTables

    root = tmp_path_factory.mktemp("docs")
    return RenderedTables(root, "test", eval_pages=2, dpi=72), RenderedTables(root, "test", eval_pages=2, dpi=36)


def test_the_same_pages_at_two_resolutions_have_scaled_truth(two_resolutions):
    high, low = two_resolutions
    assert [im["file_name"] for im in high.coco.images] == [im["file_name"] for im in low.coco.images]
    for i in range(len(high)):
        assert high.image(i).shape == (2 * low.image(i).shape[0], 2 * low.image(i).shape[1])
        assert torch.allclose(high.targets[i][0], 2 * low.targets[i][0], atol=1e-3)


def test_detections_at_low_resolution_are_scaled_to_the_rules_pages(two_resolutions):
    """Boxes found on the 36-dpi page, scaled by 2, give the rules on the 72-dpi page exactly what the true 72-dpi
    boxes give them (so the benchmark's detector row differs from its true-box row only by the detector)."""
    bench = _benchmark()
    high, low = two_resolutions
    ev = CellAdjacencyF1()
    for i in range(len(high)):
        gt = high.structures[high.coco.images[i]["id"]]
        model = TrueBoxDetector(gt, scale=0.5)  # a detector that finds the true boxes in its own (36-dpi) pixels
        got = bench.detect_then_rules(model, low.image(i), high.image(i), 0.5)
        assert model.seen == [low.image(i).shape]
        expected = page_structure(high.image(i), detections_from_structures(gt), 3, 0.5)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g["box"] == pytest.approx(e["box"], abs=1e-3)
        assert [(t["n_rows"], t["n_cols"]) for t in got] == [(t["n_rows"], t["n_cols"]) for t in expected]
        ev.process({"tables": [gt]}, [got])
    assert ev.compute()["F1@0.6"] > 0.9


def test_tables_command_detects_at_the_detect_dpi_and_structures_at_the_dpi(two_resolutions, tmp_path, monkeypatch):
    """``panconv tables IMAGE --dpi 72 --detect-dpi 36``: the detector sees the page at half size and the tables
    written are the rules' structures on the full page for its boxes scaled back (as the benchmark's row)."""
    import argparse
    import json

    import panconv
    from panconv_documents import plugin

    high, _ = two_resolutions
    gt = high.structures[high.coco.images[0]["id"]]
    model = TrueBoxDetector(gt, scale=0.5)
    model.structure_thr = 0.5
    monkeypatch.setattr(panconv, "load_model", lambda *a, **k: model)
    parser = argparse.ArgumentParser(prog="panconv")
    plugin.panconv_add_commands(parser.add_subparsers())
    image = high.image_dir / high.coco.images[0]["file_name"]
    args = parser.parse_args(["tables", str(image), "-o", str(tmp_path / "out"), "--model", "stub",
                              "--dpi", "72", "--detect-dpi", "36"])
    assert args.func(args) == 0
    page = high.image(0)
    assert model.seen == [(round(page.shape[0] / 2), round(page.shape[1] / 2))]
    written = json.loads((tmp_path / "out" / f"{image.stem}_p1.json").read_text())["tables"]
    expected = page_structure(page, detections_from_structures(gt), 3, 0.5)
    assert [(t["n_rows"], t["n_cols"]) for t in written] == [(t["n_rows"], t["n_cols"]) for t in expected]
    for w, e in zip(written, expected):
        assert w["box"] == pytest.approx(e["box"], abs=1e-3)
