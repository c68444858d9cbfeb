"""Poincaré ResNet: gyrovector identities, float32 stability near the boundary, layers, parity with the official code.

Parity: ``fixtures/poincare_parity.pt`` holds the official HyperbolicResNet's output
(maxvanspengler/poincare-resnet, ``models/resnets/hyperbolic.py``; needs ``geoopt`` importable) on our
weights. Regenerate with the repository fetched (not committed)::

    PANCONV_RECORD_POINCARE=/path/to/poincare-resnet PYTHONPATH=<dir with geoopt> \
        pytest plugins/vision/tests/test_poincare.py
"""

import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.poincare import (
    PoincareBatchNorm2d,
    PoincareConv2d,
    PoincareLinear,
    PoincareResNet,
    distance,
    expmap,
    expmap0,
    gyration,
    logmap,
    logmap0,
    midpoint,
    mobius_add,
    transport,
)

FIXTURE = Path(__file__).parent / "fixtures" / "poincare_parity.pt"
C = 0.1


def _points(n=5, d=4, scale=0.8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=dtype)
    r = torch.rand(n, 1, generator=g, dtype=dtype) * scale / C ** 0.5
    return v / v.norm(dim=-1, keepdim=True) * r


def _lam(x):
    return 2 / (1 - C * x.pow(2).sum(-1, keepdim=True))


def test_mobius_addition_identities():
    x, y = _points(seed=0), _points(seed=1)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(mobius_add(x, zero, C), x)
    torch.testing.assert_close(mobius_add(zero, y, C), y)
    torch.testing.assert_close(mobius_add(-x, x, C), zero)
    torch.testing.assert_close(mobius_add(-x, mobius_add(x, y, C), C), y)  # left cancellation
    w = _points(seed=2)
    lhs = gyration(x, y, w, C)
    rhs = mobius_add(-mobius_add(x, y, C), mobius_add(x, mobius_add(y, w, C), C), C)
    torch.testing.assert_close(lhs, rhs)


def test_maps_distance_and_transport_are_consistent():
    x, y = _points(seed=3), _points(seed=4)
    torch.testing.assert_close(expmap(x, logmap(x, y, C), C), y)
    v = torch.randn(5, 4, dtype=torch.float64) * 0.5
    torch.testing.assert_close(logmap0(expmap0(v, C), C), v)
    # the distance is the Riemannian length of the logarithm: d(x, y) = lambda_x ||log_x(y)||
    torch.testing.assert_close(distance(x, y, C), (_lam(x) * logmap(x, y, C).norm(dim=-1, keepdim=True))[:, 0])
    # parallel transport is an isometry of the tangent spaces: lambda_y ||P(v)|| = lambda_x ||v||
    pv = transport(x, y, v, C)
    torch.testing.assert_close(_lam(y) * pv.norm(dim=-1, keepdim=True), _lam(x) * v.norm(dim=-1, keepdim=True))


def test_midpoint():
    x = _points(n=1)
    torch.testing.assert_close(midpoint(torch.cat([x, x, x]), C), x)
    torch.testing.assert_close(midpoint(torch.cat([x, -x]), C), torch.zeros_like(x))


@pytest.mark.parametrize("margin", [1e-3, 1e-5, 1e-7])
def test_float32_stability_at_the_boundary(margin):
    d = 8
    u = torch.nn.functional.normalize(torch.randn(6, d), dim=-1)
    edge = u * (1 - margin) / C ** 0.5  # float32 points on (or rounded onto) the boundary
    for out in (logmap0(edge, C), mobius_add(edge, edge.flip(0), C), logmap(edge[:3], edge[3:], C),
                distance(edge[:3], edge[3:], C), midpoint(edge, C)):
        assert torch.isfinite(out).all()
    s = mobius_add(edge, edge, C)
    assert (s.norm(dim=-1) * C ** 0.5 <= 1 + 1e-6).all()
    huge = expmap0(u * 1e6, C)  # a huge tangent vector lands inside the ball (projected), logmap0 stays finite
    assert (huge.norm(dim=-1) * C ** 0.5 < 1).all() and torch.isfinite(logmap0(huge, C)).all()
    v = (u * 50).requires_grad_(True)
    layer = PoincareLinear(d, 3, C)
    grad, = torch.autograd.grad(layer(v).sum(), v)
    assert torch.isfinite(grad).all()


def test_identity_initialisation():
    torch.manual_seed(0)
    lin = PoincareLinear(5, 5, C)
    x = torch.randn(3, 5) * 1e-2
    torch.testing.assert_close(lin(x), x, atol=1e-5, rtol=1e-3)
    conv = PoincareConv2d(2, 18, 3, 1, 1, C)  # identity on the unfolded patch: output channel j = input tap j
    x = torch.randn(1, 2, 5, 5) * 1e-3
    y = conv(x)
    # unfolding is channel-major: output j = channel j // 9, tap j % 9; tap 4 is the centre
    torch.testing.assert_close(y[:, 4] / conv.beta_scale, x[:, 0], atol=1e-6, rtol=1e-2)
    torch.testing.assert_close(y[:, 13] / conv.beta_scale, x[:, 1], atol=1e-6, rtol=1e-2)


def test_batch_norm_recentres_and_tracks_running_statistics():
    torch.manual_seed(0)
    bn = PoincareBatchNorm2d(4, C)
    x = torch.randn(8, 4, 3, 3) + 2.0
    y = bn(x)
    pts = expmap0(y.permute(0, 2, 3, 1).reshape(-1, 4), C)
    # the output is re-centred at the learned mean (0 at init): its midpoint moves from far off to near 0
    before = midpoint(expmap0(x.permute(0, 2, 3, 1).reshape(-1, 4), C), C).norm()
    assert midpoint(pts, C).norm() < 0.05 * before
    assert bn.running_mean.norm() > 0
    bn.eval()
    assert torch.isfinite(bn(x)).all()


def test_model_runs_and_rejects_bad_input():
    m = PoincareResNet(channels=(4, 8), depths=(1, 1), num_classes=3, in_channels=1)
    batch = {"inputs": torch.randn(4, 1, 12, 12), "labels": torch.tensor([0, 1, 2, 0])}
    out = m(batch)
    assert out.shape == (4, 3)
    m.loss(out, batch)["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="expected inputs"):
        m({"inputs": torch.randn(2, 3, 8, 8)})
    with pytest.raises(ValueError, match="differ"):
        PoincareResNet(channels=(4, 8), depths=(1,))


def test_registered_sizes():
    names = panconv.list_models("vision.poincare_resnet*")
    assert sorted(names) == sorted(PARAMS)
    for name, count in PARAMS.items():
        with torch.device("meta"):
            m = panconv.create_model({"type": name, "num_classes": 10})
        assert sum(p.numel() for p in m.parameters()) == count


# the official code's HyperbolicResNet has the same parameters (its curvature buffers aside): checked by the parity
# test's one-to-one copy; a Poincare conv has the Euclidean conv's k^2 C_in C_out weights plus a bias, a batch norm
# a mean vector and a scalar variance
PARAMS = {"vision.poincare_resnet20_w8": 68_757, "vision.poincare_resnet20_w16": 272_397,
          "vision.poincare_resnet20_w32": 1_084_413, "vision.poincare_resnet32_w8": 117_601,
          "vision.poincare_resnet32_w16": 466_841, "vision.poincare_resnet32_w32": 1_860_361}


def _ours():
    torch.manual_seed(0)
    m = PoincareResNet(channels=(4, 8, 16), depths=(1, 1, 1), num_classes=10, skip_axis="width")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m.train()  # the official batch norm always normalises with batch statistics


def _input():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5


def _record(repo):
    sys.path.insert(0, repo)
    from models.resnets.hyperbolic import HyperbolicResNet

    official = HyperbolicResNet(classes=10, channel_dims=[4, 8, 16], depths=[1, 1, 1])
    ours = _ours()
    theirs = [p for n, p in official.named_parameters() if "isp_c" not in n]
    with torch.no_grad():
        for p, q in zip(theirs, ours.parameters(), strict=True):
            p.copy_(q)
        out = official(_input())
    torch.save({"output": out, "source": "maxvanspengler/poincare-resnet models/resnets/hyperbolic.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_POINCARE"):
        _record(os.environ["PANCONV_RECORD_POINCARE"])
    rec = torch.load(FIXTURE)
    with torch.no_grad():
        torch.testing.assert_close(_ours()({"inputs": _input()}), rec["output"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_precise_bn_re_estimates_the_midpoint_statistics(fast, monkeypatch):
    """``panconv.recompute_batchnorm`` (``panconv precise-bn``) treats the midpoint batch norm as a batch norm:
    re-estimated on one batch, eval mode with running statistics equals the batch-statistics evaluation of that
    batch; on two batches the statistics are the plain average of the two; no weight moves."""
    monkeypatch.setattr(PoincareBatchNorm2d, "fast", fast)
    torch.manual_seed(0)
    model = PoincareResNet(channels=(4, 8), depths=(1, 1), num_classes=3, in_channels=1).double()
    layers = [m for m in model.modules() if isinstance(m, PoincareBatchNorm2d)]
    batches = [{"inputs": torch.randn(6, 1, 10, 10, dtype=torch.float64) + s} for s in (0.0, 0.5)]
    for layer in layers:  # stale statistics, as after a short training
        layer.running_mean.fill_(0.3)
        layer.running_var.fill_(5.0)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    assert panconv.recompute_batchnorm(model, batches[:1]) == 1 and not model.training
    with torch.no_grad():
        running = model(batches[0])
        for layer in layers:
            layer.eval_stats = "batch"
        batch = model(batches[0])
    torch.testing.assert_close(running, batch, rtol=0, atol=1e-9)
    for layer in layers:
        layer.eval_stats = "running"
    single = []
    for b in batches:
        panconv.recompute_batchnorm(model, [b])
        single.append([(m.running_mean.clone(), m.running_var.clone()) for m in layers])
    panconv.recompute_batchnorm(model, batches)
    # the first layer sees the same inputs whatever the statistics: its average is exact
    torch.testing.assert_close(layers[0].running_mean, (single[0][0][0] + single[1][0][0]) / 2)
    torch.testing.assert_close(layers[0].running_var, (single[0][0][1] + single[1][0][1]) / 2)
    assert all(m.momentum == 0.1 for m in layers)
    for name, value in model.named_parameters():
        assert torch.equal(value, weights[name]), name
