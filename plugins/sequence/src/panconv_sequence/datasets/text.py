"""Byte-level text for language modelling: windows of ``length`` bytes, targets shifted by one.

Sources (no download at run time):

* ``python-docs`` (default): the Python documentation's topic texts that ship with every CPython
  interpreter as ``pydoc_data.topics`` (what ``help("if")`` prints: the language reference's chapters,
  ~460 KB of English prose and grammar for CPython 3.11). License: the PSF License Agreement, under
  which the documentation is distributed with Python; nothing to install. The text depends on the
  Python version (the topics are concatenated in sorted key order): compare figures on one version.
* ``files``: every ``*.txt`` under ``<root>/<subdir>`` (default ``<root>/bytetext``), sorted by path and
  concatenated — the data root override for any other corpus (e.g. a Debian-packaged book copied there).

The byte stream is split by contiguous ranges (default 90 % / 5 % / 5 % for train / val / test, in that
order), so no window of one split overlaps another. Each split is cut into windows of ``length + 1``
bytes starting every ``stride`` bytes (default ``length``: consecutive, non-overlapping targets);
an item is ``{"inputs": bytes[t : t+L], "targets": bytes[t+1 : t+L+1]}`` as ``long`` ids in ``[0, 256)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

SOURCES = ("python-docs", "files")


def python_docs_bytes() -> bytes:
    """The ``pydoc_data.topics`` texts of this interpreter, in sorted topic order, as UTF-8 bytes."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics)).encode("utf-8")


def read_text_files(directory: Path, pattern: str = "*.txt") -> bytes:
    """Every file matching ``pattern`` under ``directory`` (recursively, sorted), concatenated with blank lines.

    A file with a NUL byte is not text: :class:`~panconv.errors.DataError` names it.
    """
    files = sorted(p for p in directory.rglob(pattern) if p.is_file())
    if not files:
        raise DataError(f"{directory}: no {pattern} files (ByteText source 'files' reads <root>/<subdir>/**/{pattern})")
    parts = []
    for path in files:
        data = path.read_bytes()
        nul = data.find(b"\x00")
        if nul >= 0:
            line = data.count(b"\n", 0, nul) + 1
            raise DataError(f"{path}:{line}: not a text file (NUL byte at offset {nul})")
        parts.append(data)
    return b"\n\n".join(parts)


class ByteText(Dataset):
    """Byte-level language-modelling windows over a text corpus (see the module docstring).

    Args:
        source: ``python-docs`` or ``files``.
        length: window length ``L`` (inputs and targets are ``L`` bytes each).
        stride: start-to-start distance of windows (default ``length``).
        fractions: the train / val / test shares of the byte stream (contiguous, in that order).
        subdir, pattern: where ``files`` looks under the data root.
        max_bytes: use only the first ``max_bytes`` of the corpus (before splitting); ``None``: all.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("vocab_size",)

    def __init__(self, root=None, split: str = "train", source: Literal["python-docs", "files"] = "python-docs",
                 length: Annotated[int, Ge(1)] = 256, stride: Annotated[int, Ge(1)] | None = None,
                 fractions: tuple[Annotated[float, Interval(gt=0, lt=1)], ...] = (0.9, 0.05, 0.05),
                 subdir: str = "bytetext", pattern: str = "*.txt", max_bytes: Annotated[int, Ge(2)] | None = None):
        super().__init__(root, split)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if length < 1 or (stride is not None and stride < 1):
            raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
        fractions = tuple(float(f) for f in fractions)
        if len(fractions) != 3 or any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise ValueError(f"fractions must be three positive shares (train, val, test) summing to <= 1, "
                             f"got {fractions}")
        self.source, self.length, self.stride = source, length, stride or length
        data = python_docs_bytes() if source == "python-docs" else read_text_files(self.root / subdir, pattern)
        if max_bytes is not None:
            data = data[:max_bytes]
        total = len(data)
        bounds, cumulative = [0], 0.0
        for share in fractions:  # from cumulative shares: shares summing to 1 end exactly at the last byte
            cumulative += share
            bounds.append(min(total, int(round(cumulative * total))))
        index = self.splits.index(split)
        start, end = bounds[index], min(bounds[index + 1], total)
        self.data = torch.frombuffer(bytearray(data[start:end]), dtype=torch.uint8)
        self.span = (start, end)
        where = "pydoc_data.topics" if source == "python-docs" else str(self.root / subdir)
        if len(self.data) < length + 1:
            raise DataError(f"{where}: the {split} split has {len(self.data)} bytes, fewer than one window of "
                            f"{length} + 1 (a smaller length, other fractions or more text)")

    def __len__(self) -> int:
        return (len(self.data) - self.length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        window = self.data[index * self.stride: index * self.stride + self.length + 1].long()
        return {"inputs": window[:-1], "targets": window[1:]}

    @property
    def metadata(self) -> dict:
        return {"vocab_size": 256}

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        return []  # the default source ships with Python; 'files' reports its missing directory when built

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        text = "The quick brown fox jumps over the lazy dog. " * 20
        (tmp_dir / "bytetext").mkdir()
        (tmp_dir / "bytetext" / "fox.txt").write_text(text)
        return {"root": tmp_dir, "split": "train", "source": "files", "length": 16}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        (tmp_dir / "bytetext").mkdir()
        (tmp_dir / "bytetext" / "binary.txt").write_bytes(b"some text\nmore\x00\x01\x02")
        return {"root": tmp_dir, "split": "train", "source": "files", "length": 4}


