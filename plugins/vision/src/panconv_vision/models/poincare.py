"""Poincaré ResNet: convolutional residual networks in the Poincaré ball.

Paper: van Spengler, Berkhout and Mettes, "Poincaré ResNet", ICCV 2023, arXiv:2303.14027. Reference
code: https://github.com/maxvanspengler/poincare-resnet (numerical parity checked, tests/test_poincare.py).

The Poincaré ball of curvature ``-c`` is ``{x : c ||x||^2 < 1}``. Its operations (Ganea et al. 2018):

* Möbius addition ``x ⊕ y = ((1 + 2c<x,y> + c||y||^2) x + (1 - c||x||^2) y) / (1 + 2c<x,y> + c^2||x||^2||y||^2)``;
* exponential / logarithmic maps at 0: ``exp_0(v) = tanh(sqrt(c)||v||) v / (sqrt(c)||v||)``,
  ``log_0(y) = artanh(sqrt(c)||y||) y / (sqrt(c)||y||)``; at ``x``: ``exp_x(v) = x ⊕ tanh(sqrt(c) λ_x ||v|| / 2)
  v / (sqrt(c)||v||)`` and ``log_x(y) = 2/(sqrt(c) λ_x) artanh(sqrt(c)||-x ⊕ y||) (-x ⊕ y)/||-x ⊕ y||``,
  ``λ_x = 2 / (1 - c||x||^2)``; parallel transport ``P_{x->y}(v) = gyr[y, -x] v λ_x / λ_y``.
* **Poincaré FC** (HNN++, Shimizu et al. 2021): signed distances to ``m`` hyperplanes (the Poincaré
  MLR with orientations ``z`` and offsets ``r``), mapped to the point whose coordinates realise them.
* **Poincaré convolution**: the receptive field's channel vectors are *β-concatenated* — each
  tangent vector scaled by ``B(nK/2, 1/2) / B(n/2, 1/2)`` (``n`` channels, ``K`` taps, ``B`` the beta
  function) before unfolding, which keeps the expected norm of the concatenation — mapped to the ball
  and sent through a Poincaré FC layer.
* **Poincaré midpoint batch norm**: the batch's gyromidpoint as the mean, the Fréchet variance, then
  every point is moved (log map, parallel transport to the learned mean, rescaling to the learned
  variance, exp map).
* **Möbius residual**: ``exp_0(f(x)) ⊕ exp_0(x)`` (then ``log_0`` and ReLU).
* **Identity initialisation**: ``z = I / 2`` in every FC/conv (the 1/2 cancels the 2 of the distance).

Between layers features live in the tangent space at the origin (every layer maps in with ``exp_0``
and out with ``log_0``), as in the official code. Float32 stability: norms are clamped away from 0,
points are projected to ``||x|| <= (1 - 4e-3)/sqrt(c)`` (the official float32 margin), and ``artanh``
arguments are clamped to ``1 - 1e-6``, so that the maps stay finite for any input (tested near the
boundary and for huge tangent vectors).

Speed (fused layers, ``fast = True`` on every layer, the default; ``fast = False`` runs the step-by-step definition,
and tests/test_poincare_fast.py checks that both give the same outputs, gradients and running statistics):
``exp_0`` scales a vector by a function of its norm, so the convolution never builds the unfolded patches:
``<exp_0(v), z_k> = s(||v||) <v, z_k>`` is a plain ``conv2d`` with the FC weights reshaped to ``(out, C, k, k)``,
``||v||^2`` a box sum of ``sum_c x^2``, and the FC's projection and ``log_0`` act through norms (one scalar per
pixel); the midpoint batch norm writes every intermediate point as per-pixel scalars times a few fixed vectors
(the transport is a fixed gyration matrix), and the Möbius residual is ``φ y + ψ r``. On one CPU thread this makes
a ResNet-20 training step ~3x faster (benchmarks/vision_poincare_speed.py). Output size: the convolution's
``(H + 2p - k) // s + 1`` (the official code reshapes to ``(H - k + 1 + 2p) // s``, which fails on odd sizes at
stride 2).

Deviations: the official residual maps ``exp_0``/``log_0`` over the *last* axis of ``N, C, H, W``
tensors (the width) instead of the channels; ``skip_axis="width"`` reproduces it (used for parity),
the default ``"channel"`` follows the paper. The official batch norm keeps no running statistics and
normalises with batch statistics even in evaluation; ours tracks running statistics (tangent-space EMA
of the midpoint, EMA of the variance) and uses them in eval mode (``bn_eval_stats="batch"`` normalises with the
batch's statistics in eval mode, as the official code).

Baseline: :class:`EuclideanResNet` is the paper's Euclidean counterpart (official
``models/resnets/euclidean.py``, "euclidean-8-16-32-resnet-20"): the same skeleton with ``Conv2d`` (bias),
``BatchNorm2d``, additive residuals (a biased 1x1 stride-2 conv on the shortcut where a stage starts, no
norm on it) and a linear classifier, for equal-budget comparisons.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import Model

__all__ = [
    "EuclideanResNet", "PoincareBatchNorm2d", "PoincareConv2d", "PoincareLinear", "PoincareResNet", "expmap", "expmap0",
    "fully_connected", "gyration", "logmap", "logmap0", "midpoint", "mobius_add", "project", "transport",
]

MIN_NORM = 1e-15


def beta_function(a: float, b: float) -> float:
    """Euler's beta function ``B(a, b) = Gamma(a) Gamma(b) / Gamma(a + b)`` (through log-gamma: no overflow)."""
    return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
ARTANH_MAX = 1 - 1e-6


def _conv_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _artanh(x: torch.Tensor) -> torch.Tensor:
    return torch.atanh(x.clamp(-ARTANH_MAX, ARTANH_MAX))


def _sqnorm(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.pow(2).sum(dim=dim, keepdim=True)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Möbius addition ``x ⊕_c y``."""
    x2, y2, xy = _sqnorm(x, dim), _sqnorm(y, dim), (x * y).sum(dim=dim, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c ** 2 * x2 * y2).clamp_min(MIN_NORM)


def project(x: torch.Tensor, c: float | torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pull points back inside the ball: ``||x|| <= (1 - eps) / sqrt(c)`` (eps 4e-3 in float32, 1e-5 otherwise)."""
    eps = 4e-3 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-5
    maxnorm = (1 - eps) / (c + 1e-15) ** 0.5
    norm = x.norm(dim=dim, keepdim=True).clamp_min(MIN_NORM)
    return torch.where(norm > maxnorm, x / norm * maxnorm, x)


def expmap0(v: torch.Tensor, c: float | torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp_0(v) = tanh(sqrt(c)||v||) v / (sqrt(c)||v||)``, projected into the ball."""
    sc = c ** 0.5
    u = v.norm(dim=dim, keepdim=True).clamp_min(MIN_NORM) * sc
    return project(torch.tanh(u) * v / u, c, dim)


def logmap0(y: torch.Tensor, c: float | torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log_0(y) = artanh(sqrt(c)||y||) y / (sqrt(c)||y||)``."""
    sc = c ** 0.5
    u = y.norm(dim=dim, keepdim=True).clamp_min(MIN_NORM) * sc
    return _artanh(u) * y / u


def _lambda(x: torch.Tensor, c, dim: int) -> torch.Tensor:
    return 2 / (1 - c * _sqnorm(x, dim)).clamp_min(MIN_NORM)


def expmap(x: torch.Tensor, v: torch.Tensor, c, dim: int = -1) -> torch.Tensor:
    """``exp_x(v) = x ⊕ tanh(sqrt(c) λ_x ||v|| / 2) v / (sqrt(c)||v||)``, projected."""
    sc = c ** 0.5
    vn = v.norm(dim=dim, keepdim=True).clamp_min(MIN_NORM)
    second = torch.tanh(sc * _lambda(x, c, dim) * vn / 2) * v / (sc * vn)
    return project(mobius_add(x, second, c, dim), c, dim)


def logmap(x: torch.Tensor, y: torch.Tensor, c, dim: int = -1) -> torch.Tensor:
    """``log_x(y) = 2 / (sqrt(c) λ_x) artanh(sqrt(c)||-x ⊕ y||) (-x ⊕ y) / ||-x ⊕ y||``."""
    sc = c ** 0.5
    d = mobius_add(-x, y, c, dim)
    dn = d.norm(dim=dim, keepdim=True).clamp_min(MIN_NORM)
    return 2 / (sc * _lambda(x, c, dim)) * _artanh(sc * dn) * d / dn


def gyration(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, c, dim: int = -1) -> torch.Tensor:
    """The gyration ``gyr[u, v] w = -(u ⊕ v) ⊕ (u ⊕ (v ⊕ w))`` in closed form."""
    u2, v2 = _sqnorm(u, dim), _sqnorm(v, dim)
    uv, uw, vw = ((u * v).sum(dim, keepdim=True), (u * w).sum(dim, keepdim=True), (v * w).sum(dim, keepdim=True))
    c2 = c ** 2
    a = -c2 * uw * v2 + c * vw + 2 * c2 * uv * vw
    b = -c2 * vw * u2 - c * uw
    d = 1 + 2 * c * uv + c2 * u2 * v2
    return w + 2 * (a * u + b * v) / d.clamp_min(MIN_NORM)


def transport(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, c, dim: int = -1) -> torch.Tensor:
    """Parallel transport of the tangent vector ``v`` from ``x`` to ``y``: ``gyr[y, -x] v λ_x / λ_y``."""
    return gyration(y, -x, v, c, dim) * _lambda(x, c, dim) / _lambda(y, c, dim)


def distance(x: torch.Tensor, y: torch.Tensor, c, dim: int = -1) -> torch.Tensor:
    """Geodesic distance ``2/sqrt(c) artanh(sqrt(c) ||-x ⊕ y||)``."""
    sc = c ** 0.5
    return 2 / sc * _artanh(sc * mobius_add(-x, y, c, dim).norm(dim=dim))


def midpoint(x: torch.Tensor, c, dim: int = -1, batch_dim: int = 0) -> torch.Tensor:
    """The gyromidpoint of points along ``batch_dim`` (Ungar): weights ``γ_i^2 = 1 / (1 - c||x_i||^2)``."""
    g2 = 1 / (1 - c * _sqnorm(x, dim)).clamp_min(MIN_NORM)
    m = (g2 * x).sum(batch_dim, keepdim=True) / (g2.sum(batch_dim, keepdim=True) - x.shape[batch_dim] / 2)
    gm = 1 / (1 - c * _sqnorm(m, dim)).clamp_min(MIN_NORM).sqrt()
    return gm / (1 + gm) * m


def fully_connected(x: torch.Tensor, z: torch.Tensor, r: torch.Tensor | None, c) -> torch.Tensor:
    """Poincaré FC (HNN++): MLR signed distances ``v_k(x)`` to the hyperplanes ``(z_k, r_k)``, then the point
    ``w / (1 + sqrt(1 + c||w||^2))`` with ``w_k = sinh(sqrt(c) v_k) / sqrt(c)``; projected into the ball."""
    sc = c ** 0.5
    lam = 2 * (1 - c * _sqnorm(x, -1))  # as the official code (and HNN++'s implementation) writes it
    zn = z.norm(dim=0).clamp_min(MIN_NORM)
    xz = x @ z
    if r is None:
        v = 2 * zn / sc * torch.asinh(sc * lam / zn * xz)
    else:
        two = 2 * sc * r
        v = 2 * zn / sc * torch.asinh(sc * lam / zn * xz * torch.cosh(two) - (lam - 1) * torch.sinh(two))
    w = torch.sinh(sc * v) / sc
    return project(w / (1 + (1 + c * _sqnorm(w, -1)).sqrt()), c)


def _maxnorm(x: torch.Tensor, c) -> float:
    """The radius ``project`` pulls points back to (its float32 / float64 margins)."""
    eps = 4e-3 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-5
    return (1 - eps) / (c + 1e-15) ** 0.5


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(sq)`` clamped at ``MIN_NORM`` before the root (a finite gradient at 0, as ``norm().clamp_min``)."""
    return sq.clamp_min(MIN_NORM ** 2).sqrt()


def _expmap0_scale(sq: torch.Tensor, c) -> torch.Tensor:
    """The factor ``s`` with ``project(expmap0(v)) = s v`` from ``sq = ||v||^2`` (scalars only: no vector built)."""
    sc = c ** 0.5
    vn = _safe_norm(sq)
    u = vn * sc
    s = torch.tanh(u) / u
    n = s * vn  # ||exp_0(v)|| before the projection
    maxnorm = _maxnorm(sq, c)
    return torch.where(n > maxnorm, s * (maxnorm / n.clamp_min(MIN_NORM)), s)


class _SinhScaledAsinh(torch.autograd.Function):
    """``sinh(k asinh(q))`` (``k >= 0`` broadcast against ``q``), the Poincaré FC's ``sqrt(c) w`` from its MLR
    argument, in vectorised CPU functions (``torch.asinh`` is not) and with a hand-written backward.

    ``L = asinh|q| = log1p(a + a * a / (1 + hypot(a, 1)))`` (``a = |q|``, exact for small and large ``a``), ``m =
    expm1(k L)``, ``sinh(k L) = m (2 + m) / (2 (1 + m))`` (no cancellation for small ``k L``), ``cosh(k L) = ((1 + m)
    + 1 / (1 + m)) / 2``; ``d/dq = k cosh(k asinh q) / sqrt(1 + q^2)``, ``d/dk = cosh(k asinh q) asinh q``."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        a = q.abs()
        h = torch.hypot(a, torch.ones((), dtype=a.dtype, device=a.device))
        lg = torch.log1p(a + a * (a / (1 + h)))
        m = torch.expm1(k * lg)
        ctx.save_for_backward(q, k, h, lg, m)
        return torch.copysign(m * 0.5 * ((2 + m) / (1 + m)), q)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        q, k, h, lg, m = ctx.saved_tensors
        e = 1 + m
        gc = g * (0.5 * (e + e.reciprocal()))  # g cosh(k L)
        gq = gc * k / h if ctx.needs_input_grad[0] else None
        gk = (gc * torch.copysign(lg, q)).sum_to_size(k.shape) if ctx.needs_input_grad[1] else None
        return gq, gk


def _fc_coefficients(z: torch.Tensor, r: torch.Tensor | None, c, shape) -> tuple:
    """Per-output factors of the Poincaré FC (HNN++): ``||z_k||``, ``cosh(2 sqrt(c) r_k) / ||z_k||`` and
    ``sinh(2 sqrt(c) r_k)`` (None without bias), shaped to broadcast along the feature axis."""
    zn = z.norm(dim=0).clamp_min(MIN_NORM)
    if r is None:
        return zn.reshape(shape), (1 / zn).reshape(shape), None
    two = 2 * c ** 0.5 * r
    return zn.reshape(shape), (torch.cosh(two) / zn).reshape(shape), torch.sinh(two).reshape(shape)


def _fc_tangent(q: torch.Tensor, zn: torch.Tensor, c, dim: int) -> torch.Tensor:
    """``log_0`` of the Poincaré FC's output point from the argument of its ``asinh``,
    ``q_k = sqrt(c) λ_x <x, z_k> cosh(2 sqrt(c) r_k) / ||z_k|| - (λ_x - 1) sinh(2 sqrt(c) r_k)``.

    The same formula as :func:`fully_connected` followed by :func:`logmap0`: ``sqrt(c) w_k = sinh(sqrt(c) v_k)
    = sinh(2 ||z_k|| asinh q_k)``; the projection and the logarithm act on the point ``y = w / (1 + sqrt(1 +
    c||w||^2))`` through its norm only, so they are one scalar factor on ``w`` (no intermediate vectors)."""
    sc = c ** 0.5
    ws = _SinhScaledAsinh.apply(q, 2 * zn)  # sqrt(c) w
    w2 = _sqnorm(ws, dim)  # c ||w||^2
    f = 1 / (1 + (1 + w2).sqrt())  # y = f w
    u = _safe_norm(w2) * f  # sqrt(c) ||y||
    umax = _maxnorm(q, c) * sc
    proj = u > umax
    f = torch.where(proj, f * (umax / u.clamp_min(MIN_NORM)), f)
    u = torch.where(proj, torch.full_like(u, umax), u)
    return ws * (f * _artanh(u) / (u * sc))


def mobius_residual(y: torch.Tensor, r: torch.Tensor, c, dim: int) -> torch.Tensor:
    """``log_0(exp_0(y) ⊕ exp_0(r))`` through norms and one inner product: the sum is ``φ y + ψ r``."""
    y2, r2, yr = _sqnorm(y, dim), _sqnorm(r, dim), (y * r).sum(dim, keepdim=True)
    sy, sr = _expmap0_scale(y2, c), _expmap0_scale(r2, c)
    a2, b2, ab = sy.pow(2) * y2, sr.pow(2) * r2, sy * sr * yr
    den = (1 + 2 * c * ab + c ** 2 * a2 * b2).clamp_min(MIN_NORM)
    phi, psi = sy * (1 + 2 * c * ab + c * b2) / den, sr * (1 - c * a2) / den
    u = _safe_norm(phi.pow(2) * y2 + 2 * phi * psi * yr + psi.pow(2) * r2) * c ** 0.5
    f = _artanh(u) / u
    return y * (f * phi) + r * (f * psi)


class PoincareLinear(nn.Module):
    """Poincaré FC on tangent vectors at 0: ``log_0(FC(exp_0(x)))``; identity initialisation ``z = I/2``."""

    def __init__(self, in_features: int, out_features: int, c: float = 0.1, bias: bool = True,
                 id_init: bool = True):
        super().__init__()
        self.c = c
        self.z = nn.Parameter(0.5 * torch.eye(in_features, out_features) if id_init else
                              torch.randn(in_features, out_features) * (2 * in_features * out_features) ** -0.5)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    fast = True  #: the fused formula (set False for the step-by-step reference path; same outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return logmap0(fully_connected(expmap0(x, self.c), self.z, self.bias, self.c), self.c)
        c = self.c
        sq = _sqnorm(x, -1)
        s = _expmap0_scale(sq, c)  # exp_0(x) = s x
        lam = 2 * (1 - c * s.pow(2) * sq)
        zn, a, b = _fc_coefficients(self.z, self.bias, c, (1, -1))
        q = (x @ self.z) * a * (c ** 0.5 * lam * s)
        if b is not None:
            q = torch.addcmul(q, lam - 1, b, value=-1)
        return _fc_tangent(q, zn, c, -1)


class PoincareConv2d(nn.Module):
    """Poincaré convolution: β-concatenation of the unfolded receptive field, then a Poincaré FC (on ``N,C,H,W``
    tangent features; identity initialisation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, c: float = 0.1, bias: bool = True, id_init: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.c = in_channels, out_channels, c
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        taps = kernel_size * kernel_size
        fan = taps * in_channels
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None  # (the official parameter order)
        self.weights = nn.Parameter(0.5 * torch.eye(fan, out_channels) if id_init else
                                    torch.randn(fan, out_channels) * (2 * fan * out_channels) ** -0.5)
        #: the β-concatenation scale B(nK/2, 1/2) / B(n/2, 1/2)
        self.beta_scale = float(beta_function(fan / 2, 0.5) / beta_function(in_channels / 2, 0.5))

    fast = True  #: the fused convolution (set False for the unfolded reference path; same outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PoincareConv2d: expected (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self._forward_fast(x) if self.fast else self._forward_reference(x)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The definition: unfold the β-scaled receptive fields, ``exp_0`` each, Poincaré FC, ``log_0``."""
        n = x.shape[0]
        k, s, p = self.kernel_size, self.stride, self.padding
        ho, wo = _conv_size(x.shape[-2], k, s, p), _conv_size(x.shape[-1], k, s, p)
        patches = F.unfold(x * self.beta_scale, k, padding=p, stride=s).transpose(1, 2)  # (N, L, C k^2)
        y = fully_connected(expmap0(patches, self.c), self.weights, self.bias, self.c)
        y = y.transpose(1, 2).reshape(n, self.out_channels, ho, wo)
        return logmap0(y, self.c, dim=1)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function without the unfolded patches: ``exp_0`` scales each patch ``v`` by a factor of its
        norm only, so ``<exp_0(v), z_k> = s(||v||) <v, z_k>`` is a plain convolution with the FC's weights
        reshaped to ``(out, C, k, k)`` (the unfolding is channel-major), and ``||v||^2`` a box sum of
        ``sum_c x^2`` over the receptive field (zero padding counts as in the unfolding)."""
        k, s, p = self.kernel_size, self.stride, self.padding
        c, beta = self.c, self.beta_scale
        zn, a, b = _fc_coefficients(self.weights, self.bias, c, (1, -1, 1, 1))
        weight = self.weights.t().reshape(self.out_channels, self.in_channels, k, k) * (a.reshape(-1, 1, 1, 1) * beta)
        vz = F.conv2d(x, weight, stride=s, padding=p)  # <v, z_k> cosh(2 sqrt(c) r_k) / ||z_k||, v the β-scaled patch
        sq = x.pow(2).sum(1, keepdim=True)
        if 2 * p <= k:  # ||v||^2: the box sum of sq over the receptive field (zero padding included)
            v2 = F.avg_pool2d(sq, k, s, p, count_include_pad=True) * (k * k * beta ** 2)
        else:
            v2 = F.conv2d(sq, x.new_ones(1, 1, k, k), stride=s, padding=p) * beta ** 2
        se = _expmap0_scale(v2, c)  # exp_0(v) = se v
        lam = 2 * (1 - c * se.pow(2) * v2)
        q = vz * (c ** 0.5 * lam * se)
        if b is not None:
            q = torch.addcmul(q, lam - 1, b, value=-1)
        return _fc_tangent(q, zn, c, 1)


class PoincareBatchNorm2d(nn.Module):
    """Poincaré midpoint batch norm over the channel vectors of every pixel (tangent features in and out).

    ``eval_stats``: what eval mode normalises with: ``"running"`` (the tracked midpoint and variance, default) or
    ``"batch"`` (the batch's own, as the official code does in every mode; running statistics are then not
    updated in eval mode)."""

    def __init__(self, features: int, c: float = 0.1, momentum: float = 0.1,
                 eval_stats: Literal["running", "batch"] = "running"):
        super().__init__()
        if eval_stats not in ("running", "batch"):
            raise ValueError(f"PoincareBatchNorm2d: eval_stats must be 'running' or 'batch', got {eval_stats!r}")
        self.c, self.momentum, self.eval_stats = c, momentum, eval_stats
        self.mean = nn.Parameter(torch.zeros(features))
        self.var = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("running_mean", torch.zeros(features))  # tangent vector at 0 of the midpoint
        self.register_buffer("running_var", torch.tensor(1.0))
        self._tracked = 0  # batches averaged since reset_running_stats (for momentum None)

    def reset_running_stats(self) -> None:
        """The initial statistics (midpoint at the origin, variance 1), as ``nn.BatchNorm2d``'s; with ``momentum``
        ``None`` the next training batches then give their plain average (``panconv precise-bn``)."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self._tracked = 0

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Running statistics: an EMA with weight ``momentum``, or the cumulative average when it is ``None``."""
        self._tracked += 1
        weight = self.momentum if self.momentum is not None else 1.0 / self._tracked
        self.running_mean.lerp_(mean.detach(), weight)
        self.running_var.lerp_(var.detach(), weight)

    fast = True  #: the fused formula (set False for the step-by-step reference path; same outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_fast(x) if self.fast else self._forward_reference(x)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as :meth:`_forward_reference` without per-step point tensors.

        Every intermediate point is a combination of a few fixed vectors with per-pixel scalar weights:
        ``exp_0(x) = s x``; ``-μ ⊕ s x = -α μ + β s x``; the parallel transport is a gyration, a fixed ``C x C``
        matrix ``G`` (linear in the transported vector); ``exp_t`` and ``log_0`` act through norms. So the layer is
        ``log_0(...) = a t + b Gμ + e Gx`` with scalars ``a, b, e`` computed from inner products of ``x`` with
        ``μ``, ``Gᵀt``, ``GᵀGμ``, and the norms ``||x||``, ``||Gx||`` (Gram expansions of the norms)."""
        c = self.c
        sc = c ** 0.5
        x2 = _sqnorm(x, 1)  # (N, 1, H, W)
        s0 = _expmap0_scale(x2, c)  # points s0 x
        p2 = s0.pow(2) * x2
        t = expmap0(self.mean, c)
        batch_stats = self.training or self.eval_stats == "batch"
        if batch_stats:  # the gyromidpoint of the points s0 x (as `midpoint`)
            g2 = 1 / (1 - c * p2).clamp_min(MIN_NORM)
            m = (x * (g2 * s0)).sum((0, 2, 3)) / (g2.sum() - p2.numel() / 2)
            gm = 1 / (1 - c * m.pow(2).sum()).clamp_min(MIN_NORM).sqrt()
            mu = gm / (1 + gm) * m
        else:
            mu = expmap0(self.running_mean, c)
        a2, t2, tmu = mu.pow(2).sum(), t.pow(2).sum(), (t * mu).sum()
        lam_mu = 2 / (1 - c * a2).clamp_min(MIN_NORM)
        lam_t = 2 / (1 - c * t2).clamp_min(MIN_NORM)
        # gyr[t, -μ] w = G w (`gyration` with u = t, v = -μ is linear in w)
        dg = (1 - 2 * c * tmu + c ** 2 * t2 * a2).clamp_min(MIN_NORM)
        row_t = -c ** 2 * a2 * t - c * mu + 2 * c ** 2 * tmu * mu
        row_mu = c * t - c ** 2 * t2 * mu
        g = torch.eye(t.numel(), dtype=x.dtype, device=x.device) + (2 / dg) * (
            torch.outer(t, row_t) + torch.outer(mu, row_mu))
        gmu = g @ mu
        dots = F.conv2d(x, torch.stack([mu, g.t() @ t, g.t() @ gmu])[:, :, None, None])
        xmu, xgt, xggmu = dots[:, :1], dots[:, 1:2], dots[:, 2:]
        gx = F.conv2d(x, g[:, :, None, None])
        gx2 = _sqnorm(gx, 1)
        # d = -μ ⊕ s0 x = -α μ + β s0 x (as `mobius_add`)
        xy = -s0 * xmu
        den = (1 + 2 * c * xy + c ** 2 * a2 * p2).clamp_min(MIN_NORM)
        alpha, beta = (1 + 2 * c * xy + c * p2) / den, (1 - c * a2) / den
        dn = _safe_norm(alpha.pow(2) * a2 + 2 * alpha * beta * xy + beta.pow(2) * p2)
        ad = _artanh(sc * dn)
        var = (2 / sc * ad).pow(2).mean() if batch_stats else self.running_var  # Fréchet variance: E d(x, μ)^2
        if self.training:
            self._track(logmap0(mu, c), var)
        # v = rescale * transport(log_μ(s0 x)) = rho Gμ + sig Gx
        k = (self.var / (var + 1e-6)).sqrt() * lam_mu / lam_t * 2 / (sc * lam_mu) * ad / dn
        rho, sig = -k * alpha, k * beta * s0
        v2 = rho.pow(2) * gmu.pow(2).sum() + 2 * rho * sig * xggmu + sig.pow(2) * gx2
        vn = _safe_norm(v2)
        kappa = torch.tanh(sc * lam_t * vn / 2) / (sc * vn)  # exp_t(v) = t ⊕ kappa v
        ty = kappa * (rho * (t * gmu).sum() + sig * xgt)
        y2 = kappa.pow(2) * v2
        den = (1 + 2 * c * ty + c ** 2 * t2 * y2).clamp_min(MIN_NORM)
        phi, psi = (1 + 2 * c * ty + c * y2) / den, (1 - c * t2) / den  # t ⊕ y = phi t + psi y
        on = _safe_norm(phi.pow(2) * t2 + 2 * phi * psi * ty + psi.pow(2) * y2)
        maxnorm = _maxnorm(x, c)
        proj = on > maxnorm
        scale = torch.where(proj, maxnorm / on.clamp_min(MIN_NORM), torch.ones_like(on))
        on = torch.where(proj, torch.full_like(on, maxnorm), on)
        f = scale * _artanh(sc * on) / (sc * on)  # project, then log_0
        fixed = F.conv2d(torch.cat([f * phi, f * psi * kappa * rho], 1), torch.stack([t, gmu], 1)[:, :, None, None])
        return torch.addcmul(fixed, f * psi * kappa * sig, gx)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The definition, step by step on the ``(N H W, C)`` points."""
        n, ch, h, w = x.shape
        pts = expmap0(x.permute(0, 2, 3, 1).reshape(-1, ch), self.c)
        target = expmap0(self.mean, self.c)
        if self.training or self.eval_stats == "batch":
            mu = midpoint(pts, self.c)
            var = distance(pts, mu, self.c).pow(2).mean()
            if self.training:
                self._track(logmap0(mu, self.c)[0], var)
        else:
            mu, var = expmap0(self.running_mean, self.c)[None], self.running_var
        v = transport(mu, target, logmap(mu, pts, self.c), self.c)
        v = (self.var / (var + 1e-6)).sqrt() * v
        out = logmap0(expmap(target[None], v, self.c), self.c)
        return out.reshape(n, h, w, ch).permute(0, 3, 1, 2)


class PoincareBasicBlock(nn.Module):
    """Poincaré residual block: conv-BN-ReLU-conv-BN, Möbius addition of the (projected) shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, c: float, skip_axis: str):
        super().__init__()
        self.c, self.axis = c, 1 if skip_axis == "channel" else -1
        self.conv1 = PoincareConv2d(c_in, c_out, 3, stride, 1, c)
        self.bn1 = PoincareBatchNorm2d(c_out, c)
        self.conv2 = PoincareConv2d(c_out, c_out, 3, 1, 1, c)
        self.bn2 = PoincareBatchNorm2d(c_out, c)
        self.downsample = PoincareConv2d(c_in, c_out, 1, stride, 0, c) if stride != 1 or c_in != c_out else None

    fast = True  #: the fused Möbius residual (set False for the step-by-step reference; same outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        r = x if self.downsample is None else self.downsample(x)
        if not self.fast:
            out = mobius_add(expmap0(y, self.c, self.axis), expmap0(r, self.c, self.axis), self.c, self.axis)
            return F.relu(logmap0(out, self.c, self.axis))
        return F.relu(mobius_residual(y, r, self.c, self.axis))


class PoincareResNet(Model):
    """Poincaré ResNet classifier (CIFAR-style: 3x3 stem, three stages at strides 1/2/4, pooling, Poincaré FC).

    Args:
        channels: widths of the three stages (the paper: 8/16/32, 16/32/64, 32/64/128).
        depths: residual blocks per stage (ResNet-20: 3/3/3, ResNet-32: 5/5/5).
        num_classes, in_channels: from the data set.
        c: curvature (fixed; 0.1 as the paper).
        skip_axis: "channel" (paper) or "width" (the official code's axis, for parity).
        bn_eval_stats: what the midpoint batch norms use in eval mode: "running" statistics (default) or the
            "batch"'s own (the official code, which keeps no running statistics).

    ``forward`` returns logits (the tangent vector of the last Poincaré FC); cross-entropy loss.
    """

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, channels: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (8, 16, 32),
                 depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 3, 3),
                 num_classes: Annotated[int, Ge(2)] = 10, in_channels: Annotated[int, Ge(1)] = 3,
                 c: Annotated[float, Gt(0)] = 0.1, skip_axis: Literal["channel", "width"] = "channel",
                 label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 bn_eval_stats: Literal["running", "batch"] = "running"):
        super().__init__()
        if bn_eval_stats not in ("running", "batch"):
            raise ValueError(f"PoincareResNet: bn_eval_stats must be 'running' or 'batch', got {bn_eval_stats!r}")
        if len(channels) != len(depths):
            raise ValueError(f"PoincareResNet: channels {channels} and depths {depths} differ in length")
        if skip_axis not in ("channel", "width"):
            raise ValueError(f"PoincareResNet: skip_axis must be 'channel' or 'width', got {skip_axis!r}")
        if c <= 0:
            raise ValueError(f"PoincareResNet: curvature c must be > 0, got {c}")
        self.c, self.in_channels, self.label_smoothing = c, in_channels, label_smoothing
        self.conv = PoincareConv2d(in_channels, channels[0], 3, 1, 1, c)
        self.bn = PoincareBatchNorm2d(channels[0], c)
        stages, prev = [], channels[0]
        for i, (ch, d) in enumerate(zip(channels, depths)):
            blocks = []
            for j in range(d):
                blocks.append(PoincareBasicBlock(prev, ch, 2 if (i > 0 and j == 0) else 1, c, skip_axis))
                prev = ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = PoincareLinear(prev, num_classes, c)
        for module in self.modules():
            if isinstance(module, PoincareBatchNorm2d):
                module.eval_stats = bn_eval_stats

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.stages(x).mean((-2, -1))  # the official AvgPool2d(8) on 32x32 inputs, for any size
        return self.fc(x)

    def forward(self, batch: dict | torch.Tensor) -> torch.Tensor:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PoincareResNet: expected inputs (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.logits(x)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"], label_smoothing=self.label_smoothing)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(-1)

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        return {"inputs": torch.randn(batch_size, self.in_channels, 8, 8, generator=g),
                "labels": torch.arange(batch_size) % self.fc.z.shape[1]}

    @classmethod
    def example_config(cls) -> dict:
        return {"channels": (4, 8), "depths": (1, 1), "num_classes": 3}


class _EuclideanBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (a biased 1x1 conv when the stride is 2), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Conv2d(c_in, c_out, 1, stride) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class EuclideanResNet(PoincareResNet):
    """The Poincaré ResNet paper's Euclidean baseline (official ``EuclideanResNet``): same stages, Euclidean layers.

    Args as :class:`PoincareResNet` (no curvature). As in the official code, the first block of every stage after
    the first has stride 2 and a 1x1 conv shortcut; the first stage's first block has an identity shortcut (so
    ``channels[0]`` is the stem's width).
    """

    def __init__(self, channels: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (8, 16, 32),
                 depths: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (3, 3, 3),
                 num_classes: Annotated[int, Ge(2)] = 10, in_channels: Annotated[int, Ge(1)] = 3,
                 label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        Model.__init__(self)
        if len(channels) != len(depths):
            raise ValueError(f"EuclideanResNet: channels {channels} and depths {depths} differ in length")
        self.in_channels, self.label_smoothing = in_channels, label_smoothing
        self.conv = nn.Conv2d(in_channels, channels[0], 3, 1, 1)
        self.bn = nn.BatchNorm2d(channels[0])
        stages, prev = [], channels[0]
        for i, (ch, d) in enumerate(zip(channels, depths)):
            blocks = []
            for j in range(d):
                blocks.append(_EuclideanBlock(prev, ch, 2 if (i > 0 and j == 0) else 1))
                prev = ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(prev, num_classes)
        self.num_classes = num_classes

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(self.stages(x).mean((-2, -1)))

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        return {"inputs": torch.randn(batch_size, self.in_channels, 8, 8, generator=g),
                "labels": torch.arange(batch_size) % self.num_classes}
