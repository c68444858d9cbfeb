"""``benchmarks/genomics_diffpalm_official.py`` without the official code: its ``--official`` errors, its
``--sizes`` parsing, and our side of the comparison (the official side needs the fetched package, never here)."""

import argparse
from pathlib import Path

import pytest
import torch

from panconv.testing import load_script
from panconv_genomics.models.diffpalm import MSATransformer, OfficialRecipe

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "genomics_diffpalm_official.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCHMARK, "genomics_diffpalm_official")


def test_missing_official_is_one_line_naming_the_fetch(bench):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--sizes", "2x3"])
    message = str(exc.value.code)
    assert message.startswith("--official DIR is required") and "\n" not in message
    assert "git -C" in message and "show HEAD:diffpalm/$f" in message


def test_official_dir_without_the_package_is_refused(bench, tmp_path):
    (tmp_path / "diffpalm").mkdir()                       # the folder, but no core.py in it
    with pytest.raises(SystemExit) as exc:
        bench.main(["--official", str(tmp_path)])
    message = str(exc.value.code)
    assert f"--official {tmp_path}: no diffpalm/core.py there" in message and "\n" not in message
    assert f"> {tmp_path}/diffpalm/$f" in message       # the fetch command names the given directory


def test_sizes_are_species_by_paralogs(bench):
    assert bench.parse_size("4x6") == (4, 6) and bench.parse_size("8X12") == (8, 12)
    for bad in ("4by6", "4x", "0x6", "3x1"):
        with pytest.raises(argparse.ArgumentTypeError, match="size"):
            bench.parse_size(bad)
    with pytest.raises(SystemExit) as exc:                # argparse turns it into a usage error
        bench.main(["--sizes", "4by6"])
    assert exc.value.code == 2


def test_paired_msa_has_the_requested_shape_and_shuffled_b_rows(bench):
    a_rows, b_rows = bench.paired_msa(3, 5, 8, 8)
    assert len(a_rows) == len(b_rows) == 3
    assert all(a.shape == (5, 8) and b.shape == (5, 8) for a, b in zip(a_rows, b_rows))
    assert all(int(x.max()) < bench.Q for x in a_rows + b_rows)
    again = bench.paired_msa(3, 5, 8, 8)                  # seeded: both implementations get the same MSA
    assert all(torch.equal(x, y) for x, y in zip(a_rows + b_rows, again[0] + again[1]))


def test_our_side_measures_one_loss_per_iteration(bench):
    torch.manual_seed(0)
    model = MSATransformer(bench.Q, 8, d=8, layers=1, heads=2).eval()
    a_rows, b_rows = bench.paired_msa(2, 3, 4, 4)
    recipe = OfficialRecipe(epochs=3, **bench.PAPER_RECIPE)
    seconds, growth, losses = bench.measure(lambda: bench.run_ours(model, a_rows, b_rows, 4, recipe, seed=1))
    assert seconds > 0 and growth >= 0
    assert len(losses) == (recipe.epochs + 1) * recipe.batch_size
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses == bench.run_ours(model, a_rows, b_rows, 4, recipe, seed=1)   # seeded: a parity baseline
