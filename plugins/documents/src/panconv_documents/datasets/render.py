"""A seeded page generator with exact table ground truth.

Each page is laid out in PDF points (1/72 inch, origin top-left here; reportlab's origin is
bottom-left and :func:`render_pdf` flips it): paragraphs of words, horizontal rules, and one or
two tables, bordered (every cell edge ruled) or borderless (at most booktabs-style rules above and
below the header and at the bottom). Tables have row and column spans. The layout is drawn with
reportlab in fonts from the Debian packages fonts-dejavu-core and fonts-liberation, the PDF is
rasterised with ``pdftoppm`` (poppler-utils), and every box is mapped to pixels by the exact
scale ``dpi / 72`` (pdftoppm renders a 612 x 792 pt page at ``dpi`` into 8.5*dpi x 11*dpi pixels).

Ground truth per table: its box, its grid (row and column boundaries), and its cells
(row, col, row_span, col_span, box, text). Empty cells keep their grid box but have no text.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: page size in points (US letter)
PAGE_W, PAGE_H = 612.0, 792.0
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
              "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf",
              "LiberationSans-Bold.ttf", "LiberationSansNarrow-Regular.ttf")
_WORDS = ("total revenue cost year quarter region north south east west net gross margin units price sample "
          "mean median rate growth index value count share item description amount status date name code "
          "group method result error score model data table page report annual budget").split()


@dataclass
class Cell:
    row: int
    col: int
    row_span: int
    col_span: int
    box: list[float]  # x0, y0, x1, y1 in points (top-left origin)
    text: str = ""


@dataclass
class Table:
    bordered: bool
    box: list[float]
    rows: list[float]  # row boundaries (n_rows + 1 y values)
    cols: list[float]  # column boundaries (n_cols + 1 x values)
    cells: list[Cell] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.rows) - 1

    @property
    def n_cols(self) -> int:
        return len(self.cols) - 1


@dataclass
class Page:
    """What to draw (``strings``: (x, y_baseline, font, size, text); ``lines``: (x0, y0, x1, y1, width))
    and the tables it holds."""

    font: str
    strings: list[tuple] = field(default_factory=list)
    lines: list[tuple] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def available_fonts() -> list[Path]:
    """The TTF files of the generator that are installed (fonts-dejavu-core, fonts-liberation)."""
    return [d / f for f in FONT_FILES for d in FONT_DIRS if (d / f).is_file()]


def _text(rng: random.Random, numeric: bool) -> str:
    if numeric:
        return rng.choice(["{:,}", "{:.1f}", "{:.2f}%", "{}"]).format(rng.uniform(0, 9999) if rng.random() < .5
                                                                      else rng.randint(0, 999))
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 2))).capitalize()


def _string_width(text: str, font: str, size: float) -> float:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return stringWidth(text, font, size)


def layout_table(rng: random.Random, x0: float, y0: float, max_w: float, font: str, size: float,
                 bordered: bool) -> tuple[Table, list[tuple], list[tuple]]:
    """A table with its top-left corner at (x0, y0): grid, spans, cell texts, rules."""
    n_rows, n_cols = rng.randint(3, 9), rng.randint(2, 6)
    row_h = size * rng.uniform(1.6, 2.2)
    weights = [rng.uniform(1.0, 2.5) for _ in range(n_cols)]
    width = max_w * rng.uniform(0.6, 1.0)
    cols = [x0]
    for w in weights:
        cols.append(cols[-1] + width * w / sum(weights))
    rows = [y0 + i * row_h for i in range(n_rows + 1)]
    owner = [[None] * n_cols for _ in range(n_rows)]
    spans = []
    if n_cols >= 3 and rng.random() < 0.6:  # a header cell spanning columns
        c = rng.randint(1, n_cols - 2)
        spans.append((0, c, 1, 2))
    if n_rows >= 4 and rng.random() < 0.5:  # a first-column cell spanning rows
        r = rng.randint(1, n_rows - 2)
        spans.append((r, 0, 2, 1))
    cells: list[Cell] = []
    for r, c, rs, cs in spans:
        cells.append(Cell(r, c, rs, cs, [cols[c], rows[r], cols[c + cs], rows[r + rs]]))
        for i in range(r, r + rs):
            for j in range(c, c + cs):
                owner[i][j] = len(cells) - 1
    for r in range(n_rows):
        for c in range(n_cols):
            if owner[r][c] is None:
                cells.append(Cell(r, c, 1, 1, [cols[c], rows[r], cols[c + 1], rows[r + 1]]))
                owner[r][c] = len(cells) - 1
    cells.sort(key=lambda cell: (cell.row, cell.col))
    strings, lines = [], []
    numeric_cols = {c for c in range(1, n_cols) if rng.random() < 0.7}
    pad = 3.0
    for cell in cells:
        if cell.row > 0 and rng.random() < 0.08:
            continue  # an empty cell
        cw = cell.box[2] - cell.box[0] - 2 * pad
        text = _text(rng, cell.row > 0 and cell.col in numeric_cols)
        while text and _string_width(text, font, size) > cw:
            text = text[:-1]
        if not text:
            continue
        cell.text = text
        tw = _string_width(text, font, size)
        x = cell.box[0] + pad if cell.col == 0 else (cell.box[0] + cell.box[2] - tw) / 2
        y = (cell.box[1] + cell.box[3]) / 2 + size * 0.35
        strings.append((x, y, font, size, text))
    x1, y1 = cols[-1], rows[-1]
    if bordered:
        lw = rng.choice([0.5, 0.8, 1.0])
        for cell in cells:
            a, b, c2, d = cell.box
            lines += [(a, b, c2, b, lw), (a, d, c2, d, lw), (a, b, a, d, lw), (c2, b, c2, d, lw)]
    else:
        style = rng.choice(["none", "booktabs", "header"])
        if style in ("booktabs", "header"):
            lines.append((x0, rows[1], x1, rows[1], 0.6))
        if style == "booktabs":
            lines += [(x0, y0, x1, y0, 1.0), (x0, y1, x1, y1, 1.0)]
    table = Table(bordered, [x0, y0, x1, y1], rows, cols, cells)
    return table, strings, lines


def layout_page(seed: int, fonts: list[str]) -> Page:
    """A page of paragraphs, rules and one or two tables (at least one), seeded."""
    rng = random.Random(seed)
    font = rng.choice(fonts)
    page = Page(font=font)
    margin = rng.uniform(40, 70)
    x0, max_w = margin, PAGE_W - 2 * margin
    y = margin
    n_tables = rng.choice([1, 1, 2])
    blocks = ["text"] * rng.randint(1, 3) + ["table"] * n_tables + ["rule"] * rng.randint(0, 2)
    rng.shuffle(blocks)
    for block in blocks:
        size = rng.choice([8, 9, 10, 11])
        if block == "text":
            for _ in range(rng.randint(2, 6)):
                line, width = [], 0.0
                while True:
                    word = rng.choice(_WORDS)
                    w = _string_width(word + " ", font, size)
                    if width + w > max_w:
                        break
                    line.append(word)
                    width += w
                if y + size * 1.4 > PAGE_H - margin:
                    break
                page.strings.append((x0, y + size, font, size, " ".join(line)))
                y += size * 1.4
            y += size
        elif block == "rule":
            if y + 10 < PAGE_H - margin:
                page.lines.append((x0, y + 4, x0 + max_w, y + 4, rng.choice([0.5, 1.0])))
                y += 12
        else:
            table, strings, lines = layout_table(rng, x0 + rng.uniform(0, 20), y + 6, max_w - 20, font, size,
                                                 bordered=rng.random() < 0.5)
            if table.box[3] > PAGE_H - margin:
                continue
            page.tables.append(table)
            page.strings += strings
            page.lines += lines
            y = table.box[3] + 16
    if not page.tables:  # every page holds a table: restart below the top margin with a small one
        table, strings, lines = layout_table(rng, x0, margin, max_w, font, 8, bordered=rng.random() < 0.5)
        page = Page(font=font, strings=strings, lines=lines, tables=[table])
    return page


def register_fonts() -> list[str]:
    """Register the installed generator fonts with reportlab; their names."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    names = []
    for path in available_fonts():
        name = path.stem
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(path)))
        names.append(name)
    if not names:
        raise RuntimeError("no generator font found: apt-get install fonts-dejavu-core fonts-liberation")
    return names


def render_pdf(pages: list[Page], path: Path) -> None:
    """Draw the pages into one PDF (reportlab; y flipped to its bottom-left origin)."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H), invariant=1)
    for page in pages:
        for x0, y0, x1, y1, width in page.lines:
            c.setLineWidth(width)
            c.line(x0, PAGE_H - y0, x1, PAGE_H - y1)
        for x, y, font, size, text in page.strings:
            c.setFont(font, size)
            c.drawString(x, PAGE_H - y, text)
        c.showPage()
    c.save()


def rasterise(pdf: Path, out_dir: Path, dpi: int) -> list[Path]:
    """``pdftoppm -r dpi -gray -png`` every page of ``pdf``; the PNG paths in page order."""
    if shutil.which("pdftoppm") is None:
        raise RuntimeError("pdftoppm not found: apt-get install poppler-utils")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), f"{tmp}/p"], check=True,
                       capture_output=True)
        produced = sorted(Path(tmp).glob("p-*.png"), key=lambda p: int(p.stem.split("-")[-1]))
        moved = []
        for i, png in enumerate(produced):
            target = out_dir / f"page_{i:05d}.png"
            png.replace(target)
            moved.append(target)
    return moved


def to_pixels(page: Page, dpi: int) -> list[dict]:
    """The page's tables as JSON-ready dicts with every coordinate in pixels (scale dpi / 72)."""
    s = dpi / 72.0
    out = []
    for t in page.tables:
        d = asdict(t)
        d["box"] = [v * s for v in t.box]
        d["rows"] = [v * s for v in t.rows]
        d["cols"] = [v * s for v in t.cols]
        for cell in d["cells"]:
            cell["box"] = [v * s for v in cell["box"]]
        out.append(d)
    return out


def generate(out_dir: Path, n_pages: int, seed: int, dpi: int) -> tuple[list[Path], list[list[dict]], tuple[int, int]]:
    """Lay out, render and rasterise ``n_pages`` pages; (png paths, tables per page in pixels, (H, W))."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fonts = register_fonts()
    pages = [layout_page(seed * 100_003 + i, fonts) for i in range(n_pages)]
    pdf = out_dir / "pages.pdf"
    render_pdf(pages, pdf)
    pngs = rasterise(pdf, out_dir, dpi)
    if len(pngs) != n_pages:
        raise RuntimeError(f"pdftoppm wrote {len(pngs)} pages for {n_pages} in {pdf}")
    return pngs, [to_pixels(p, dpi) for p in pages], (round(PAGE_H * dpi / 72), round(PAGE_W * dpi / 72))
