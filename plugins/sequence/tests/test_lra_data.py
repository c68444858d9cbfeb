"""Generated long-range tasks: ListOps, Pathfinder, associative recall, selective copying (their invariants)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_sequence.datasets.listops import TOKEN_ID, ListOps, evaluate
from panconv_sequence.datasets.pathfinder import SIZE, Pathfinder
from panconv_sequence.datasets.synthetic import AssociativeRecall, SelectiveCopying

SHORT = dict(min_length=10, max_length=120, sizes=(200, 30, 30))


# ---------------------------------------------------------------- ListOps
@pytest.mark.parametrize(("expr", "value"), [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MED 1 2 3 4 ]", 2),            # int(np.median) of an even count truncates 2.5
    ("[MED 9 [SM 5 6 ] 3 ]", 3),      # SM 5 6 = 1 -> median of 9, 1, 3
    ("[SM 5 6 7 ]", 8),
    ("( ( [MIN 3 ) 8 ] )", 3),        # LRA's parentheses are ignored
])
def test_listops_evaluator_known_values(expr, value):
    assert evaluate(expr.split()) == value


@pytest.mark.parametrize("expr", ["[MAX 2 ", "[MAX ]", "3 4", "[FOO 1 2 ]"])
def test_listops_evaluator_rejects_malformed(expr):
    with pytest.raises(ValueError):
        evaluate(expr.split())


def test_listops_labels_are_the_expression_values_and_lengths_are_bounded():
    data = ListOps(split="train", **SHORT)
    assert data.metadata == {"num_classes": 10, "vocab_size": 16}
    for i in range(len(data)):
        item = data[i]
        tokens = ListOps.decode(item["inputs"])
        assert len(tokens) == item["lengths"] == int((item["inputs"] != 0).sum())
        assert SHORT["min_length"] < len(tokens) < SHORT["max_length"]
        assert evaluate(tokens) == item["labels"]
    assert len(set(data.data["labels"].tolist())) == 10  # every class occurs in 200 draws


def test_listops_lra_defaults_give_lra_lengths():
    data = ListOps(split="val", sizes=(1, 8, 1))
    lengths = data.data["lengths"]
    assert data.inputs.shape == (8, 2000)
    assert ((lengths > 500) & (lengths < 2000)).all()
    assert all(evaluate(ListOps.decode(x)) == y for x, y in zip(data.inputs, data.data["labels"]))


def test_listops_nesting_respects_max_depth_and_max_args():
    data = ListOps(split="train", min_length=10, max_length=200, max_depth=3, max_args=3, sizes=(100, 1, 1))
    for x in data.inputs:
        depth = max_depth = 0
        args = []
        for tok in ListOps.decode(x):
            if tok.startswith("["):
                if args:
                    args[-1] += 1
                depth += 1
                max_depth = max(max_depth, depth)
                args.append(0)
            elif tok == "]":
                assert 2 <= args.pop() <= 3
                depth -= 1
            else:
                args[-1] += 1
        assert max_depth <= 2  # an operator at depth 3 = max_depth would be a digit


def test_listops_is_seeded_and_splits_differ():
    a, b = ListOps(split="val", **SHORT), ListOps(split="val", **SHORT)
    assert torch.equal(a.inputs, b.inputs)
    assert not torch.equal(ListOps(split="test", **SHORT).inputs, a.inputs)
    assert not torch.equal(ListOps(split="val", seed=1, **SHORT).inputs, a.inputs)


def test_listops_collate_trims_to_the_longest_sequence():
    data = ListOps(split="val", **SHORT)
    batch = data.collate([data[i] for i in range(4)])
    assert batch["inputs"].shape == (4, int(batch["lengths"].max()))


def test_listops_reads_lra_tsv_and_names_bad_lines(tmp_path):
    good = tmp_path / "basic_val.tsv"
    good.write_text("Source\tTarget\n( ( [MAX 2 ) 9 ] )\t9\n( [SM 5 6 7 ] )\t8\n", encoding="utf-8")
    data = ListOps(split="val", file=str(good), min_length=0, max_length=16)
    assert data.data["labels"].tolist() == [9, 8]
    assert ListOps.decode(data.inputs[0]) == ["[MAX", "2", "9", "]"] and data.inputs[0, 0] == TOKEN_ID["[MAX"]
    bad = tmp_path / "basic_bad.tsv"
    bad.write_text("Source\tTarget\n[MAX 2 9 ]\t9\n[MIN 3 [FOO 1 ] ]\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"basic_bad.tsv:3: unknown token '\[FOO'"):
        ListOps(split="val", file=str(bad))


# ---------------------------------------------------------------- Pathfinder
def _connected(image: np.ndarray, a: np.ndarray, b: np.ndarray, radius: int = 2) -> bool:
    """Flood fill over lit pixels, neighbours within Chebyshev ``radius``: does ``a`` reach ``b``?"""
    lit = image > 0
    reached = np.zeros_like(lit)
    reached[tuple(a)] = True
    while True:
        grown = np.zeros_like(lit)
        ys, xs = np.nonzero(reached)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                y, x = ys + dy, xs + dx
                ok = (y >= 0) & (y < lit.shape[0]) & (x >= 0) & (x < lit.shape[1])
                grown[y[ok], x[ok]] = True
        grown &= lit
        grown |= reached
        if (grown == reached).all():
            return bool(reached[tuple(b)])
        reached = grown


def test_pathfinder_label_is_the_connectivity_of_the_markers():
    data = Pathfinder(split="train", sizes=(80, 1, 1))
    assert data.inputs.shape == (80, SIZE * SIZE) and data.metadata == {"num_classes": 2, "vocab_size": 256}
    labels = data.data["labels"].numpy()
    assert 0.25 < labels.mean() < 0.75
    for image, label, markers in zip(data.inputs.numpy(), labels, data.markers):
        image = image.reshape(SIZE, SIZE)
        for y, x in markers:  # 3x3 markers are drawn
            assert (image[y - 1:y + 2, x - 1:x + 2] == 255).all()
        assert _connected(image, markers[0], markers[1]) == bool(label)
        assert set(np.unique(image)) <= {0, 255}


def test_pathfinder_flood_fill_checker_can_fail():
    """The checker is not vacuous: two dots 3 px apart (Chebyshev) are separate, 2 px apart connected."""
    image = np.zeros((8, 8), np.uint8)
    image[1, 1] = image[1, 4] = 255
    assert not _connected(image, np.array([1, 1]), np.array([1, 4]))
    image[1, 3] = 255
    assert _connected(image, np.array([1, 1]), np.array([1, 4]))


def test_pathfinder_round_trips_through_npz(tmp_path):
    data = Pathfinder(split="val", sizes=(1, 6, 1), n_distractors=1)
    copy = Pathfinder(split="val", file=str(data.save(tmp_path / "pf.npz")))
    assert torch.equal(copy.inputs, data.inputs) and torch.equal(copy.data["labels"], data.data["labels"])
    np.savez(tmp_path / "bad.npz", inputs=np.full((2, 1024), 300), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="bad.npz"):
        Pathfinder(split="val", file=str(tmp_path / "bad.npz"))


# ---------------------------------------------------------------- associative recall / selective copying
@pytest.mark.parametrize("length", [1025, 16385])
def test_associative_recall_answer_is_determined_by_the_sequence(length):
    data = AssociativeRecall(split="test", length=length, vocab_size=30, sizes=(1, 1, 6))
    half = 15
    for x, label in zip(data.inputs.numpy(), data.data["labels"].numpy()):
        assert x.shape == (length,)
        keys, values, query = x[0:-1:2], x[1:-1:2], x[-1]
        assert (keys < half).all() and (values >= half).all()
        for key in np.unique(keys):  # one value per key within a sequence
            assert len(np.unique(values[keys == key])) == 1
        assert query in keys and (values[keys == query] == label).all()


def test_selective_copying_targets_are_the_data_tokens_in_order():
    data = SelectiveCopying(split="train", length=4096, n_tokens=16, vocab_size=18, sizes=(5, 1, 1))
    for x, t in zip(data.inputs.numpy(), data.data["targets"].numpy()):
        data_tokens = x[:-16][x[:-16] >= 2]
        assert len(data_tokens) == 16 and (x[:-16] <= 17).all()
        assert (x[-16:] == 1).all() and (x[:-16] != 1).all()
        assert (t[-16:] == data_tokens).all() and (t[:-16] == -100).all()
    batch = data.collate([data[0], data[1]])
    assert batch["inputs"].shape == batch["targets"].shape == (2, 4096)


def test_generated_tasks_validate_their_arguments():
    with pytest.raises(ValueError, match="odd"):
        AssociativeRecall(length=1024)
    with pytest.raises(ValueError, match="n_tokens"):
        SelectiveCopying(length=10, n_tokens=6)
    with pytest.raises(ValueError, match="min_length"):
        ListOps(min_length=100, max_length=50)


def test_broken_npz_names_the_file(tmp_path):
    kwargs = AssociativeRecall.broken_example(tmp_path)
    with pytest.raises(DataError, match="broken_associativerecall.npz"):
        AssociativeRecall(split="train", **kwargs)
