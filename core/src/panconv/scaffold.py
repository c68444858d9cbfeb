"""``panconv new-plugin NAME``: write a ready-to-install plugin package.

The package has the canonical plugin shape (the one ``tests/test_layout.py`` enforces on every
first-party plugin), written from the template files in ``panconv/templates/plugin/``, plus a
tiny generated data set in ``data/NAME/`` that its example config trains on. As generated it
installs, passes its own tests and the conformance kit, and is lint-clean: replace the example
components with yours.
"""

from __future__ import annotations

import keyword
import math
import random
import re
from importlib import resources
from pathlib import Path
from string import Template

from .errors import PanconvError

#: a path part replaced by the package name (``panconv_NAME``)
PACKAGE_PLACEHOLDER = "__package__"
SUFFIX = ".tmpl"


def templates() -> dict[str, str]:
    """Relative output path (with placeholders) -> template text, for every template file."""
    root = resources.files("panconv") / "templates" / "plugin"
    found: dict[str, str] = {}

    def walk(folder, prefix: str) -> None:
        for item in folder.iterdir():
            if item.is_dir():
                walk(item, f"{prefix}{item.name}/")
            elif item.name.endswith(SUFFIX):
                found[prefix + item.name.removesuffix(SUFFIX)] = item.read_text(encoding="utf-8")

    walk(root, "")
    return dict(sorted(found.items()))


def render(name: str) -> dict[str, str]:
    """Relative output path -> file text of the plugin ``name``."""
    out = {}
    for relative, text in templates().items():
        path = "/".join(f"panconv_{name}" if part == PACKAGE_PLACEHOLDER else part for part in relative.split("/"))
        out[path] = Template(text).substitute(name=name)
    return out


def example_data(n: int, seed: int, dim: int = 16) -> str:
    """``n`` CSV rows ``label,x1,...,x16``: noisy sine waves of a slow (label 0) or fast (label 1)
    frequency at a random phase, a task a small convolutional model learns in a few epochs."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        cycles, phase = (1, 4)[label], rng.uniform(0.0, 2 * math.pi)
        values = [math.sin(2 * math.pi * cycles * j / dim + phase) + rng.gauss(0.0, 0.5) for j in range(dim)]
        rows.append(",".join([str(label), *(f"{v:.4f}" for v in values)]))
    return "\n".join(rows) + "\n"


def write_plugin(name: str, output: str | Path = ".") -> Path:
    """Write ``panconv-<name>/`` under ``output``; refuses to overwrite."""
    if not name.isidentifier() or keyword.iskeyword(name) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise PanconvError(f"plugin name {name!r} must be a lower-case Python identifier, e.g. 'demo'")
    root = Path(output) / f"panconv-{name}"
    if root.exists():
        raise PanconvError(f"{root} already exists; choose another name or directory")
    files = render(name)
    for split, (n, seed) in {"train": (512, 0), "val": (128, 1), "test": (128, 2)}.items():
        files[f"data/{name}/{split}.csv"] = example_data(n, seed)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
