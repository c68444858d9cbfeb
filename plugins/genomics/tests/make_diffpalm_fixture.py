"""Regenerate ``fixtures/diffpalm_official.pt``: the official DiffPALM code's outputs on our small MSA model.

Not a test (pytest does not collect it). Needs the official package, fetched, never committed::

    mkdir -p /tmp/diffpalm_official/diffpalm
    for f in __init__.py core.py gumbel_sinkhorn_utils.py; do
        git -C <Bitbol-Lab/DiffPALM checkout> show HEAD:diffpalm/$f > /tmp/diffpalm_official/diffpalm/$f
    done
    PANCONV_RECORD_DIFFPALM=1 PYTHONPATH=/tmp/diffpalm_official \\
        python plugins/genomics/tests/make_diffpalm_fixture.py

(it needs scipy, tqdm and matplotlib, as the official code imports them). The official ``diffpalm.core`` loads the
100M-parameter MSA Transformer at import (``esm.pretrained.esm_msa1b_t12_100M_UR50S()``) and calls it on one-hot
inputs ``(B, D, L + 1, 33)`` (column 0 is the BOS token, token 32 the mask). Its weights are not available here, so
an ``esm`` module is put in ``sys.modules`` whose loader returns :class:`OfficialAdapter`: our small
:class:`MSATransformer` (trained for a few steps on Potts samples, its state dict stored in the fixture) behind the
official interface. Our letters ``0..q-1`` are alphabet columns ``4..4+q-1``, our mask token column 32; the BOS
column is dropped on the way in, and our ``q`` logits come back in the letters' columns, every other column at
``FILL`` (its ``exp`` is exactly 0 in float32, so the official cross-entropy over 33 classes equals ours over
``q``). ``DiffPALM.plot_real_time`` is replaced by a no-op (it only plots, and uses matplotlib API removed since
3.9). Recorded per case of ``CASES``: ``DiffPALM(species_sizes, p_mask, random_seed=seed, device="cpu").train(...)``'s
losses, learning rates, ``list_log_alpha``, ``list_idx`` and final ``log_alpha``; and, for the pieces, the official
``gumbel_sinkhorn`` and ``gumbel_matching`` on seeded matrices. A few tens of KB.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FIXTURE = Path(__file__).parent / "fixtures" / "diffpalm_official.pt"
#: the upstream commit the fixture was recorded from
SOURCE = {"Bitbol-Lab/DiffPALM": "60a2083865d20ac7f5fa1cb73a172fbd2020310e"}
#: the small MSA model (the official code needs only its logits) and the Potts model its rows come from
LM_CONFIG = dict(q=4, length=8, d=16, layers=1, heads=2)
LA = 4
POTTS = dict(la=4, lb=4, q=4, n_links=6, coupling=2.0, seed=1)
SPECIES = (3, 4)
LETTERS = list(range(4, 4 + LM_CONFIG["q"]))      # official alphabet columns of our letters
MASK_COLUMN, WIDTH, FILL = 32, 33, -1.0e4
#: OfficialRecipe fields, seed (the official random_seed), fixed pairs (ours: {A row: B row} per species) and
#: the number of known pairs given as context rows (the official positive_examples, :func:`context_rows`)
CASES = {
    # noise off, the official defaults otherwise (std_init 0.1, Adadelta lr 1), two masks per step: long enough
    # for the plateau schedule to cut the learning rate
    "plain": dict(recipe=dict(epochs=24, batch_size=2, noise=False), seed=42, fixed=None, context=0),
    # the paper's example notebook settings (noise scaled by the scores' std and the learning rate, shuffled ties)
    "paper": dict(recipe=dict(epochs=16, std_init=0.0, lr=9.0, weight_decay=0.1, noise=True, noise_std=True,
                              noise_scheduler=True, rand_perm=True), seed=100, fixed=None, context=0),
    # fixed pairs: species 0 fully fixed (one pair implicitly), species 1 with one pair fixed; Gumbel noise on
    "fixed": dict(recipe=dict(epochs=6, batch_size=2, noise=True, noise_factor=0.3), seed=7,
                  fixed=[{0: 1, 2: 0}, {2: 3}], context=0),
    # known pairs above the MSA (never masked, outside the loss)
    "context": dict(recipe=dict(epochs=5, noise=False), seed=11, fixed=None, context=2),
}
#: the pieces: seeded score matrices, Sinkhorn (tau, iterations) settings, and a Gumbel-noise factor
PIECE_SIZES, PIECE_SEED = (3, 5, 8), 0
SINKHORN_SETTINGS = ((1.0, 10), (0.3, 20))
NOISE_FACTOR = 0.5


def msa_model(state: dict | None = None):
    """Our small MSA model: the recorded weights (``state``), or freshly trained ones (the recording)."""
    from panconv_genomics.models.diffpalm import MSATransformer, PottsPairs, train_msa_lm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MSATransformer(**LM_CONFIG)
    if state is None:
        train_msa_lm(model, PottsPairs(**POTTS), steps=60, depth=8, batch=4, pool=400, seed=0)
    else:
        model.load_state_dict(state)
    return model.eval()


def pairing_rows() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two species of 3 and 4 Potts pairs, B rows shuffled within each species (seeded)."""
    from panconv_genomics.models.diffpalm import PottsPairs

    pairs = PottsPairs(**POTTS).sample(sum(SPECIES), seed=3)
    g = torch.Generator().manual_seed(3)
    a_rows, b_rows, start = [], [], 0
    for m in SPECIES:
        block = pairs[start:start + m]
        a_rows.append(block[:, :LA])
        b_rows.append(block[torch.randperm(m, generator=g), LA:])
        start += m
    return a_rows, b_rows


def context_rows(n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``n`` further Potts pairs ``(A rows, B rows)``, as known pairs (None for 0)."""
    from panconv_genomics.models.diffpalm import PottsPairs

    if not n:
        return None
    pairs = PottsPairs(**POTTS).sample(n, seed=4)
    return pairs[:, :LA], pairs[:, LA:]


def piece_inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(scores, uniforms) per size of ``PIECE_SIZES``."""
    g = torch.Generator().manual_seed(PIECE_SEED)
    return [(2.0 * torch.randn(m, m, generator=g), torch.rand(m, m, generator=g)) for m in PIECE_SIZES]


def official_onehot(rows: torch.Tensor) -> torch.Tensor:
    """Our ids ``(D, L)`` as the official input ``(1, D, L + 1, 33)``: a BOS column, letters at ``LETTERS``."""
    ids = torch.cat([torch.zeros(len(rows), 1, dtype=torch.long), torch.tensor(LETTERS)[rows]], dim=1)
    return F.one_hot(ids, WIDTH).float()[None]


class OfficialAdapter(nn.Module):
    """Our MSA model behind the official one's call: one-hots ``(B, D, L + 1, 33)`` -> ``{"logits": ...}``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, repr_layers=()) -> dict:
        logits = self.model(tokens[..., 1:, LETTERS + [MASK_COLUMN]])                 # (B, D, L, q)
        out = torch.full((*tokens.shape[:-1], WIDTH), FILL)
        out[..., 1:, LETTERS] = logits
        return {"logits": out}


def official_fixed(fixed):
    return None if fixed is None else [sorted(pairs.items()) for pairs in fixed]


def official_core(lm):
    """The official ``diffpalm.core`` (on ``sys.path``) with ``lm`` as its MSA model: a stub ``esm`` module is put in
    ``sys.modules`` before the import (its loader returns ``OfficialAdapter(lm)``), ``plot_real_time`` patched out.
    Called again, it swaps the (module-global) model for ``lm``."""
    sys.modules["esm"] = types.SimpleNamespace(
        pretrained=types.SimpleNamespace(esm_msa1b_t12_100M_UR50S=lambda: (OfficialAdapter(lm), None)))
    from diffpalm import core

    core.msa_transformer = OfficialAdapter(lm).eval()
    core.DiffPALM.plot_real_time = lambda self, *args, **kwargs: None
    return core


def official_train(core, species, recipe, seed: int, left: torch.Tensor, right: torch.Tensor, fixed=None,
                   positive: torch.Tensor | None = None):
    """``DiffPALM(species, p_mask, random_seed=seed).train(...)`` at ``recipe``'s settings (an ``OfficialRecipe``),
    on the official one-hots ``left`` / ``right``; ``fixed`` in the official format, ``positive`` the official
    ``positive_examples``. Returns the ``DiffPALM`` object and ``train``'s outputs."""
    r = recipe
    dpalm = core.DiffPALM(list(species), p_mask=r.p_mask, random_seed=seed, device="cpu")
    out = dpalm.train(
        left, right, fixed_pairings=fixed, std_init=r.std_init, epochs=r.epochs,
        optimizer_name=r.optimizer, optimizer_kwargs={"lr": r.lr, "weight_decay": r.weight_decay}, tau=r.tau,
        n_sink_iter=r.sinkhorn_iterations, noise=r.noise, noise_std=r.noise_std, noise_factor=r.noise_factor,
        noise_scheduler=r.noise_scheduler, scheduler_name="ReduceLROnPlateau" if r.plateau else None,
        batch_size=r.batch_size, use_rand_perm=r.rand_perm, mean_centering=r.mean_centering,
        positive_examples=positive)
    return dpalm, out


def record() -> None:
    import numpy as np

    from panconv_genomics.models.diffpalm import OfficialRecipe

    lm = msa_model()
    core = official_core(lm)
    from diffpalm import gumbel_sinkhorn_utils as gsu

    pieces = []
    for x, u in piece_inputs():
        entry = {"matching": gsu.gumbel_matching(x, noise=False),
                 "noisy_matching": gsu.gumbel_matching(x, noise_mat=u, noise=True, noise_factor=NOISE_FACTOR)}
        for tau, n in SINKHORN_SETTINGS:
            entry[f"sinkhorn_{tau}_{n}"] = gsu.gumbel_sinkhorn(x, tau=tau, n_iter=n, noise=False)
            entry[f"noisy_sinkhorn_{tau}_{n}"] = gsu.gumbel_sinkhorn(x, noise_mat=u, tau=tau, n_iter=n, noise=True,
                                                                     noise_factor=NOISE_FACTOR)
        pieces.append(entry)
    a_rows, b_rows = pairing_rows()
    left, right = official_onehot(torch.cat(a_rows)), official_onehot(torch.cat(b_rows))
    cases = {}
    for name, case in CASES.items():
        positive = None if not case["context"] else official_onehot(torch.cat(context_rows(case["context"]), dim=1))
        dpalm, (losses, lrs, idx, _, _, log_alphas) = official_train(
            core, SPECIES, OfficialRecipe(**case["recipe"]), case["seed"], left, right,
            fixed=official_fixed(case["fixed"]), positive=positive)
        cases[name] = {"loss": torch.tensor(losses, dtype=torch.float64), "lr": torch.tensor(lrs, dtype=torch.float64),
                       "log_alpha": torch.from_numpy(np.stack(log_alphas)),
                       "idx": torch.from_numpy(np.stack(idx)).round().long(),
                       "final": [x.detach().clone() for x in dpalm.log_alpha]}
        print(f"{name}: {len(losses)} losses {losses[0]:.4f} -> {losses[-1]:.4f}, lr {lrs[0]:.3g} -> {lrs[-1]:.3g}")
    record = {"source": SOURCE, "lm": lm.state_dict(), "a_rows": a_rows, "b_rows": b_rows, "pieces": pieces,
              "cases": cases}
    torch.save(record, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    if os.environ.get("PANCONV_RECORD_DIFFPALM") != "1":
        sys.exit("set PANCONV_RECORD_DIFFPALM=1 (and PYTHONPATH to the official diffpalm package) to record")
    record()
