"""``panconv tables IMAGE_OR_PDF -o OUT``: the tables of a page image or of every page of a PDF, as JSON and HTML.

With ``--model`` (a core-run work dir or checkpoint of a documents detector), CascadeTabNet's pipeline:
detect tables (and cells), then rule-based structure recognition. With ``--lines-only``, no detector: the
tables are the connected grids of ruling lines on the page (bordered tables only). Writes, per page,
``<name>_p<k>.json`` (``{"source", "page", "size", "tables": [...]}``; boxes in pixels of the page image at
``--dpi``) and ``<name>_p<k>.html``; prints one line per page. For a PDF, cell texts come from its text layer
(pdfplumber); images get the structure without text (no OCR here).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from panconv.errors import DataError
from panconv.io import atomic_write_json, atomic_write_text

from ..datasets.tables import load_gray
from ..models.cascadetabnet import bordered_structure, detect_lines, page_structure, structure_to_html


def pages_of(path: Path, dpi: int) -> list[np.ndarray]:
    """Grey pages of a PDF (pdftoppm at ``dpi``) or of one image."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() != ".pdf":
        return [load_gray(path)]
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(path), f"{tmp}/p"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise DataError(f"{path}: pdftoppm could not read it ({result.stderr.strip().splitlines()[-1:]})")
        files = sorted(Path(tmp).glob("p-*.png"), key=lambda p: int(p.stem.split("-")[-1]))
        return [load_gray(f) for f in files]


def ruled_table_boxes(gray: np.ndarray, min_side: int = 8) -> list[list[float]]:
    """Boxes of the connected grids of ruling lines (at least two lines each way) on a page."""
    import cv2

    _, _, horizontal, vertical = detect_lines(gray < 160, min_length=max(8, gray.shape[0] // 60))
    grid = (horizontal | vertical).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(grid, np.ones((3, 3), np.uint8)))
    boxes = []
    for x, y, w, h, _ in stats[1:n]:
        if w >= min_side and h >= min_side:
            boxes.append([float(x), float(y), float(x + w), float(y + h)])
    return boxes


def tables_by_lines(gray: np.ndarray) -> list[dict]:
    out = []
    for box in ruled_table_boxes(gray):
        structure = bordered_structure(gray, box)
        if structure is not None and len(structure["cells"]) >= 2:
            out.append(structure)
    return out


def tables_by_model(model, gray: np.ndarray, threshold: float, device: str,
                    detect_gray: np.ndarray | None = None) -> list[dict]:
    """The detector's tables on a page, structured by the rules on ``gray``. With ``detect_gray`` (the same page at
    the detector's training resolution) the detector sees that one and its boxes are scaled to ``gray``'s pixels:
    the rules need ruling lines and rows that vanish at the low resolutions a detector is trained at."""
    import torch

    seen = gray if detect_gray is None else detect_gray
    x = torch.from_numpy(seen.copy()).float().div(255).expand(3, -1, -1)[None].to(device)
    with torch.no_grad():
        det = model.predict(model({"inputs": x}))[0]
    det.boxes, det.scores, det.labels = det.boxes.cpu(), det.scores.cpu(), det.labels.cpu()
    if detect_gray is not None:
        det.boxes = det.boxes * (gray.shape[1] / detect_gray.shape[1])
    return page_structure(gray, det, model.num_classes, threshold)


def resample(gray: np.ndarray, factor: float) -> np.ndarray:
    """A grey page scaled by ``factor`` (area averaging when shrinking)."""
    import cv2

    size = (max(1, round(gray.shape[1] * factor)), max(1, round(gray.shape[0] * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def fill_text_from_pdf(pdf_path: Path, page_index: int, tables: list[dict], dpi: int) -> None:
    """Cell texts from the PDF's text layer (pdfplumber, when installed): the characters inside each cell box."""
    try:
        import pdfplumber
    except ImportError:
        return
    s = 72.0 / dpi
    with pdfplumber.open(pdf_path) as pdf:
        page = pdf.pages[page_index]
        for table in tables:
            for cell in table["cells"]:
                x0, y0, x1, y1 = (v * s for v in cell["box"])
                box = (max(x0, 0), max(y0, 0), min(x1, float(page.width)), min(y1, float(page.height)))
                if box[2] > box[0] and box[3] > box[1]:
                    cell["text"] = (page.crop(box).extract_text() or "").strip()


def main(args) -> int:
    source = Path(args.input)
    out = Path(args.output)
    if not args.lines_only and args.model is None:
        print("panconv tables: pass --model WORK_DIR_OR_CHECKPOINT (a trained documents detector) or "
              "--lines-only", file=sys.stderr)
        return 2
    model = None
    if not args.lines_only:
        from panconv import load_model

        model = load_model(args.model, config=args.config, device=args.device)
        if not hasattr(model, "structure_thr"):
            print(f"panconv tables: {args.model} is not a documents detector", file=sys.stderr)
            return 2
    threshold = args.threshold if args.threshold is not None else getattr(model, "structure_thr", 0.85)
    out.mkdir(parents=True, exist_ok=True)
    pages = pages_of(source, args.dpi)
    detect_dpi = getattr(args, "detect_dpi", None)
    detect_pages = [None] * len(pages)
    if model is not None and detect_dpi and detect_dpi != args.dpi:
        detect_pages = (pages_of(source, detect_dpi) if source.suffix.lower() == ".pdf"
                        else [resample(page, detect_dpi / args.dpi) for page in pages])
    for k, (gray, detect_gray) in enumerate(zip(pages, detect_pages), start=1):
        tables = (tables_by_lines(gray) if model is None
                  else tables_by_model(model, gray, threshold, args.device, detect_gray=detect_gray))
        if source.suffix.lower() == ".pdf":
            fill_text_from_pdf(source, k - 1, tables, args.dpi)
        stem = f"{source.stem}_p{k}"
        atomic_write_json(out / f"{stem}.json", {"source": str(source), "page": k, "size": list(gray.shape),
                                                  "tables": tables})
        atomic_write_text(out / f"{stem}.html", "\n".join(structure_to_html(t) for t in tables) + "\n")
        shapes = ", ".join(f"{t['n_rows']}x{t['n_cols']}" for t in tables) or "none"
        print(f"{source.name} page {k}: {len(tables)} table(s) ({shapes}) -> {out / stem}.json")
    return 0


