"""2-D acoustic wave fields from a finite-difference solver: the data of the wave-simulator CNN surrogate.

Paper setting ("A priori compression of convolutional neural networks for wave simulators"): a CNN
surrogate predicts the pressure field a few time steps ahead from the two latest fields. The fields
here come from a solver written in this file (no external simulator):

* **Equation**: ``u_tt = c(x, y)^2 (u_xx + u_yy)`` on a square grid of spacing ``dx``.
* **Time**: second-order leapfrog, ``u^{n+1} = 2 u^n - u^{n-1} + (c dt)^2 L_h u^n``.
* **Space**: ``L_h`` the 5-point (``order=2``) or 9-point cross (``order=4``: taps
  ``[-1/12, 4/3, -5/2, 4/3, -1/12] / dx^2`` on each axis) Laplacian.
* **Stability (CFL)**: the scheme is stable when ``(c_max dt)^2 lambda_max <= 4`` with ``lambda_max``
  the largest eigenvalue of ``-L_h`` (``8 / dx^2`` for order 2, ``32 / (3 dx^2)`` for order 4), i.e.
  ``c_max dt / dx <= 1/sqrt(2)`` (order 2) and ``<= sqrt(3/8)`` (order 4) (:func:`cfl_limit`). The time
  step is ``dt = cfl * cfl_limit * dx / c_max`` with ``cfl < 1``; a larger ``cfl`` is a ValueError.
* **Boundaries** (the field array includes the wall nodes):
  ``"dirichlet"``: ``u = 0`` on the walls (a pressure-release wall: waves reflect with inverted sign),
  ghost nodes by odd reflection, so the 4th-order stencil stays exact for the box's sine modes;
  ``"neumann"``: ``du/dn = 0`` (a rigid wall: waves reflect with the same sign), ghost nodes by even
  reflection; ``"absorbing"``: a Cerjan sponge (Cerjan et al., Geophysics 1985): Dirichlet walls behind
  a layer of ``sponge`` nodes where both time levels are multiplied by
  ``exp(-0.1 ((sponge - d) / sponge)^2)`` each step (``d`` the distance to the wall in nodes) so outgoing
  waves decay instead of returning (with 16 nodes about 90 % of the energy is absorbed; a sponge is
  not a perfect absorber, some energy comes back).
* **Sources**: the initial condition is a sum of ``pulses`` Gaussian pulses (random centres away from
  the walls, width ``pulse_width`` nodes, random amplitude in [0.5, 1] and sign), at rest
  (``u^{-1} = u^0``).
* **Medium**: constant ``c = 1`` or, with ``heterogeneous=True``, a smooth random velocity field
  (Gaussian-filtered white noise mapped to ``[c_min, c_max]``) drawn per trajectory; or a velocity
  map read from ``velocity_file`` (a 2-D ``.npy`` array, resampled to the grid).

The solver is validated against the box's standing modes ``sin(m pi x) sin(n pi y) cos(omega t)``,
``omega = c pi sqrt(m^2 + n^2)``, and its convergence order is measured (tests/test_wave.py).

Samples (the surrogate's task): a trajectory is recorded every ``stride`` solver steps; an item is
``{"inputs": (2, S, S) = fields at snapshots t-1 and t, "targets": (R, S, S) = fields at snapshots
t+1 .. t+R}`` with ``R = 1`` on ``train`` and ``R = rollout`` on ``val``/``test`` (multi-step
prediction, feeding the model's output back), plus ``"baseline"``: the persistence forecast (the
field at ``t`` repeated), for scale. Every trajectory is generated from ``(seed, split, index)``:
the splits never share a trajectory, and a data set is the same on every machine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval

from panconv.api import Dataset
from panconv.errors import DataError

__all__ = ["WaveFields", "cfl_limit", "laplacian", "random_velocity", "simulate", "standing_mode"]

#: one-sided taps of the 1-D second-derivative stencils (centre first), in units of 1/dx^2
STENCILS = {2: (-2.0, 1.0), 4: (-5.0 / 2.0, 4.0 / 3.0, -1.0 / 12.0)}


def cfl_limit(order: int, dims: int = 2) -> float:
    """The largest stable ``c dt / dx`` of leapfrog with the ``order`` Laplacian in ``dims`` dimensions.

    Leapfrog is stable iff ``(c dt)^2 lambda_max <= 4``; the 1-D stencil's largest eigenvalue (at the
    Nyquist wavenumber) is ``-sum_k a_k (-1)^k`` (4 for order 2, 16/3 for order 4) per dimension.
    """
    taps = STENCILS[order]
    nyquist = -(taps[0] + 2 * sum(a * (-1) ** k for k, a in enumerate(taps[1:], start=1)))
    return 2.0 / math.sqrt(dims * nyquist)


def _pad(u: torch.Tensor, width: int, boundary: str) -> torch.Tensor:
    """Ghost nodes around ``(..., H, W)``: odd reflection (Dirichlet walls), even reflection (Neumann)."""
    x = F.pad(u.unsqueeze(0) if u.dim() == 2 else u, (width,) * 4, mode="reflect")
    x = x.squeeze(0) if u.dim() == 2 else x
    if boundary == "neumann":
        return x
    # odd reflection about the wall node: the reflected ghost values change sign
    sign = torch.ones(x.shape[-2:], dtype=u.dtype, device=u.device)
    sign[:width, :] = -sign[:width, :]
    sign[-width:, :] = -sign[-width:, :]
    sign[:, :width] = -sign[:, :width]
    sign[:, -width:] = -sign[:, -width:]  # corners: reflected in both axes, (-1)(-1) = 1
    return x * sign


def laplacian(u: torch.Tensor, dx: float, order: Literal[2, 4] = 2, boundary: str = "dirichlet") -> torch.Tensor:
    """The ``order``-accurate finite-difference Laplacian of ``(..., H, W)`` fields (walls on the outer nodes)."""
    if order not in STENCILS:
        raise ValueError(f"laplacian: order must be 2 or 4, got {order}")
    taps = STENCILS[order]
    r = len(taps) - 1
    p = _pad(u, r, "neumann" if boundary == "neumann" else "dirichlet")
    h, w = u.shape[-2:]
    out = 2 * taps[0] * u
    for k in range(1, r + 1):
        out = out + taps[k] * (p[..., r + k:r + k + h, r:r + w] + p[..., r - k:r - k + h, r:r + w]
                               + p[..., r:r + h, r + k:r + k + w] + p[..., r:r + h, r - k:r - k + w])
    return out / dx ** 2


def sponge_profile(size: int, width: int, alpha: float = 0.1, dtype=torch.float64) -> torch.Tensor:
    """Cerjan-type damping factors on a ``size x size`` grid: 1 inside, ``exp(-alpha ((width - d) / width)^2)``
    in the layer (``d``: distance to the wall in nodes)."""
    d = torch.arange(size, dtype=dtype)
    d = torch.minimum(d, size - 1 - d)
    g = torch.where(d < width, torch.exp(-alpha * ((width - d) / width) ** 2), torch.ones_like(d))
    return g[:, None] * g[None, :]


def simulate(u0: torch.Tensor, velocity: torch.Tensor | float, dx: float, dt: float, steps: int,
             order: Literal[2, 4] = 2, boundary: Literal["dirichlet", "neumann", "absorbing"] = "dirichlet",
             u_prev: torch.Tensor | None = None, stride: int = 1, sponge: int = 16) -> torch.Tensor:
    """Leapfrog integration of ``u_tt = c^2 Lap(u)``: the fields at steps ``0, stride, 2 stride, .. <= steps``.

    ``u0``: ``(..., H, W)`` field at step 0; ``u_prev``: the field at step -1 (default ``u0``: at rest).
    Returns ``(steps // stride + 1, ..., H, W)``. Raises ValueError when ``c_max dt / dx`` exceeds
    :func:`cfl_limit`.
    """
    c = torch.as_tensor(velocity, dtype=u0.dtype, device=u0.device)
    courant = float(c.max()) * dt / dx
    if courant > cfl_limit(order):
        raise ValueError(f"simulate: c_max dt / dx = {courant:.4f} exceeds the CFL limit {cfl_limit(order):.4f} "
                         f"of leapfrog with the order-{order} Laplacian: reduce dt")
    if boundary not in ("dirichlet", "neumann", "absorbing"):
        raise ValueError(f"simulate: boundary must be dirichlet, neumann or absorbing, got {boundary!r}")
    damp = sponge_profile(u0.shape[-1], sponge, dtype=u0.dtype).to(u0.device) if boundary == "absorbing" else None
    stencil_boundary = "neumann" if boundary == "neumann" else "dirichlet"
    coef = (c * dt) ** 2
    prev, cur = (u0 if u_prev is None else u_prev), u0
    out = [cur]
    for n in range(1, steps + 1):
        nxt = 2 * cur - prev + coef * laplacian(cur, dx, order, stencil_boundary)
        if boundary == "dirichlet" or boundary == "absorbing":
            nxt = _zero_walls(nxt)
        if damp is not None:
            nxt, cur = nxt * damp, cur * damp
        prev, cur = cur, nxt
        if n % stride == 0:
            out.append(cur)
    return torch.stack(out)


def _zero_walls(u: torch.Tensor) -> torch.Tensor:
    u = u.clone()
    u[..., 0, :] = 0
    u[..., -1, :] = 0
    u[..., :, 0] = 0
    u[..., :, -1] = 0
    return u


def standing_mode(size: int, m: int, n: int, t: float, c: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """The exact Dirichlet box mode ``sin(m pi x) sin(n pi y) cos(c pi sqrt(m^2+n^2) t)`` on the unit square
    sampled at ``size`` nodes per axis (walls included: ``dx = 1 / (size - 1)``)."""
    x = torch.linspace(0, 1, size, dtype=dtype)
    omega = c * math.pi * math.hypot(m, n)
    return torch.sin(m * math.pi * x)[:, None] * torch.sin(n * math.pi * x)[None, :] * math.cos(omega * t)


def random_velocity(size: int, generator: torch.Generator, c_min: float = 0.7, c_max: float = 1.3,
                    smoothness: float = 6.0) -> torch.Tensor:
    """A smooth random velocity map: white noise, Gaussian filter of std ``smoothness`` nodes, mapped to
    ``[c_min, c_max]``."""
    noise = torch.randn(1, 1, size, size, generator=generator, dtype=torch.float64)
    radius = int(3 * smoothness)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / smoothness) ** 2)
    g = g / g.sum()
    field = F.conv2d(F.pad(noise, (radius,) * 4, mode="circular"), g.view(1, 1, -1, 1))
    field = F.conv2d(field, g.view(1, 1, 1, -1))[0, 0]
    field = (field - field.min()) / (field.max() - field.min()).clamp_min(1e-12)
    return c_min + (c_max - c_min) * field


def gaussian_pulses(size: int, count: int, width: float, generator: torch.Generator, margin: int) -> torch.Tensor:
    """``count`` Gaussian pulses (std ``width`` nodes) at random centres at least ``margin`` nodes from the walls."""
    idx = torch.arange(size, dtype=torch.float64)
    u = torch.zeros(size, size, dtype=torch.float64)
    for _ in range(count):
        cy, cx = (margin + torch.rand(2, generator=generator, dtype=torch.float64) * (size - 1 - 2 * margin)).tolist()
        amp = 0.5 + 0.5 * float(torch.rand((), generator=generator))
        sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
        u += sign * amp * torch.exp(-((idx[:, None] - cy) ** 2 + (idx[None, :] - cx) ** 2) / (2 * width ** 2))
    return u


class WaveFields(Dataset):
    """2-D acoustic wave fields (finite differences, see the module docstring): (t-1, t) -> t+1 .. t+R.

    Args:
        size: grid nodes per side (walls included), on the unit square (``dx = 1 / (size - 1)``).
        trajectories: simulated trajectories in the split (val/test: a quarter of it, at least 2).
        snapshots: snapshots recorded per trajectory (after ``warmup`` of them are dropped).
        stride: solver steps between snapshots (the surrogate's time step).
        rollout: frames to predict on val/test (multi-step rollout; train items predict one frame).
        order: 2 or 4, the Laplacian's order of accuracy.
        boundary: "dirichlet", "neumann" or "absorbing" (Cerjan sponge of ``sponge`` nodes).
        cfl: fraction of the CFL limit used for ``dt``.
        pulses: Gaussian pulses in each initial condition; ``pulse_width``: their std in nodes.
        heterogeneous: a smooth random velocity map per trajectory in ``[c_min, c_max]`` (else ``c = 1``).
        velocity_file: a 2-D ``.npy`` velocity map (resampled to the grid) used for every trajectory.
        seed: everything random.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("in_channels",)

    def __init__(self, root=None, split: str = "train", size: Annotated[int, Ge(16)] = 64,
                 trajectories: Annotated[int, Ge(1)] = 64, snapshots: Annotated[int, Ge(3)] = 24,
                 stride: Annotated[int, Ge(1)] = 4, rollout: Annotated[int, Ge(1)] = 8,
                 order: Literal[2, 4] = 4, boundary: Literal["dirichlet", "neumann", "absorbing"] = "absorbing",
                 cfl: Annotated[float, Interval(gt=0.0, le=1.0)] = 0.5, pulses: Annotated[int, Ge(1)] = 2,
                 pulse_width: Annotated[float, Gt(0.0)] = 2.5, heterogeneous: bool = True,
                 c_min: Annotated[float, Gt(0.0)] = 0.7, c_max: Annotated[float, Gt(0.0)] = 1.3,
                 warmup: Annotated[int, Ge(0)] = 0, sponge: Annotated[int, Ge(1)] = 16,
                 velocity_file: str | None = None, seed: Annotated[int, Interval(ge=0, lt=2**31)] = 0):
        super().__init__(root, split)
        if order not in (2, 4):
            raise ValueError(f"WaveFields: order must be 2 or 4, got {order}")
        if boundary not in ("dirichlet", "neumann", "absorbing"):
            raise ValueError(f"WaveFields: boundary must be dirichlet, neumann or absorbing, got {boundary!r}")
        if c_min > c_max:
            raise ValueError(f"WaveFields: c_min {c_min} > c_max {c_max}")
        self.rollout = 1 if split == "train" else rollout
        if snapshots < 2 + self.rollout:
            raise ValueError(f"WaveFields: snapshots ({snapshots}) must be at least 2 + rollout ({self.rollout})")
        if boundary == "absorbing" and 2 * sponge >= size:
            raise ValueError(f"WaveFields: the sponge ({sponge} nodes) does not fit a {size}-node grid")
        self.size, self.order, self.boundary, self.stride, self.sponge = size, order, boundary, stride, sponge
        self.dx = 1.0 / (size - 1)
        self.velocity = self._read_velocity(Path(velocity_file), size) if velocity_file else None
        c_top = float(self.velocity.max()) if self.velocity is not None else (c_max if heterogeneous else 1.0)
        self.dt = cfl * cfl_limit(order) * self.dx / c_top
        n = trajectories if split == "train" else max(2, trajectories // 4)
        base = seed * 3 + self.splits.index(split)
        fields = []
        for i in range(n):
            g = torch.Generator().manual_seed(base * 100_003 + i)
            if self.velocity is not None:
                c = self.velocity
            elif heterogeneous:
                c = random_velocity(size, g, c_min, c_max)
            else:
                c = torch.ones(size, size, dtype=torch.float64)
            margin = max(int(3 * pulse_width), sponge if boundary == "absorbing" else 2)
            u0 = gaussian_pulses(size, pulses, pulse_width, g, min(margin, size // 2 - 2))
            total = warmup + snapshots
            traj = simulate(u0, c, self.dx, self.dt, (total - 1) * stride, order, boundary, stride=stride,
                            sponge=sponge)
            fields.append(traj[warmup:].float())
        self.fields = torch.stack(fields)  # (n, snapshots, S, S)
        self.per_trajectory = snapshots - 1 - self.rollout

    @staticmethod
    def _read_velocity(path: Path, size: int) -> torch.Tensor:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy velocity map ({str(exc).splitlines()[0]})") from exc
        if arr.ndim != 2 or min(arr.shape) < 2:
            raise DataError(f"{path}: a velocity map must be a 2-D array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or arr.min() <= 0:
            raise DataError(f"{path}: velocities must be finite and positive")
        c = torch.as_tensor(arr, dtype=torch.float64)[None, None]
        return F.interpolate(c, size=(size, size), mode="bilinear", align_corners=True)[0, 0]

    def __len__(self) -> int:
        return self.fields.shape[0] * self.per_trajectory

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        traj, t = divmod(index, self.per_trajectory)
        t += 1  # the current snapshot; t-1 is the previous one
        u = self.fields[traj]
        return {"inputs": u[t - 1:t + 1].clone(), "targets": u[t + 1:t + 1 + self.rollout].clone(),
                "baseline": u[t:t + 1].expand(self.rollout, -1, -1).clone()}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"in_channels": 2}

    def collate(self, samples: list[dict]) -> dict:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"size": 20, "trajectories": 2, "snapshots": 5, "rollout": 2, "sponge": 4, "pulse_width": 1.5}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        path = Path(tmp_dir) / "velocity.npy"
        np.save(path, np.array([1.0, -1.0, 2.0]))
        return {**cls.example(tmp_dir), "velocity_file": str(path)}

