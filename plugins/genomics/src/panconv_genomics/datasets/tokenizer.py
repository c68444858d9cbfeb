"""HyenaDNA's single-nucleotide tokenizer and reverse-complement augmentation.

The vocabulary is the official one (``CharacterTokenizer(characters=['A', 'C', 'G', 'T', 'N'])`` of
HazyResearch/hyena-dna): seven special tokens, then one id per nucleotide character::

    [CLS] 0  [SEP] 1  [BOS] 2  [MASK] 3  [PAD] 4  [RESERVED] 5  [UNK] 6  A 7  C 8  G 9  T 10  N 11

so a model trained here reads the published checkpoints' ids unchanged (``vocab_size`` 12, padded to a
multiple of 8 = 16 rows in the embedding, as the official configs do). Lower-case (soft-masked) bases
are upper-cased and RNA's ``U`` read as ``T`` (a choice of ours; the official tokenizer maps both to
``[UNK]``); any other character (IUPAC ambiguity codes, gaps) is ``[UNK]``. Pre-training windows end
with ``[SEP]`` as the official ``add_eos`` does.
"""

from __future__ import annotations

import numpy as np
import torch

SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
CHARACTERS = ("A", "C", "G", "T", "N")
VOCAB = {**{tok: i for i, tok in enumerate(SPECIALS)}, **{ch: len(SPECIALS) + i for i, ch in enumerate(CHARACTERS)}}
VOCAB_SIZE = len(VOCAB)                                          # 12
CLS, SEP, BOS, MASK, PAD, UNK = (VOCAB[t] for t in ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[UNK]"))
A, C, G, T, N = (VOCAB[c] for c in CHARACTERS)

_LOOKUP = np.full(256, UNK, dtype=np.int64)
for _ch in CHARACTERS:
    _LOOKUP[ord(_ch)] = _LOOKUP[ord(_ch.lower())] = VOCAB[_ch]
_LOOKUP[ord("U")] = _LOOKUP[ord("u")] = T

#: id -> id of the complementary base (A<->T, C<->G; N, specials and [UNK] map to themselves)
COMPLEMENT = torch.arange(VOCAB_SIZE)
COMPLEMENT[[A, C, G, T]] = torch.tensor([T, G, C, A])


def encode(sequence: str) -> torch.Tensor:
    """``str`` of nucleotides -> ``long`` ids ``(len,)`` (no special tokens added)."""
    raw = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)
    return torch.from_numpy(_LOOKUP[raw])


def decode(ids) -> str:
    """ids -> string; special tokens are written as their names (``[SEP]``)."""
    inverse = {i: tok for tok, i in VOCAB.items()}
    return "".join(inverse.get(int(i), "[UNK]") for i in ids)


def reverse_complement(ids: torch.Tensor) -> torch.Tensor:
    """The reverse complement of id sequences along the last axis (``(..., L)``): the other DNA strand, 5'->3'."""
    return COMPLEMENT.to(ids.device)[ids.flip(-1)]


def reverse_complement_str(sequence: str) -> str:
    return sequence.translate(str.maketrans("ACGTNacgtn", "TGCANtgcan"))[::-1]


__all__ = ["A", "BOS", "C", "CHARACTERS", "CLS", "COMPLEMENT", "G", "MASK", "N", "PAD", "SEP", "SPECIALS", "T",
           "UNK", "VOCAB", "VOCAB_SIZE", "decode", "encode", "reverse_complement", "reverse_complement_str"]
