"""DiffPALM pieces: Sinkhorn, hard assignment, the Potts generator's couplings, soft one-hot inputs, and (slow)
the whole pipeline recovering planted pairs well above chance."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv.testing import load_script
from panconv_genomics.models.diffpalm import (
    MSATransformer,
    OfficialRecipe,
    PottsPairs,
    diffpalm_iterative,
    diffpalm_pairing,
    diffpalm_scores,
    greedy_assignment,
    mask_tokens,
    mi_ipa,
    pairing_precision,
    pmi_pair_scores,
    pmi_tables,
    sinkhorn,
    train_msa_lm,
)

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "genomics_diffpalm_potts.py"


def _benchmark():
    return load_script(BENCHMARK, "genomics_diffpalm_potts_benchmark")


def test_sinkhorn_is_doubly_stochastic_and_sharpens_with_temperature():
    torch.manual_seed(0)
    x = torch.randn(5, 5)
    p = sinkhorn(x, tau=1.0, iterations=50)
    torch.testing.assert_close(p.sum(-1), torch.ones(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.sum(-2), torch.ones(5), atol=1e-4, rtol=0)
    assert sinkhorn(x, tau=0.05, iterations=200).max(-1).values.min() > p.max(-1).values.min()


def test_greedy_assignment_reads_a_noisy_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    scores = F.one_hot(perm, 4).float() + 0.3 * torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy_assignment(scores), perm)
    assert pairing_precision([perm], [torch.tensor([2, 0, 1, 3])]) == 0.5


def _mutual_information(x: torch.Tensor, y: torch.Tensor, q: int) -> float:
    joint = torch.bincount(x * q + y, minlength=q * q).double().view(q, q) / len(x)
    px, py = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (px @ py)[nz]).log()).sum())


def test_potts_links_couple_the_two_families():
    potts = PottsPairs(la=6, lb=6, q=4, n_links=3, coupling=2.0, n_intra=0, seed=1)
    x = potts.sample(3000, sweeps=20, seed=0)
    i, j = potts.links[0]
    assert i < 6 <= j                                       # an A position coupled to a B position
    coupled = _mutual_information(x[:, i], x[:, j], 4)
    linked = {p for link in potts.links for p in link}
    a, b = next((a, b) for a in range(6) for b in range(6, 12) if a not in linked and b not in linked)
    assert coupled > 0.1 > 5 * _mutual_information(x[:, a], x[:, b], 4)


def test_soft_one_hot_inputs_equal_ids():
    torch.manual_seed(0)
    model = MSATransformer(q=4, length=6, d=16, layers=1, heads=2).eval()
    ids = torch.randint(5, (1, 3, 6))
    torch.testing.assert_close(model(ids), model(F.one_hot(ids, 5).float()))
    # rows are exchangeable: permuting the rows permutes the outputs
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model(ids[:, perm]), model(ids)[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_diffpalm_recovers_planted_pairs_well_above_chance():
    torch.manual_seed(0)
    potts = PottsPairs(la=8, lb=8, q=4, n_links=8, coupling=1.5, seed=0)
    model = MSATransformer(4, 16)
    train_msa_lm(model, potts, steps=300, pool=5000)
    g = torch.Generator().manual_seed(1)
    pairs = potts.sample(24, seed=99)
    a_rows, b_rows, truths = [], [], []
    for s in range(4):
        block, shuffle = pairs[6 * s:6 * s + 6], torch.randperm(6, generator=g)
        a_rows.append(block[:, :8])
        b_rows.append(block[shuffle, 8:])
        truths.append(torch.argsort(shuffle))
    precision = pairing_precision(diffpalm_pairing(model, a_rows, b_rows, 8), truths)
    assert precision > 3 / 6  # chance is 1/6


# ----------------------------------------------------------------------------- wave 5b: MI-IPA, fixing, registry

def test_pmi_tables_and_pair_scores_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(3, (40, 2), generator=g), torch.randint(3, (40, 3), generator=g)
    pmi = pmi_tables(a, b, q=3, pseudocount=0.0)
    i, j, x, y = 1, 2, 0, 2
    f_xy = ((a[:, i] == x) & (b[:, j] == y)).double().mean()
    f_x, f_y = (a[:, i] == x).double().mean(), (b[:, j] == y).double().mean()
    torch.testing.assert_close(pmi[i, j, x, y], (f_xy / (f_x * f_y)).log())
    scores = pmi_pair_scores(pmi_tables(a, b, q=3), a[:4], b[:4])
    k, m = 2, 1
    direct = sum(pmi_tables(a, b, q=3)[ii, jj, a[k, ii], b[m, jj]] for ii in range(2) for jj in range(3))
    torch.testing.assert_close(scores[k, m], direct)


def test_mi_ipa_recovers_pairs_on_a_large_msa():
    """MI-IPA needs counts: on 50 species x 6 paralogs of the Potts model it is far above chance (1/6)."""
    potts = PottsPairs(la=8, lb=8, q=4, n_links=8, coupling=1.5, seed=0)
    a_rows, b_rows, truths = potts.pairing_task(50, 6, seed=3, sweeps=20)
    assert pairing_precision(mi_ipa(a_rows, b_rows, q=4), truths) > 0.45
    # without inter-family couplings there is nothing to find: near chance
    flat = PottsPairs(la=8, lb=8, q=4, n_links=1, coupling=0.0, n_intra=0, seed=0)
    a_rows, b_rows, truths = flat.pairing_task(50, 6, seed=3, sweeps=20)
    assert pairing_precision(mi_ipa(a_rows, b_rows, q=4), truths) < 0.3


def test_fixed_pairs_are_kept_and_enter_as_context():
    torch.manual_seed(0)
    model = MSATransformer(q=4, length=6, d=16, layers=1, heads=2)
    g = torch.Generator().manual_seed(0)
    a_rows = [torch.randint(4, (4, 3), generator=g), torch.randint(4, (3, 3), generator=g)]
    b_rows = [torch.randint(4, (4, 3), generator=g), torch.randint(4, (3, 3), generator=g)]
    fixed = [{0: 2, 3: 1}, {1: 0}]
    scores = diffpalm_scores(model, a_rows, b_rows, la=3, steps=5, fixed=fixed)
    perms = [greedy_assignment(x) for x in scores]
    assert perms[0][0] == 2 and perms[0][3] == 1 and perms[1][1] == 0
    assert all(sorted(p.tolist()) == list(range(len(p))) for p in perms)
    p0 = sinkhorn(scores[0], 0.2, iterations=50)
    assert p0[0, 2].item() == pytest.approx(1.0) and p0[1:3, 2].sum().item() == pytest.approx(0.0)
    perms = diffpalm_iterative(model, a_rows, b_rows, la=3, rounds=3, steps=3)
    assert all(sorted(p.tolist()) == list(range(len(p))) for p in perms)


def test_potts_msa_dataset_masks_and_is_deterministic(tmp_path):
    from panconv_genomics.datasets.potts import PottsMSA

    data = PottsMSA(tmp_path, "train", la=4, lb=4, n_links=3, n_intra=1, samples=64, sweeps=5, msas=10, depth=6,
                    mask_prob=0.3)
    item = data[3]
    masked = item["inputs"] == 4
    assert item["inputs"].shape == (6, 8) and masked.any()
    assert torch.equal(masked, item["targets"] != -100) and (item["targets"][masked] < 4).all()
    assert torch.equal(data[3]["inputs"], item["inputs"])
    data.set_epoch(1)
    assert not torch.equal(data[3]["inputs"], item["inputs"])
    test = PottsMSA(tmp_path, "test", la=4, lb=4, n_links=3, n_intra=1, samples=64, sweeps=5, msas=10)
    assert torch.equal(test.potts.couplings, data.potts.couplings) and not torch.equal(test.pool, data.pool)
    assert data.metadata == {"q": 4, "length": 8}
    with pytest.raises(ValueError, match="n_intra"):
        PottsPairs(la=2, lb=2, n_links=1, n_intra=5)


def test_msa_transformer_trains_through_the_engine(tmp_path):
    import json

    import yaml

    import panconv
    from panconv.cli import main

    config = {
        "model": {"type": "genomics.MSATransformer", "d": 16, "layers": 1, "heads": 2},
        "data": {"type": "genomics.PottsMSA", "la": 4, "lb": 4, "n_links": 3, "n_intra": 1, "samples": 256,
                 "sweeps": 10, "msas": 32, "depth": 8, "batch_size": 8, "num_workers": 0,
                 "splits": {"train": "train", "val": "val"}},
        "train": {"epochs": 1, "optimizer": {"type": "AdamW", "lr": 0.003}, "val_interval": 1},
        "eval": {"evaluators": [{"type": "sequence.Perplexity"}]},
        "run": {"work_dir": str(tmp_path / "run"), "seed": 0, "device": "cpu", "threads": 1},
    }
    path = tmp_path / "msa.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    model = panconv.load_model(tmp_path / "run")
    assert isinstance(model, MSATransformer) and (model.q, model.length) == (4, 8)   # sized from the metadata
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "perplexity" in json.dumps(metrics)


def _tiny_pairing_problem(seed: int, rows: int):
    """A 1-layer MSA LM (initialised with seed 0) and two species of ``rows`` random A and B rows (3 letters each)."""
    torch.manual_seed(0)
    model = MSATransformer(q=4, length=6, d=16, layers=1, heads=2)
    g = torch.Generator().manual_seed(seed)
    a_rows = [torch.randint(4, (rows, 3), generator=g) for _ in range(2)]
    b_rows = [torch.randint(4, (rows, 3), generator=g) for _ in range(2)]
    return model, a_rows, b_rows


def test_first_round_of_the_iterative_procedure_is_diffpalm():
    """benchmarks/genomics_diffpalm_potts.py reads its DiffPALM row off the iterative run's first round."""
    model, a_rows, b_rows = _tiny_pairing_problem(seed=1, rows=5)
    rounds = diffpalm_iterative(model, a_rows, b_rows, la=3, rounds=2, steps=6, seed=4, return_rounds=True)
    assert len(rounds) == 2
    for got, want in zip(rounds[0], diffpalm_pairing(model, a_rows, b_rows, la=3, steps=6, seed=4)):
        assert torch.equal(got, want)


def test_pairing_task_truths_point_at_each_rows_sampled_partner():
    potts = PottsPairs(la=3, lb=2, q=4, n_links=2, seed=0)
    a_rows, b_rows, truths = potts.pairing_task(3, 5, seed=7, sweeps=2)
    pairs = potts.sample(15, sweeps=2, seed=7)
    assert len(a_rows) == len(b_rows) == len(truths) == 3
    for s in range(3):
        block = pairs[5 * s:5 * (s + 1)]
        assert torch.equal(a_rows[s], block[:, :3])
        assert torch.equal(b_rows[s][truths[s]], block[:, 3:])   # A row i's partner is B row truths[s][i]
        assert sorted(truths[s].tolist()) == list(range(5))
    assert any(not torch.equal(b, p[:, 3:]) for b, p in zip(b_rows, pairs.split(5)))  # B really is shuffled


def test_benchmark_inter_coupling_changes_only_the_cross_family_couplings():
    """``--inter-coupling``: same fields, links and letter permutations; A <-> B blocks scaled, the rest untouched."""
    bench = _benchmark()
    args = argparse.Namespace(la=3, lb=4, q=4, links=3, coupling=1.5)
    base = PottsPairs(la=3, lb=4, q=4, n_links=3, coupling=1.5, seed=5)
    assert torch.equal(bench.potts_model(args, 1.5, seed=5).couplings, base.couplings)   # default: unchanged
    weak = bench.potts_model(args, 0.375, seed=5)
    assert torch.equal(weak.fields, base.fields) and weak.links == base.links
    assert base.couplings[:3, 3:].abs().sum() > 0 and base.couplings[:3, :3].abs().sum() > 0
    torch.testing.assert_close(weak.couplings[:3, 3:], base.couplings[:3, 3:] / 4)
    torch.testing.assert_close(weak.couplings[3:, :3], base.couplings[3:, :3] / 4)
    assert torch.equal(weak.couplings[:3, :3], base.couplings[:3, :3])                  # intra-family kept
    assert torch.equal(weak.couplings[3:, 3:], base.couplings[3:, 3:])
    torch.testing.assert_close(weak.couplings, weak.couplings.transpose(0, 1).transpose(2, 3))   # J_ij(a,b)=J_ji(b,a)


def test_benchmark_inter_coupling_zero_makes_the_families_independent():
    bench = _benchmark()
    args = argparse.Namespace(la=4, lb=4, q=4, links=2, coupling=2.0)
    strong, off = bench.potts_model(args, 2.0, seed=1), bench.potts_model(args, 0.0, seed=1)
    i, j = next((i, j) for i, j in strong.links if i < 4 <= j)
    mi = [_mutual_information(*p.sample(3000, sweeps=20, seed=0)[:, [i, j]].unbind(1), 4) for p in (strong, off)]
    assert mi[0] > 0.1 > 10 * mi[1]


def _potts_energy(potts: PottsPairs, x: torch.Tensor) -> torch.Tensor:
    """``H(x) = sum_i h_i(x_i) + sum_{i<j} J_ij(x_i, x_j)`` of every row (the sampler draws with prob ~ exp(H))."""
    onehot = F.one_hot(x, potts.q).double()
    pair = torch.einsum("nia,ijab,njb->n", onehot, potts.couplings.double(), onehot) / 2
    return (onehot * potts.fields.double()).sum((1, 2)) + pair


def test_benchmark_oracle_pairing_is_the_most_probable_permutation():
    """The oracle's pairing maximises the true Potts likelihood of the paired MSA over every within-species pairing."""
    import itertools

    bench = _benchmark()
    potts = PottsPairs(la=3, lb=3, q=3, n_links=3, coupling=1.5, n_intra=2, seed=2)
    a_rows, b_rows, truths = potts.pairing_task(3, 5, seed=1, sweeps=10)
    perms = bench.oracle_pairing(potts, a_rows, b_rows)
    for a, b, perm in zip(a_rows, b_rows, perms):
        assert sorted(perm.tolist()) == list(range(5))
        energies = {p: float(_potts_energy(potts, torch.cat([a, b[list(p)]], 1)).sum())
                    for p in itertools.permutations(range(5))}
        assert energies[tuple(perm.tolist())] == pytest.approx(max(energies.values()), abs=1e-9)
    assert bench.oracle_pairing(potts, a_rows, b_rows, exact_up_to=2)[0].shape == (5,)   # greedy above the limit
    strong = PottsPairs(la=4, lb=4, q=4, n_links=8, coupling=4.0, n_intra=0, seed=0)
    a_rows, b_rows, truths = strong.pairing_task(4, 6, seed=3, sweeps=20)
    assert pairing_precision(bench.oracle_pairing(strong, a_rows, b_rows), truths) > 0.8


# ----------------------------------------------------------------------------- wave 8 W4: Hungarian read-out, runs

def _brute_force_best(scores: torch.Tensor) -> float:
    import itertools

    m = scores.shape[0]
    return max(float(scores[torch.arange(m), torch.tensor(p)].double().sum()) for p in itertools.permutations(range(m)))


def test_hungarian_assignment_is_the_maximum_weight_permutation():
    from panconv_genomics.models.diffpalm import hungarian_assignment

    g = torch.Generator().manual_seed(0)
    for trial in range(48):
        m = 1 + trial % 6
        scores = torch.randn(m, m, generator=g, dtype=torch.float64)
        if trial % 3 == 0:                                       # many ties
            scores = torch.randint(3, (m, m), generator=g).double()
        perm = hungarian_assignment(scores)
        assert sorted(perm.tolist()) == list(range(m))
        assert float(scores[torch.arange(m), perm].sum()) == pytest.approx(_brute_force_best(scores), abs=1e-9)


def test_hungarian_beats_greedy_where_greedy_is_trapped():
    from panconv_genomics.models.diffpalm import hungarian_assignment

    # greedy takes the 10 (0 -> 0) and is then left with 0 + 0; the optimum pairs 0 -> 1 and 1 -> 0 for 9 + 9
    scores = torch.tensor([[10.0, 9.0], [9.0, 0.0]])
    assert greedy_assignment(scores).tolist() == [0, 1]
    assert hungarian_assignment(scores).tolist() == [1, 0]


def test_hungarian_agrees_with_scipy():
    from panconv_genomics.models.diffpalm import hungarian_assignment

    optimize = pytest.importorskip("scipy.optimize")
    g = torch.Generator().manual_seed(1)
    for m in (3, 9, 12, 20):
        scores = torch.randn(m, m, generator=g, dtype=torch.float64)
        rows, cols = optimize.linear_sum_assignment(scores.numpy(), maximize=True)
        perm = hungarian_assignment(scores)
        assert float(scores[torch.arange(m), perm].sum()) == pytest.approx(float(scores.numpy()[rows, cols].sum()))


def test_hungarian_avoids_excluded_pairs_and_rejects_non_square():
    import math

    from panconv_genomics.models.diffpalm import hungarian_assignment

    g = torch.Generator().manual_seed(2)
    scores = torch.randn(5, 5, generator=g)
    scores[1, :], scores[:, 3] = -math.inf, -math.inf          # A row 1 may only go to B row 3 (a fixed pair)
    scores[1, 3] = 0.0
    scores[0, 0] = -math.inf
    perm = hungarian_assignment(scores)
    assert perm[1] == 3 and perm[0] != 0 and sorted(perm.tolist()) == list(range(5))
    with pytest.raises(ValueError, match="square"):
        hungarian_assignment(torch.zeros(2, 3))


def test_hungarian_read_out_of_sinkhorn_equals_that_of_the_scores():
    """Sinkhorn(X / tau) = exp(X / tau + u_i + v_j): the row and column terms add the same constant to every
    permutation, so the log-soft matrix and X have the same maximum-weight permutation (greedy has no such
    guarantee)."""
    from panconv_genomics.models.diffpalm import hungarian_assignment

    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        x = torch.randn(6, 6, generator=g, dtype=torch.float64)
        log_p = sinkhorn(x, tau=0.5, iterations=500).log()
        assert torch.equal(hungarian_assignment(log_p), hungarian_assignment(x))


def test_combine_runs_soft_average_and_vote():
    from panconv_genomics.models.diffpalm import combine_runs, hungarian_assignment

    big = 20.0
    ident, swap = torch.eye(3) * big, torch.eye(3)[[1, 0, 2]] * big
    # two runs agree on the identity, one says swap rows 0 and 1: both combinations follow the majority
    runs = [[ident], [ident], [swap]]
    for average in ("soft", "hard"):
        combined = combine_runs(runs, tau=0.2, average=average)
        assert len(combined) == 1 and hungarian_assignment(combined[0]).tolist() == [0, 1, 2]
    soft = combine_runs(runs, tau=0.2, average="soft")[0].exp()
    torch.testing.assert_close(soft.sum(-1), torch.ones(3, dtype=soft.dtype), atol=1e-6, rtol=0)  # doubly stochastic
    assert soft[0, 0].item() == pytest.approx(2 / 3, abs=1e-6) and soft[0, 1].item() == pytest.approx(1 / 3, abs=1e-6)
    votes = combine_runs(runs, tau=0.2, average="hard")[0]
    assert votes[2, 2].item() == pytest.approx(1.0, abs=0.1) and votes[0, 1].item() == pytest.approx(1 / 3, abs=0.1)
    # one run: the soft read-out is that run's own Hungarian pairing; several species are combined separately
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(hungarian_assignment(combine_runs([[x, ident]], tau=0.2)[0]), hungarian_assignment(x))
    with pytest.raises(ValueError, match="average"):
        combine_runs(runs, average="median")


def test_diffpalm_pairing_options_hungarian_and_runs():
    from panconv_genomics.models.diffpalm import RUN_SEED_STRIDE, combine_runs, hungarian_assignment

    model, a_rows, b_rows = _tiny_pairing_problem(seed=5, rows=4)
    kwargs = dict(la=3, steps=4, seed=2)
    runs = [diffpalm_scores(model, a_rows, b_rows, seed=2 + k * RUN_SEED_STRIDE, la=3, steps=4) for k in range(3)]
    # the defaults are the single run read greedily (the earlier behaviour)
    assert all(torch.equal(p, greedy_assignment(x)) for p, x in zip(diffpalm_pairing(model, a_rows, b_rows, **kwargs),
                                                                    runs[0]))
    hungarian = diffpalm_pairing(model, a_rows, b_rows, assignment="hungarian", **kwargs)
    assert all(torch.equal(p, hungarian_assignment(x)) for p, x in zip(hungarian, runs[0]))
    for average in ("soft", "hard"):
        combined = diffpalm_pairing(model, a_rows, b_rows, assignment="hungarian", runs=3, average=average, **kwargs)
        want = [hungarian_assignment(x) for x in combine_runs(runs, tau=0.2, average=average)]
        assert all(torch.equal(p, w) for p, w in zip(combined, want))
        assert all(sorted(p.tolist()) == list(range(4)) for p in combined)
    # the runs really differ (different masks), else averaging them would be a no-op
    assert not all(torch.equal(x, y) for x, y in zip(runs[0], runs[1]))
    iterative = diffpalm_iterative(model, a_rows, b_rows, la=3, rounds=2, steps=4, seed=2, assignment="hungarian",
                                   return_rounds=True)
    assert all(torch.equal(p, h) for p, h in zip(iterative[0], hungarian))
    for bad in (dict(assignment="argmax"), dict(runs=0), dict(average="median")):
        with pytest.raises(ValueError):
            diffpalm_pairing(model, a_rows, b_rows, **kwargs, **bad)
    with pytest.raises(ValueError, match="assignment"):
        diffpalm_iterative(model, a_rows, b_rows, la=3, rounds=2, steps=2, assignment="argmax")


def test_benchmark_runs_rows_read_off_shared_runs(capsys, monkeypatch):
    """``--runs``: the DiffPALM row, its Hungarian read-out and the combined rows come from the same runs."""
    bench = _benchmark()
    monkeypatch.setattr(bench, "train_msa_lm", lambda model, potts, steps, seed: train_msa_lm(
        model, potts, steps=steps, seed=seed, pool=64))                  # a tiny LM: only the plumbing is tested
    args = argparse.Namespace(la=3, lb=3, q=4, links=2, coupling=1.5, train_steps=2, species=2, paralogs=3, trials=1,
                              pairing_steps=3, rounds=1, ipa_species=[], lm_cache=None, runs=[1, 2], target_loss=2)
    methods = ["trained", "oracle", "hungarian", "averaged", "voted"]
    assert bench.run_rows(args, methods) == ["hungarian", "averaged@2", "voted@2"]
    results, seconds, pairs, _, lm_losses = bench.run_seed(args, 0, methods)
    assert "seed 0" in capsys.readouterr().out                          # the seed's header line was printed
    assert set(results) == {"trained", "oracle", "hungarian", "averaged@2", "voted@2"}
    assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in results.values())
    assert set(lm_losses) == set(results) | {"truth"} and all(len(v) == 1 for v in lm_losses.values())
    bench.print_target_losses([lm_losses], [results], 1, 2, "## target loss")
    assert "MSAs scoring at or below the truth" in capsys.readouterr().out
    assert pairs["averaged@2"] == 6
    assert "2 runs combined (mean soft permutation)" in bench.label("averaged@2", 1)
    args.runs = []
    assert bench.run_rows(args, methods) == []


def test_benchmark_target_loss_scores_pairings_on_shared_masks():
    """``--target-loss``: the LM loss of a pairing depends on the pairing only (same masks), not on the row order."""
    bench = _benchmark()
    model, a_rows, b_rows = _tiny_pairing_problem(seed=6, rows=4)
    ident, other = [torch.arange(4)] * 2, [torch.tensor([1, 0, 3, 2]), torch.arange(4)]
    loss = bench.lm_pairing_loss(model, a_rows, b_rows, ident, masks=3)
    assert loss == bench.lm_pairing_loss(model, a_rows, b_rows, ident, masks=3)          # deterministic masks
    assert loss != bench.lm_pairing_loss(model, a_rows, b_rows, other, masks=3)          # the pairing matters
    # by hand: one mask, the cross-entropy on its masked tokens of the concatenated MSA
    rows = torch.cat([torch.cat([a, b], 1) for a, b in zip(a_rows, b_rows)])
    inputs, chosen = mask_tokens(rows, 0.3, model.mask_id, torch.Generator().manual_seed(0))
    chosen[0, 0], inputs[0, 0] = True, model.mask_id
    with torch.no_grad():
        want = F.cross_entropy(model(inputs[None])[0][chosen], rows[chosen]).item()
    assert bench.lm_pairing_loss(model, a_rows, b_rows, ident, masks=1) == pytest.approx(want, rel=1e-6)


def test_benchmark_paper_recipe_runs_every_diffpalm_row_with_the_notebook_settings(capsys, monkeypatch):
    """``--recipe paper``: every DiffPALM call of the benchmark (trained + iterative, equal budget, untrained, the
    ``--runs`` runs) gets the paper notebook's OfficialRecipe with ``epochs`` = that call's steps and none of our
    recipe's arguments; the header names the recipe; the runs' scores are the official optimisation's."""
    bench = _benchmark()
    monkeypatch.setattr(bench, "train_msa_lm", lambda model, potts, steps, seed: train_msa_lm(
        model, potts, steps=steps, seed=seed, pool=64))                  # a tiny LM: only the plumbing is tested
    calls = []

    def recorded(name, function):
        def call(*args, **kwargs):
            out = function(*args, **kwargs)
            calls.append((name, args, kwargs, out))
            return out
        return call

    for name in ("diffpalm_scores", "diffpalm_pairing", "diffpalm_iterative"):
        monkeypatch.setattr(bench, name, recorded(name, getattr(bench, name)))
    args = argparse.Namespace(la=3, lb=3, q=4, links=2, coupling=1.5, train_steps=2, species=2, paralogs=3, trials=1,
                              pairing_steps=3, rounds=2, ipa_species=[], lm_cache=None, runs=[1, 2], recipe="paper")
    methods = ["trained", "iterative", "equal_budget", "untrained", "hungarian", "averaged"]
    results, *_ = bench.run_seed(args, 0, methods)
    assert set(results) == {"trained", "iterative", "equal_budget", "untrained", "hungarian", "averaged@2"}

    def notebook(epochs):                    # the paper's example notebook, every field spelled out
        return OfficialRecipe(epochs=epochs, p_mask=0.7, std_init=0.0, tau=1.0, sinkhorn_iterations=10,
                              batch_size=1, optimizer="Adadelta", lr=9.0, weight_decay=0.1, plateau=True, noise=True,
                              noise_factor=0.1, noise_std=True, noise_scheduler=True, rand_perm=True)

    assert f"DiffPALM recipe: paper ({notebook(3)})" in capsys.readouterr().out
    # runs 0 and 1 (--runs 1 2), trained + iterative in one call, equal budget (2 rounds x 3 steps), untrained
    assert [(name, kwargs["recipe"]) for name, _, kwargs, _ in calls] == [
        ("diffpalm_scores", notebook(3)), ("diffpalm_scores", notebook(3)), ("diffpalm_iterative", notebook(3)),
        ("diffpalm_pairing", notebook(6)), ("diffpalm_pairing", notebook(3))]
    assert all(set(kwargs) <= {"recipe", "seed", "rounds", "return_rounds"} for _, _, kwargs, _ in calls)
    official = diffpalm_scores(*calls[1][1], seed=calls[1][2]["seed"], recipe=notebook(3))
    ours = diffpalm_scores(*calls[1][1], seed=calls[1][2]["seed"], steps=3)
    assert all(torch.equal(x, y) for x, y in zip(calls[1][3], official))
    assert not any(torch.allclose(x, y) for x, y in zip(calls[1][3], ours))
    # --recipe default keeps our recipe's arguments; the paper's recipe is straight-through already
    assert bench.diffpalm_options(argparse.Namespace(recipe="default", estimator="soft"), 5) == {
        "steps": 5, "estimator": "soft"}
    monkeypatch.setattr("sys.argv", ["bench", "--recipe", "paper", "--estimator", "straight_through"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "straight-through already" in capsys.readouterr().err


class _RecordingMSATransformer(MSATransformer):
    """Keeps every input the optimisation feeds the frozen model."""

    def forward(self, x):
        self.seen = [*getattr(self, "seen", []), x.detach().clone()]
        return super().forward(x)


def test_straight_through_feeds_a_hard_pairing_forward_and_learns_through_the_soft_one():
    torch.manual_seed(0)
    model = _RecordingMSATransformer(q=4, length=6, d=16, layers=1, heads=2)
    g = torch.Generator().manual_seed(7)
    a_rows = [torch.randint(4, (4, 3), generator=g) for _ in range(2)]
    b_rows = [torch.randint(4, (4, 3), generator=g) for _ in range(2)]
    soft = diffpalm_scores(model, a_rows, b_rows, la=3, steps=3, seed=1)
    assert not all(((x == 0) | (x == 1)).all() for x in model.seen)    # soft: mixtures of B rows (uniform at first)
    model.seen = []
    hard = diffpalm_scores(model, a_rows, b_rows, la=3, steps=3, seed=1, estimator="straight_through")
    for x in model.seen:                                               # every B row fed is a real B row of its species
        b_in = x[0, :, 3:]
        assert (b_in - b_in.round()).abs().max() < 1e-5                 # one-hots (up to hard + soft - soft rounding)
        assert torch.equal(b_in.round().sum(-1), torch.ones(8, 3))
        for s, start in ((0, 0), (1, 4)):
            for row in range(start, start + 4):
                unmasked = b_in[row].argmax(-1) != model.mask_id
                assert any(torch.equal(b_in[row].argmax(-1)[unmasked], b[unmasked]) for b in b_rows[s])
    assert any(x.abs().sum() > 0 for x in hard)                         # the gradient reached the scores
    assert not all(torch.equal(x, y) for x, y in zip(soft, hard))
    perms = diffpalm_pairing(model, a_rows, b_rows, la=3, steps=3, estimator="straight_through", runs=2,
                             assignment="hungarian")
    assert all(sorted(p.tolist()) == list(range(4)) for p in perms)
    with pytest.raises(ValueError, match="estimator"):
        diffpalm_scores(model, a_rows, b_rows, la=3, steps=1, estimator="gumbel")
