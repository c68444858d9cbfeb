import math

import numpy as np
import pytest
import torch

from panconv_graph.evaluators.ranking import FullRanking


def test_example_by_hand():
    kwargs, pairs, expected = FullRanking.example()
    ev = FullRanking(**kwargs)
    for batch, out in pairs:
        ev.process(batch, out)
    got = ev.compute()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-12)


def test_hand_case_several_k():
    # user 0: held {2, 5, 6}; seen {0}; ranking after masking: 1, 2, 3, 5, 4, 6
    scores = torch.tensor([[10.0, 6, 5, 4, 2, 3, 1]])
    batch = {"held_items": torch.tensor([2, 5, 6]), "held_offsets": torch.tensor([0, 3]),
             "seen_items": torch.tensor([0]), "seen_offsets": torch.tensor([0, 1])}
    ev = FullRanking(ks=[1, 3, 5])
    ev.process(batch, scores)
    m = ev.compute()
    d = [1 / math.log2(r + 1) for r in range(1, 7)]
    assert m["recall@1"] == 0 and m["hit@1"] == 0 and m["ndcg@1"] == 0
    assert m["recall@3"] == pytest.approx(1 / 3) and m["precision@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx(d[1] / sum(d[:3]))
    assert m["recall@5"] == pytest.approx(2 / 3) and m["precision@5"] == pytest.approx(2 / 5)
    assert m["ndcg@5"] == pytest.approx((d[1] + d[3]) / sum(d[:3]))  # ideal DCG over min(|T|, K) = 3
    assert m["hit@5"] == 1


def brute_force(scores, held, seen, k):
    """Per-user metrics written from the definitions with Python loops (the reference's formulas)."""
    rec, ndcg, prec, hit = [], [], [], []
    for s, t, m in zip(scores.tolist(), held, seen):
        cand = [i for i in range(len(s)) if i not in m]
        ranked = sorted(cand, key=lambda i: -s[i])[:k]
        rel = [1.0 if i in t else 0.0 for i in ranked]
        dcg = sum(r / math.log2(j + 2) for j, r in enumerate(rel))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(t), k)))
        rec.append(sum(rel) / len(t))
        prec.append(sum(rel) / k)
        hit.append(float(sum(rel) > 0))
        ndcg.append(dcg / idcg)
    return {f"recall@{k}": np.mean(rec), f"ndcg@{k}": np.mean(ndcg), f"precision@{k}": np.mean(prec),
            f"hit@{k}": np.mean(hit)}


def make_batch(rng, users, n_items):
    held, seen = [], []
    for _ in users:
        perm = rng.permutation(n_items)
        nh, ns = rng.integers(1, 8), rng.integers(0, 10)
        held.append(set(perm[:nh].tolist()))
        seen.append(set(perm[nh:nh + ns].tolist()))
    flat = lambda sets: (torch.tensor([i for s in sets for i in sorted(s)], dtype=torch.int64),
                         torch.tensor(np.cumsum([0] + [len(s) for s in sets]), dtype=torch.int64))
    hi, ho = flat(held)
    si, so = flat(seen)
    return {"users": torch.tensor(users), "held_items": hi, "held_offsets": ho,
            "seen_items": si, "seen_offsets": so}, held, seen


def test_matches_brute_force_and_merges():
    rng = np.random.default_rng(0)
    n_items, ks = 40, [1, 5, 20]
    ev = FullRanking(ks=ks)
    all_scores, all_held, all_seen = [], [], []
    for start in range(0, 30, 7):
        users = list(range(start, min(start + 7, 30)))
        batch, held, seen = make_batch(rng, users, n_items)
        scores = torch.tensor(rng.standard_normal((len(users), n_items)), dtype=torch.float32)  # no ties
        ev.process(batch, scores)
        all_scores.append(scores)
        all_held += held
        all_seen += seen
    got = ev.compute()
    scores = torch.cat(all_scores)
    for k in ks:
        for name, value in brute_force(scores, all_held, all_seen, k).items():
            assert got[name] == pytest.approx(value, abs=1e-9), name
    a, b = ev.results[:2], ev.results[2:]
    assert ev.compute_metrics(a + b) == ev.compute_metrics(ev.results)
    # merging two evaluators' partial results (DDP) gives the single-process metrics
    assert FullRanking(ks=ks).compute_metrics(ev.results[:3] + ev.results[3:]) == got


def test_rejects_bad_ks():
    with pytest.raises(ValueError):
        FullRanking(ks=[0])


@pytest.mark.parametrize("block_elements", [40, 3 * 40, 1 << 24])  # one row, three rows, one block
def test_blocked_ranking_of_factorised_scores_matches_brute_force(monkeypatch, block_elements):
    from panconv_graph.evaluators import ranking

    monkeypatch.setattr(ranking, "BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(1)
    n_items, ks = 40, [1, 5, 20]
    batch, held, seen = make_batch(rng, list(range(11)), n_items)
    users = torch.tensor(rng.standard_normal((11, 6)), dtype=torch.float32)
    items = torch.tensor(rng.standard_normal((n_items, 6)), dtype=torch.float32)
    lazy = ranking.UserItemScores(users, items)
    dense = lazy.dense()
    assert lazy.shape == dense.shape == (11, n_items)
    torch.testing.assert_close(dense, users @ items.t())
    before = dense.clone()
    factorised, materialised = FullRanking(ks=ks), FullRanking(ks=ks)
    factorised.process(batch, lazy)
    materialised.process(batch, dense)
    assert torch.equal(dense, before)  # ranking masks a copy, never the caller's scores
    got = factorised.compute()
    assert got == materialised.compute()
    for k in ks:
        for name, value in brute_force(dense, held, seen, k).items():
            assert got[name] == pytest.approx(value, abs=1e-9), name


def test_score_rows_must_match_the_batch():
    batch = {"held_items": torch.tensor([1]), "held_offsets": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="3 score rows but held_offsets has 2 entries"):
        FullRanking(ks=[2]).process(batch, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="1 score rows but seen_offsets has 3 entries"):
        FullRanking(ks=[2]).process({**batch, "seen_items": torch.tensor([0, 2]),
                                     "seen_offsets": torch.tensor([0, 1, 2])}, torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"expected \(users, items\) scores, got shape \(5,\)"):
        FullRanking(ks=[2]).process(batch, torch.zeros(5))
