"""The knowledge-tracing benchmarks in the 3-line format of the DKVMN release.

Layout under the data root: ``<root>/knowledge-tracing/<name>/{train,test}.csv`` (assist2009_updated,
assist2015, STATICS, synthetic-5; see ``shared/data/knowledge-tracing/README.md``). Every student is
three lines:

1. ``n``, the number of answers;
2. ``n`` comma-separated skill (exercise) ids, 1-based;
3. ``n`` comma-separated responses, 1 = correct, 0 = wrong.

A trailing comma on lines 2-3 (synthetic-5 has one), spaces around tokens, ``\\r\\n`` line ends, a UTF-8
byte-order mark and blank lines at the end of the file are accepted. Anything else is a one-line
``DataError "file:line: ..."`` (tokens cut to 40 characters): a file that is not UTF-8 text, an empty
file, a count that is not a non-negative integer, a count that disagrees with the number of ids or
responses, an id that is not an integer in ``1 .. num_skills`` (or ``1 .. MAX_SKILLS`` when
``num_skills`` is left to the data), a response other than 0/1, a record cut short at the end of the file.

Splits: ``train`` and ``val`` come from ``train.csv``: a seeded ``val_fraction`` of its *students* is
held out for validation (before windowing, so no student is in both); ``test`` is ``test.csv``.

Windowing (the DKVMN convention): a history longer than ``max_len`` is cut into consecutive chunks of
``max_len`` answers (the last one shorter); a chunk shorter than ``min_len`` is dropped (with the default
2, a chunk of one answer, which has no next answer to predict). Each chunk is one sequence; the models
predict every answer of a chunk but its first from the answers before it in the chunk.

``num_skills`` (the size of the models' skill tables) is the largest id over ``train.csv`` and
``test.csv`` unless given, so every split reports the same metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

#: the largest skill id accepted when ``num_skills`` is not given: ids size the embedding tables
#: (2 x num_skills rows), so a crafted id cannot ask for a huge allocation
MAX_SKILLS = 100_000
_FILES = {"train": "train.csv", "val": "train.csv", "test": "test.csv"}
_MAX_DIGITS = 9


def _show(text: str, limit: int = 40) -> str:
    """``repr`` of a token cut to a readable length."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(path: Path, data: bytes) -> str:
    """The file's text (UTF-8, optional BOM); one-line DataError naming file:line otherwise."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}:1: UTF-16 text (byte-order mark {data[:2].hex()}); save the file as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}:{_line_of(data, nul)}: binary data (NUL byte at offset {nul}); "
                        f"expected UTF-8 text in the 3-line format (count / skill ids / responses)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        raise DataError(f"{path}:{_line_of(data, offset)}: not UTF-8 text (byte 0x{data[offset]:02x} "
                        f"at offset {offset}); save the file as UTF-8") from None


def _integers(path: Path, lineno: int, line: str, what: str) -> list[int]:
    """The comma-separated non-negative integers of a line (an empty last token is a trailing comma)."""
    tokens = [t.strip() for t in line.split(",")]
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()
    if tokens == [""]:
        return []
    values = []
    for token in tokens:
        if not (token.isascii() and token.isdigit()):
            if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
                raise DataError(f"{path}:{lineno}: negative {what} {_show(token)}")
            raise DataError(f"{path}:{lineno}: {_show(token)} is not an integer {what}")
        if len(token) > _MAX_DIGITS:
            raise DataError(f"{path}:{lineno}: {what} {_show(token)} is too large")
        values.append(int(token))
    return values


def read_records(path: Path, max_id: int) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Parse one 3-line file: per-student skill ids and responses (int64 arrays) and each record's
    first line number. ``max_id``: the largest id accepted (ids are 1-based)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = _decode(path, data).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}:1: empty file; expected records of 3 lines (count / skill ids / responses)")
    skills, responses, starts = [], [], []
    for first in range(0, len(lines), 3):
        if first + 2 >= len(lines):
            missing = "skill ids and responses lines" if first + 1 >= len(lines) else "responses line"
            raise DataError(f"{path}:{len(lines)}: the record that starts at line {first + 1} has no {missing} "
                            f"(the file ends; every student is 3 lines: count / skill ids / responses)")
        count_line = lines[first].strip()
        if not (count_line.isascii() and count_line.isdigit()):
            raise DataError(f"{path}:{first + 1}: {_show(count_line)} is not a count of answers (expected a "
                            f"non-negative integer on the first line of each 3-line record)")
        if len(count_line) > _MAX_DIGITS:
            raise DataError(f"{path}:{first + 1}: count {_show(count_line)} is too large")
        n = int(count_line)
        ids = _integers(path, first + 2, lines[first + 1], "skill id")
        answers = _integers(path, first + 3, lines[first + 2], "response")
        for lineno, values, what in ((first + 2, ids, "skill ids"), (first + 3, answers, "responses")):
            if len(values) != n:
                raise DataError(f"{path}:{lineno}: {len(values)} {what}, but line {first + 1} counts {n} answers")
        ids_a = np.asarray(ids, dtype=np.int64)
        ans_a = np.asarray(answers, dtype=np.int64)
        if n:
            bad = np.nonzero((ids_a < 1) | (ids_a > max_id))[0]
            if len(bad):
                limit = "num_skills" if max_id != MAX_SKILLS else "MAX_SKILLS"
                raise DataError(f"{path}:{first + 2}: skill id {ids_a[bad[0]]} (answer {bad[0] + 1}) is out of range "
                                f"1..{max_id} (ids are 1-based, at most {limit})")
            bad = np.nonzero(ans_a > 1)[0]
            if len(bad):
                raise DataError(f"{path}:{first + 3}: response {ans_a[bad[0]]} (answer {bad[0] + 1}) is not 0 or 1")
        skills.append(ids_a)
        responses.append(ans_a)
        starts.append(first + 1)
    return skills, responses, starts


_CACHE: dict[tuple, tuple] = {}


def _read_cached(path: Path, max_id: int):
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, max_id)
    if key not in _CACHE:
        _CACHE[key] = read_records(path, max_id)
    return _CACHE[key]


def window(skills: list[np.ndarray], responses: list[np.ndarray], max_len: int, min_len: int):
    """Cut each history into consecutive chunks of ``max_len`` answers; drop chunks shorter than ``min_len``."""
    out_s, out_r = [], []
    for s, r in zip(skills, responses):
        for start in range(0, len(s), max_len):
            if len(s) - start >= min_len:
                out_s.append(s[start:start + max_len])
                out_r.append(r[start:start + max_len])
    return out_s, out_r


class KnowledgeTracing(Dataset):
    """Students' answer histories, windowed into sequences of at most ``max_len`` answers.

    Items: ``{"skills": int64 (L,), "responses": int64 (L,)}``; batches (``collate``): ``skills``,
    ``responses`` (``B, T``, right-padded with 0) and ``mask`` (bool, ``True`` on real answers).

    Args:
        root: the data root (the folder holding ``knowledge-tracing/``), as the core resolves it.
        split: ``train``, ``val`` (a seeded ``val_fraction`` of the students of ``train.csv``) or ``test``.
        name: the data-set folder under ``<root>/knowledge-tracing/``.
        max_len: the window length (200 as in the DKVMN and CAKT releases).
        min_len: windows shorter than this are dropped (2: one answer predicts nothing).
        val_fraction: the share of ``train.csv`` students held out as ``val`` (0.2, as CAKT's release).
        seed: seed of the validation split.
        num_skills: the number of skills (ids ``1..num_skills``); default: the largest id in the files.
        max_sequences: ``{split: n}``: keep only ``n`` windows of that split (a seeded random subset, the
            same for every run with this ``seed``), e.g. ``{train: 400, test: 300}``: a budget for slow
            hardware; default: every window of every split.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_skills", "max_len")

    def __init__(self, root=None, split: str = "train", name: str = "assist2009_updated",
                 max_len: Annotated[int, Ge(2)] = 200, min_len: Annotated[int, Ge(2)] = 2,
                 val_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.2,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0,
                 num_skills: Annotated[int, Interval(ge=1, le=MAX_SKILLS)] | None = None,
                 max_sequences: dict[str, Annotated[int, Ge(1)]] | None = None):
        super().__init__(root, split)
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"KnowledgeTracing: name must be a folder name under <root>/knowledge-tracing/, "
                             f"got {name!r}")
        if not 2 <= int(min_len) <= int(max_len):
            raise ValueError(f"KnowledgeTracing: need 2 <= min_len <= max_len, got min_len={min_len}, "
                             f"max_len={max_len}")
        if not 0 <= float(val_fraction) < 1:
            raise ValueError(f"KnowledgeTracing: val_fraction must be in [0, 1), got {val_fraction}")
        max_sequences = dict(max_sequences or {})
        for key, value in max_sequences.items():
            if key not in self.splits or isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KnowledgeTracing: max_sequences must map splits ({', '.join(self.splits)}) to "
                                 f"integers >= 1, got {key!r}: {value!r}")
        if num_skills is not None and not 1 <= int(num_skills) <= MAX_SKILLS:
            raise ValueError(f"KnowledgeTracing: num_skills must be in 1..{MAX_SKILLS}, got {num_skills}")
        self.name, self.max_len, self.min_len = name, int(max_len), int(min_len)
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self.folder = self.root / "knowledge-tracing" / name
        paths = {f: self.folder / f for f in ("train.csv", "test.csv")}
        for path in paths.values():
            if not path.is_file():
                raise DataError(f"{path}: missing; put the '{name}' data (train.csv, test.csv) under {self.folder} "
                                f"(or point --data-root / data.root / $PANCONV_DATA at a folder holding "
                                f"knowledge-tracing/{name})")
        max_id = int(num_skills) if num_skills is not None else MAX_SKILLS
        parsed = {f: _read_cached(p, max_id) for f, p in paths.items()}
        largest = max((int(s.max()) for sk, _, _ in parsed.values() for s in sk if len(s)), default=0)
        if largest == 0:
            raise DataError(f"{paths['train.csv']}:1: no answers in train.csv or test.csv")
        self.num_skills = int(num_skills) if num_skills is not None else largest
        self.file = paths[_FILES[split]]
        skills, responses, _ = parsed[_FILES[split]]
        if split in ("train", "val"):
            chosen = self.student_split(len(skills))[split]
            skills, responses = [skills[i] for i in chosen], [responses[i] for i in chosen]
        self.num_students = len(skills)
        self.skills, self.responses = window(skills, responses, self.max_len, self.min_len)
        if max_sequences.get(split, len(self.skills)) < len(self.skills):
            keep = np.sort(np.random.default_rng((self.seed, 1)).permutation(len(self.skills))[:max_sequences[split]])
            self.skills, self.responses = [self.skills[i] for i in keep], [self.responses[i] for i in keep]
        if not self.skills:
            raise DataError(f"{self.file}:1: split '{split}' has no sequence of at least {self.min_len} answers "
                            f"({self.num_students} students)")
        self.num_answers = int(sum(len(s) for s in self.skills))

    def student_split(self, n: int) -> dict[str, np.ndarray]:
        """Indices of the ``train.csv`` students in ``train`` and ``val`` (seeded, disjoint, sorted)."""
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = int(round(self.val_fraction * n))
        if self.val_fraction > 0 and n > 1:
            n_val = min(max(n_val, 1), n - 1)
        return {"val": np.sort(order[:n_val]), "train": np.sort(order[n_val:])}

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """Which data sets are present under ``<root>/knowledge-tracing/`` (``panconv doctor``)."""
        folder = Path(root) / "knowledge-tracing"
        present = [p.name for p in folder.glob("*") if (p / "train.csv").is_file() and (p / "test.csv").is_file()] \
            if folder.is_dir() else []
        if not present:
            return [f"no data set under {folder} (each needs <name>/train.csv and test.csv; assist2009_updated, "
                    f"assist2015, STATICS, synthetic-5 are the papers'): point --data-root or $PANCONV_DATA at "
                    f"a folder holding knowledge-tracing/"]
        return []

    # ---- Dataset protocol
    def __len__(self) -> int:
        return len(self.skills)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"skills": self.skills[index], "responses": self.responses[index]}

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence of the batch: ``skills``, ``responses`` (int64), ``mask`` (bool)."""
        return collate_sequences(samples)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_skills": self.num_skills, "max_len": self.max_len, "num_students": self.num_students,
                "num_sequences": len(self.skills), "num_answers": self.num_answers}

    def __repr__(self) -> str:
        return (f"KnowledgeTracing(name={self.name!r}, split={self.split!r}, num_skills={self.num_skills}, "
                f"students={self.num_students}, sequences={len(self)}, answers={self.num_answers})")

    # ---- conformance-kit examples
    @classmethod
    def example(cls, tmp_dir) -> dict:
        folder = Path(tmp_dir) / "knowledge-tracing" / "tiny"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.csv").write_text("5\n1,2,1,3,2\n0,1,1,0,1\n3\n2,2,3,\n1,0,1,\n4\n3,1,1,2\n1,1,0,1\n"
                                          "2\n1,3\n0,0\n")
        (folder / "test.csv").write_text("3\n1,2,3\n1,0,1\n")
        return {"root": str(tmp_dir), "name": "tiny", "max_len": 4, "val_fraction": 0.25}

    @classmethod
    def broken_example(cls, tmp_dir) -> dict:
        folder = Path(tmp_dir) / "knowledge-tracing" / "broken"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.csv").write_text("3\n1,2,3\n1,0,2\n")
        (folder / "test.csv").write_text("1\n1\n1\n")
        return {"root": str(tmp_dir), "name": "broken"}


def collate_sequences(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Items ``{"skills", "responses"}`` -> right-padded ``(B, T)`` tensors and the ``mask`` of real answers."""
    lengths = [len(s["skills"]) for s in samples]
    width = max(lengths) if lengths else 0
    skills = np.zeros((len(samples), width), dtype=np.int64)
    responses = np.zeros((len(samples), width), dtype=np.int64)
    for i, (sample, n) in enumerate(zip(samples, lengths)):
        skills[i, :n] = sample["skills"]
        responses[i, :n] = sample["responses"]
    mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    return {"skills": torch.from_numpy(skills), "responses": torch.from_numpy(responses),
            "mask": torch.from_numpy(mask)}
