"""Real PDFs with tables: the test PDFs that ship in the tabula-py 2.10.0 source distribution.

Get the sdist once (no download at run time)::

    pip download --no-deps --no-binary :all: tabula-py==2.10.0 -d ~/.cache/panconv/documents  # or <root>/documents

which leaves ``~/.cache/panconv/documents/tabula_py-2.10.0.tar.gz``; its ``tests/resources/*.pdf`` and
``examples/data.pdf`` are read straight from the archive.

Ground truth comes from the PDFs' ruling lines with pdfplumber (``find_tables`` with the ``lines``
strategy for both axes, its default tolerances): a table is a connected grid of ruling lines, its
cells the grid's closed rectangles. Rows and columns are the sorted distinct cell edges; a cell's
row/col span counts the edges it crosses; its text is pdfplumber's text inside the cell. Only pages
with at least one ruled table of two or more cells are kept (borderless tables have no ruling lines to
derive truth from). The pages are rasterised with ``pdftoppm`` at ``dpi`` and every coordinate scaled by
``dpi / 72``, like the rendered pages. All tables found this way are "bordered" (class 0).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

from annotated_types import Interval

from panconv.errors import DataError

from . import cache_dir, find_input
from .coco import write_coco, xyxy_to_xywh
from .tables import DetectionPages

SDIST = "tabula_py-2.10.0.tar.gz"
VERSION = 1


def _edges_index(values: list[float], v: float) -> int:
    return min(range(len(values)), key=lambda i: abs(values[i] - v))


def ruled_tables(pdf_path: Path) -> list[tuple[int, float, float, list[dict]]]:
    """(page index, page width, page height, tables in PDF points) of every page with a ruled table."""
    import pdfplumber

    out = []
    with pdfplumber.open(pdf_path) as pdf:
        for index, page in enumerate(pdf.pages):
            tables = []
            for t in page.find_tables({"vertical_strategy": "lines", "horizontal_strategy": "lines"}):
                boxes = [c for c in t.cells if c is not None]
                if len(boxes) < 2:
                    continue
                ys = sorted({round(v, 1) for c in boxes for v in (c[1], c[3])})
                xs = sorted({round(v, 1) for c in boxes for v in (c[0], c[2])})
                ys, xs = _dedupe(ys), _dedupe(xs)
                cells = []
                for c in boxes:
                    r0, r1 = _edges_index(ys, c[1]), _edges_index(ys, c[3])
                    k0, k1 = _edges_index(xs, c[0]), _edges_index(xs, c[2])
                    if r1 <= r0 or k1 <= k0:
                        continue
                    text = (page.crop(c).extract_text() or "").strip()
                    cells.append({"row": r0, "col": k0, "row_span": r1 - r0, "col_span": k1 - k0,
                                  "box": list(c), "text": text})
                tables.append({"bordered": True, "box": list(t.bbox), "rows": ys, "cols": xs, "cells": cells})
            if tables:
                out.append((index, float(page.width), float(page.height), tables))
    return out


def _dedupe(values: list[float], gap: float = 1.5) -> list[float]:
    out: list[float] = []
    for v in values:
        if not out or v - out[-1] > gap:
            out.append(v)
    return out


def _scale(table: dict, s: float) -> dict:
    t = dict(table)
    t["box"] = [v * s for v in table["box"]]
    t["rows"] = [v * s for v in table["rows"]]
    t["cols"] = [v * s for v in table["cols"]]
    t["cells"] = [{**c, "box": [v * s for v in c["box"]]} for c in table["cells"]]
    return t


def build_tabula_pages(archive: Path, out: Path, dpi: int) -> None:
    """Extract the PDFs, derive the truth, rasterise, write ``annotations.json`` (COCO + tables) into ``out``."""
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".pdf")
                       and ("/tests/resources/" in m.name or m.name.endswith("/examples/data.pdf"))]
            if not members:
                raise DataError(f"{archive}: no test PDFs inside (is it the tabula-py sdist?)")
            tar.extractall(tmp, members=members, filter="data")
        images, annotations, tables_out = [], [], []
        for member in sorted(members, key=lambda m: m.name):
            pdf = Path(tmp) / member.name
            if member.name.endswith("/examples/data.pdf"):
                continue  # the same file as tests/resources/data.pdf
            for page_index, _, _, tables in ruled_tables(pdf):
                image_id = len(images)
                name = f"{pdf.stem}_p{page_index + 1}.png"
                prefix = Path(tmp) / "render"
                subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile", "-f",
                                str(page_index + 1), "-l", str(page_index + 1), str(pdf), str(prefix)],
                               check=True, capture_output=True)
                shutil.move(f"{prefix}.png", out / name)
                from PIL import Image

                with Image.open(out / name) as im:
                    width, height = im.size
                images.append({"id": image_id, "file_name": name, "width": width, "height": height,
                               "source": f"{member.name.split('/', 1)[1]}#page={page_index + 1}"})
                for table in tables:
                    t = _scale(table, dpi / 72.0)
                    tables_out.append({"image_id": image_id, **t})
                    annotations.append({"image_id": image_id, "category_id": 1, "bbox": xyxy_to_xywh(t["box"])})
                    annotations += [{"image_id": image_id, "category_id": 2, "bbox": xyxy_to_xywh(c["box"])}
                                    for c in t["cells"] if c["text"]]
        for i, ann in enumerate(annotations):
            ann.update(id=i + 1, iscrowd=0, area=ann["bbox"][2] * ann["bbox"][3])
        write_coco(out / "annotations.json", images, annotations,
                   [{"id": 1, "name": "bordered"}, {"id": 2, "name": "cell"}, {"id": 3, "name": "borderless"}],
                   tables_out)


class TabulaPDFs(DetectionPages):
    """The ruled tables of tabula-py's test PDFs (a test split only: a few pages, for evaluation)."""

    splits = ("test",)

    def __init__(self, root=None, split: str = "test", classes: str = "cascadetabnet",
                 dpi: Annotated[int, Interval(ge=18, le=300)] = 36):
        super().__init__(root, split, classes)
        archive = find_input(self.root, SDIST) or self.root / "documents" / SDIST
        cache = cache_dir(self.root, "tabula", f"v{VERSION}-dpi{dpi}")
        if not (cache / "annotations.json").is_file():
            problems = self.check_prerequisites(self.root)
            if problems:
                raise DataError(f"{archive}: " + "; ".join(problems))
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tabula.", dir=cache.parent))
            try:
                build_tabula_pages(archive, tmp, dpi)
                cache.parent.mkdir(parents=True, exist_ok=True)
                try:
                    tmp.rename(cache)
                except OSError:
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self._load(cache / "annotations.json")

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        import importlib.util

        problems = []
        if find_input(Path(root), SDIST) is None:
            problems.append(f"missing {SDIST}: pip download --no-deps --no-binary :all: tabula-py==2.10.0 "
                            f"-d {Path(root) / 'documents'}")
        if importlib.util.find_spec("pdfplumber") is None:
            problems.append("pdfplumber is not installed: pip install 'panconv-documents[pdf]'")
        if shutil.which("pdftoppm") is None:
            problems.append("pdftoppm is not installed: apt-get install poppler-utils")
        return problems

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        from .tables import _write_example

        _write_example(tmp_dir / "documents" / "tabula", broken=False)
        (tmp_dir / "documents" / "tabula" / "example").rename(tmp_dir / "documents" / "tabula" / "v1-dpi36")
        return {"root": tmp_dir, "split": "test"}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        from .tables import _write_example

        _write_example(tmp_dir / "documents" / "tabula", broken=True)
        (tmp_dir / "documents" / "tabula" / "example").rename(tmp_dir / "documents" / "tabula" / "v1-dpi36")
        return {"root": tmp_dir, "split": "test"}
