"""Registered transforms of panconv-genomics: reverse-complement augmentation and sequence-length warm-up.

Both are wired from a config's ``data.transforms``::

    data:
      transforms:
        - {type: genomics.ReverseComplement, splits: [train], prob: 0.5}
        - {type: genomics.SeqLenWarmup, splits: [train], stages: [[1, 64], [1, 256]]}
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Interval

from .datasets.tokenizer import reverse_complement


class ReverseComplement:
    """With probability ``prob``, replace a sample by the other strand (reverse complement, 5'->3').

    A classification sample ``{"inputs": ids}`` keeps its label. A language-modelling sample ``{"inputs",
    "targets"}`` (targets = inputs shifted by one) is rebuilt from the reverse complement of the whole window
    ``inputs + targets[-1]``, so the targets stay the next nucleotide of the new inputs. ``seed`` (default: drawn
    from torch's global generator, so a run's seed fixes it); ``set_epoch(e)`` reseeds with ``seed + e``.
    """

    level = "sample"

    def __init__(self, prob: Annotated[float, Interval(ge=0, le=1)] = 0.5,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] | None = None):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"ReverseComplement: prob must be in [0, 1], got {prob}")
        self.prob = prob
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + epoch)

    def __call__(self, sample: dict) -> dict:
        if torch.rand((), generator=self.generator).item() >= self.prob:
            return sample
        inputs = sample["inputs"]
        if "targets" in sample:
            window = reverse_complement(torch.cat([inputs, sample["targets"][-1:]]))
            return {**sample, "inputs": window[:-1], "targets": window[1:]}
        return {**sample, "inputs": reverse_complement(inputs)}

    def __repr__(self) -> str:
        return f"ReverseComplement(prob={self.prob}, seed={self.seed})"


class SeqLenWarmup:
    """HyenaDNA's sequence-length warm-up (paper Sec. 3.2; the official ``seqlen_warmup_reload`` callback).

    Training starts on short sequences and lengthens them stage by stage, keeping the tokens per batch
    constant (the official stages halve the batch when they double the length). Here a collated language-
    modelling batch of ``N`` windows of ``L`` tokens is cut, during stage ``(epochs, length)``, into
    ``N * L / length`` contiguous windows of ``length`` tokens: the same tokens, shorter contexts, more rows.

    Args:
        stages: ``[[epochs, length], ...]`` in order; each stage lasts ``epochs`` epochs (not cumulative, as the
            official config); after the last stage the full windows are used. ``length`` must divide ``L``.

    The engine calls ``set_epoch`` on the training data (and its transforms) at every epoch; with
    ``num_workers > 0`` keep the loader's workers non-persistent so that each epoch's copy sees the new stage.
    """

    level = "batch"

    def __init__(self, stages: tuple[tuple[Annotated[int, Ge(1)], Annotated[int, Ge(1)]], ...] = ((1, 64), (1, 256))):
        stages = tuple((int(e), int(length)) for e, length in stages)
        if any(e < 1 or length < 1 for e, length in stages):
            raise ValueError(f"SeqLenWarmup: every stage needs epochs >= 1 and length >= 1, got {stages}")
        self.stages = stages
        self.set_epoch(0)

    def length_at(self, epoch: int) -> int | None:
        """The window length of ``epoch`` (``None``: the full windows)."""
        end = 0
        for epochs, length in self.stages:
            end += epochs
            if epoch < end:
                return length
        return None

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.length = epoch, self.length_at(epoch)

    def __call__(self, batch: dict) -> dict:
        if self.length is None:
            return batch
        inputs = batch["inputs"]
        n, total = inputs.shape[:2]
        if self.length >= total:
            return batch
        if total % self.length:
            raise ValueError(f"SeqLenWarmup: stage length {self.length} does not divide the window length {total}")
        out = dict(batch)
        for key in ("inputs", "targets"):
            if key in batch:
                out[key] = batch[key].reshape(n * (total // self.length), self.length, *batch[key].shape[2:])
        return out

    def __repr__(self) -> str:
        return f"SeqLenWarmup(stages={[list(s) for s in self.stages]})"


__all__ = ["ReverseComplement", "SeqLenWarmup"]
