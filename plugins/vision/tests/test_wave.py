"""The finite-difference wave solver (analytic modes, convergence order, CFL, boundaries), the WaveFields data
set, the one-way factorised convolution (the paper's defining identity) and the WaveCNN surrogate."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panconv.errors import DataError
from panconv_vision.datasets.wave import WaveFields, cfl_limit, laplacian, simulate, standing_mode
from panconv_vision.evaluators.wave import relative_l2
from panconv_vision.models.wave_cnn import OneWayConv2d, WaveCNN


def _orders(errors):
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


def test_cfl_limits_are_the_von_neumann_bounds():
    assert cfl_limit(2) == pytest.approx(1 / math.sqrt(2))
    assert cfl_limit(4) == pytest.approx(math.sqrt(3 / 8))
    assert cfl_limit(2, dims=1) == pytest.approx(1.0)


def test_time_step_above_cfl_is_rejected_and_would_blow_up():
    u0 = standing_mode(17, 1, 1, 0.0)
    dx = 1 / 16
    with pytest.raises(ValueError, match="CFL"):
        simulate(u0, 1.0, dx, 1.01 * cfl_limit(2) * dx, 10)
    # just below the limit the highest mode stays bounded; the check is not a formality
    out = simulate(u0 + 1e-3 * torch.randn(17, 17, dtype=torch.float64), 1.0, dx, 0.99 * cfl_limit(2) * dx, 400)
    assert out.abs().max() < 10


@pytest.mark.parametrize("order", [2, 4])
def test_laplacian_convergence_order(order):
    errors = []
    for n in (17, 33, 65):
        u = standing_mode(n, 2, 3, 0.0)
        exact = -(math.pi ** 2) * (2 ** 2 + 3 ** 2) * u
        errors.append(float((laplacian(u, 1 / (n - 1), order) - exact).abs().max()))
    assert all(abs(p - order) < 0.15 for p in _orders(errors)), (errors, _orders(errors))


@pytest.mark.parametrize("order", [2, 4])
def test_solver_matches_the_standing_mode_with_second_order_convergence(order):
    """Dirichlet box mode sin(pi x) sin(2 pi y) cos(omega t): leapfrog at fixed CFL converges as dt^2 ~ dx^2."""
    errors = []
    for n in (33, 65, 129):
        dx, t_end = 1 / (n - 1), 0.5
        steps = math.ceil(t_end / (0.5 * cfl_limit(order) * dx))
        dt = t_end / steps
        out = simulate(standing_mode(n, 1, 2, 0.0), 1.0, dx, dt, steps, order, "dirichlet",
                       u_prev=standing_mode(n, 1, 2, -dt))
        errors.append(float((out[-1] - standing_mode(n, 1, 2, t_end)).abs().max()))
    assert errors[-1] < 1e-4  # max-norm error at N = 129, amplitude 1
    assert all(1.8 < p < 2.2 for p in _orders(errors)), (errors, _orders(errors))


def test_neumann_walls_keep_the_cosine_mode():
    n, order = 33, 4
    dx = 1 / (n - 1)
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    mode = torch.cos(math.pi * x)[:, None] * torch.cos(2 * math.pi * x)[None, :]
    omega = math.pi * math.sqrt(5)
    steps = 100
    dt = 0.4 * cfl_limit(order) * dx
    out = simulate(mode, 1.0, dx, dt, steps, order, "neumann", u_prev=mode * math.cos(omega * dt))
    assert torch.allclose(out[-1], mode * math.cos(omega * steps * dt), atol=2e-3)


def test_absorbing_sponge_removes_the_outgoing_wave():
    n = 64
    dx = 1 / (n - 1)
    idx = torch.arange(n, dtype=torch.float64)
    pulse = torch.exp(-((idx[:, None] - 32) ** 2 + (idx[None, :] - 32) ** 2) / (2 * 2.5 ** 2))
    dt = 0.5 * cfl_limit(4) * dx
    # mean field energy over steps 200..300, after the pulse has reached the walls
    energy = {b: float(simulate(pulse, 1.0, dx, dt, 300, 4, b, sponge=16)[200:].pow(2).sum((1, 2)).mean())
              for b in ("dirichlet", "absorbing")}
    assert energy["absorbing"] < 0.15 * energy["dirichlet"], energy


def test_dataset_is_seeded_shaped_and_split_apart():
    kw = dict(size=24, trajectories=2, snapshots=6, rollout=3, sponge=4, pulse_width=1.5)
    a, b = WaveFields(split="val", **kw), WaveFields(split="val", **kw)
    assert torch.equal(a.fields, b.fields)
    assert not torch.equal(a.fields, WaveFields(split="test", **kw).fields)
    assert not torch.equal(a.fields, WaveFields(split="val", seed=1, **kw).fields)
    item = a[0]
    assert item["inputs"].shape == (2, 24, 24) and item["targets"].shape == (3, 24, 24)
    assert torch.equal(item["inputs"][1], a.fields[0, 1]) and torch.equal(item["targets"][0], a.fields[0, 2])
    assert torch.equal(item["baseline"][2], item["inputs"][1])
    train = WaveFields(split="train", **kw)
    assert train[0]["targets"].shape == (1, 24, 24) and len(train) == 2 * (6 - 2)
    assert a.fields.abs().max() > 0.1  # there is a wave


def test_dataset_rejects_bad_velocity_files(tmp_path):
    kw = dict(size=20, trajectories=2, snapshots=5, sponge=4)
    bad = tmp_path / "v.npy"
    np.save(bad, np.ones((8, 8)) * -1)
    with pytest.raises(DataError, match="v.npy"):
        WaveFields(split="train", velocity_file=str(bad), **kw)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(DataError, match="junk.npy"):
        WaveFields(split="train", velocity_file=str(tmp_path / "junk.npy"), **kw)
    good = tmp_path / "good.npy"
    np.save(good, np.linspace(1.0, 2.0, 64).reshape(8, 8))
    ds = WaveFields(split="train", velocity_file=str(good), **kw)
    assert ds.dt == pytest.approx(0.5 * cfl_limit(4) * ds.dx / 2.0)


@pytest.mark.parametrize("rank", [1, 2])
def test_one_way_conv_is_a_rank_r_kernel(rank):
    """The paper's factorisation: k x 1 then 1 x k equals one k x k conv whose (o, i) kernels have rank <= r."""
    torch.manual_seed(0)
    conv = OneWayConv2d(3, 4, 5, rank=rank)
    x = torch.randn(2, 3, 11, 9)
    w = conv.equivalent_kernel()
    assert w.shape == (4, 3, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, w, conv.horizontal.bias, padding=2), atol=1e-5, rtol=1e-5)
    ranks = torch.linalg.matrix_rank(w.reshape(-1, 5, 5))
    assert int(ranks.max()) == rank


def test_single_channel_one_way_conv_is_an_outer_product():
    conv = OneWayConv2d(1, 1, 3, rank=1, bias=False)
    v = conv.vertical.weight.reshape(3)
    h = conv.horizontal.weight.reshape(3)
    torch.testing.assert_close(conv.equivalent_kernel()[0, 0], torch.outer(v, h))


def test_registered_sizes_parameter_counts():
    full = WaveCNN(channels=(16, 32, 64), kernel_size=5)
    small = WaveCNN(channels=(16, 32, 64), kernel_size=5, factorization="one_way", rank=1)
    assert sum(p.numel() for p in full.parameters()) == 327_537
    assert sum(p.numel() for p in small.parameters()) == 67_547
    layer = OneWayConv2d(32, 64, 5, rank=1)
    assert sum(p.numel() for p in layer.parameters()) == 32 * 5 + 64 * 32 * 5 + 64


def test_rollout_feeds_predictions_back():
    torch.manual_seed(0)
    model = WaveCNN(channels=(4, 8), kernel_size=3, factorization="one_way").eval()
    for p in model.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        out = model({"inputs": x, "targets": torch.zeros(2, 3, 16, 16)})
        u1 = model.step(x)
        u2 = model.step(torch.cat([x[:, 1:], u1], 1))
        u3 = model.step(torch.cat([u1, u2], 1))
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out, torch.cat([u1, u2, u3], 1))
    assert model({"inputs": x[..., :15, :13]}).shape == (2, 1, 15, 13)  # odd sides are padded and cropped
    with pytest.raises(ValueError, match="inputs"):
        model({"inputs": torch.randn(2, 3, 16, 16)})


def test_relative_l2():
    target = torch.ones(1, 2, 4)
    pred = torch.cat([torch.zeros(1, 1, 4), 2 * torch.ones(1, 1, 4)], 1)
    torch.testing.assert_close(relative_l2(pred, target), torch.tensor([[1.0, 1.0]], dtype=torch.float64))


@pytest.mark.slow
@pytest.mark.parametrize("factorization", ["none", "one_way"])
def test_surrogate_learns_to_beat_persistence(factorization):
    """A tiny surrogate, 150 full-batch Adam steps on solver data: its one-step error drops below persistence's."""
    torch.manual_seed(0)
    data = WaveFields(split="train", size=20, trajectories=3, snapshots=8, stride=2, sponge=5, pulse_width=1.5)
    batch = data.collate([data[i] for i in range(len(data))])
    model = WaveCNN(channels=(6, 12), kernel_size=3, factorization=factorization)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        model.loss(model(batch), batch)["loss"].backward()
        opt.step()
    with torch.no_grad():
        err = relative_l2(model(batch), batch["targets"]).mean()
    assert err < 0.75 * relative_l2(batch["baseline"], batch["targets"]).mean()
