"""Where the real DNA comes from: sequences that Debian packages and registry wheels install (no download).

=============  ==============================================================  =====================================
source         file (package)                                                  content
=============  ==============================================================  =====================================
``human``      ``chr17.hg19.part.fa`` (Debian ``python-pyfaidx-examples``)       40,000 bp of human chr17 (hg19),
                                                                               soft-masked repeats (lower case)
``genes``      ``genes.fasta`` (``python-pyfaidx-examples``)                    20 human mRNAs / ncRNAs (BARD1, MDM4..)
``phage``      ``lambda_virus.fa.gz`` (Debian ``bowtie2-examples``)             Enterobacteria phage lambda genome,
                                                                               48,502 bp (NC_001416.1)
``transcripts``  ``transcripts.fasta.gz`` (Debian ``kallisto-examples``)        14 human Ensembl transcripts
=============  ==============================================================  =====================================

A file of the same name under ``<data root>/genomics/`` takes precedence (to run elsewhere, or on other DNA).
The reads (``reads_1.fq.gz`` of bowtie2 and kallisto) and Pfam seed alignments of ``hmmer-examples`` exercise
the FASTQ and Stockholm readers; the splice sites come from the ``logomaker`` wheel (see ``splice.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from panconv.errors import DataError

from .formats import read_fasta

PYFAIDX = Path("/usr/share/doc/python-pyfaidx-examples/examples")
BOWTIE2 = Path("/usr/share/doc/bowtie2/examples")
KALLISTO = Path("/usr/share/doc/kallisto/test")
HMMER = Path("/usr/share/doc/hmmer/examples")

#: source name -> (file name, system directory, Debian package)
SOURCES = {
    "human": ("chr17.hg19.part.fa", PYFAIDX, "python-pyfaidx-examples"),
    "genes": ("genes.fasta", PYFAIDX, "python-pyfaidx-examples"),
    "phage": ("lambda_virus.fa.gz", BOWTIE2 / "reference", "bowtie2-examples"),
    "transcripts": ("transcripts.fasta.gz", KALLISTO, "kallisto-examples"),
}


def source_path(name: str, root: Path | None = None) -> Path:
    """The FASTA file of source ``name``: ``<root>/genomics/<file>`` if present, else where its package installs it."""
    if name not in SOURCES:
        raise ValueError(f"unknown DNA source {name!r}; choose from {', '.join(SOURCES)}")
    filename, directory, _ = SOURCES[name]
    if root is not None and (Path(root) / "genomics" / filename).is_file():
        return Path(root) / "genomics" / filename
    return directory / filename


def missing_sources(names, root: Path | None = None) -> list[str]:
    """What is missing for ``names`` (each with the package to install); empty when every file is there."""
    problems = []
    for name in names:
        if name not in SOURCES:
            problems.append(f"unknown DNA source {name!r}")
            continue
        path = source_path(name, root)
        if not path.is_file():
            problems.append(f"{path} missing: apt-get install {SOURCES[name][2]} (or put {SOURCES[name][0]} under "
                            f"<data root>/genomics/)")
    return problems


def load_source(name: str, root: Path | None = None) -> str:
    """The records of source ``name`` concatenated in file order (upper-cased by the tokenizer later)."""
    path = source_path(name, root)
    if not path.is_file():
        raise DataError("; ".join(missing_sources([name], root)))
    return "".join(record.sequence for record in read_fasta(path))


def logomaker_datafile(name: str) -> Path:
    """``logomaker/examples/datafiles/<name>`` of the installed wheel (found without importing logomaker)."""
    spec = importlib.util.find_spec("logomaker")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"logomaker is not installed (its wheel ships {name}): pip install logomaker==0.8.7")
    path = Path(list(spec.submodule_search_locations)[0]) / "examples" / "datafiles" / name
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed logomaker wheel")
    return path


def split_bounds(total: int, fractions: tuple[float, ...], index: int) -> tuple[int, int]:
    """``[start, end)`` of share ``index`` when ``total`` items are cut into contiguous ``fractions``."""
    bounds, cumulative = [0], 0.0
    for share in fractions:
        cumulative += share
        bounds.append(min(total, int(round(cumulative * total))))
    return bounds[index], bounds[index + 1]


def check_fractions(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"fractions must be three positive shares (train, val, test) summing to <= 1, got {fractions}")
    return fractions


__all__ = ["SOURCES", "check_fractions", "load_source", "logomaker_datafile", "missing_sources", "source_path",
           "split_bounds"]
