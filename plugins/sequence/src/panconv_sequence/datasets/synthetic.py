"""Generated sequence tasks: the shared base and the Hyena/Orchid synthetic tasks.

:class:`GeneratedTask` is the base of every task this plugin *generates* instead of reading
(ListOps, Pathfinder, associative recall, selective copying): each split is drawn from its
own seeded stream (``numpy.random.SeedSequence([seed, split_index])``), so a split is the
same on every machine and the splits never share a draw. Nothing is written to disk. A task
can instead be read from ``file``: an ``.npz`` holding the arrays the task would generate
(``inputs``, and ``labels`` or ``targets``), e.g. one written by :meth:`GeneratedTask.save`;
a malformed file raises :class:`panconv.errors.DataError` naming it.

Tasks here (Hyena, Poli et al. 2023, section 4.1; Orchid, Karami & Ghodsi 2024):

* :class:`AssociativeRecall`: ``k1 v1 k2 v2 ... kn vn q``; keys from the first half of the
  vocabulary, values from the second half, one fixed random key->value map per sequence (a
  repeated key always carries the same value), the query ``q`` is a key of the sequence; the
  label is its value (a ``vocab_size``-way classification read at the last position).
* :class:`SelectiveCopying`: ``n_tokens`` data tokens at random positions of a blank
  sequence, then ``n_tokens`` copy markers; at the j-th marker the target is the j-th data
  token (``targets`` is ``-100`` elsewhere; a per-position LM head reads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

Seed = Annotated[int, Interval(ge=0, lt=2**32)]


class GeneratedTask(Dataset):
    """Base of the generated tasks: per-split seeded generation, or an ``.npz`` ``file``.

    Subclasses set ``fields`` (the arrays an item holds besides ``inputs``) and implement
    :meth:`generate` ``(rng, n) -> {"inputs": (n, L) int, <field>: ...}``.
    """

    splits = ("train", "val", "test")
    fields: tuple[str, ...] = ("labels",)

    def __init__(self, root=None, split: str = "train", sizes: tuple[int, int, int] = (1000, 200, 200),
                 seed: Seed = 0, file: str | None = None):
        super().__init__(root, split)
        if len(sizes) != 3 or any(int(n) < 1 for n in sizes):
            raise ValueError(f"sizes must be three positive split sizes (train, val, test), got {sizes}")
        self.seed, self.sizes = seed, tuple(int(n) for n in sizes)
        if file is not None:
            arrays = self.read_npz(Path(file).expanduser())
        else:
            rng = np.random.default_rng(np.random.SeedSequence([seed, self.splits.index(split)]))
            arrays = self.generate(rng, self.sizes[self.splits.index(split)])
        self.inputs = torch.from_numpy(np.ascontiguousarray(arrays["inputs"])).long()
        self.data = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])).long() for k in self.fields}

    def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def read_npz(self, path: Path) -> dict[str, np.ndarray]:
        """Arrays of ``path`` (``inputs`` (N, L) ints and each of ``fields``, N rows), checked."""
        if not path.is_file():
            raise DataError(f"{path}: no such file ({type(self).__name__} file=...)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("inputs", *self.fields) if k in npz.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npz ({exc})") from None
        missing = [k for k in ("inputs", *self.fields) if k not in arrays]
        if missing:
            raise DataError(f"{path}: lacks array(s) {', '.join(missing)}")
        inputs = arrays["inputs"]
        if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
            raise DataError(f"{path}: 'inputs' must be a 2-d integer array, got {inputs.dtype} {inputs.shape}")
        for key in self.fields:
            if len(arrays[key]) != len(inputs) or not np.issubdtype(arrays[key].dtype, np.integer):
                raise DataError(f"{path}: '{key}' must be integers with one row per input "
                                f"({len(inputs)}), got {arrays[key].dtype} {arrays[key].shape}")
        vocab = self.metadata.get("vocab_size")
        if vocab is not None and inputs.size and (inputs.min() < 0 or inputs.max() >= vocab):
            raise DataError(f"{path}: token ids must lie in [0, {vocab}), got [{inputs.min()}, {inputs.max()}]")
        return arrays

    def save(self, path: str | Path) -> Path:
        """Write this split as an ``.npz`` that ``file=`` reads back."""
        path = Path(path)
        np.savez_compressed(path, inputs=self.inputs.numpy(), **{k: v.numpy() for k, v in self.data.items()})
        return path

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], **{k: v[index] for k, v in self.data.items()}}

    def collate(self, samples: list[dict]) -> dict:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    # ---- conformance-kit examples: generated data needs no file; ``file`` is the part that can be malformed ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"sizes": (4, 2, 2), **cls.small_config()}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / f"broken_{cls.__name__.lower()}.npz"
        np.savez(path, inputs=np.zeros((3, 8), np.float32))  # float inputs, no labels/targets
        return {"file": str(path), **cls.small_config()}

    @classmethod
    def small_config(cls) -> dict:
        return {}


class AssociativeRecall(GeneratedTask):
    """Associative recall (Hyena section 4.1): recall the value bound to the query key.

    ``length``: sequence length, odd: ``(length - 1) // 2`` key-value pairs, then the query.
    ``vocab_size``: total vocabulary (keys ``[0, V/2)``, values ``[V/2, V)``; Hyena uses 10-40).
    Items: ``{"inputs": (length,) ids, "labels": value id}``; ``num_classes = vocab_size``.
    """

    metadata_keys = ("num_classes", "vocab_size")

    def __init__(self, root=None, split: str = "train", length: Annotated[int, Ge(3)] = 1025,
                 vocab_size: Annotated[int, Ge(4)] = 30, sizes: tuple[int, int, int] = (2000, 200, 200),
                 seed: Seed = 0, file: str | None = None):
        if length % 2 == 0:
            raise ValueError(f"length must be odd (pairs, then the query), got {length}")
        if vocab_size % 2:
            raise ValueError(f"vocab_size must be even (half keys, half values), got {vocab_size}")
        self.length, self.vocab_size = length, vocab_size
        super().__init__(root, split, sizes, seed, file)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.vocab_size, "vocab_size": self.vocab_size}

    def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        half, pairs = self.vocab_size // 2, (self.length - 1) // 2
        mapping = half + rng.permuted(np.tile(np.arange(half), (n, 1)), axis=1)  # (n, half): key -> value
        keys = rng.integers(0, half, (n, pairs))
        values = np.take_along_axis(mapping, keys, axis=1)
        query = keys[np.arange(n), rng.integers(0, pairs, n)]
        inputs = np.empty((n, self.length), np.int64)
        inputs[:, 0:-1:2], inputs[:, 1:-1:2], inputs[:, -1] = keys, values, query
        return {"inputs": inputs, "labels": mapping[np.arange(n), query]}

    @classmethod
    def small_config(cls) -> dict:
        return {"length": 17, "vocab_size": 8}


class SelectiveCopying(GeneratedTask):
    """Selective copying (H3/Hyena): copy the scattered data tokens, in order, after the markers.

    Token 0 is blank, 1 the copy marker, ``2 .. vocab_size-1`` data. ``length`` positions in all:
    ``length - n_tokens`` for the scattered part, then ``n_tokens`` markers. Items:
    ``{"inputs": (length,), "targets": (length,)}`` with the data tokens as targets at the
    marker positions and ``-100`` elsewhere (an :class:`~panconv_sequence.models.layers.LMHead` reads it).
    """

    metadata_keys = ("vocab_size",)
    fields = ("targets",)

    def __init__(self, root=None, split: str = "train", length: Annotated[int, Ge(4)] = 1024,
                 n_tokens: Annotated[int, Ge(1)] = 16, vocab_size: Annotated[int, Ge(3)] = 18,
                 sizes: tuple[int, int, int] = (2000, 200, 200), seed: Seed = 0, file: str | None = None):
        if 2 * n_tokens > length:
            raise ValueError(f"length ({length}) must be at least 2 * n_tokens ({2 * n_tokens})")
        self.length, self.n_tokens, self.vocab_size = length, n_tokens, vocab_size
        super().__init__(root, split, sizes, seed, file)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def read_npz(self, path: Path) -> dict[str, np.ndarray]:
        arrays = super().read_npz(path)
        if arrays["targets"].shape != arrays["inputs"].shape:
            raise DataError(f"{path}: 'targets' must have the shape of 'inputs' {arrays['inputs'].shape}, "
                            f"got {arrays['targets'].shape}")
        return arrays

    def generate(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        span, k = self.length - self.n_tokens, self.n_tokens
        # k distinct sorted positions in [0, span) per row: the k smallest of a random key per position
        positions = np.sort(np.argpartition(rng.random((n, span)), k - 1, axis=1)[:, :k], axis=1)
        tokens = rng.integers(2, self.vocab_size, (n, k))
        inputs = np.zeros((n, self.length), np.int64)
        np.put_along_axis(inputs, positions, tokens, axis=1)
        inputs[:, span:] = 1
        targets = np.full((n, self.length), -100, np.int64)
        targets[:, span:] = tokens
        return {"inputs": inputs, "targets": targets}

    @classmethod
    def small_config(cls) -> dict:
        return {"length": 24, "n_tokens": 4, "vocab_size": 6}


__all__ = ["AssociativeRecall", "GeneratedTask", "SelectiveCopying"]
