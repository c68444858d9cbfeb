"""Readers for the three sequence formats the plugin consumes: FASTA, FASTQ and Stockholm (``.gz`` too).

Each reader yields plain records and raises :class:`panconv.errors.DataError` with a one-line message
naming ``file:line`` for a malformed record, so a broken download or a truncated file is reported where
it is, not as a shape error three layers later.

* FASTA: ``>id description`` then sequence lines (wrapped or not). Blank lines are allowed; text before
  the first header, an empty header, a record without sequence and characters that are not IUPAC letters
  (or ``-``/``.``/``*`` gaps and stops) are errors.
* FASTQ: four-line records ``@id``, sequence, ``+[id]``, qualities (one line each, as Illumina and the
  bowtie2/kallisto example reads are written). A missing ``@``/``+``, a quality string of another length
  than the sequence, or a record truncated by the end of the file are errors. Qualities are decoded as
  Phred+33.
* Stockholm (``# STOCKHOLM 1.0`` ... ``//``): the alignment of one or more blocks of ``name  aligned-seq``
  lines; ``#=GF``/``#=GS``/``#=GR``/``#=GC`` markup is kept as ``markup`` (GF) and otherwise skipped. A
  missing header or terminator, a line with no sequence, or rows of unequal aligned length are errors.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from panconv.errors import DataError

#: IUPAC nucleotide and amino-acid letters, gaps and stop: what a FASTA sequence line may hold
_SEQUENCE_CHARS = re.compile(r"^[A-Za-z\-.*]*$")


@dataclass
class FastaRecord:
    id: str
    description: str
    sequence: str
    line: int  # 1-based line of the header


@dataclass
class FastqRecord:
    id: str
    sequence: str
    quality: list[int]
    line: int


@dataclass
class Alignment:
    """A Stockholm alignment: ``names[i]`` aligned as ``rows[i]`` (equal lengths); ``markup``: the ``#=GF`` lines."""

    names: list[str]
    rows: list[str]
    markup: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def length(self) -> int:
        return len(self.rows[0]) if self.rows else 0


def open_text(path: str | Path) -> io.TextIOBase:
    """Open ``path`` as text, transparently gunzipping ``*.gz``; a missing file is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line_number, line without the newline)``; a corrupt gzip stream is a DataError naming the file."""
    with open_text(path) as handle:
        number = 0
        try:
            for number, line in enumerate(handle, 1):  # noqa: B007 - number is used after the loop
                yield number, line.rstrip("\r\n")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path}:{number + 1}: unreadable ({type(exc).__name__}: {exc})") from exc


def read_fasta(path: str | Path) -> Iterator[FastaRecord]:
    """The records of a FASTA file, in order (see the module docstring for what is an error)."""
    header: tuple[str, str, int] | None = None
    chunks: list[str] = []
    for number, line in _lines(path):
        if line.startswith(">"):
            if header is not None:
                yield _fasta_record(path, header, chunks)
            name, _, description = line[1:].strip().partition(" ")
            if not name:
                raise DataError(f"{path}:{number}: empty FASTA header ('>' without an identifier)")
            header, chunks = (name, description.strip(), number), []
        elif not line.strip():
            continue
        elif header is None:
            raise DataError(f"{path}:{number}: sequence text before the first '>' header (not FASTA?)")
        else:
            text = line.strip()
            if not _SEQUENCE_CHARS.match(text):
                bad = next(c for c in text if not (c.isalpha() or c in "-.*"))
                raise DataError(f"{path}:{number}: invalid character {bad!r} in the sequence of '{header[0]}'")
            chunks.append(text)
    if header is None:
        raise DataError(f"{path}:1: no FASTA record (no '>' header)")
    yield _fasta_record(path, header, chunks)


def _fasta_record(path, header: tuple[str, str, int], chunks: list[str]) -> FastaRecord:
    name, description, line = header
    if not chunks:
        raise DataError(f"{path}:{line}: FASTA record '{name}' has no sequence")
    return FastaRecord(name, description, "".join(chunks), line)


def read_fastq(path: str | Path) -> Iterator[FastqRecord]:
    """The records of a four-line FASTQ file (Phred+33 qualities)."""
    record: list[tuple[int, str]] = []
    for number, line in _lines(path):
        if not record and not line.strip():
            continue  # blank lines between records (and at the end)
        record.append((number, line))
        if len(record) == 4:
            yield _fastq_record(path, record)
            record = []
    if record:
        raise DataError(f"{path}:{record[0][0]}: truncated FASTQ record ({len(record)} of 4 lines before the end "
                        f"of the file)")


def _fastq_record(path, lines: list[tuple[int, str]]) -> FastqRecord:
    (n1, head), (n2, seq), (n3, plus), (n4, qual) = lines
    if not head.startswith("@") or len(head) < 2:
        raise DataError(f"{path}:{n1}: FASTQ header must start with '@' and an identifier, got {head[:30]!r}")
    if not plus.startswith("+"):
        raise DataError(f"{path}:{n3}: FASTQ separator line must start with '+', got {plus[:30]!r}")
    if not _SEQUENCE_CHARS.match(seq):
        raise DataError(f"{path}:{n2}: invalid character in the FASTQ sequence of '{head[1:].split()[0]}'")
    if len(qual) != len(seq):
        raise DataError(f"{path}:{n4}: quality string has {len(qual)} characters, the sequence {len(seq)}")
    if any(ord(c) < 33 or ord(c) > 126 for c in qual):
        raise DataError(f"{path}:{n4}: quality characters outside Phred+33 ('!'..'~')")
    return FastqRecord(head[1:].split()[0], seq, [ord(c) - 33 for c in qual], n1)


def read_stockholm(path: str | Path) -> Iterator[Alignment]:
    """The alignments of a Stockholm file (several may follow one another, each ending with ``//``)."""
    state: dict | None = None
    last = 0
    for number, line in _lines(path):
        last = number
        stripped = line.strip()
        if state is None:
            if not stripped:
                continue
            if not stripped.startswith("# STOCKHOLM"):
                raise DataError(f"{path}:{number}: expected the '# STOCKHOLM 1.0' header, got {stripped[:30]!r}")
            state = {"names": [], "rows": {}, "markup": {}, "start": number}
            continue
        if stripped == "//":
            yield _alignment(path, state, number)
            state = None
        elif not stripped:
            continue
        elif stripped.startswith("#=GF"):
            parts = stripped.split(None, 2)
            if len(parts) == 3:
                state["markup"][parts[1]] = (state["markup"].get(parts[1], "") + " " + parts[2]).strip()
        elif stripped.startswith("#"):
            continue  # #=GS / #=GR / #=GC markup and comments
        else:
            parts = stripped.split()
            if len(parts) != 2:
                raise DataError(f"{path}:{number}: expected 'name aligned-sequence', got {len(parts)} fields")
            name, row = parts
            if not _SEQUENCE_CHARS.match(row):
                raise DataError(f"{path}:{number}: invalid character in the aligned sequence of '{name}'")
            if name not in state["rows"]:
                state["names"].append(name)
                state["rows"][name] = []
            state["rows"][name].append((number, row))
    if state is not None:
        raise DataError(f"{path}:{last}: Stockholm alignment started at line {state['start']} has no '//' terminator")


def _alignment(path, state: dict, end: int) -> Alignment:
    if not state["names"]:
        raise DataError(f"{path}:{end}: Stockholm alignment with no sequences")
    rows, length, first = [], None, None
    for name in state["names"]:
        pieces = state["rows"][name]
        row = "".join(piece for _, piece in pieces)
        if length is None:
            length, first = len(row), name
        elif len(row) != length:
            raise DataError(f"{path}:{pieces[-1][0]}: aligned sequence '{name}' has {len(row)} columns, "
                            f"'{first}' has {length}")
        rows.append(row)
    return Alignment(list(state["names"]), rows, dict(state["markup"]), str(path))


__all__ = ["Alignment", "FastaRecord", "FastqRecord", "open_text", "read_fasta", "read_fastq", "read_stockholm"]
