"""The page generator (exact ground truth), COCO annotation I/O and its errors, the rendered and real-PDF data sets."""

import json
import os
import shutil

import numpy as np
import pytest

from panconv.errors import DataError
from panconv_documents.datasets import find_input
from panconv_documents.datasets.coco import read_coco, write_coco
from panconv_documents.datasets.real_pdfs import SDIST, TabulaPDFs
from panconv_documents.datasets.tables import RenderedTables

needs_render = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (pdftoppm) not installed")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    pytest.importorskip("reportlab")
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils (pdftoppm) not installed")
    return RenderedTables(tmp_path_factory.mktemp("docs"), "train", n_pages=6, dpi=72)


def test_bordered_rules_lie_on_the_cell_edges(pages):
    """In pixels, every edge of every cell of a bordered table is drawn (dark) and its interior next to it is not."""
    checked = 0
    for i in range(len(pages)):
        gray = pages.image(i)
        for table in pages.structures[pages.coco.images[i]["id"]]:
            if not table["bordered"]:
                continue
            for cell in table["cells"]:
                x0, y0, x1, y1 = cell["box"]
                row = int(np.floor(y0))
                cols = slice(int(np.ceil(x0)) + 2, int(np.floor(x1)) - 2)
                band = gray[max(row - 1, 0):row + 2, cols].min(0)  # the top rule within a pixel
                assert (band < 200).mean() > 0.9
                checked += 1
    assert checked > 0


def test_every_cell_lies_in_its_table_and_spans_exist(pages):
    spans = 0
    for tables in pages.structures.values():
        for t in tables:
            x0, y0, x1, y1 = t["box"]
            covered = np.zeros((len(t["rows"]) - 1, len(t["cols"]) - 1), dtype=int)
            for c in t["cells"]:
                assert x0 - 1e-6 <= c["box"][0] < c["box"][2] <= x1 + 1e-6
                assert y0 - 1e-6 <= c["box"][1] < c["box"][3] <= y1 + 1e-6
                covered[c["row"]:c["row"] + c["row_span"], c["col"]:c["col"] + c["col_span"]] += 1
                spans += c["row_span"] > 1 or c["col_span"] > 1
            assert (covered == 1).all()  # the cells tile the grid exactly once
    assert spans > 0


def test_items_and_classes(pages, tmp_path):
    item = pages[0]
    assert item["inputs"].shape == (3, 792, 612) and item["inputs"].max() <= 1
    assert item["boxes"].shape[1] == 4 and len(item["boxes"]) == len(item["labels"])
    assert set(item["labels"].tolist()) <= {0, 1, 2} and 1 in item["labels"].tolist()
    tables = RenderedTables(pages.root, "train", classes="tables", n_pages=6, dpi=72)
    assert tables.metadata["num_classes"] == 1 and set(tables[0]["labels"].tolist()) == {0}
    assert len(tables[0]["boxes"]) == len(pages.structures[0])
    batch = pages.collate([pages[0], pages[1]])
    assert batch["inputs"].shape[0] == 2 and len(batch["boxes"]) == 2


def test_generation_is_seeded_and_cached(pages, tmp_path):
    again = RenderedTables(tmp_path, "train", n_pages=6, dpi=72)
    assert again.coco.tables == pages.coco.tables
    assert np.array_equal(again.image(3), pages.image(3))
    other = RenderedTables(tmp_path, "test", n_pages=6, dpi=72)
    assert other.coco.tables != pages.coco.tables  # the splits use different seeds


def _coco(tmp_path, **change):
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
            "categories": [{"id": 1, "name": "bordered"}]}
    for key, value in change.items():
        data[key] = value
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.mark.parametrize("change,message", [
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5]}]}, "annotations[0]: bbox"),
    ({"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5]}]}, "image_id 7"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 5, 5]}]}, "category_id 4"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, -5, 5]}]}, "negative"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": "10", "height": 10}]}, "images[0]: 'width'"),
    ({"categories": "x"}, "categories: missing or not a list"),
    ({"tables": [{"image_id": 1, "cells": [{"row": 0, "col": 0, "row_span": 0, "col_span": 1}]}]}, "row_span"),
])
def test_malformed_annotation_files_name_file_and_entry(tmp_path, change, message):
    path = _coco(tmp_path, **change)
    with pytest.raises(DataError) as info:
        read_coco(path)
    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{\n "images": [\n  {"id": 1,,}\n ]\n}\n')
    with pytest.raises(DataError, match=r"ann.json:3: not valid JSON"):
        read_coco(path)


def test_coco_round_trip(tmp_path):
    path = _coco(tmp_path)
    coco = read_coco(path)
    write_coco(tmp_path / "b.json", coco.images, coco.annotations, coco.categories, [])
    again = read_coco(tmp_path / "b.json")
    assert again.annotations == coco.annotations and again.tables == []


@needs_render
def test_tabula_pdfs_ground_truth_from_ruling_lines(shared_data):
    pytest.importorskip("pdfplumber")
    if find_input(shared_data, SDIST) is None:
        message = f"{SDIST} is neither under the data root nor ~/.cache/panconv (scripts/install.sh downloads it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a missing archive there is a failure, not a skip
        pytest.skip(message)
    data = TabulaPDFs(shared_data, "test", dpi=36)
    sources = [img["source"] for img in data.coco.images]
    assert "tests/resources/data.pdf#page=1" in sources
    first = next(t for t in data.coco.tables if t["image_id"] == sources.index("tests/resources/data.pdf#page=1"))
    # data.pdf page 1 is R's mtcars: 32 cars + a header row, 10 ruled columns (the row names are not ruled)
    assert (len(first["rows"]) - 1, len(first["cols"]) - 1) == (33, 10)
    assert sum(bool(c["text"]) for c in first["cells"]) >= 300


def test_caches_never_go_into_a_read_only_data_folder(tmp_path, monkeypatch):
    """A shared data folder marked read-only (r-x) is respected even by root: caches go to the default root."""
    import panconv_documents.datasets as datasets

    shared, home = tmp_path / "shared", tmp_path / "home"
    shared.mkdir()
    monkeypatch.setattr(datasets, "DEFAULT_ROOT", home)
    assert datasets.cache_dir(shared, "tabula", "v1") == shared / "documents" / "tabula" / "v1"
    shared.chmod(0o555)
    try:
        assert datasets.cache_dir(shared, "tabula", "v1") == home / "documents" / "tabula" / "v1"
    finally:
        shared.chmod(0o755)
