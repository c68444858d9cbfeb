"""SimQ-NAS measured latency: the features count the work ``run`` does, the predictor recovers a linear cost
model, the statistics are the textbook ones, and the search runs on measured latency (no wall-clock asserts)."""

import json

import numpy as np
import pytest
import torch

from panconv_vision.models.simq_nas import (
    Genome,
    LatencyPredictor,
    SimQSuperNet,
    pareto_mask,
    r2_score,
    spearman,
)


def _tiny(**kw):
    torch.manual_seed(0)
    return SimQSuperNet(**{**SimQSuperNet.example_config(), **kw}).eval()


def _features(net, genome, side=12):
    return dict(zip(net.LATENCY_FEATURES, net.latency_features(genome, side)))


def test_latency_features_count_the_layers_macs_and_quantised_work():
    net = _tiny()
    side = 12
    gen = torch.Generator().manual_seed(1)
    for genome in [net.largest(), net.smallest(4)] + [net.random_genome(gen, bits=None) for _ in range(10)]:
        f = _features(net, genome, side)
        blocks = net.active_layers(genome)
        assert f["layers"] == 2 + 3 * len(blocks)
        # the dense and depthwise MACs add up to the cost model's MACs
        assert f["pointwise_macs"] + f["depthwise_macs"] == net.costs(genome, side)["macs"]
        active_bits = [genome.bits[0]] + [genome.bits[1 + 3 * flat + j] for _, _, flat in blocks for j in range(3)] \
            + [genome.bits[-1]]
        assert f["quantised_layers"] == sum(b < 32 for b in active_bits)
    full = _features(net, net.largest(32), side)
    assert full["quantised_layers"] == full["quantised_activations"] == full["quantised_weights"] == 0
    q8 = _features(net, net.largest(8), side)
    assert q8["quantised_layers"] == full["layers"] and q8["quantised_activations"] == full["activations"]
    n_weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert q8["quantised_weights"] == n_weights     # every conv/linear weight, none of the GroupNorms'


def test_latency_features_see_the_depthwise_kernel_and_input_size():
    net = _tiny()
    blocks = sum(len(s) for s in net.stages)
    small = Genome(net.largest().depths, (3,) * blocks, net.largest().expands, net.largest().bits)
    big = Genome(net.largest().depths, (5,) * blocks, net.largest().expands, net.largest().bits)
    fs, fb = _features(net, small), _features(net, big)
    assert fb["depthwise_macs"] == pytest.approx(fs["depthwise_macs"] * 25 / 9)
    assert fb["pointwise_macs"] == fs["pointwise_macs"]
    assert net.latency_features(net.largest(), 24)[1] > net.latency_features(net.largest(), 12)[1]


def test_measure_latency_runs_the_genome_and_checks_its_arguments(monkeypatch):
    net = _tiny()
    seen = []
    real_run = net.run
    monkeypatch.setattr(net, "run", lambda x, g: seen.append((tuple(x.shape), g)) or real_run(x, g))
    ms = net.measure_latency(net.smallest(4), input_size=12, batch_size=3, repeats=4, warmup=1)
    assert ms > 0 and len(seen) == 5
    assert all(shape == (3, 1, 12, 12) and g == net.smallest(4) for shape, g in seen)
    seen.clear()
    assert net.measure_latency(net.largest(8), input_size=12, batch_size=2, repeats=3, warmup=0, clock="cpu") >= 0
    assert len(seen) == 3 and seen[0][1] == net.largest(8)
    with pytest.raises(ValueError, match="repeats"):
        net.measure_latency(net.largest(), repeats=0)
    with pytest.raises(ValueError, match="clock"):
        net.measure_latency(net.largest(), clock="gpu")


def test_latency_predictor_recovers_a_linear_cost_model():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1e6, size=(40, 7))
    x[:, 4] = rng.integers(0, 30, 40)
    true = np.array([0.5, 2e-6, 8e-6, 1e-6, 0.3, 4e-6, 1e-6])
    y = 1.5 + x @ true
    model = LatencyPredictor(alpha=0.0).fit(x[:30], y[:30])
    np.testing.assert_allclose(model.predict(x[30:]), y[30:], rtol=1e-8)
    assert r2_score(y[30:], model.predict(x[30:])) == pytest.approx(1.0)
    with pytest.raises(RuntimeError):
        LatencyPredictor().predict(x)
    with pytest.raises(ValueError):
        LatencyPredictor().fit(x[:1], y[:1])


def test_r2_and_spearman_are_the_textbook_statistics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y, y[::-1]) == pytest.approx(1 - 20 / 5)
    a, b = np.array([3, 1, 2, 2, 5, 1.0]), np.array([1, 2, 3, 4, 5, 6.0])
    scipy_stats = pytest.importorskip("scipy.stats")
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b)[0])
    assert spearman(y, y ** 3) == pytest.approx(1.0) and spearman(y, -y) == pytest.approx(-1.0)
    assert np.isnan(spearman(y[:2], y[:2]))


def test_search_on_measured_latency_writes_a_front_of_measured_points(tmp_path):
    from panconv_vision.tools import simq_nas

    net = _tiny()
    images, labels = torch.randn(16, 1, 12, 12), torch.randint(3, (16,))
    result = simq_nas.search(net, images, labels, initial=4, iterations=1, per_iteration=3, population=8,
                             generations=2, log=lambda *a: None, latency="measured", latency_samples=8,
                             latency_batch=2, latency_repeats=1, latency_warmup=0, latency_clock="cpu")
    points = result["points"]
    assert all(p["latency_ms"] > 0 for p in points)
    f = np.array([[1 - p["accuracy"], p["latency_ms"], p["size_bytes"]] for p in points])
    assert np.array_equal(pareto_mask(f), np.array([p["pareto"] for p in points]))
    report = result["latency"]
    assert report["samples"] == 12 and report["held_out"] == 3 and report["train"] == 9
    assert set(report["coefficients_ms_per_sd"]) == set(net.LATENCY_FEATURES)
    assert "load_average_before" in report and report["objective"].startswith("measured")
    assert report["clock"] == "cpu"
    searched = [p for p in points if p["predicted_accuracy"] is not None]
    assert searched and all(p["predicted_latency_ms"] is not None for p in searched)
    assert simq_nas.plot(points, tmp_path / "pareto.png", note="test").stat().st_size > 1000
    json.dumps(result)
    with pytest.raises(ValueError, match="latency"):
        simq_nas.search(net, images, labels, latency="guess")
