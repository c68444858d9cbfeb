"""DNA data sets over the packaged sequences (``sources.py``): next-nucleotide LM windows, species windows.

Both cut every source *contiguously* into train / val / test ranges by the same ``fractions`` (default
80 / 10 / 10 %, in that order), so a model pre-trained on the LM's train ranges has never seen a base of
the species task's val or test ranges. A source's records are concatenated in file order first (a window
may straddle two records of ``genes``/``transcripts``).

* :class:`DNALanguageModel`: windows of ``length + 1`` tokens every ``stride`` bases of each source's range;
  ``{"inputs": ids[t:t+L], "targets": ids[t+1:t+L+1]}`` (HyenaDNA's next-nucleotide pre-training).
* :class:`SpeciesWindows`: windows of ``length`` bases labelled by the source they come from (HyenaDNA's
  species classification, here human chr17 vs phage lambda: ``{"inputs": ids, "labels": class}``).

``rc_prob`` (train split only, default 0) replaces a window by its reverse complement with that probability
(the official ``rc_aug``), drawn from a generator seeded by ``seed`` and the epoch (``set_epoch``).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

from .sources import check_fractions, load_source, missing_sources, split_bounds
from .tokenizer import VOCAB_SIZE, encode, reverse_complement


class _SourceWindows(Dataset):
    splits = ("train", "val", "test")

    def __init__(self, root=None, split: str = "train", sources: tuple[str, ...] = ("human", "phage"),
                 length: int = 1024, stride: int | None = None,
                 fractions: tuple[float, ...] = (0.8, 0.1, 0.1), rc_prob: float = 0.0, seed: int = 0,
                 extra: int = 0):
        super().__init__(root, split)
        if length < 1 or (stride is not None and stride < 1):
            raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
        if not 0.0 <= rc_prob <= 1.0:
            raise ValueError(f"rc_prob must be in [0, 1], got {rc_prob}")
        sources = tuple(sources)
        if not sources:
            raise ValueError("give at least one DNA source")
        self.fractions = check_fractions(fractions)
        self.sources, self.length, self.stride = sources, length, stride or length
        self.rc_prob = rc_prob if split == "train" else 0.0
        self.seed = seed
        self.tokens: list[torch.Tensor] = []     # the split's range of each source, as ids
        self.index: list[tuple[int, int]] = []   # (source, start)
        index = self.splits.index(split)
        for s, name in enumerate(sources):
            sequence = load_source(name, self.root)
            start, end = split_bounds(len(sequence), self.fractions, index)
            ids = encode(sequence[start:end])
            self.tokens.append(ids)
            self.index += [(s, t) for t in range(0, len(ids) - (length + extra) + 1, self.stride)]
        if not self.index:
            raise DataError(f"{type(self).__name__}: the {split} range of {', '.join(sources)} holds no window of "
                            f"{length + extra} bases (a smaller length, or other fractions)")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed * 1000003 + epoch)

    def __len__(self) -> int:
        return len(self.index)

    def _window(self, index: int, size: int) -> tuple[int, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        source, start = self.index[index]
        window = self.tokens[source][start:start + size]
        if self.rc_prob and torch.rand((), generator=self.generator) < self.rc_prob:
            window = reverse_complement(window)
        return source, window

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        return missing_sources(("human", "phage"), root)

    @classmethod
    def _write_example(cls, tmp_dir: Path, broken: bool = False) -> None:
        folder = tmp_dir / "genomics"
        folder.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(0)
        human = "".join("ACGTacgt"[i] for i in torch.randint(8, (600,), generator=g))
        phage = "".join("ACGT"[i] for i in torch.randint(4, (600,), generator=g))
        lines = ">chr17\n" + "\n".join(human[i:i + 60] for i in range(0, 600, 60)) + "\n"
        if broken:
            lines = lines.replace("\n", "\nAC1GT\n", 3)  # a digit inside a sequence line (line 4)
        (folder / "chr17.hg19.part.fa").write_text(lines)
        with gzip.open(folder / "lambda_virus.fa.gz", "wt") as handle:
            handle.write(">lambda\n" + "\n".join(phage[i:i + 70] for i in range(0, 600, 70)) + "\n")


class DNALanguageModel(_SourceWindows):
    """Next-nucleotide windows (see the module docstring).

    Args:
        sources: packaged sources (``human``, ``genes``, ``phage``, ``transcripts``) whose ranges are used.
        length: tokens per window ``L``; ``stride``: start-to-start distance (default ``L``).
        fractions: contiguous train / val / test shares of every source.
        rc_prob: probability of the reverse-complement augmentation (train only).
    """

    metadata_keys = ("vocab_size",)

    def __init__(self, root=None, split: str = "train",
                 sources: tuple[str, ...] = ("human", "phage", "transcripts"),
                 length: Annotated[int, Ge(1)] = 1024, stride: Annotated[int, Ge(1)] | None = None,
                 fractions: tuple[Annotated[float, Interval(gt=0, lt=1)], ...] = (0.8, 0.1, 0.1),
                 rc_prob: Annotated[float, Interval(ge=0, le=1)] = 0.0, seed: Annotated[int, Ge(0)] = 0):
        super().__init__(root, split, sources, length, stride, fractions, rc_prob, seed, extra=1)

    def __getitem__(self, index: int) -> dict:
        _, window = self._window(index, self.length + 1)
        return {"inputs": window[:-1], "targets": window[1:]}

    @property
    def metadata(self) -> dict:
        return {"vocab_size": VOCAB_SIZE}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        cls._write_example(tmp_dir)
        return {"root": tmp_dir, "split": "train", "sources": ("human", "phage"), "length": 32}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        cls._write_example(tmp_dir, broken=True)
        return {"root": tmp_dir, "split": "train", "sources": ("human", "phage"), "length": 32}


class SpeciesWindows(_SourceWindows):
    """Windows labelled by their source (class ``i`` = ``classes[i]``): human vs phage by default.

    Args:
        classes: one packaged source per class.
        length, stride, fractions, rc_prob, seed: as :class:`DNALanguageModel`.
    """

    metadata_keys = ("num_classes", "vocab_size")

    def __init__(self, root=None, split: str = "train", classes: tuple[str, ...] = ("human", "phage"),
                 length: Annotated[int, Ge(1)] = 256, stride: Annotated[int, Ge(1)] | None = None,
                 fractions: tuple[Annotated[float, Interval(gt=0, lt=1)], ...] = (0.8, 0.1, 0.1),
                 rc_prob: Annotated[float, Interval(ge=0, le=1)] = 0.0, seed: Annotated[int, Ge(0)] = 0):
        if len(tuple(classes)) < 2:
            raise ValueError(f"give at least two classes (sources), got {classes}")
        super().__init__(root, split, classes, length, stride, fractions, rc_prob, seed)
        self.classes = tuple(classes)

    def __getitem__(self, index: int) -> dict:
        source, window = self._window(index, self.length)
        return {"inputs": window, "labels": torch.tensor(source)}

    @property
    def metadata(self) -> dict:
        return {"num_classes": len(self.classes), "vocab_size": VOCAB_SIZE, "classes": list(self.classes)}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        cls._write_example(tmp_dir)
        return {"root": tmp_dir, "split": "train", "length": 32}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        cls._write_example(tmp_dir, broken=True)
        return {"root": tmp_dir, "split": "train", "length": 32}


__all__ = ["DNALanguageModel", "SpeciesWindows"]
