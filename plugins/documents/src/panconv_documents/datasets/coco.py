"""COCO-style annotation files: read (validated, one-line :class:`DataError` naming file and entry) and write.

The format is COCO's detection format (``images``, ``annotations`` with ``bbox = [x, y, w, h]`` in
pixels, ``categories``) plus an optional ``tables`` list that holds each table's structure::

    {"image_id": 3, "bordered": true, "box": [x0, y0, x1, y1], "rows": [...], "cols": [...],
     "cells": [{"row": 0, "col": 1, "row_span": 1, "col_span": 2, "box": [x0, y0, x1, y1], "text": "..."}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from panconv.errors import DataError
from panconv.io import atomic_write_json


@dataclass
class CocoFile:
    path: Path
    images: list[dict]
    annotations: list[dict]
    categories: list[dict]
    tables: list[dict] = field(default_factory=list)

    def annotations_by_image(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        for ann in self.annotations:
            out[ann["image_id"]].append(ann)
        return out

    def tables_by_image(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        for table in self.tables:
            out[table["image_id"]].append(table)
        return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _require(cond: bool, path: Path, where: str, what: str) -> None:
    if not cond:
        raise DataError(f"{path}: {where}: {what}")


def read_coco(path: str | Path) -> CocoFile:
    """Load and validate a COCO-style file; a malformed one raises a one-line DataError naming the entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise DataError(f"{path}{f':{line}' if line else ''}: not valid JSON ({str(exc).splitlines()[0]})") from None
    _require(isinstance(data, dict), path, "top level", "expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        _require(isinstance(data.get(key), list), path, key, "missing or not a list")
    categories = data["categories"]
    cat_ids = set()
    for i, cat in enumerate(categories):
        _require(isinstance(cat, dict) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str),
                 path, f"categories[{i}]", "needs an integer 'id' and a string 'name'")
        cat_ids.add(cat["id"])
    image_ids = set()
    for i, img in enumerate(data["images"]):
        _require(isinstance(img, dict), path, f"images[{i}]", "not an object")
        for key in ("id", "width", "height"):
            _require(isinstance(img.get(key), int), path, f"images[{i}]", f"'{key}' must be an integer")
        _require(isinstance(img.get("file_name"), str), path, f"images[{i}]", "'file_name' must be a string")
        _require(img["id"] not in image_ids, path, f"images[{i}]", f"duplicate image id {img['id']}")
        image_ids.add(img["id"])
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        _require(isinstance(ann, dict), path, where, "not an object")
        _require(ann.get("image_id") in image_ids, path, where, f"image_id {ann.get('image_id')!r} is not an image id")
        _require(ann.get("category_id") in cat_ids, path, where,
                 f"category_id {ann.get('category_id')!r} is not one of {sorted(cat_ids)}")
        box = ann.get("bbox")
        _require(isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box), path, where,
                 f"bbox must be 4 numbers [x, y, w, h], got {box!r}")
        _require(box[2] >= 0 and box[3] >= 0, path, where, f"bbox has a negative width or height: {box}")
    tables = data.get("tables", [])
    _require(isinstance(tables, list), path, "tables", "not a list")
    for i, table in enumerate(tables):
        where = f"tables[{i}]"
        _require(isinstance(table, dict) and table.get("image_id") in image_ids, path, where,
                 "needs an 'image_id' that is an image id")
        _require(isinstance(table.get("cells"), list), path, where, "'cells' must be a list")
        for j, cell in enumerate(table["cells"]):
            ok = isinstance(cell, dict) and all(isinstance(cell.get(k), int) for k in
                                                ("row", "col", "row_span", "col_span"))
            _require(ok, path, f"{where}.cells[{j}]", "needs integer row, col, row_span, col_span")
            _require(cell["row_span"] >= 1 and cell["col_span"] >= 1, path, f"{where}.cells[{j}]",
                     "row_span and col_span must be >= 1")
    return CocoFile(path, data["images"], data["annotations"], categories, tables)


def write_coco(path: str | Path, images: list[dict], annotations: list[dict], categories: list[dict],
               tables: list[dict] | None = None) -> None:
    data = {"images": images, "annotations": annotations, "categories": categories}
    if tables is not None:
        data["tables"] = tables
    atomic_write_json(path, data)


def xyxy_to_xywh(box) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def xywh_to_xyxy(box) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[0] + box[2]), float(box[1] + box[3])]
