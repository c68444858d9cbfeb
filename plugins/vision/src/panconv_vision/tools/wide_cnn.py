"""``panconv wide-cnn``: exact NTK / NNGP kernels of deep hierarchical CNNs, their spectra, teacher-student
learning curves, and the empirical NTK of finite networks converging to them
("What can be learnt with wide convolutional neural networks?", Cagnetta, Favero, Wyart, ICML 2023).

The network (``panconv_vision.models.wide_cnn.WideCNN``): input ``x`` of dimension ``d = s ** L``,
``L`` convolutions with filter size = stride = ``s`` (non-overlapping patches, a tree), activation
``sqrt(2) relu``, NTK parametrisation, a linear read-out of the single last position.

Kernels (infinite width). For inputs ``x, y`` write ``x_i`` for the ``i``-th patch and, at layer ``l``,
``S^l_p(x, y)`` for the covariance of the pre-activations at position ``p`` (the NNGP of the layer):

    S^1_p  = <x_p, y_p> / s                                   (patch inner product)
    K^l_p  = E[s2r(u) s2r(v)] = sqrt(ab)/pi (sin t + (pi - t) cos t),   cos t = S/sqrt(ab)
    K'^l_p = E[s2r'(u) s2r'(v)] = (pi - t)/pi                 (arc-cosine kernels of degree 1 and 0)
    S^{l+1}_p = mean_j K^l_{(p, j)}                             (the s children of position p)
    T^1_p = S^1_p,   T^{l+1}_p = S^{l+1}_p + mean_j T^l_{(p, j)} K'^l_{(p, j)}      (the NTK)

with ``a = S(x, x)``, ``b = S(y, y)`` and ``s2r = sqrt(2) relu``. The output kernels are
``NNGP = K^L`` and ``NTK = K^L + T^L K'^L`` (the read-out's own term plus the back-propagated one). For
``L = 1`` these are the classical arc-cosine kernels (Cho & Saul 2009) of a one-hidden-layer network.
A "local" network of ``depth < L`` (the paper's local teachers) reads out every one of the
``s ** (L - depth)`` positions left, with its own weights: its kernel is the mean over positions.

Spectra: with ``s = 2`` and patches on the circle of radius ``sqrt(2)`` (the paper puts patches on
spheres), ``x_i = sqrt(2) (cos phi_i, sin phi_i)``, ``S^1_i = cos(phi_i - psi_i)``: the kernel is a
function of the angle differences on the torus ``T^n`` (``n = d / 2``), its eigenfunctions are the
Fourier modes ``exp(i k . phi)`` and its eigenvalues their Fourier coefficients, computed exactly (up to
aliasing) by an FFT of the kernel on a grid. A mode's *extent* is the smallest layer ``l`` whose
meta-patch (``s ** l`` inputs, effective dimension ``d_eff(l) = (s - 1) s ** (l - 1)``) contains every
patch it depends on. The paper's asymptotics: eigenvalue ~ ``|k| ** -(d_eff(l) + 2 nu)`` with ``nu = 1/2``
for the ReLU NTK and ``3/2`` for the ReLU NNGP.

Learning curves: teacher = Gaussian random field with covariance ``K_T`` (a local / hierarchical NTK
of depth ``l_T``, or the NNGP of a randomly initialised deep CNN), student = ridgeless kernel regression
with the depth-``L`` NTK. Predicted (the paper's teacher-student rate): ``eps(P) ~ P ** -beta`` with
``beta = 2 nu_T / d_eff(l_T)``: the error rate is set by the effective dimension of the teacher's
largest meta-patch, not by ``d``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import _common

# ---- arc-cosine expectations and the hierarchical recursion -----------------------------------------


def relu_expectations(sxy: np.ndarray, sxx: np.ndarray, syy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(E[s2r(u) s2r(v)], E[s2r'(u) s2r'(v)])`` for ``(u, v)`` centred Gaussian with variances
    ``sxx, syy`` and covariance ``sxy`` (``s2r = sqrt(2) relu``): the degree-1 and degree-0 arc-cosine kernels."""
    norm = np.sqrt(sxx * syy)
    safe = np.where(norm > 0, norm, 1.0)
    cos = np.clip(sxy / safe, -1.0, 1.0)
    theta = np.arccos(cos)
    k1 = np.where(norm > 0, norm / math.pi * (np.sqrt(1.0 - cos ** 2) + (math.pi - theta) * cos), 0.0)
    k0 = (math.pi - theta) / math.pi
    return k1, k0


def _children_mean(a: np.ndarray, s: int) -> np.ndarray:
    """Average the ``s`` consecutive children of every parent position (axis 0)."""
    return a.reshape(a.shape[0] // s, s, *a.shape[1:]).mean(1)


def propagate(sxy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, filter_size: int, depth: int) -> dict:
    """Run the recursion from the first layer's pre-activation covariances (positions on axis 0).

    Returns ``{"nngp", "ntk"}``: the read-out kernels of a ``depth``-layer network, averaged over the
    positions left after ``depth`` layers (one position for the full-depth network)."""
    theta = sxy
    for layer in range(depth):
        k1, k0 = relu_expectations(sxy, sxx, syy)
        if layer == depth - 1:
            return {"nngp": k1.mean(0), "ntk": (k1 + theta * k0).mean(0)}
        sxy = _children_mean(k1, filter_size)
        theta = sxy + _children_mean(theta * k0, filter_size)
        sxx, syy = _children_mean(sxx, filter_size), _children_mean(syy, filter_size)  # s2r keeps the diagonal
    raise ValueError("depth must be >= 1")


def _patches(x: np.ndarray, filter_size: int) -> np.ndarray:
    n, d = x.shape
    if d % filter_size:
        raise ValueError(f"input dimension {d} is not a multiple of the filter size {filter_size}")
    return x.reshape(n, d // filter_size, filter_size).transpose(1, 0, 2)  # (positions, n, s)


def input_depth(dim: int, filter_size: int) -> int:
    """``L`` with ``dim == filter_size ** L`` (ValueError otherwise)."""
    depth = round(math.log(dim, filter_size))
    if filter_size ** depth != dim:
        raise ValueError(f"input dimension {dim} is not a power of the filter size {filter_size}")
    return depth


def kernels(x: np.ndarray, y: np.ndarray | None = None, filter_size: int = 2, depth: int | None = None,
            block: int = 512) -> dict[str, np.ndarray]:
    """Exact ``{"nngp": (N, M), "ntk": (N, M)}`` of the hierarchical CNN on inputs ``(N, d)``, ``(M, d)``.

    ``depth`` defaults to ``L`` (``d = s ** L``, the full hierarchical network); a smaller ``depth``
    gives the local network of that depth read out at every remaining position."""
    x = np.asarray(x, dtype=np.float64)
    y = x if y is None else np.asarray(y, dtype=np.float64)
    full = input_depth(x.shape[1], filter_size)
    depth = full if depth is None else depth
    if not 1 <= depth <= full:
        raise ValueError(f"depth must be in [1, {full}] for inputs of dimension {x.shape[1]}, got {depth}")
    px, py = _patches(x, filter_size), _patches(y, filter_size)
    nx, ny = (px ** 2).sum(-1)[:, :, None] / filter_size, (py ** 2).sum(-1)[:, None, :] / filter_size
    out = {"nngp": np.empty((len(x), len(y))), "ntk": np.empty((len(x), len(y)))}
    for start in range(0, len(x), block):
        sl = slice(start, start + block)
        sxy = np.einsum("pnc,pmc->pnm", px[:, sl], py) / filter_size
        res = propagate(sxy, nx[:, sl], ny, filter_size, depth)
        for key in out:
            out[key][sl] = res[key]
    return out


def arccos_kernel(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """Cho & Saul's arc-cosine kernel ``k_n(x, y) = |x|^n |y|^n J_n(t) / pi`` for ``n = 0, 1``."""
    nx, ny = np.linalg.norm(x, axis=1)[:, None], np.linalg.norm(y, axis=1)[None, :]
    t = np.arccos(np.clip(x @ y.T / (nx * ny), -1, 1))
    if degree == 0:
        return (math.pi - t) / math.pi
    if degree == 1:
        return nx * ny * (np.sin(t) + (math.pi - t) * np.cos(t)) / math.pi
    raise ValueError("degree must be 0 or 1")


def sphere_patches(n: int, filter_size: int, depth: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` inputs of dimension ``s ** depth`` whose patches are uniform on the sphere of radius ``sqrt(s)``."""
    z = rng.standard_normal((n, filter_size ** (depth - 1), filter_size))
    z *= math.sqrt(filter_size) / np.linalg.norm(z, axis=-1, keepdims=True)
    return z.reshape(n, -1)


# ---- spectra on the torus (s = 2) -------------------------------------------------------------------

def d_eff(level: int, filter_size: int = 2) -> int:
    """Effective dimension of a meta-patch of layer ``level``: ``s ** level`` variables on ``s ** (level-1)``
    spheres of dimension ``s - 1``."""
    return (filter_size - 1) * filter_size ** (level - 1)


def extent(k: np.ndarray, filter_size: int = 2) -> np.ndarray:
    """The layer of the smallest meta-patch containing every patch a mode ``k (..., n)`` depends on (0:
    the constant mode)."""
    k = np.asarray(k)
    n = k.shape[-1]
    top = input_depth(n, filter_size) + 1
    idx = np.arange(n)
    level = np.full(k.shape[:-1], top)
    for lv in range(top - 1, 0, -1):
        group = idx // filter_size ** (lv - 1)
        first = np.where(k != 0, group, -1)
        lo = np.where(k != 0, group, np.iinfo(np.int64).max).min(-1)
        hi = first.max(-1)
        level = np.where(lo == hi, lv, level)
    return np.where((k != 0).any(-1), level, 0)


def torus_spectrum(depth: int, grid: int = 32, kind: str = "ntk") -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the depth-``L`` kernel (``s = 2``, ``d = 2 ** L``, patches on circles) under the uniform
    measure: ``(modes (grid ** n, n) signed integers, eigenvalues (grid ** n,))``, ``n = 2 ** (L-1)``."""
    n = 2 ** (depth - 1)
    angles = 2 * math.pi * np.arange(grid) / grid
    mesh = np.stack(np.meshgrid(*([angles] * n), indexing="ij")).reshape(n, -1)
    ones = np.ones((n, 1))
    values = propagate(np.cos(mesh), ones, ones, 2, depth)[kind].reshape((grid,) * n)
    eig = np.fft.fftn(values).real / grid ** n
    freq = np.fft.fftfreq(grid, 1.0 / grid).astype(np.int64)
    modes = np.stack(np.meshgrid(*([freq] * n), indexing="ij")).reshape(n, -1).T
    return modes, eig.reshape(-1)


def rays(n: int) -> dict[str, np.ndarray]:
    """Directions in mode space, by extent: a single patch, two sibling patches, two patches in different
    halves, ... and all patches."""
    out = {}
    e = np.zeros(n, dtype=np.int64)
    e[0] = 1
    out["(k,0,...)"] = e
    if n >= 2:
        e = np.zeros(n, dtype=np.int64)
        e[:2] = 1
        out["(k,k,0,...)"] = e
    if n >= 4:
        e = np.zeros(n, dtype=np.int64)
        e[0] = e[n // 2] = 1
        out["(k,0,..,k,0..)"] = e
        out["(k,k,...,k)"] = np.ones(n, dtype=np.int64)
    return out


def ray_exponents(modes: np.ndarray, eig: np.ndarray, kmin: int, kmax: int) -> dict[str, dict]:
    """Fit ``eig ~ k ** -a`` along each ray of :func:`rays` for the even ``k`` in [kmin, kmax]."""
    lookup = {tuple(m): v for m, v in zip(modes.tolist(), eig.tolist())}
    out = {}
    for name, direction in rays(modes.shape[1]).items():
        ks = np.arange(kmin + kmin % 2, kmax + 1, 2)
        vals = np.array([lookup[tuple((k * direction).tolist())] for k in ks])
        level = int(extent(direction[None])[0])
        good = vals > 0
        slope = float(np.polyfit(np.log(ks[good]), np.log(vals[good]), 1)[0]) if good.sum() >= 2 else float("nan")
        out[name] = {"extent": level, "d_eff": d_eff(level), "k": ks.tolist(), "eigenvalues": vals.tolist(),
                     "fitted_exponent": -slope}
    return out


# ---- teacher-student kernel regression ---------------------------------------------------------------

def gaussian_field(gram: np.ndarray, rng: np.random.Generator, jitter: float = 1e-9) -> np.ndarray:
    """One sample of the centred Gaussian field with covariance ``gram`` at its points."""
    eye = np.eye(len(gram)) * jitter * np.trace(gram) / len(gram)
    return np.linalg.cholesky(gram + eye) @ rng.standard_normal(len(gram))


def ridgeless_predict(k_train: np.ndarray, k_test_train: np.ndarray, y: np.ndarray, ridge: float = 1e-10) -> np.ndarray:
    """Kernel (ridgeless, a tiny relative jitter for the solve) regression predictions at the test points."""
    reg = ridge * np.trace(k_train) / len(k_train)
    alpha = np.linalg.solve(k_train + reg * np.eye(len(k_train)), y)
    return k_test_train @ alpha


def fit_exponent(sizes, errors) -> float:
    """``beta`` of ``errors ~ sizes ** -beta`` (least squares in log-log)."""
    return float(-np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(errors, float)), 1)[0])


def random_cnn_teacher(x: np.ndarray, filter_size: int, width: int, seed: int) -> np.ndarray:
    """Outputs of a randomly initialised ``WideCNN`` (a sample of a Gaussian field with the NNGP covariance
    as ``width -> inf``): the paper's "deep CNN trained on the output of another deep CNN"."""
    import torch

    from ..models.wide_cnn import WideCNN

    torch.manual_seed(seed)
    net = WideCNN(filter_size=filter_size, depth=input_depth(x.shape[1], filter_size), width=width).double()
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()[:, 0] * 1.0


def learning_curve(teacher: str, sizes, n_test: int, seeds, filter_size: int = 2, depth: int = 3,
                   student: str = "ntk", width: int = 1024) -> dict:
    """Test MSE (relative to the teacher's variance) of the ridgeless student vs training-set size ``P``.

    ``teacher``: ``"ntk:<l>"`` / ``"nngp:<l>"`` (Gaussian field with the kernel of a depth-``l`` local CNN),
    or ``"cnn"`` (a random finite ``WideCNN`` of the full depth and ``width``)."""
    sizes = sorted(sizes)
    errors = np.zeros((len(seeds), len(sizes)))
    for r, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        x = sphere_patches(sizes[-1] + n_test, filter_size, depth, rng)
        if teacher == "cnn":
            y = random_cnn_teacher(x, filter_size, width, seed)
        else:
            kind, level = teacher.split(":")
            y = gaussian_field(kernels(x, filter_size=filter_size, depth=int(level))[kind], rng)
        k_student = kernels(x, filter_size=filter_size, depth=depth)[student]
        test = slice(sizes[-1], None)
        for c, p in enumerate(sizes):
            pred = ridgeless_predict(k_student[:p, :p], k_student[test, :p], y[:p])
            errors[r, c] = np.mean((pred - y[test]) ** 2) / np.mean(y[test] ** 2)
    return {"sizes": sizes, "errors": errors.mean(0).tolist(), "errors_std": errors.std(0).tolist(),
            "per_seed": errors.tolist()}


def _teacher(teacher: str, depth: int) -> tuple[float, int]:
    """``(nu_T, l_T)`` of a teacher name (``nu = 1/2`` NTK, ``3/2`` NNGP / random CNN)."""
    kind, level = ("nngp", depth) if teacher == "cnn" else (teacher.split(":")[0], int(teacher.split(":")[1]))
    return (0.5 if kind == "ntk" else 1.5), level


def predicted_beta(teacher: str, filter_size: int = 2, depth: int = 3) -> float:
    """The rate set by the teacher's extent alone, ``2 nu_T / d_eff(l_T)`` (the paper's scaling: the
    effective dimension of the target's meta-patch; ``1/d``-like for a full-input target)."""
    nu, level = _teacher(teacher, depth)
    return 2 * nu / d_eff(level, filter_size)


def counting_beta(teacher: str, filter_size: int = 2, depth: int = 3, student_nu: float = 0.5) -> float:
    """The ridgeless rate from mode counting on the exact spectrum (Spigler et al. 2020's argument applied to
    the hierarchical spectrum): the student's modes of extent ``l`` have eigenvalues ``k^-(d_l + 2 nu_S)``, so
    with ``P`` samples it learns the modes above ``lambda* ~ P^-(d_L + 2 nu_S)/d_L`` (their number is dominated
    by the full extent ``d_L``); the teacher's power left beyond degree ``K`` is ``K^-2 nu_T``. Hence
    ``beta = 2 nu_T (d_L + 2 nu_S) / (d_L (d_T + 2 nu_S))``: equal to ``2 nu_T / d_L`` for a full-depth teacher,
    smaller than ``2 nu_T / d_T`` for a local one (the student also spends samples on the large meta-patches)."""
    nu, level = _teacher(teacher, depth)
    d_t, d_l = d_eff(level, filter_size), d_eff(depth, filter_size)
    return 2 * nu * (d_l + 2 * student_nu) / (d_l * (d_t + 2 * student_nu))


# ---- empirical NTK of finite networks ----------------------------------------------------------------

def empirical_ntk(model, x):
    """``J J^T`` of the scalar output over all parameters, per pair of inputs ``x (N, d)`` (torch.func)."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return functional_call(model, p, (xi[None],))[0, 0]

    jac = vmap(jacrev(f), (None, 0))(params, x)
    return sum(j.reshape(len(x), -1) @ j.reshape(len(x), -1).t() for j in jac.values())


def ntk_convergence(widths, n_inputs: int = 12, seeds=(0, 1, 2), filter_size: int = 2, depth: int = 3) -> dict:
    """Relative Frobenius error ``|T_emp - T| / |T|`` of the empirical NTK at initialisation vs width."""
    import torch

    from ..models.wide_cnn import WideCNN

    x = sphere_patches(n_inputs, filter_size, depth, np.random.default_rng(123))
    exact = kernels(x, filter_size=filter_size)["ntk"]
    xt = torch.from_numpy(x)
    errors = []
    for width in widths:
        row = []
        for seed in seeds:
            torch.manual_seed(seed)
            net = WideCNN(filter_size=filter_size, depth=depth, width=width).double()
            emp = empirical_ntk(net, xt).numpy()
            row.append(float(np.linalg.norm(emp - exact) / np.linalg.norm(exact)))
        errors.append(row)
    mean = [float(np.mean(r)) for r in errors]
    return {"widths": list(widths), "errors": mean, "per_seed": errors, "fitted_slope": -fit_exponent(widths, mean)}


# ---- CLI ----------------------------------------------------------------------------------------------

#: the defaults of ``panconv wide-cnn`` (plugin.py declares the same options)
DEFAULTS = dict(output="wide_cnn_out", depth=3, spectra="2:1024,3:32", sizes="64,128,256,512,1024", test=500,
                seeds=3, widths="16,64,256,1024", teacher_width=1024, parts="spectrum,curves,ntk")


def main(args) -> int:
    opts = {**DEFAULTS, **{k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}}
    out = Path(opts["output"])
    out.mkdir(parents=True, exist_ok=True)
    parts = set(opts["parts"].split(","))
    depth, results = opts["depth"], {"depth": opts["depth"], "filter_size": 2, "options": opts}
    if "spectrum" in parts:
        spectra = [tuple(int(v) for v in item.split(":")) for item in opts["spectra"].split(",")]
        results["spectrum"] = run_spectrum(spectra, out)
    if "curves" in parts:
        sizes = [int(v) for v in opts["sizes"].split(",")]
        results["learning_curves"] = run_curves(depth, sizes, opts["test"], list(range(opts["seeds"])),
                                                opts["teacher_width"], out)
    if "ntk" in parts:
        widths = [int(v) for v in opts["widths"].split(",")]
        results["ntk_convergence"] = run_ntk(widths, depth, out)
    previous = out / "results.json"
    if previous.is_file():  # a run of some --parts updates the others' results in place
        import json

        results = {**json.loads(previous.read_text()), **results}
    _common.write_json(out / "results.json", results)
    print(f"wrote {out / 'results.json'}")
    return 0


def run_ntk(widths, depth: int, out: Path) -> dict:
    conv = ntk_convergence(widths, depth=depth)
    fig, ax = _common.figure(figsize=(4.5, 3.5))
    ax.loglog(widths, conv["errors"], "o-", label=f"measured (slope {conv['fitted_slope']:.2f})")
    ax.loglog(widths, conv["errors"][0] * (np.array(widths) / widths[0]) ** -0.5, "k--", label="width^-1/2")
    ax.set_xlabel("width H")
    ax.set_ylabel("|NTK_emp - NTK|_F / |NTK|_F")
    ax.set_title(f"empirical -> analytic NTK (s=2, L={depth})")
    ax.legend()
    _common.save_figure(fig, out / "ntk_convergence.png")
    print(f"empirical NTK error vs width {list(widths)}: {[round(e, 4) for e in conv['errors']]} "
          f"(slope {conv['fitted_slope']:.2f})")
    return conv


def spectrum_fit_range(grid: int) -> tuple[int, int]:
    """Even ``k`` used for the exponent fits: far enough from 0, far enough below the grid's aliasing."""
    return max(2, grid // 64), max(8, grid // 8)


def run_spectrum(spectra, out: Path) -> dict:
    """Eigenvalues vs degree by extent for each ``(depth, grid)``; exponents fitted along rays (even ``k``:
    the ReLU kernels of one circle have no odd harmonics above 1)."""
    res = {}
    fig, axes = _common.figure(len(spectra), 2, figsize=(10, 4 * len(spectra)), squeeze=False)
    for row, (depth, grid) in zip(axes, spectra):
        kmin, kmax = spectrum_fit_range(grid)
        for ax, kind in zip(row, ("ntk", "nngp")):
            modes, eig = torus_spectrum(depth, grid, kind)
            deg, lev = np.abs(modes).sum(1), extent(modes)
            keep = (np.abs(modes).max(1) <= min(kmax, 64)) & (deg > 0) & (eig > 1e-18)
            nu = 0.5 if kind == "ntk" else 1.5
            for level in range(1, depth + 1):
                m = keep & (lev == level)
                ax.loglog(deg[m], eig[m], ".", ms=2, alpha=0.4, label=f"extent l={level} (d_eff={d_eff(level)})")
            fits = ray_exponents(modes, eig, kmin, kmax)
            for name, fit in fits.items():
                fit["predicted_exponent"] = fit["d_eff"] + 2 * nu
                ks = np.array(fit["k"], float) * np.abs(rays(modes.shape[1])[name]).sum()
                ax.loglog(ks, fit["eigenvalues"], "k-", lw=0.8)
                print(f"L={depth} grid={grid} {kind} ray {name}: extent {fit['extent']}, fitted exponent "
                      f"{fit['fitted_exponent']:.2f}, predicted {fit['predicted_exponent']:.2f}")
            res[f"L{depth}_{kind}"] = {"grid": grid, "rays": fits, "min_eigenvalue": float(eig.min())}
            ax.set_xlabel("degree |k|_1")
            ax.set_ylabel("eigenvalue")
            ax.set_title(f"{kind.upper()}, s=2, L={depth}, d={2 ** depth} (torus grid {grid})", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    _common.save_figure(fig, out / "spectrum.png")
    return res


def run_curves(depth: int, sizes, n_test: int, seeds, teacher_width: int, out: Path) -> dict:
    teachers = [f"ntk:{level}" for level in range(1, depth + 1)] + ["cnn"]
    res = {}
    fig, ax = _common.figure(figsize=(5.5, 4))
    fit_from = sizes[len(sizes) // 3]
    for teacher in teachers:
        curve = learning_curve(teacher, sizes, n_test, seeds, depth=depth, width=teacher_width)
        tail = [i for i, p in enumerate(sizes) if p >= fit_from]
        curve["fitted_beta"] = fit_exponent([sizes[i] for i in tail], [curve["errors"][i] for i in tail])
        curve["predicted_beta"] = predicted_beta(teacher, depth=depth)
        curve["counting_beta"] = counting_beta(teacher, depth=depth)
        res[teacher] = curve
        label = (f"teacher {teacher}: beta {curve['fitted_beta']:.2f} (2nu/d_T {curve['predicted_beta']:.2f}, "
                 f"counting {curve['counting_beta']:.2f})")
        ax.loglog(sizes, curve["errors"], "o-", label=label)
        print(f"learning curve, teacher {teacher}: errors {[round(e, 5) for e in curve['errors']]} fitted beta "
              f"{curve['fitted_beta']:.3f}, 2 nu_T/d_T {curve['predicted_beta']:.3f}, "
              f"mode counting {curve['counting_beta']:.3f}")
    ax.set_xlabel("training-set size P")
    ax.set_ylabel("test MSE / teacher variance")
    ax.set_title(f"student: NTK of the depth-{depth} CNN (s=2, d={2 ** depth})")
    ax.legend(fontsize=7)
    _common.save_figure(fig, out / "learning_curves.png")
    return res
