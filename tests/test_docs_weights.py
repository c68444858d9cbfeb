"""Every weight map a plugin keeps beside its models is listed in the user guide's "Published weights" table.

A map is a module-level ``map_*_state_dict`` function in ``plugins/*/src/panconv_*/models/*.py`` (listed as
``panconv_<plugin>.models.<module>.<function>``; ``{a,b}`` in the guide stands for each of a and b) or a
``load_official_state_dict`` method (listed as ``<Class>.load_official_state_dict``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "user-guide.md"


def _expand(text: str) -> str:
    """``a.{b,c}.d`` -> ``a.b.d a.c.d`` (one level of braces, as the table writes them)."""
    return re.sub(r"([\w.]*)\{([\w,]+)\}([\w.]*)",
                  lambda m: " ".join(f"{m.group(1)}{part}{m.group(3)}" for part in m.group(2).split(",")), text)


def weight_maps() -> list[str]:
    found = []
    for path in sorted(ROOT.glob("plugins/*/src/panconv_*/models/*.py")):
        module = ".".join(path.relative_to(path.parents[2]).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and re.fullmatch(r"map_\w*state_dict", node.name):
                found.append(f"{module}.{node.name}")
            if isinstance(node, ast.ClassDef):
                found += [f"{node.name}.{f.name}" for f in node.body
                          if isinstance(f, ast.FunctionDef) and f.name == "load_official_state_dict"]
    return found


def test_the_user_guide_lists_every_weight_map():
    maps = weight_maps()
    assert len(maps) >= 20  # the scan finds them (a moved folder would find none)
    section = GUIDE.read_text().split("**Published weights", 1)[1].split("\n\n```", 1)[0]
    listed = _expand(section)
    missing = [m for m in maps if not re.search(rf"(?<![\w.]){re.escape(m)}\b", listed)]
    assert not missing, f"docs/user-guide.md 'Published weights' does not list: {', '.join(missing)}"
