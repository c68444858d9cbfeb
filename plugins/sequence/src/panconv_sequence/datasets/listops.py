"""ListOps (Nangia & Bowman 2018) with the Long Range Arena generator's rules (Tay et al. 2021).

A sample is a nested prefix expression over the digits 0-9 with the operators ``MIN``, ``MAX``,
``MED`` (median, truncated to an integer as ``int(np.median(...))``) and ``SM`` (sum modulo
10); the label is its value (10 classes). The LRA generator (``lra_benchmarks/data/listops.py``)
builds a tree top-down from depth 1: below ``max_depth`` a node is an operator with probability
``VALUE_P = 0.25`` (else a digit; at ``max_depth`` always a digit), an operator takes
``randint(2, max_args)`` arguments (both ends included) and is drawn uniformly from the four;
trees whose token count (operators, digits and closing brackets; LRA's parentheses are not
counted and are dropped here, as in the S4 codebase) is not in ``(min_length, max_length)`` are
rejected. LRA's task uses ``max_depth=10, max_args=10, min_length=500, max_length=2000``, the
defaults here. A shorter task (e.g. ``max_length=512``) trains in minutes on a CPU.

Tokens: 0 pad, 1-10 the digits 0-9, 11 ``[MIN``, 12 ``[MAX``, 13 ``[MED``, 14 ``[SM``, 15 ``]``
(``vocab_size`` 16). Items ``{"inputs": (max_length,) ids (0-padded), "labels", "lengths"}``;
``collate`` trims a batch to its longest sequence. Each split is drawn from its own seeded
stream (``numpy.random.SeedSequence([seed, split])``; the tree recursion is a Python loop
fed by numpy blocks of uniforms). ``file`` reads LRA's released TSV instead
(``Source<TAB>Target`` header, then one expression and its label per line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge

from panconv.errors import DataError

from .synthetic import GeneratedTask, Seed

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
TOKENS = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, "]")
TOKEN_ID = {t: i for i, t in enumerate(TOKENS)}
DIGIT0, OP0, CLOSE = 1, 11, 15
VALUE_P = 0.25


def apply_operator(op: str, values: list[int]) -> int:
    """The value of ``op`` (``[MIN``, ``[MAX``, ``[MED``, ``[SM``) on its argument values."""
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        ordered, mid = sorted(values), len(values) // 2  # int(np.median(values)), without numpy's overhead
        return ordered[mid] if len(values) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(tokens: list[str]) -> int:
    """The value of a ListOps expression given as tokens (parentheses ignored); raises ValueError if malformed."""
    stack: list[list] = []
    result = None
    for tok in tokens:
        if tok in ("(", ")"):
            continue
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == "]":
            if not stack or len(stack[-1]) < 2:
                raise ValueError("']' closes no operator with arguments")
            op, *args = stack.pop()
            value = apply_operator(op, args)
            if stack:
                stack[-1].append(value)
            elif result is None:
                result = value
            else:
                raise ValueError("more than one top-level expression")
        elif tok.isdigit() and len(tok) == 1:
            if stack:
                stack[-1].append(int(tok))
            elif result is None:
                result = int(tok)
            else:
                raise ValueError("more than one top-level expression")
        else:
            raise ValueError(f"unknown token {tok!r}")
    if stack or result is None:
        raise ValueError("unbalanced expression")
    return result


class _TreeTooLong(Exception):
    pass


class _Uniforms:
    """Uniform [0, 1) draws served one at a time from numpy blocks (a Python float per call is fast)."""

    def __init__(self, rng: np.random.Generator, block: int = 1 << 16):
        self.rng, self.block, self.buf, self.pos = rng, block, [], 0

    def __call__(self) -> float:
        if self.pos == len(self.buf):
            self.buf, self.pos = self.rng.random(self.block).tolist(), 0
        self.pos += 1
        return self.buf[self.pos - 1]


def generate_expression(uniform, max_depth: int, max_args: int, max_length: int) -> tuple[list[int], int]:
    """One LRA tree as token ids and its value; raises ``_TreeTooLong`` once it reaches ``max_length`` tokens.

    ``uniform()`` returns a uniform [0, 1) float (e.g. ``random.Random().random``).
    """
    tokens: list[int] = []
    n_choices = max_args - 1

    def node(depth: int) -> int:
        if (uniform() if depth < max_depth else 1.0) > VALUE_P:
            value = int(uniform() * 10)
            tokens.append(DIGIT0 + value)
        else:
            n_args = 2 + int(uniform() * n_choices)  # randint(2, max_args)
            op = int(uniform() * 4)
            tokens.append(OP0 + op)
            values = [node(depth + 1) for _ in range(n_args)]
            tokens.append(CLOSE)
            value = apply_operator(OPERATORS[op], values)
        if len(tokens) >= max_length:
            raise _TreeTooLong
        return value

    return tokens, node(1)


class ListOps(GeneratedTask):
    """ListOps with the LRA generator's rules (see the module docstring); 10 classes, 16 tokens.

    ``min_length`` < tokens < ``max_length`` (LRA: 500, 2000); ``max_depth``, ``max_args`` (LRA:
    10, 10); ``sizes``: samples per split (LRA: 96,000 / 2,000 / 2,000).
    """

    metadata_keys = ("num_classes", "vocab_size")
    fields = ("labels", "lengths")
    num_classes, vocab_size = 10, len(TOKENS)

    def __init__(self, root=None, split: str = "train", min_length: Annotated[int, Ge(0)] = 500,
                 max_length: Annotated[int, Ge(2)] = 2000, max_depth: Annotated[int, Ge(1)] = 10,
                 max_args: Annotated[int, Ge(2)] = 10, sizes: tuple[int, int, int] = (96000, 2000, 2000),
                 seed: Seed = 0, file: str | None = None):
        if min_length >= max_length - 1:
            raise ValueError(f"min_length ({min_length}) must be below max_length - 1 ({max_length - 1})")
        self.min_length, self.max_length, self.max_depth, self.max_args = min_length, max_length, max_depth, max_args
        super().__init__(root, split, sizes, seed, file)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "vocab_size": self.vocab_size}

    def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        uniform = _Uniforms(rng)
        inputs = np.zeros((n, self.max_length), np.int64)
        labels, lengths = np.zeros(n, np.int64), np.zeros(n, np.int64)
        i = 0
        while i < n:
            try:
                tokens, value = generate_expression(uniform, self.max_depth, self.max_args, self.max_length)
            except _TreeTooLong:
                continue
            if len(tokens) <= self.min_length:
                continue
            inputs[i, :len(tokens)], labels[i], lengths[i] = tokens, value, len(tokens)
            i += 1
        return {"inputs": inputs, "labels": labels, "lengths": lengths}

    def read_npz(self, path: Path) -> dict[str, np.ndarray]:
        if path.suffix == ".npz":
            return super().read_npz(path)
        return self.read_tsv(path)

    def read_tsv(self, path: Path) -> dict[str, np.ndarray]:
        """LRA's ``basic_{train,val,test}.tsv``: a ``Source<TAB>Target`` header, then expression<TAB>label lines."""
        if not path.is_file():
            raise DataError(f"{path}: no such file (ListOps file=...)")
        rows, labels = [], []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if not line or (lineno == 1 and line.startswith("Source")):
                    continue
                parts = line.split("\t")
                if len(parts) != 2 or not parts[1].strip().isdigit():
                    raise DataError(f"{path}:{lineno}: expected '<expression>\\t<label 0-9>'")
                tokens = [t for t in parts[0].split() if t not in ("(", ")")]
                unknown = [t for t in tokens if t not in TOKEN_ID or t == "<pad>"]
                if unknown:
                    raise DataError(f"{path}:{lineno}: unknown token {unknown[0]!r}")
                label = int(parts[1])
                if not 0 <= label <= 9:
                    raise DataError(f"{path}:{lineno}: label {label} is not a digit")
                rows.append([TOKEN_ID[t] for t in tokens])
                labels.append(label)
        if not rows:
            raise DataError(f"{path}: no expressions")
        lengths = np.array([len(r) for r in rows], np.int64)
        inputs = np.zeros((len(rows), max(self.max_length, int(lengths.max()))), np.int64)
        for i, row in enumerate(rows):
            inputs[i, :len(row)] = row
        return {"inputs": inputs, "labels": np.array(labels, np.int64), "lengths": lengths}

    def collate(self, samples: list[dict]) -> dict:
        batch = super().collate(samples)
        batch["inputs"] = batch["inputs"][:, : int(batch["lengths"].max())]
        return batch

    @staticmethod
    def decode(ids) -> list[str]:
        """Token ids (pads dropped) -> tokens."""
        return [TOKENS[int(i)] for i in ids if int(i) != 0]

    @classmethod
    def small_config(cls) -> dict:
        return {"min_length": 4, "max_length": 40, "max_depth": 4, "max_args": 4}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "basic_train.tsv"
        path.write_text("Source\tTarget\n( [MAX 2 9 ] )\t9\n[MIN 3 [FOO 1 ] ]\t1\n", encoding="utf-8")
        return {"file": str(path), **cls.small_config()}


__all__ = ["ListOps", "OPERATORS", "TOKENS", "apply_operator", "evaluate", "generate_expression"]
