"""Rendered document pages with exact table ground truth (see :mod:`.render`), as a detection data set.

Pages are generated once per (seed, split, number of pages, dpi) and cached under
``<root>/documents/rendered/<key>/`` (PNG pages + ``annotations.json`` in COCO form with the table
structures); later runs read the cache. Splits use disjoint seeds.

``classes="cascadetabnet"``: the paper's three classes in the official demo's order: bordered table,
cell, borderless table (labels 0, 1, 2). ``classes="tables"``: one class, table (the first iteration of
the paper's iterative transfer learning, table detection).

Items: ``{"inputs": (3, H, W) float in [0, 1], "boxes": (K, 4) xyxy pixels, "labels": (K,), "image_id"}``;
``collate`` stacks the images (all pages of a data set have one size) and keeps boxes/labels as lists.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

from . import cache_dir
from .coco import CocoFile, read_coco, write_coco, xywh_to_xyxy, xyxy_to_xywh

GENERATOR_VERSION = 1
CLASSES = {"cascadetabnet": ("bordered", "cell", "borderless"), "tables": ("table",)}
_SPLIT_SEED = {"train": 1, "val": 2, "test": 3}


def coco_from_tables(pngs: list[Path], tables: list[list[dict]], size: tuple[int, int], classes: str):
    """COCO images/annotations/categories/tables for generated pages (cells: the non-empty ones)."""
    names = CLASSES[classes]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    images, annotations, structures = [], [], []
    for image_id, (png, page_tables) in enumerate(zip(pngs, tables)):
        images.append({"id": image_id, "file_name": png.name, "height": size[0], "width": size[1]})
        for table in page_tables:
            structures.append({"image_id": image_id, **table})
            cat = 1 if classes == "tables" else (1 if table["bordered"] else 3)
            annotations.append({"image_id": image_id, "category_id": cat, "bbox": xyxy_to_xywh(table["box"])})
            if classes == "cascadetabnet":
                annotations += [{"image_id": image_id, "category_id": 2, "bbox": xyxy_to_xywh(c["box"])}
                                for c in table["cells"] if c["text"]]
    for i, ann in enumerate(annotations):
        ann.update(id=i + 1, iscrowd=0, area=ann["bbox"][2] * ann["bbox"][3])
    return images, annotations, categories, structures


def rendered_pages(root: Path, split: str, n_pages: int, dpi: int, seed: int = 0) -> Path:
    """The cache directory of these pages, generating them first if needed (atomically)."""
    from .render import generate

    key = f"v{GENERATOR_VERSION}-{split}-seed{seed}-n{n_pages}-dpi{dpi}"
    cache = cache_dir(root, "rendered", key)
    if (cache / "annotations.json").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache.parent))
    try:
        pngs, tables, size = generate(tmp, n_pages, seed * 1000 + _SPLIT_SEED.get(split, 9), dpi)
        (tmp / "pages.pdf").unlink()
        images, annotations, categories, structures = coco_from_tables(pngs, tables, size, "cascadetabnet")
        write_coco(tmp / "annotations.json", images, annotations, categories, structures)
        try:
            tmp.rename(cache)
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def load_gray(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


class DetectionPages(Dataset):
    """Pages of a COCO-style annotation file (the base of the rendered and user-provided page sets)."""

    metadata_keys = ("num_classes",)

    def __init__(self, root=None, split: str = "train", classes: Literal["cascadetabnet", "tables"] = "cascadetabnet"):
        super().__init__(root, split)
        if classes not in CLASSES:
            raise ValueError(f"classes must be one of {sorted(CLASSES)}, got {classes!r}")
        self.classes = classes

    def _load(self, annotation_file: Path) -> None:
        self.coco: CocoFile = read_coco(annotation_file)
        self.image_dir = annotation_file.parent
        names = {c["id"]: c["name"] for c in self.coco.categories}
        wanted = CLASSES[self.classes]
        by_image = self.coco.annotations_by_image()
        self.targets = []
        for img in self.coco.images:
            boxes, labels = [], []
            for ann in by_image[img["id"]]:
                name = names[ann["category_id"]]
                if self.classes == "tables":
                    if name == "cell":
                        continue
                    name = "table"
                if name in wanted:
                    boxes.append(xywh_to_xyxy(ann["bbox"]))
                    labels.append(wanted.index(name))
            self.targets.append((torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                 torch.tensor(labels, dtype=torch.long)))
        self.structures = self.coco.tables_by_image()

    @property
    def metadata(self) -> dict:
        return {"num_classes": len(CLASSES[self.classes]), "class_names": list(CLASSES[self.classes])}

    def __len__(self) -> int:
        return len(self.coco.images)

    def image(self, index: int) -> np.ndarray:
        return load_gray(self.image_dir / self.coco.images[index]["file_name"])

    def __getitem__(self, index: int) -> dict:
        gray = torch.from_numpy(self.image(index).copy()).float().div_(255)
        boxes, labels = self.targets[index]
        return {"inputs": gray.expand(3, -1, -1).contiguous(), "boxes": boxes.clone(), "labels": labels.clone(),
                "image_id": self.coco.images[index]["id"]}

    def collate(self, samples: list[dict]) -> dict:
        h = max(s["inputs"].shape[1] for s in samples)
        w = max(s["inputs"].shape[2] for s in samples)
        images = torch.ones(len(samples), 3, h, w)  # pad with white paper
        for i, s in enumerate(samples):
            images[i, :, : s["inputs"].shape[1], : s["inputs"].shape[2]] = s["inputs"]
        return {"inputs": images, "boxes": [s["boxes"] for s in samples], "labels": [s["labels"] for s in samples],
                "image_id": torch.tensor([s["image_id"] for s in samples])}


class RenderedTables(DetectionPages):
    """Generated pages (bordered and borderless tables with spans, text, rules) with exact boxes and structure:
    ``n_pages`` for the train split, ``eval_pages`` for val and test (each split its own seed)."""

    def __init__(self, root=None, split: str = "train", classes: Literal["cascadetabnet", "tables"] = "cascadetabnet",
                 n_pages: Annotated[int, Ge(1)] = 200, eval_pages: Annotated[int, Ge(1)] = 40,
                 dpi: Annotated[int, Interval(ge=18, le=300)] = 36,
                 seed: Annotated[int, Ge(0)] = 0, annotation_file: str | None = None):
        super().__init__(root, split, classes)
        if dpi % 2:
            raise ValueError(f"dpi must be even (a 612 pt page is then a whole number of pixels), got {dpi}")
        if annotation_file is not None:  # a user-provided COCO file (relative to root)
            self._load(self.root / annotation_file)
            return
        n = n_pages if split == "train" else eval_pages
        if n < 1:
            raise ValueError(f"n_pages and eval_pages must be >= 1, got {n}")
        self._load(rendered_pages(self.root, split, n, dpi, seed) / "annotations.json")

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        import importlib.util

        from .render import available_fonts

        problems = []
        if importlib.util.find_spec("reportlab") is None:
            problems.append("reportlab is not installed: pip install 'panconv-documents[render]'")
        if shutil.which("pdftoppm") is None:
            problems.append("pdftoppm is not installed: apt-get install poppler-utils")
        if not available_fonts():
            problems.append("no fonts: apt-get install fonts-dejavu-core fonts-liberation")
        return problems

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        _write_example(tmp_dir, broken=False)
        return {"root": tmp_dir, "split": "train", "annotation_file": "example/annotations.json"}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        _write_example(tmp_dir, broken=True)
        return {"root": tmp_dir, "split": "train", "annotation_file": "example/annotations.json"}


def _write_example(tmp_dir: Path, broken: bool) -> None:
    """Two tiny pages drawn with PIL (no reportlab needed) and their COCO file."""
    from PIL import Image, ImageDraw

    folder = Path(tmp_dir) / "example"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(2):
        im = Image.new("L", (64, 48), 255)
        ImageDraw.Draw(im).rectangle([8, 8, 40, 30], outline=0)
        im.save(folder / f"p{i}.png")
        images.append({"id": i, "file_name": f"p{i}.png", "width": 64, "height": 48})
        annotations.append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "bbox": [8, 8, 32, 22],
                            "area": 704, "iscrowd": 0})
        annotations.append({"id": 2 * i + 2, "image_id": i, "category_id": 2, "bbox": [8, 8, 16, 11],
                            "area": 176, "iscrowd": 0})
    if broken:
        annotations[1]["bbox"] = [8, 8, 16]
    write_coco(folder / "annotations.json", images, annotations,
               [{"id": 1, "name": "bordered"}, {"id": 2, "name": "cell"}, {"id": 3, "name": "borderless"}])
