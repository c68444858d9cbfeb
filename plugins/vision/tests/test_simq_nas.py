"""SimQ-NAS: weight sharing, fake quantisation, the genome round trip, NSGA-II, the search tool."""

import json

import numpy as np
import pytest
import torch

from panconv_vision.models.simq_nas import BITS, Genome, RidgePredictor, SimQSuperNet, fake_quantize, nsga2, pareto_mask


def _tiny(**kw):
    torch.manual_seed(0)
    return SimQSuperNet(**{**SimQSuperNet.example_config(), **kw}).eval()


def test_subnet_weights_are_slices_of_the_supernet():
    net = _tiny()
    g = Genome(depths=(1, 2), kernels=(5, 5, 5, 3), expands=(2, 2, 2, 1), bits=(32,) * len(net.layer_names()))
    sub = net.extract(g)
    block = net.stages[1][1]
    static = sub[5]  # stem, norm, hardswish, stage-0 block 0, stage-1 blocks 0 and 1
    assert torch.equal(static.expand.weight, block.expand.weight[:8])
    assert torch.equal(static.depthwise.weight, block.depthwise.weight[:8, :, 1:4, 1:4])  # centre 3x3 of 5x5
    assert torch.equal(static.project.weight, block.project.weight[:, :8])
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(sub(x), net.run(x, g))
    # a gradient through a sub-network reaches exactly the shared slices
    net.zero_grad()
    net.run(x, g).sum().backward()
    grad = block.depthwise.weight.grad
    assert grad[:8, :, 1:4, 1:4].abs().sum() > 0
    assert grad[:8, :, 0].abs().sum() == 0 and grad[8:].abs().sum() == 0


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quant_error_is_within_half_a_step(bits):
    x = torch.randn(1000) * 3
    for symmetric in (True, False):
        q = fake_quantize(x, bits, symmetric)
        levels = 2 ** bits
        step = (2 * x.abs().max() / (levels - 1)) if symmetric else ((x.max() - x.min()) / (levels - 1))
        assert (q - x).abs().max() <= step / 2 + 1e-5
        assert q.unique().numel() <= levels
    assert torch.equal(fake_quantize(x, 32, True), x)


def test_quantised_subnet_degrades_with_fewer_bits():
    net = _tiny()
    x = torch.randn(8, 1, 12, 12)
    g = net.largest()
    with torch.no_grad():
        ref = net.run(x, g)
    with torch.no_grad():
        err = {b: float((net.run(x, net.largest(b)) - ref).abs().mean()) for b in (8, 4)}
    assert 0 < err[8] < err[4]


def test_genome_encode_decode_round_trip():
    net = _tiny()
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        g = net.random_genome(gen, bits=None)
        v = net.encode(g)
        assert net.decode(v) == g
        assert np.array_equal(net.encode(net.decode(v)), v)
    assert set(net.decode(np.zeros(len(net.gene_choices()), int)).bits) == {BITS[0]}
    with pytest.raises(ValueError):
        net.decode([99] * len(net.gene_choices()))


def test_costs_count_parameters_and_bits():
    net = _tiny()
    full = net.costs(net.largest())
    assert full["params"] == sum(p.numel() for p in net.parameters())
    norms = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.GroupNorm) for p in m.parameters())
    assert full["size_bytes"] == 4 * full["params"]
    assert net.costs(net.largest(8))["size_bytes"] == (full["params"] - norms) + 4 * norms  # norms stay fp32
    assert net.costs(net.largest(4))["bit_ops"] == full["bit_ops"] / 64
    assert net.costs(net.smallest())["macs"] < full["macs"]


def test_sandwich_training_step_reaches_every_parameter():
    net = _tiny().train()
    batch = net.example_inputs(4)
    out = net(batch)
    assert len(out["sandwich"]) == 2 + net.n_random
    sum(net.loss(out, batch).values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_nsga2_returns_non_dominated_points_on_a_tiny_problem():
    # minimise (x0, 5 - x0 + x1 + x2): the Pareto set is x1 = x2 = 0, any x0
    def objective(x):
        return np.stack([x[:, 0], 5 - x[:, 0] + x[:, 1:].sum(1)], axis=1).astype(float)

    x = nsga2(objective, np.array([5, 3, 3]), population=20, generations=15, seed=0)
    f = objective(x)
    assert pareto_mask(f).all()
    assert (x[:, 1:] == 0).all() and len(set(x[:, 0])) >= 4


def test_pareto_mask_and_ridge_predictor():
    f = np.array([[1, 2], [2, 1], [2, 2], [0, 3]])
    assert pareto_mask(f).tolist() == [True, True, False, True]
    choices = [(0, 1, 2), (0, 1)]
    v = np.array([[a, b] for a in range(3) for b in range(2)])
    y = np.array([0.1 * a + 0.3 * b for a, b in v])
    pred = RidgePredictor(choices, alpha=1e-6).fit(v, y).predict(v)
    np.testing.assert_allclose(pred, y, atol=1e-4)


def test_search_tool_writes_a_pareto_front(tmp_path, monkeypatch):
    from panconv_vision.tools import simq_nas

    net = _tiny()
    images, labels = torch.randn(16, 1, 12, 12), torch.randint(3, (16,))
    result = simq_nas.search(net, images, labels, initial=4, iterations=1, per_iteration=3, population=8,
                             generations=2, log=lambda *a: None)
    points = result["points"]
    assert len(points) >= 6 and any(p["pareto"] for p in points)
    f = np.array([[1 - p["accuracy"], p["bit_ops"], p["size_bytes"]] for p in points])
    front = f[[p["pareto"] for p in points]]
    assert pareto_mask(front).all()
    path = simq_nas.plot(points, tmp_path / "pareto.png")
    assert path.stat().st_size > 1000
    json.dumps(result)  # serialisable


def test_registered_mnist_size():
    import panconv

    net = panconv.create_model({"type": "vision.simq_supernet_mnist"}, metadata={"num_classes": 10, "in_channels": 1})
    assert sum(p.numel() for p in net.parameters()) == 86_450
    assert net.costs(net.smallest())["params"] == 11_762
    assert len(net.gene_choices()) == 3 + 9 + 9 + (1 + 27 + 1)
