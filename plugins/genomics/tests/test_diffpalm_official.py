"""DiffPALM against the official code (Bitbol-Lab/DiffPALM), recorded by make_diffpalm_fixture.py: the Sinkhorn
and matching pieces, and whole optimisation trajectories under :class:`OfficialRecipe`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv_genomics.models.diffpalm import (
    OfficialRecipe,
    diffpalm_iterative,
    diffpalm_pairing,
    diffpalm_scores,
    gumbel_noise,
    hungarian_assignment,
    sinkhorn,
)

sys.path.insert(0, str(Path(__file__).parent))
import make_diffpalm_fixture as fixture  # noqa: E402


@pytest.fixture(scope="module")
def record():
    return torch.load(fixture.FIXTURE, weights_only=True)


def test_fixture_inputs_are_the_documented_ones(record):
    assert record["source"] == fixture.SOURCE
    a_rows, b_rows = fixture.pairing_rows()
    assert all(torch.equal(x, y) for x, y in zip(a_rows + b_rows, record["a_rows"] + record["b_rows"]))
    assert [len(a) for a in a_rows] == list(fixture.SPECIES)


@pytest.mark.parametrize("index", range(len(fixture.PIECE_SIZES)))
def test_sinkhorn_and_hungarian_equal_the_official_pieces(record, index):
    """Official gumbel_sinkhorn / gumbel_matching, with and without Gumbel noise on given uniforms."""
    x, u = fixture.piece_inputs()[index]
    want = record["pieces"][index]
    m = len(x)
    assert torch.equal(F.one_hot(hungarian_assignment(x), m).float(), want["matching"])
    noisy = x + gumbel_noise(u) * fixture.NOISE_FACTOR
    assert torch.equal(F.one_hot(hungarian_assignment(noisy), m).float(), want["noisy_matching"])
    for tau, n in fixture.SINKHORN_SETTINGS:
        assert (sinkhorn(x, tau, n) - want[f"sinkhorn_{tau}_{n}"]).abs().max().item() <= 1e-6
        assert (sinkhorn(noisy, tau, n) - want[f"noisy_sinkhorn_{tau}_{n}"]).abs().max().item() <= 1e-6


def run_ours(record, name: str) -> tuple[list[torch.Tensor], dict]:
    case = fixture.CASES[name]
    model = fixture.msa_model(record["lm"])
    history: dict = {}
    scores = diffpalm_scores(model, record["a_rows"], record["b_rows"], fixture.LA, seed=case["seed"],
                             fixed=case["fixed"], recipe=OfficialRecipe(**case["recipe"]), history=history,
                             context=fixture.context_rows(case["context"]))
    return scores, history


def free_rows_and_columns(case: dict, s: int) -> tuple[list[int], list[int]]:
    """Species ``s``'s A rows and B rows not in a fixed pair (the official fixes a last free pair implicitly)."""
    m, fixed = fixture.SPECIES[s], dict((case["fixed"] or [{}] * len(fixture.SPECIES))[s])
    rows = [i for i in range(m) if i not in fixed]
    cols = [j for j in range(m) if j not in fixed.values()]
    return ([], []) if case["fixed"] is not None and len(rows) == 1 else (rows, cols)


def free_blocks(case: dict, blocks: list[torch.Tensor]) -> torch.Tensor:
    """Per-species free score blocks as an official ``list_log_alpha`` entry: ``(D, D)``, their block diagonal on
    the free rows x free columns (0 across species), NaN on the rows and columns of fixed pairs."""
    depth, rows, cols = sum(fixture.SPECIES), [], []
    for s, start in enumerate([0, *torch.tensor(fixture.SPECIES).cumsum(0).tolist()[:-1]]):
        free_a, free_b = free_rows_and_columns(case, s)
        rows += [start + i for i in free_a]
        cols += [start + j for j in free_b]
    full = torch.full((depth, depth), math.nan)
    full[torch.tensor(rows)[:, None], torch.tensor(cols)] = torch.block_diag(*blocks)
    return full


def official_index(pairings: list[torch.Tensor]) -> torch.Tensor:
    """The official ``list_idx`` entry from per-species pairings: position ``q`` holds the (global) A row there."""
    idx, start = [], 0
    for perm in pairings:
        local = torch.empty_like(perm)
        local[perm] = torch.arange(len(perm))
        idx.append(local + start)
        start += len(perm)
    return torch.cat(idx)


@pytest.mark.parametrize("name", sorted(fixture.CASES))
def test_trajectory_equals_the_official_training(record, name):
    """Same losses at every iteration, learning rates, scores at every epoch, hard matchings and final scores."""
    want, case = record["cases"][name], fixture.CASES[name]
    scores, history = run_ours(record, name)
    recipe = OfficialRecipe(**case["recipe"])
    assert len(history["loss"]) == len(want["loss"]) == (recipe.epochs + 1) * recipe.batch_size
    assert (torch.tensor(history["loss"], dtype=torch.float64) - want["loss"]).abs().max().item() <= 1e-5
    assert history["lr"] == pytest.approx(want["lr"].tolist(), rel=1e-12)
    ours = torch.stack([free_blocks(case, blocks) for blocks in history["scores"]])
    torch.testing.assert_close(ours, want["log_alpha"], rtol=0, atol=1e-5, equal_nan=True)
    assert torch.equal(torch.stack([official_index(p) for p in history["pairings"]]), want["idx"])
    for s, (x, final) in enumerate(zip(scores, want["final"])):
        rows, cols = free_rows_and_columns(case, s)
        free = x[torch.tensor(rows, dtype=torch.long)[:, None], torch.tensor(cols, dtype=torch.long)]
        torch.testing.assert_close(free, final, rtol=0, atol=1e-5)
        for i, j in (case["fixed"] or [{}] * len(scores))[s].items():          # fixed pairs: the only choice
            assert x[i, j] == 0 and torch.isinf(x[i]).sum() == len(x) - 1
    # the run is not trivial: the scores moved and the hard matchings changed along the way
    assert (ours[-1] - ours[0]).nan_to_num().abs().max() > 1e-3
    assert len({tuple(i.tolist()) for i in want["idx"]}) > 1 or name == "fixed"


def test_recipe_fields_replace_the_default_options(record):
    model = fixture.msa_model(record["lm"])
    with pytest.raises(ValueError, match="steps, mask_prob do not apply"):
        diffpalm_scores(model, record["a_rows"], record["b_rows"], fixture.LA, steps=3, mask_prob=0.5,
                        recipe=OfficialRecipe())
    with pytest.raises(ValueError, match="p_mask"):
        OfficialRecipe(p_mask=0.0)
    with pytest.raises(ValueError, match="torch.optim"):
        OfficialRecipe(optimizer="Adadeltaa")


def test_pairing_and_iterative_procedure_run_the_recipe(record):
    model, a_rows, b_rows = fixture.msa_model(record["lm"]), record["a_rows"], record["b_rows"]
    recipe = OfficialRecipe(epochs=3, noise=False)
    scores = diffpalm_scores(model, a_rows, b_rows, fixture.LA, seed=5, recipe=recipe)
    perms = diffpalm_pairing(model, a_rows, b_rows, fixture.LA, seed=5, assignment="hungarian", recipe=recipe)
    assert [p.tolist() for p in perms] == [hungarian_assignment(x).tolist() for x in scores]
    rounds = diffpalm_iterative(model, a_rows, b_rows, fixture.LA, rounds=2, seed=5, return_rounds=True,
                                assignment="hungarian", recipe=recipe)
    assert [p.tolist() for p in rounds[0]] == [p.tolist() for p in perms]
    for perm, m in zip(rounds[-1], fixture.SPECIES):
        assert sorted(perm.tolist()) == list(range(m))


def test_history_records_the_default_losses_without_changing_the_result(record):
    model, a_rows, b_rows = fixture.msa_model(record["lm"]), record["a_rows"], record["b_rows"]
    history: dict = {}
    with_history = diffpalm_scores(model, a_rows, b_rows, fixture.LA, steps=4, history=history)
    without = diffpalm_scores(model, a_rows, b_rows, fixture.LA, steps=4)
    assert all(torch.equal(x, y) for x, y in zip(with_history, without))
    assert len(history["loss"]) == 4 and all(math.isfinite(v) and v > 0 for v in history["loss"])
    # known pairs as context rows: the same masks on the MSA's rows, a model that now also sees the context
    with_context: dict = {}
    diffpalm_scores(model, a_rows, b_rows, fixture.LA, steps=4, history=with_context,
                    context=fixture.context_rows(2))
    assert len(with_context["loss"]) == 4 and with_context["loss"][0] != history["loss"][0]
