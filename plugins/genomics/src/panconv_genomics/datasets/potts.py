"""Paired MSAs sampled from the DiffPALM Potts generator, for masked-LM training of the MSA Transformer.

:class:`PottsMSA` wraps :class:`panconv_genomics.models.diffpalm.PottsPairs` (a seeded Potts model over A|B whose
couplings link the two families; the same model for every split, ``potts_seed``): each split draws its own pool
of ``samples`` sequences by Gibbs sampling (disjoint sampler seeds), and item ``i`` is a paired MSA of ``depth``
rows drawn from the pool (a generator seeded by ``seed``, the epoch and ``i``), with a fraction ``mask_prob`` of
its tokens masked: ``{"inputs": (depth, la + lb) ids with the mask id q, "targets": the true ids where masked,
-100 elsewhere}``. This is what ``benchmarks/genomics_diffpalm_potts.py`` trains on (``train_msa_lm``), as a
dataset the engine can load (``examples``: ``model: {type: genomics.MSATransformer}``, ``data: {type:
genomics.PottsMSA}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


class PottsMSA(Dataset):
    """``msas`` masked paired MSAs of ``depth`` rows per epoch from a pool of ``samples`` Potts sequences.

    Args:
        la, lb, q, n_links, coupling, n_intra, field_scale: the Potts model (``PottsPairs``), seeded by
            ``potts_seed`` (the same couplings in every split).
        samples: sequences Gibbs-sampled for this split's pool (``sweeps`` sweeps). msas: items per epoch.
        depth: rows per MSA. mask_prob: masked fraction of the tokens. seed: the row and mask draws.
    """

    metadata_keys = ("q", "length")
    conformance_skips = {"malformed_file": "generated in memory from a seeded Potts model: reads no file"}

    def __init__(self, root=None, split: str = "train", la: Annotated[int, Ge(2)] = 8, lb: Annotated[int, Ge(2)] = 8,
                 q: Annotated[int, Ge(2)] = 4, n_links: Annotated[int, Ge(1)] = 8,
                 coupling: Annotated[float, Ge(0)] = 1.5,
                 n_intra: Annotated[int, Ge(0)] = 4, field_scale: Annotated[float, Ge(0)] = 0.3,
                 potts_seed: Annotated[int, Ge(0)] = 0, samples: Annotated[int, Ge(1)] = 20_000,
                 sweeps: Annotated[int, Ge(1)] = 40, msas: Annotated[int, Ge(1)] = 4_800,
                 depth: Annotated[int, Ge(1)] = 16, mask_prob: Annotated[float, Interval(gt=0, lt=1)] = 0.15,
                 seed: Annotated[int, Ge(0)] = 0):
        super().__init__(root, split)
        from ..models.diffpalm import PottsPairs

        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.potts = PottsPairs(la, lb, q, n_links, float(coupling), n_intra, field_scale, seed=potts_seed)
        self.q, self.length, self.depth, self.msas, self.mask_prob = q, la + lb, depth, msas, mask_prob
        # the training pool of benchmarks/genomics_diffpalm_potts.py is sampled with seed = potts_seed (train split)
        self.pool = self.potts.sample(samples, sweeps=sweeps, seed=potts_seed + 7_919 * _SPLIT_SEED[split])
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch_seed = (self.seed * 1_000_003 + _SPLIT_SEED[self.split] * 100_003 + epoch) * 1_000_003

    @property
    def metadata(self) -> dict:
        return {"q": self.q, "length": self.length}

    def __len__(self) -> int:
        return self.msas

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.msas:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.epoch_seed + index)
        rows = self.pool[torch.randint(len(self.pool), (self.depth,), generator=g)]
        chosen = torch.rand(rows.shape, generator=g) < self.mask_prob
        return {"inputs": torch.where(chosen, torch.full_like(rows, self.q), rows),
                "targets": torch.where(chosen, rows, torch.full_like(rows, -100))}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"root": tmp_dir, "split": "train", "la": 3, "lb": 3, "n_links": 2, "n_intra": 1, "samples": 16,
                "sweeps": 2, "msas": 4, "depth": 4, "mask_prob": 0.3}


__all__ = ["PottsMSA"]
