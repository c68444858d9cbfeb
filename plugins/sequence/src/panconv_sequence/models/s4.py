"""S4 and S4D: structured state-space sequence models as long convolutions.

A state-space model ``x' = A x + B u, y = C x + D u`` (one per channel, ``H = d_model`` of them,
state size ``N = d_state``) is discretised with step ``Δ`` (learned, log-uniform in
``[dt_min, dt_max]`` at init) and applied as the causal convolution ``y = K ⊛ u + D u`` with
``K[l] = C̄ Ā^l B̄`` (convolution mode, through :data:`panconv_sequence.kernels.fftconv`), or
step by step (recurrent mode: ``initial_state``/``step``). Both modes compute the same thing.

* **S4** (Gu, Goel, Ré, ICLR 2022): ``A = Λ - P P^*`` (normal plus low rank, NPLR, written in the
  diagonal-plus-low-rank basis: DPLR), initialised from HiPPO-LegS (Eq. 2 of the paper; the
  rank-1 correction ``P_n = sqrt(n + 1/2)``, Sec. 3.1). Bilinear discretisation (Eq. 3). The
  kernel is evaluated through its *truncated generating function* at the ``L``-th roots of unity
  ``ω^k`` (Lemma C.2): ``K̂(ω) = 2/(1+ω) · C̃ [g(ω) - A]^{-1} B`` with
  ``g(ω) = (2/Δ)(1-ω)/(1+ω)``, where the resolvent of the DPLR matrix is a Cauchy kernel plus
  the Woodbury correction (Lemma C.3); an inverse FFT gives ``K``. ``C̃ = C̄(I - Ā^L)`` is the
  parameter (the truncation to length ``l_max`` folded into C, Sec. C.3), so recurrent mode
  solves for ``C̄``.
* **S4D** (Gu, Gupta, Goel, Ré, NeurIPS 2022): ``A`` diagonal; S4D-Lin (``A_n = -1/2 + iπn``),
  S4D-Inv (``A_n = -1/2 + i N/π (N/(2n+1) - 1)``) or S4D-LegS (the diagonal of S4's DPLR
  matrix); ZOH or bilinear discretisation; the kernel is a Vandermonde product (Sec. 3).

Complex parameters keep one of each conjugate pair (``N/2`` numbers; the kernel is
``2·Re``). The layer around the SSM follows the official ``S4Block``: ``y = GELU(K ⊛ u + D u)``,
dropout, then a position-wise ``Linear(d, 2d)`` + GLU. Parameters of A, B, Δ (and P) live in the
``kernel`` submodule and get the paper's optimiser rule through :meth:`S4Mixer.param_groups`:
no weight decay and ``lr * ssm_lr_mult`` (the official setup: model lr 0.01, SSM lr 0.001).
Computation follows the parameters' dtype (``.double()`` gives complex128 throughout).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from ..kernels.fftconv import fftconv
from .layers import RecurrentSequenceBackbone

# ---------------------------------------------------------------- initialisations


def hippo_legs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS ``(A, B)`` (S4 Eq. 2): ``A_nk = -sqrt((2n+1)(2k+1))`` below the diagonal, ``-(n+1)`` on it."""
    q = torch.arange(n, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    a = -(r[:, None] * r[None, :]).tril(-1) - torch.diag(q + 1)
    return a, r.clone()


def nplr_legs(n: int, b_clip: float | None = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in DPLR form: ``(Λ, P, B)``, each of the ``n/2`` eigenvalues with negative imaginary part.

    ``A + P P^T = -1/2 I + S`` with ``S`` skew-symmetric (``P_n = sqrt(n + 1/2)``), so ``A`` is unitarily
    ``V (Λ - P̃ P̃^*) V^*`` with ``Λ = -1/2 + i eig(-iS)``, ``P̃ = V^* P``, ``B̃ = V^* B`` (S4 Thm. 1).
    ``b_clip`` clips the imaginary part of ``B̃`` as the official code does.
    """
    a, b = hippo_legs(n)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    normal = a + p[:, None] * p[None, :]
    skew = normal - torch.diagonal(normal).mean() * torch.eye(n, dtype=torch.float64)
    w_im, v = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    order = torch.argsort(w_im)[: n // 2]  # one of each conjugate pair: negative imaginary parts
    lam = torch.diagonal(normal).mean() + 1j * w_im[order]
    v = v[:, order]
    b_t, p_t = v.conj().T @ b.to(v.dtype), v.conj().T @ p.to(v.dtype)
    if b_clip is not None:
        b_t = b_t.real + 1j * b_t.imag.clamp(-b_clip, b_clip)
    return lam, p_t, b_t


def diagonal_init(init: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D's ``(Λ, B)`` for ``n/2`` conjugate pairs: ``lin``, ``inv`` (B = 1) or ``legs`` (S4D paper Sec. 4)."""
    half = torch.arange(n // 2, dtype=torch.float64)
    if init == "lin":
        return -0.5 - 1j * math.pi * half, torch.ones(n // 2, dtype=torch.complex128)
    if init == "inv":
        return -0.5 - 1j * (n / math.pi) * (n / (2 * half + 1) - 1), torch.ones(n // 2, dtype=torch.complex128)
    if init == "legs":
        lam, _, b = nplr_legs(n)
        return lam, b
    raise ValueError(f"S4D init must be lin, inv or legs, got {init!r}")


def log_uniform_dt(h: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """``log Δ`` drawn uniformly in ``[log dt_min, log dt_max]``, one per channel."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    return torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def _complex_param(z: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.view_as_real(z.to(torch.complex64).contiguous()).clone())


def _as_complex(p: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(p)


def _cdtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _check_n_ssm(d_model: int, n_ssm: int | None) -> int:
    """The number of distinct SSMs (A, B, P); ``None`` means one per channel (``n_ssm = d_model``)."""
    n_ssm = d_model if n_ssm is None else n_ssm
    if n_ssm < 1 or d_model % n_ssm:
        raise ValueError(f"n_ssm must divide d_model ({d_model}), got {n_ssm}")
    return n_ssm


def _tile(p: torch.Tensor, d_model: int) -> torch.Tensor:
    """``(..., n_ssm, N/2) -> (..., d_model, N/2)``: channel ``h`` uses SSM ``h % n_ssm`` (official ``(v t) n``)."""
    copies = d_model // p.shape[-2]
    return p if copies == 1 else p.repeat(*([1] * (p.dim() - 2)), copies, 1)


# ---------------------------------------------------------------- kernels


class S4DKernel(nn.Module):
    """Diagonal SSM kernel ``K[l] = 2 Re sum_n C_n B̄_n Ā_n^l`` (S4D); ``channels`` output kernels per input channel.

    Parameters: ``log_dt (H,)``, ``A_real (n_ssm, N/2)`` (log of the decay ``-Re A``), ``A_imag (n_ssm, N/2)``
    (``-Im A``), ``B (n_ssm, N/2)`` and ``C (channels, H, N/2)`` complex (stored as real pairs). ``n_ssm``
    (default ``H``) ties A and B across groups of channels, as the official ``n_ssm`` does (``Δ`` and ``C``
    stay per channel).
    """

    ssm_names = ("log_dt", "A_real", "A_imag", "B")

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", disc: str = "zoh", dt_min: float = 0.001,
                 dt_max: float = 0.1, channels: int = 1, n_ssm: int | None = None):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be even and >= 2 (conjugate pairs), got {d_state}")
        if disc not in ("zoh", "bilinear"):
            raise ValueError(f"disc must be zoh or bilinear, got {disc!r}")
        self.d_model, self.d_state, self.disc, self.channels = d_model, d_state, disc, channels
        self.n_ssm = _check_n_ssm(d_model, n_ssm)
        lam, b = diagonal_init(init, d_state)
        self.log_dt = nn.Parameter(log_uniform_dt(d_model, dt_min, dt_max))
        self.A_real = nn.Parameter(torch.log(-lam.real).float().repeat(self.n_ssm, 1))
        self.A_imag = nn.Parameter((-lam.imag).float().repeat(self.n_ssm, 1))
        self.B = _complex_param(b.repeat(self.n_ssm, 1))
        self.C = _complex_param(torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64))

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Δ (H, 1), A (H, N/2), B (H, N/2), C (c, H, N/2))``."""
        dt = torch.exp(self.log_dt)[:, None]
        a = _tile(torch.complex(-torch.exp(self.A_real), -self.A_imag), self.d_model)
        return dt, a, _tile(_as_complex(self.B), self.d_model), _as_complex(self.C)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Ā, B̄, C)``: ZOH ``Ā = exp(ΔA), B̄ = (Ā-1)/A·B``; bilinear ``Ā = (1+ΔA/2)/(1-ΔA/2), B̄ = Δ/(1-ΔA/2)·B``."""
        dt, a, b, c = self.continuous()
        dta = dt * a
        if self.disc == "zoh":
            return torch.exp(dta), b * (torch.exp(dta) - 1) / a, c
        return (1 + dta / 2) / (1 - dta / 2), b * dt / (1 - dta / 2), c

    def forward(self, length: int) -> torch.Tensor:
        """The kernel ``(channels, H, length)`` (a Vandermonde product)."""
        dt, a, b, c = self.continuous()
        da, db, c = self.discrete()
        log_da = dt * a if self.disc == "zoh" else torch.log(da)
        steps = torch.arange(length, device=a.device, dtype=a.real.dtype)
        vandermonde = torch.exp(log_da[..., None] * steps)  # (H, N/2, L)
        return 2 * torch.einsum("chn,hnl->chl", c * db, vandermonde).real

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.d_model, self.d_state // 2, dtype=_cdtype(self.log_dt.dtype),
                           device=self.log_dt.device)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u (B, H)`` -> ``(y (B, c, H), state)``: ``x ← Ā x + B̄ u``, ``y = 2 Re C x``."""
        da, db, c = self.discrete()
        state = da * state + db * u[..., None]
        return 2 * torch.einsum("chn,bhn->bch", c, state).real, state


class S4Kernel(nn.Module):
    """DPLR SSM kernel of S4 (``A = Λ - P P^*``), evaluated by the truncated generating function at roots of unity.

    Parameters: ``log_dt (H,)``, ``A_real``/``A_imag (n_ssm, N/2)`` (``Λ = -exp(A_real) - i A_imag``),
    ``P (rank, n_ssm, N/2)``, ``B (n_ssm, N/2)`` and ``C (channels, H, N/2)`` where ``C`` is
    ``C̃ = C̄ (I - Ā^l_max)``: the kernel is the length-``l_max`` truncation (shorter inputs use its first
    ``L`` taps). ``n_ssm`` (default ``H``) ties Λ, P and B across groups of channels (the official ``n_ssm``).
    """

    ssm_names = ("log_dt", "A_real", "A_imag", "B", "P")

    def __init__(self, d_model: int, d_state: int = 64, l_max: int = 1024, dt_min: float = 0.001, dt_max: float = 0.1,
                 channels: int = 1, n_ssm: int | None = None):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be even and >= 2 (conjugate pairs), got {d_state}")
        if l_max < 1:
            raise ValueError(f"l_max must be >= 1, got {l_max}")
        self.d_model, self.d_state, self.l_max, self.channels, self.rank = d_model, d_state, l_max, channels, 1
        self.n_ssm = _check_n_ssm(d_model, n_ssm)
        lam, p, b = nplr_legs(d_state)
        self.log_dt = nn.Parameter(log_uniform_dt(d_model, dt_min, dt_max))
        self.A_real = nn.Parameter(torch.log(-lam.real).float().repeat(self.n_ssm, 1))
        self.A_imag = nn.Parameter((-lam.imag).float().repeat(self.n_ssm, 1))
        self.P = _complex_param(p.repeat(1, self.n_ssm, 1))
        self.B = _complex_param(b.repeat(self.n_ssm, 1))
        self.C = _complex_param(torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64))

    def continuous(self):
        """``(Δ (H, 1), Λ (H, N/2), P (r, H, N/2), B (H, N/2), C̃ (c, H, N/2))``."""
        dt = torch.exp(self.log_dt)[:, None]
        lam = _tile(torch.complex(-torch.exp(self.A_real), -self.A_imag), self.d_model)
        return (dt, lam, _tile(_as_complex(self.P), self.d_model), _tile(_as_complex(self.B), self.d_model),
                _as_complex(self.C))

    def forward(self, length: int) -> torch.Tensor:
        """The kernel ``(channels, H, min(length, l_max))``."""
        dt, lam, p, b, c = self.continuous()
        n = self.l_max
        k = torch.arange(n // 2 + 1, device=lam.device, dtype=lam.real.dtype)
        omega = torch.exp(-2j * math.pi * k / n)  # the roots of unity ω^k
        # 2/(1+ω) [g - Λ]^{-1} with g = (2/Δ)(1-ω)/(1+ω), written without the pole at ω = -1:
        # 2 / ((2/Δ)(1-ω) - Λ(1+ω)); the half-spectrum sum runs over both members of each conjugate pair.
        num, den = 2 * (1 - omega), (1 + omega)

        def cauchy(v):  # v (..., H, N/2) -> sum_n over the conjugate pairs of 2 v_n / ((2/Δ)(1-ω) - λ_n (1+ω))
            r1 = v[..., None] / (num / dt[..., None] - lam[..., None] * den)
            r2 = v.conj()[..., None] / (num / dt[..., None] - lam.conj()[..., None] * den)
            return 2 * (r1 + r2).sum(-2)  # (..., H, n//2+1)

        q = p.conj()
        k_cb = cauchy(c * b)                                    # (c, H, F): C̃ R B
        k_cp = cauchy(c[:, None] * p[None])                     # (c, r, H, F): C̃ R P
        k_qb = cauchy(q * b)                                    # (r, H, F): Q^* R B
        k_qp = cauchy(q[:, None] * p[None])                     # (r, r, H, F): Q^* R P
        # Woodbury: C̃ (R^{-1} + P Q^*)^{-1} B = C̃RB - C̃RP (I + Q^*RP)^{-1} Q^*RB, with every R scaled by
        # s = 2/(1+ω) (kept finite): s·result = k_cb - h k_cp (I + h k_qp)^{-1} k_qb, h = (1+ω)/2
        h = den / 2
        eye = torch.eye(self.rank, dtype=k_qp.dtype, device=k_qp.device)
        inner = eye + (h * k_qp).permute(2, 3, 0, 1)            # (H, F, r, r)
        corr = torch.linalg.solve(inner, k_qb.permute(1, 2, 0)[..., None])[..., 0]  # (H, F, r)
        k_f = k_cb - h * torch.einsum("crhf,hfr->chf", k_cp, corr)
        kernel = torch.fft.irfft(k_f, n=n)                      # (c, H, l_max)
        return kernel[..., :length]

    @torch.no_grad()
    def dense(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense discrete ``(Ā (H, N, N), B̄ (H, N), C̄ (c, H, N))`` over the full (conjugate-pair) state.

        Bilinear: ``Ā = (I - Δ/2 A)^{-1}(I + Δ/2 A)``, ``B̄ = (I - Δ/2 A)^{-1} Δ B``; ``C̄ = C̃ (I - Ā^l_max)^{-1}``.
        """
        dt, lam, p, b, c = self.continuous()
        cat = lambda z: torch.cat([z, z.conj()], dim=-1)  # noqa: E731
        lam, p, b, c = cat(lam), cat(p), cat(b), cat(c)
        a = torch.diag_embed(lam) - torch.einsum("rhn,rhm->hnm", p, p.conj())
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        half = dt[..., None] / 2 * a
        da = torch.linalg.solve(eye - half, eye + half)
        db = torch.linalg.solve(eye - half, (dt * b)[..., None])[..., 0]
        power = torch.linalg.matrix_power(da, self.l_max)
        dc = torch.linalg.solve((eye - power).transpose(-1, -2)[None], c[..., None])[..., 0]
        return da, db, dc

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """``(x (B, H, N), Ā, B̄, C̄)``: the zero state and the dense discrete system (computed once per sequence)."""
        x = torch.zeros(batch_size, self.d_model, self.d_state, dtype=_cdtype(self.log_dt.dtype),
                        device=self.log_dt.device)
        return (x, *self.dense())

    def step(self, u: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """``u (B, H)`` -> ``(y (B, c, H), state)``: ``x ← Ā x + B̄ u``, ``y = Re C̄ x`` (dense, O(N²) per step)."""
        x, da, db, dc = state
        x = torch.einsum("hnm,bhm->bhn", da, x) + db * u[..., None]
        return torch.einsum("chn,bhn->bch", dc, x).real, (x, da, db, dc)


# ---------------------------------------------------------------- the layer


class S4Mixer(nn.Module):
    """The S4 layer (official ``S4Block``): ``GELU(K ⊛ u + D u)`` -> dropout -> ``Linear(d, 2d)`` + GLU.

    ``(N, L, d) -> (N, L, d)``. ``bidirectional``: a second kernel runs backwards in time (the
    official layout: the backward kernel's tap 0 is lag -1), giving a centred kernel for
    ``sequence.fftconv``. Recurrent mode (causal only): ``initial_state`` / ``step``.
    """

    def __init__(self, kernel: nn.Module, bidirectional: bool = False, dropout: float = 0.0,
                 ssm_lr_mult: float = 0.1):
        super().__init__()
        d = kernel.d_model
        self.kernel, self.bidirectional, self.ssm_lr_mult = kernel, bidirectional, ssm_lr_mult
        self.D = nn.Parameter(torch.randn(d))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, 2 * d)

    def param_groups(self) -> dict[str, dict]:
        """S4's rule: no weight decay and a lower learning rate on A, B, Δ (and P)."""
        return {f"kernel.{name}": {"lr_mult": self.ssm_lr_mult, "decay_mult": 0.0} for name in self.kernel.ssm_names}

    def convolution_kernel(self, length: int) -> torch.Tensor:
        """The kernel given to ``sequence.fftconv``: ``(H, L)`` causal, or ``(H, 2L+1)`` centred (bidirectional)."""
        k = self.kernel(length)
        if not self.bidirectional:
            return k[0]
        forward, backward = k[0], k[1]
        zero = forward.new_zeros(forward.shape[0], 1)
        # lags -L..-1 (backward[L-1] .. backward[0]), 0..L-1 (forward), L (zero)
        return torch.cat([backward.flip(-1), forward, zero], dim=-1)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return F.glu(self.out(self.drop(F.gelu(y))), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.transpose(1, 2)
        y = fftconv(u.contiguous(), self.convolution_kernel(u.shape[-1]), self.D, bidirectional=self.bidirectional)
        return self._finish(y.transpose(1, 2))

    def initial_state(self, batch_size: int):
        if self.bidirectional:
            raise ValueError("a bidirectional S4 layer has no recurrent mode")
        return self.kernel.initial_state(batch_size)

    def step(self, x_t: torch.Tensor, state):
        """``x_t (N, d)`` -> ``(y_t (N, d), state)``."""
        y, state = self.kernel.step(x_t, state)
        return self._finish(y[:, 0] + self.D * x_t), state


# ---------------------------------------------------------------- backbones


class S4D(RecurrentSequenceBackbone):
    """S4D backbone: :class:`SequenceBackbone` with diagonal-SSM mixers (:class:`S4Mixer` + :class:`S4DKernel`).

    ``init``: S4D-Lin / S4D-Inv / S4D-LegS; ``disc``: ZOH (the S4D default) or bilinear;
    ``ssm_lr_mult``: learning-rate multiplier of A, B, Δ (no weight decay on them); ``n_ssm``: how many
    distinct (A, B) the ``d_model`` channels share (default one each; the official LRA configs use 1 or 2).
    """

    example_length = 32

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 4,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 d_state: Annotated[int, Ge(2)] = 64, init: Literal["lin", "inv", "legs"] = "lin",
                 disc: Literal["zoh", "bilinear"] = "zoh", dt_min: Annotated[float, Gt(0)] = 0.001,
                 dt_max: Annotated[float, Gt(0)] = 0.1, bidirectional: bool = False,
                 n_ssm: Annotated[int, Ge(1)] | None = None,
                 ssm_lr_mult: Annotated[float, Ge(0)] = 0.1, mlp_ratio: Annotated[float, Ge(0)] = 0.0,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0, norm: Literal["layer", "rms"] = "layer"):
        if d_state % 2:
            raise ValueError(f"d_state must be even (conjugate pairs), got {d_state}")
        self.ssm_args = dict(d_state=d_state, init=init, disc=disc, dt_min=dt_min, dt_max=dt_max,
                             channels=2 if bidirectional else 1, n_ssm=n_ssm)
        self.bidirectional, self.ssm_lr_mult, self.mixer_dropout = bidirectional, ssm_lr_mult, dropout
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return S4Mixer(S4DKernel(self.d_model, **self.ssm_args), self.bidirectional, self.mixer_dropout,
                       self.ssm_lr_mult)


class S4(RecurrentSequenceBackbone):
    """S4 backbone: :class:`SequenceBackbone` with DPLR (HiPPO-LegS) SSM mixers (:class:`S4Mixer` + :class:`S4Kernel`).

    ``l_max``: the kernel length (inputs longer than it see a length-``l_max`` kernel); ``n_ssm``: how many
    distinct (Λ, P, B) the channels share (default one each).
    """

    example_length = 32

    def __init__(self, d_model: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(1)] = 4,
                 vocab_size: Annotated[int, Ge(1)] | None = None, in_channels: Annotated[int, Ge(1)] | None = None,
                 d_state: Annotated[int, Ge(2)] = 64, l_max: Annotated[int, Ge(1)] = 1024,
                 dt_min: Annotated[float, Gt(0)] = 0.001, dt_max: Annotated[float, Gt(0)] = 0.1,
                 bidirectional: bool = False, n_ssm: Annotated[int, Ge(1)] | None = None,
                 ssm_lr_mult: Annotated[float, Ge(0)] = 0.1,
                 mlp_ratio: Annotated[float, Ge(0)] = 0.0, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 norm: Literal["layer", "rms"] = "layer"):
        if d_state % 2:
            raise ValueError(f"d_state must be even (conjugate pairs), got {d_state}")
        self.ssm_args = dict(d_state=d_state, l_max=l_max, dt_min=dt_min, dt_max=dt_max,
                             channels=2 if bidirectional else 1, n_ssm=n_ssm)
        self.bidirectional, self.ssm_lr_mult, self.mixer_dropout = bidirectional, ssm_lr_mult, dropout
        super().__init__(d_model, n_layers, vocab_size, in_channels, mlp_ratio, dropout, norm)

    def make_mixer(self, layer: int) -> nn.Module:
        return S4Mixer(S4Kernel(self.d_model, **self.ssm_args), self.bidirectional, self.mixer_dropout,
                       self.ssm_lr_mult)


__all__ = ["S4", "S4D", "S4DKernel", "S4Kernel", "S4Mixer", "diagonal_init", "hippo_legs", "nplr_legs"]
