"""Datasets of panconv-documents.

Generated pages and the pages of the tabula-py PDFs are built once and cached under
``<data root>/documents/``; where the data root is read-only (a shared, mounted data set), under
the default root ``~/.cache/panconv/documents/`` instead. Inputs (the tabula-py sdist) are looked
for in both places, data root first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_ROOT = Path("~/.cache/panconv").expanduser()


def _writable(directory: Path) -> bool:
    """Whether ``directory`` (or its nearest existing parent) may be written: the process may, and the
    folder is not marked read-only (no owner write bit: a shared data folder, respected even by root)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.access(existing, os.W_OK) and bool(existing.stat().st_mode & stat.S_IWUSR)


def cache_dir(root: Path, *parts: str) -> Path:
    """``<root>/documents/<parts>`` when it can be written, else under the default root."""
    preferred = Path(root) / "documents" / Path(*parts)
    if preferred.exists() or _writable(preferred):
        return preferred
    return DEFAULT_ROOT / "documents" / Path(*parts)


def find_input(root: Path, name: str) -> Path | None:
    """``<root>/documents/<name>``, else ``~/.cache/panconv/documents/<name>``; None when neither exists."""
    for base in (Path(root), DEFAULT_ROOT):
        path = base / "documents" / name
        if path.is_file():
            return path
    return None
