"""Exact NTK / NNGP kernels of hierarchical CNNs (Cagnetta, Favero, Wyart, ICML 2023) and the network they
describe: the maths (arc-cosine base case, PSD, spectra, Monte-Carlo and empirical-NTK limits) and the tool."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from panconv_vision.models.wide_cnn import WideCNN
from panconv_vision.tools import wide_cnn as W

pytestmark = pytest.mark.usefixtures("single_thread")


def _cho_saul(x, y, degree):
    """Cho & Saul's arc-cosine kernels written out independently: k0 = 1 - t/pi, k1 = |x||y|(sin t + (pi-t)cos t)/pi."""
    out = np.empty((len(x), len(y)))
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            t = math.acos(max(-1.0, min(1.0, float(a @ b) / (na * nb))))
            j1 = math.sin(t) + (math.pi - t) * math.cos(t)
            out[i, j] = 1 - t / math.pi if degree == 0 else na * nb * j1 / math.pi
    return out


@pytest.mark.parametrize("s", [2, 3, 5])
def test_one_layer_is_the_arccos_kernel(s):
    rng = np.random.default_rng(s)
    x, y = rng.standard_normal((6, s)) * 1.7, rng.standard_normal((4, s))
    k = W.kernels(x, y, filter_size=s)
    # E[2 relu(w.x/sqrt s) relu(w.y/sqrt s)] = k1(x, y) / s; NTK adds <x, y>/s * k0 (first-layer weights)
    np.testing.assert_allclose(k["nngp"], _cho_saul(x, y, 1) / s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k["ntk"], _cho_saul(x, y, 1) / s + (x @ y.T) / s * _cho_saul(x, y, 0),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(W.arccos_kernel(x, y, 1), _cho_saul(x, y, 1), rtol=1e-12)


@pytest.mark.parametrize("s,L,depth", [(2, 3, None), (3, 2, None), (2, 4, 2), (2, 3, 1)])
def test_kernels_are_psd_and_symmetric(s, L, depth):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, s ** L))
    for name, k in W.kernels(x, filter_size=s, depth=depth).items():
        np.testing.assert_allclose(k, k.T, atol=1e-12, err_msg=name)
        eig = np.linalg.eigvalsh(k)
        assert eig.min() > -1e-10 * eig.max(), (name, eig.min())
    # blocked evaluation of a rectangular Gram == the full one
    full = W.kernels(x, filter_size=s, depth=depth)["ntk"]
    np.testing.assert_allclose(W.kernels(x[:17], x, filter_size=s, depth=depth, block=5)["ntk"], full[:17])


def test_kernel_diagonal_is_preserved_on_sphere_patches():
    x = W.sphere_patches(5, 2, 3, np.random.default_rng(1))
    k = W.kernels(x, filter_size=2)
    np.testing.assert_allclose(np.diag(k["nngp"]), 1.0)   # s2r keeps unit variance through the layers
    np.testing.assert_allclose(np.diag(k["ntk"]), 4.0)    # 1 + 1 + 1 + 1: one term per layer and the read-out


def test_nngp_matches_monte_carlo_over_random_wide_networks():
    """E over random hidden weights of (1/H) phi(x).phi(y) (= the output covariance over read-out weights)."""
    torch.manual_seed(0)
    x = W.sphere_patches(6, 2, 2, np.random.default_rng(2))
    exact = W.kernels(x, filter_size=2)["nngp"]
    xt = torch.from_numpy(x)
    draws = []
    for seed in range(200):  # statistical error of the mean ~0.01 (per draw ~0.13 at width 512)
        torch.manual_seed(seed)
        net = WideCNN(filter_size=2, depth=2, width=512).double()
        with torch.no_grad():
            phi = net.features(xt)
        draws.append((phi @ phi.t() / net.width).numpy())
    mc = np.mean(draws, 0)
    assert np.abs(mc - exact).max() < 0.04, np.abs(mc - exact).max()
    # and the outputs' covariance over many read-outs of one wide network is that network's (1/H) phi phi^T
    net = WideCNN(filter_size=2, depth=2, width=256, num_classes=4000).double()
    with torch.no_grad():
        out, phi = net(xt), net.features(xt)
    emp = (out @ out.t() / out.shape[1]).numpy()
    np.testing.assert_allclose(emp, (phi @ phi.t() / 256).numpy(), atol=0.08)


def test_empirical_ntk_converges_to_the_analytic_one_with_width():
    res = W.ntk_convergence([8, 64, 512], n_inputs=6, seeds=(0, 1), depth=3)
    errors = res["errors"]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15, errors
    assert res["fitted_slope"] < -0.25


def test_empirical_ntk_is_jacobian_gram():
    """Against a plain loop of autograd gradients (no torch.func)."""
    torch.manual_seed(0)
    net = WideCNN(filter_size=2, depth=2, width=4).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    grads = []
    for xi in x:
        net.zero_grad()
        net(xi[None])[0, 0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    g = torch.stack(grads)
    torch.testing.assert_close(W.empirical_ntk(net, x), g @ g.t())


def test_torus_spectrum_is_the_kernel_on_circle_patches():
    """The FFT eigenvalues reproduce the kernel (inverse transform) and are non-negative (PSD)."""
    depth, grid = 2, 16
    modes, eig = W.torus_spectrum(depth, grid, "ntk")
    assert eig.min() > -1e-12
    phi = np.random.default_rng(0).uniform(0, 2 * np.pi, (5, 2))
    psi = np.zeros((1, 2))
    x = np.sqrt(2) * np.stack([np.cos(phi), np.sin(phi)], -1).reshape(5, 4)
    y = np.sqrt(2) * np.stack([np.cos(psi), np.sin(psi)], -1).reshape(1, 4)
    direct = W.kernels(x, y, filter_size=2)["ntk"][:, 0]
    series = (eig[None] * np.cos(phi @ modes.T.astype(float))).sum(1)  # sum_k lambda_k e^{i k.(phi - 0)}
    grid_phi = np.round(phi / (2 * np.pi / grid)) * (2 * np.pi / grid)  # series is exact on the grid points
    xg = np.sqrt(2) * np.stack([np.cos(grid_phi), np.sin(grid_phi)], -1).reshape(5, 4)
    np.testing.assert_allclose((eig[None] * np.cos(grid_phi @ modes.T.astype(float))).sum(1),
                               W.kernels(xg, y, filter_size=2)["ntk"][:, 0], atol=1e-10)
    assert np.abs(series - direct).max() < 0.1  # off-grid: the truncated series, not exact


@pytest.mark.parametrize("kind,nu", [("ntk", 0.5), ("nngp", 1.5)])
def test_spectrum_exponents_follow_the_effective_dimension(kind, nu):
    """eigenvalue ~ k^-(d_eff(l) + 2 nu): l=1 (one patch, d_eff 1), l=2 (the whole input, d_eff 2)."""
    modes, eig = W.torus_spectrum(2, 512, kind)
    fits = W.ray_exponents(modes, eig, 8, 48)
    assert fits["(k,0,...)"]["extent"] == 1 and fits["(k,k,0,...)"]["extent"] == 2
    assert fits["(k,0,...)"]["fitted_exponent"] == pytest.approx(1 + 2 * nu, abs=0.2)
    assert fits["(k,k,0,...)"]["fitted_exponent"] == pytest.approx(2 + 2 * nu, abs=0.2)


def test_extent_of_modes():
    k = np.array([[0, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, -2], [1, 1, 0, 0], [0, 0, 2, 5], [1, 0, 1, 0], [0, 1, 1, 0],
                  [1, 1, 1, 1]])
    assert W.extent(k).tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    assert [W.d_eff(level) for level in (1, 2, 3)] == [1, 2, 4]
    assert W.d_eff(2, filter_size=3) == 6


def test_fit_exponent_and_learning_curve_decreases():
    sizes = np.array([10, 100, 1000])
    assert W.fit_exponent(sizes, 3.0 * sizes ** -0.7) == pytest.approx(0.7)
    curve = W.learning_curve("ntk:1", [16, 64, 256], 200, seeds=[0], depth=2)
    e = curve["errors"]
    assert e[0] > e[1] > e[2] and e[2] < 0.5 * e[0], e
    assert W.predicted_beta("ntk:1") == 1.0 and W.predicted_beta("ntk:3") == 0.25 and W.predicted_beta("cnn") == 0.75
    # mode counting: equal to 2 nu_T / d_L for a full-depth teacher, below 2 nu_T / d_T for a local one
    assert W.counting_beta("ntk:3") == 0.25 and W.counting_beta("cnn") == 0.75
    assert W.counting_beta("ntk:1") == pytest.approx(0.625) and W.counting_beta("ntk:2") == pytest.approx(5 / 12)


def test_wide_cnn_model_shapes_and_errors():
    net = WideCNN(filter_size=3, depth=2, width=5, num_classes=4)
    batch = net.example_inputs(3)
    out = net(batch)
    assert out.shape == (3, 4) and net.predict(out).shape == (3, 4)
    assert torch.isfinite(net.loss(out, batch)["loss"])
    with pytest.raises(ValueError, match="expected inputs"):
        net(torch.randn(2, 1, 8))
    with pytest.raises(ValueError):
        WideCNN(filter_size=1)
    reg = WideCNN(filter_size=2, depth=2, width=5)
    assert reg.predict(reg(reg.example_inputs(2))).shape == (2,)


def test_cli_writes_figures_and_json(tmp_path):
    args = argparse.Namespace(output=str(tmp_path), depth=2, spectra="2:32", sizes="16,32,64", test=50, seeds=1,
                              widths="4,16", teacher_width=32, parts="spectrum,curves,ntk")
    assert W.main(args) == 0
    for name in ("spectrum.png", "learning_curves.png", "ntk_convergence.png", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["learning_curves"]) == {"ntk:1", "ntk:2", "cnn"}
    assert res["spectrum"]["L2_ntk"]["rays"]["(k,0,...)"]["predicted_exponent"] == 2.0
