"""Readers (FASTA/FASTQ/Stockholm on the packaged files and on malformed ones), tokenizer, data sets, transforms."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from panconv.errors import DataError
from panconv_genomics.datasets import sources
from panconv_genomics.datasets.dna import DNALanguageModel, SpeciesWindows
from panconv_genomics.datasets.formats import read_fasta, read_fastq, read_stockholm
from panconv_genomics.datasets.splice import SpliceSites, genomic_decoys, read_splice_sites
from panconv_genomics.datasets.tokenizer import VOCAB, VOCAB_SIZE, decode, encode, reverse_complement
from panconv_genomics.evaluators.markov import MarkovChain
from panconv_genomics.transforms import ReverseComplement, SeqLenWarmup

needs_packages = pytest.mark.skipif(bool(sources.missing_sources(sources.SOURCES)),
                                    reason="the Debian example packages (scripts/apt-packages.txt) are not installed")


# ----------------------------------------------------------------------------- readers on the real files

@needs_packages
def test_fasta_reads_the_packaged_genomes():
    (human,) = read_fasta(sources.source_path("human"))
    assert human.id == "chr17" and len(human.sequence) == 40_000
    (phage,) = read_fasta(sources.source_path("phage"))
    assert "lambda" in phage.description and len(phage.sequence) == 48_502
    assert len(list(read_fasta(sources.source_path("transcripts")))) == 14


@needs_packages
def test_fastq_reads_the_packaged_reads():
    reads = read_fastq(sources.BOWTIE2 / "reads" / "reads_1.fq.gz")
    first = next(reads)
    assert first.id == "r1" and len(first.quality) == len(first.sequence) > 50
    assert all(0 <= q <= 93 for q in first.quality)


@needs_packages
def test_stockholm_reads_pfam_seed_alignments():
    (globins,) = read_stockholm(sources.HMMER / "tutorial" / "globins4.sto")
    assert len(globins.names) == 4 and len({len(r) for r in globins.rows}) == 1
    (fn3,) = read_stockholm(sources.HMMER / "tutorial" / "fn3.sto")
    assert len(fn3.rows) > 50 and "ID" in fn3.markup


# ----------------------------------------------------------------------------- malformed records: file:line

@pytest.mark.parametrize("text, line, what", [
    (">a\nACGT\n>b\nAC1T\n", 4, "invalid character '1'"),
    ("ACGT\n>a\nACGT\n", 1, "before the first"),
    (">a\nACGT\n>\nACGT\n", 3, "empty FASTA header"),
    (">a\n>b\nACGT\n", 1, "'a' has no sequence"),
])
def test_malformed_fasta_names_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "x.fa"
    path.write_text(text)
    with pytest.raises(DataError, match=f"x.fa:{line}: .*{what}"):
        list(read_fasta(path))


@pytest.mark.parametrize("text, line, what", [
    ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nIII\n", 8, "3 characters, the sequence 4"),
    ("@r1\nACGT\n+\nIIII\nr2\nACGT\n+\nIIII\n", 5, "must start with '@'"),
    ("@r1\nACGT\n-\nIIII\n", 3, "must start with '[+]'"),
    ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n", 5, "truncated FASTQ record"),
])
def test_malformed_fastq_names_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "x.fq.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    with pytest.raises(DataError, match=f"x.fq.gz:{line}: .*{what}"):
        list(read_fastq(path))


@pytest.mark.parametrize("text, line, what", [
    ("# STOCKHOLM 1.0\na ACG-T\nb ACGT\n//\n", 3, "'b' has 4 columns"),
    ("a ACGT\n//\n", 1, "STOCKHOLM 1.0' header"),
    ("# STOCKHOLM 1.0\na ACGT\n", 2, "no '//' terminator"),
    ("# STOCKHOLM 1.0\na AC GT\n//\n", 2, "3 fields"),
])
def test_malformed_stockholm_names_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "x.sto"
    path.write_text(text)
    with pytest.raises(DataError, match=f"x.sto:{line}: .*{what}"):
        list(read_stockholm(path))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(read_fasta(tmp_path / "nope.fa"))


# ----------------------------------------------------------------------------- tokenizer

def test_tokenizer_uses_the_official_vocabulary():
    assert VOCAB_SIZE == 12
    assert [VOCAB[t] for t in ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")] == list(range(7))
    assert encode("ACGTN").tolist() == [7, 8, 9, 10, 11]
    assert encode("acgtUR-").tolist() == [7, 8, 9, 10, 10, 6, 6]
    assert decode(encode("GATTACA")) == "GATTACA"


def test_reverse_complement():
    ids = encode("AACGTN")
    assert decode(reverse_complement(ids)) == "NACGTT"
    assert torch.equal(reverse_complement(reverse_complement(ids)), ids)
    batch = torch.stack([encode("ACCA"), encode("GGTT")])
    assert [decode(r) for r in reverse_complement(batch)] == ["TGGT", "AACC"]


# ----------------------------------------------------------------------------- data sets

@needs_packages
def test_lm_windows_are_shifted_and_splits_disjoint():
    train = DNALanguageModel(split="train", sources=("human", "phage"), length=512)
    test = DNALanguageModel(split="test", sources=("human", "phage"), length=512)
    item = train[3]
    assert item["inputs"].shape == (512,) and torch.equal(item["inputs"][1:], item["targets"][:-1])
    assert train.metadata == {"vocab_size": 12}
    human = encode(sources.load_source("human"))
    assert torch.equal(train.tokens[0], human[:32_000]) and torch.equal(test.tokens[0], human[36_000:])


@needs_packages
def test_species_windows_are_labelled_by_source():
    data = SpeciesWindows(split="val", length=128)
    labels = torch.stack([data[i]["labels"] for i in range(len(data))])
    assert set(labels.tolist()) == {0, 1} and data.metadata["num_classes"] == 2
    assert data[0]["inputs"].shape == (128,)


@needs_packages
def test_splice_sites_are_disjoint_balanced_and_real():
    path = sources.logomaker_datafile("ss_sequences.txt")
    sites = read_splice_sites(path)
    assert len(sites) > 10_000 and all(s[3:5] in ("GT", "GC") for s in sites)
    splits = {s: SpliceSites(split=s) for s in ("train", "val", "test")}
    seen = [set(map(tuple, d.inputs.tolist())) for d in splits.values()]
    assert not (seen[0] & seen[2]) and not (seen[0] & seen[1])
    assert splits["test"].labels.float().mean().item() == pytest.approx(0.5, abs=0.01)
    # positives are canonical donors: G at +1, T/C at +2 (positions 4-5)
    pos = splits["train"].inputs[splits["train"].labels == 1]
    assert (pos[:, 3] == VOCAB["G"]).all()


def test_decoys_exclude_the_sites_and_read_both_strands():
    decoys = genomic_decoys(["AAAGTAAAC"], exclude=set())
    assert decoys == {"AAAGTAAAC"} | genomic_decoys(["GTTTACTTT"], exclude=set())
    assert genomic_decoys(["AAAGTAAAC"], exclude={"AAAGTAAAC"}) == set()


def test_bad_splice_file_names_the_line(tmp_path):
    path = tmp_path / "ss.txt"
    path.write_text("# c\nsequence\tcount\nCAGGUGAGU\t12\nCAGGUGAGU\tmany\n")
    with pytest.raises(DataError, match="ss.txt:4"):
        read_splice_sites(path)


# ----------------------------------------------------------------------------- transforms and the Markov baseline

def test_reverse_complement_transform_keeps_lm_targets_consistent():
    window = encode("ACGGTTAC")
    sample = {"inputs": window[:-1], "targets": window[1:]}
    out = ReverseComplement(prob=1.0, seed=0)(sample)
    assert decode(torch.cat([out["inputs"], out["targets"][-1:]])) == "GTAACCGT"
    assert torch.equal(out["inputs"][1:], out["targets"][:-1])
    assert ReverseComplement(prob=0.0, seed=0)(sample) is sample


def test_seqlen_warmup_reshapes_by_stage_keeping_the_tokens():
    warmup = SeqLenWarmup(stages=[[1, 4], [2, 8]])
    batch = {"inputs": torch.arange(32).view(2, 16), "targets": torch.arange(1, 33).view(2, 16)}
    assert [warmup.length_at(e) for e in range(5)] == [4, 8, 8, None, None]
    out = warmup(batch)
    assert out["inputs"].shape == (8, 4) and torch.equal(out["inputs"].flatten(), batch["inputs"].flatten())
    assert torch.equal(out["targets"][:, :-1], out["inputs"][:, 1:])
    warmup.set_epoch(3)
    assert warmup(batch) is batch
    with pytest.raises(ValueError, match="does not divide"):
        SeqLenWarmup(stages=[[1, 5]])(batch)


def test_markov_chain_learns_a_deterministic_sequence():
    stream = encode("ACGT" * 200)
    chain = MarkovChain(order=1, alpha=0.01, both_strands=False).fit([stream])
    logp = chain.log_probs(encode("ACGTACGT")[None])
    # after A comes C with probability ~1; the first position already has order-1 context (its own token)
    assert logp[0, 0, VOCAB["C"]].exp().item() > 0.99
    assert logp[0, 3, VOCAB["A"]].exp().item() > 0.99
    assert logp.exp()[..., 7:12].sum(-1).allclose(torch.ones(1, 8, dtype=torch.float64))
    order0 = MarkovChain(order=0, both_strands=False).fit([encode("AAAC")])
    assert order0.log_probs(encode("A")[None])[0, 0, VOCAB["A"]].exp().item() == pytest.approx(4 / 9)


def test_example_files_round_trip(tmp_path):
    kwargs = DNALanguageModel.example(tmp_path)
    assert len(DNALanguageModel(**kwargs)) > 0
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(DataError, match=r"chr17.hg19.part.fa:\d+: invalid character"):
        DNALanguageModel(**DNALanguageModel.broken_example(broken))
    assert Path(kwargs["root"]).is_dir()
