"""A closed word vocabulary for the generated captions of the vision data sets (captions.py, video.py).

Ids 0/1/2 are ``<pad>``, ``<bos>``, ``<eos>``; the words follow in sorted order, so the ids are a pure function
of the word set (a checkpoint's embedding rows mean the same words in every run).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2


class Vocabulary:
    """``tokens`` (specials, then the sorted words), ``token_id``, ``tokenize`` and ``detokenize``."""

    def __init__(self, words: Iterable[str]):
        self.tokens: tuple[str, ...] = SPECIAL_TOKENS + tuple(sorted(set(words) - set(SPECIAL_TOKENS)))
        self.token_id: dict[str, int] = {w: i for i, w in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str, length: int) -> torch.Tensor:
        """``<bos> words <eos>`` as ids padded with ``<pad>`` to ``length`` (ValueError: unknown word, overflow)."""
        words = text.split()
        unknown = [w for w in words if w not in self.token_id]
        if unknown:
            raise ValueError(f"tokenize: unknown word(s) {unknown} in '{text}'")
        ids = [BOS, *(self.token_id[w] for w in words), EOS]
        if len(ids) > length:
            raise ValueError(f"tokenize: '{text}' needs {len(ids)} tokens, more than {length}")
        return torch.tensor(ids + [PAD] * (length - len(ids)))

    def detokenize(self, ids) -> str:
        """The words of ``ids`` up to the first ``<eos>``, without ``<pad>`` / ``<bos>``."""
        words = []
        for i in (int(x) for x in ids):
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.tokens[i])
        return " ".join(words)


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "Vocabulary"]
