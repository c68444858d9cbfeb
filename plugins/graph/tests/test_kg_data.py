"""graph.KGFacts (queries, neighbour prompts, the filter lists, malformed files, the pykeen files and the
synthetic generator) and graph.LinkPrediction (the filtered protocol on hand-worked cases)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_graph.datasets.kg import (
    MASK,
    NO_RELATION,
    PAD,
    KGFacts,
    entity_token,
    generate_hyper_facts,
    pykeen_folder,
    relation_token,
)
from panconv_graph.evaluators.kg import LinkPrediction, filtered_ranks


def write(folder, train, valid, test):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def tiny(tmp_path):
    write(tmp_path / "kg" / "tiny",
          ["a\tr\tb\tq\tc", "a\tr\tc\tq\tc", "b\ts\tc", "d\tr\ta"],
          ["a\tr\td\tq\tb"],
          ["a\tr\te\tq\tc", "c\ts\ta"])
    return tmp_path


def test_vocabulary_queries_and_sequences(tiny):
    ds = KGFacts(root=tiny, split="test", name="tiny", n_neighbors=2)
    assert ds.entities == ["a", "b", "c", "d", "e"] and ds.relations == ["q", "r", "s"]
    assert ds.metadata == {"n_entities": 5, "n_relations": 3, "max_qualifiers": 1}
    assert len(ds) == 4  # two facts, a tail and a head query each
    n_e, n_r = 5, 3
    # fact (a, r, e, {q: c}): tail query [a, r, MASK, q, c] -> e; head query [e, r^-1, MASK, q, c] -> a
    assert ds.seqs[0].tolist() == [entity_token(0), relation_token(1, n_e, n_r), MASK,
                                   relation_token(0, n_e, n_r), entity_token(2)]
    assert ds.labels[0] == 4
    assert ds.seqs[1].tolist()[:2] == [entity_token(4), relation_token(1, n_e, n_r, inverse=True)]
    assert ds.labels[1] == 0
    # (c, s, a) has no qualifier: padded
    assert ds.seqs[2].tolist()[3:] == [PAD, PAD]


def test_filter_lists_hold_the_other_answers_of_the_same_statement(tiny):
    ds = KGFacts(root=tiny, split="test", name="tiny")
    # (a, r, ?, {q: c}): answers b, c (train) and e (test, the target) -> filter {b, c}
    assert ds.filters[0].tolist() == [1, 2]
    # (?, r, e, {q: c}) has only a -> nothing to filter
    assert ds.filters[1].tolist() == []
    # (d, r, a) with qualifier-free matching: the head query of (a r d {q:b}) is not the same statement
    triple = KGFacts(root=tiny, split="test", name="tiny", filter_by="triple")
    # ignoring qualifiers, (a, r, ?) also has d (valid)
    assert triple.filters[0].tolist() == [1, 2, 3]


def test_neighbour_prompts_come_from_training_facts_and_never_show_a_training_query_its_own_fact(tiny):
    ds = KGFacts(root=tiny, split="train", name="tiny", n_neighbors=4, seed=3)
    n_e, n_r = 5, 3
    own = {  # prompts of entity a in train: (a r b) -> [b, r^-1, M], (a r c) -> [c, r^-1, M], (d r a) -> [d, r, M]
        (entity_token(1), relation_token(1, n_e, n_r, True), MASK),
        (entity_token(2), relation_token(1, n_e, n_r, True), MASK),
        (entity_token(3), relation_token(1, n_e, n_r), MASK)}
    prompts = {tuple(p) for p in ds[0]["neighbors"].tolist()}  # query 0: tail query of (a r b)
    assert prompts <= own - {(entity_token(1), relation_token(1, n_e, n_r, True), MASK)}
    # reproducible per epoch, changes with the epoch
    first = [ds[i]["neighbors"] for i in range(len(ds))]
    assert all(torch.equal(a, ds[i]["neighbors"]) for i, a in enumerate(first))
    ds.set_epoch(5)
    assert any(not torch.equal(a, ds[i]["neighbors"]) for i, a in enumerate(first))
    # an entity without training facts (e) gets the "no relation" prompt
    test = KGFacts(root=tiny, split="test", name="tiny", n_neighbors=2)
    assert test[1]["neighbors"].tolist() == [[entity_token(4), NO_RELATION, MASK]] * 2


@pytest.mark.parametrize(("line", "what"), [("a\tr", "got 2 field(s)"), ("a\tr\tb\tq", "got 4 field(s)"),
                                            ("a\t\tb", "empty label")])
def test_malformed_lines_name_file_and_line(tiny, line, what):
    folder = tiny / "kg" / "tiny"
    (folder / "valid.txt").write_text("a\tr\td\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"valid\.txt:2: .*{re.escape(what)}"):
        KGFacts(root=tiny, split="train", name="tiny")


def test_missing_folder_and_non_utf8(tmp_path, tiny):
    with pytest.raises(DataError, match="no folder"):
        KGFacts(root=tmp_path, name="nope")
    (tiny / "kg" / "tiny" / "test.txt").write_bytes(b"a\tr\t\xff\n")
    with pytest.raises(DataError, match=r"test\.txt:1: not UTF-8"):
        KGFacts(root=tiny, name="tiny")


def test_collate_builds_csr_filter_lists(tiny):
    ds = KGFacts(root=tiny, split="test", name="tiny")
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["seq"].shape == (4, 5) and batch["neighbors"].shape == (4, 3, 3)
    assert batch["filter_offsets"].tolist() == [0, 2, 2, 2, 2]
    assert batch["filter_items"].tolist() == [1, 2]


def test_the_generator_is_seeded_and_its_qualifiers_decide_the_tail():
    a, b = generate_hyper_facts(seed=1), generate_hyper_facts(seed=1)
    assert a == b and a != generate_hyper_facts(seed=2)
    facts = a["train"] + a["val"] + a["test"]
    assert len(facts) == 10 * 10 * 4 * 4
    by_triple, by_statement = {}, {}
    for h, r, t, _, ctx, _, _ in facts:  # (member, r, hub, context, ctx<k>, noise, noise<j>)
        by_triple.setdefault((h, r), set()).add(t)
        by_statement.setdefault((h, r, ctx), set()).add(t)
    assert {len(v) for v in by_statement.values()} == {1}  # the context qualifier fixes the tail
    assert np.mean([len(v) for v in by_triple.values()]) > 3  # without it, ~4 answers per (h, r)


# ---- the evaluator

def test_filtered_rank_by_hand():
    scores = torch.tensor([[0.9, 0.7, 0.5, 0.1, 0.0],
                           [0.9, 0.7, 0.5, 0.1, 0.0],
                           [0.3, 0.8, 0.1, 0.3, 0.0]])
    labels = torch.tensor([2, 2, 0])
    # row 0: 0 is another answer (filtered): only 1 is above -> 2; row 1 unfiltered -> 3;
    # row 2: 1 above, 3 ties (half) -> 2.5
    ranks = filtered_ranks(scores, labels, torch.tensor([0]), torch.tensor([0, 1, 1, 1]))
    assert ranks.tolist() == [2.0, 3.0, 2.5]
    # filtering the answer itself never happens (the dataset drops it); a constant model gets the mean rank
    flat = filtered_ranks(torch.zeros(1, 5), torch.tensor([3]), None, None)
    assert flat.tolist() == [3.0]


def test_link_prediction_metrics_by_hand():
    ev = LinkPrediction(ks=[1, 3])
    kwargs, batches, expected = LinkPrediction.example()
    for batch, out in batches:
        ev.process(batch, out)
    got = ev.compute()
    assert math.isclose(got["mrr"], (1 / 2 + 1 + 1 / 2.5) / 3)
    assert got["hits@1"] == pytest.approx(1 / 3) and got["hits@3"] == 1.0 and got["mr"] == pytest.approx(5.5 / 3)
    assert not ev.greater_is_better("mr") and ev.greater_is_better("mrr")


def test_link_prediction_rejects_bad_ks():
    with pytest.raises(ValueError):
        LinkPrediction(ks=[0])


@pytest.mark.parametrize("name", ["nations", "kinships", "umls"])
def test_the_pykeen_files_load_when_pykeen_is_installed(tmp_path, name):
    if pykeen_folder(name) is None:
        pytest.skip("pykeen is not installed (pip install --no-deps pykeen ships the files)")
    ds = KGFacts(root=tmp_path, split="test", name=name)
    sizes = {"nations": (14, 55), "kinships": (104, 25), "umls": (135, 46)}[name]
    assert (ds.n_entities, ds.n_relations) == sizes
    assert ds.max_qualifiers == 0 and ds.seqs.shape[1] == 3
