"""Human 5' splice sites vs genomic decoys: a 9-nt classification task from data the ``logomaker`` wheel ships.

Positives: the distinct 5' splice-site 9-mers of the human genome (``ss_sequences.txt`` of logomaker 0.8.7:
GENCODE-annotated hg38 donors of the form ``NNN|GYNNNN``, exon | intron, 10,227 sequences with their genome
counts; ``U`` read as ``T``). Negatives ("decoys"): the distinct 9-mers with the same ``GY`` at positions 4-5
found on either strand of the packaged human chr17 segment and phage lambda genome (``sources.py``) that are
*not* in the positive list, i.e. GT/GC dinucleotides the annotation does not use as donors. This is the
classic donor-vs-decoy set-up (as MaxEntScan's), scaled down: the decoys are not guaranteed non-functional
(a chr17 GT could be an unannotated donor), and the task is on 9-mers with no wider context.

Distinct sequences are shuffled with ``seed`` and cut 80 / 10 / 10 % into train / val / test, so no 9-mer is in
two splits; classes are balanced by keeping as many decoys as positives (``balance=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

from .sources import check_fractions, load_source, logomaker_datafile, missing_sources, split_bounds
from .tokenizer import VOCAB_SIZE, encode, reverse_complement_str

SITE_LENGTH = 9


def read_splice_sites(path: Path) -> dict[str, int]:
    """``{9-mer (DNA letters): genome count}`` from logomaker's ``ss_sequences.txt`` (``#`` comments, a header)."""
    sites: dict[str, int] = {}
    header_seen = False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.split()
            if not header_seen:
                if fields[:2] != ["sequence", "count"]:
                    raise DataError(f"{path}:{number}: expected the header 'sequence count', got {text[:40]!r}")
                header_seen = True
                continue
            if len(fields) != 2 or not fields[1].isdigit():
                raise DataError(f"{path}:{number}: expected 'sequence count', got {text[:40]!r}")
            sequence = fields[0].upper().replace("U", "T")
            if set(sequence) - set("ACGT"):
                raise DataError(f"{path}:{number}: non-nucleotide character in {fields[0]!r}")
            if len(sequence) == SITE_LENGTH:  # the file holds 3 one-letter and 1 eight-letter oddities
                sites[sequence] = sites.get(sequence, 0) + int(fields[1])
    if not sites:
        raise DataError(f"{path}: no 9-nt splice-site sequences")
    return sites


def genomic_decoys(sequences: list[str], exclude: set[str]) -> set[str]:
    """Distinct ``NNNGYNNNN`` 9-mers of ``sequences`` (both strands, upper-cased, ACGT only) not in ``exclude``."""
    found: set[str] = set()
    for sequence in sequences:
        for strand in (sequence.upper(), reverse_complement_str(sequence.upper())):
            for i in range(len(strand) - SITE_LENGTH + 1):
                if strand[i + 3] == "G" and strand[i + 4] in "TC":
                    kmer = strand[i:i + SITE_LENGTH]
                    if kmer not in exclude and not set(kmer) - set("ACGT"):
                        found.add(kmer)
    return found


class SpliceSites(Dataset):
    """5' splice sites (label 1) vs genomic GT/GC decoys (label 0), 9 nt each (see the module docstring).

    Args:
        decoy_sources: packaged DNA sources the decoys are drawn from.
        fractions: train / val / test shares of the shuffled distinct sequences.
        balance: keep as many decoys as positives.
        seed: the shuffle (and decoy subsample).
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "vocab_size")

    def __init__(self, root=None, split: str = "train", decoy_sources: tuple[str, ...] = ("human", "phage"),
                 fractions: tuple[Annotated[float, Interval(gt=0, lt=1)], ...] = (0.8, 0.1, 0.1),
                 balance: bool = True, seed: Annotated[int, Ge(0)] = 0, sites_file: str | None = None):
        super().__init__(root, split)
        fractions = check_fractions(fractions)
        path = Path(sites_file) if sites_file else logomaker_datafile("ss_sequences.txt")
        sites = read_splice_sites(path)
        decoys = sorted(genomic_decoys([load_source(s, self.root) for s in decoy_sources], set(sites)))
        positives = sorted(sites)
        rng = np.random.default_rng(seed)
        positives = [positives[i] for i in rng.permutation(len(positives))]
        decoys = [decoys[i] for i in rng.permutation(len(decoys))]
        if balance:
            n = min(len(positives), len(decoys))
            positives, decoys = positives[:n], decoys[:n]
        index = self.splits.index(split)
        samples = []
        for label, group in ((1, positives), (0, decoys)):
            start, end = split_bounds(len(group), fractions, index)
            samples += [(kmer, label) for kmer in group[start:end]]
        if not samples:
            raise DataError(f"SpliceSites: the {split} split is empty ({len(positives)} sites, {len(decoys)} decoys)")
        order = rng.permutation(len(samples))
        self.samples = [samples[i] for i in order]
        self.inputs = torch.stack([encode(kmer) for kmer, _ in self.samples])
        self.labels = torch.tensor([label for _, label in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}

    @property
    def metadata(self) -> dict:
        return {"num_classes": 2, "vocab_size": VOCAB_SIZE, "classes": ["decoy", "splice_site"]}

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        problems = missing_sources(("human", "phage"), root)
        try:
            logomaker_datafile("ss_sequences.txt")
        except DataError as exc:
            problems.append(str(exc))
        return problems

    @classmethod
    def _write(cls, tmp_dir: Path, broken: bool) -> dict:
        from .dna import DNALanguageModel

        DNALanguageModel._write_example(tmp_dir)
        rows = ["# splice sites", "sequence\tcount", "CAGGUGAGU\t3729", "AAGGUAAGA\t2740", "GAGGUAAGG\t100",
                "CAGGUAAGU\t50", "ACGGUGAGC\t20"]
        if broken:
            rows.append("CAGGUGAGU\tmany")
        (tmp_dir / "ss.txt").write_text("\n".join(rows) + "\n")
        return {"root": tmp_dir, "split": "train", "sites_file": str(tmp_dir / "ss.txt"), "fractions": (0.6, 0.2, 0.2)}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return cls._write(tmp_dir, broken=False)

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        return cls._write(tmp_dir, broken=True)


__all__ = ["SpliceSites", "genomic_decoys", "read_splice_sites"]
