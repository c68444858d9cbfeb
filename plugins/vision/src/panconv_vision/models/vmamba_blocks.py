"""Visual state-space blocks on ``vision.selective_scan``: VMamba's SS2D and its multi-frame (VFIMamba) form.

:class:`SS2D` (Liu et al., VMamba, 2024; the layer HRVMamba's DVSS block and VFIMamba's Mixed-SSM Block
build on), channels-last ``(N, H, W, C)``:

    x, z = in_proj(x)                          # d_inner = ssm_ratio * C each
    x = SiLU(depthwise d_conv x d_conv conv(x))
    xs = the four scans of x (row-major, column-major, and both reversed: :func:`cross_scan`)
    per direction k: (Δ_r, B, C) = x_proj_k(xs_k);  Δ = dt_proj_k(Δ_r)     # input-dependent Δ, B, C
    y_k = S6(xs_k; Δ, A_k = -exp(A_log_k), B, C, D_k, softplus(Δ + dt_bias_k))
    y = LayerNorm(sum of the y_k mapped back to the image)  * SiLU(z);  out = out_proj(y)

With ``frames = T > 1`` the input is ``(N, T, H, W, C)`` and the four scans run over the ``T`` frames'
tokens interleaved at each pixel (:func:`interleaved_selective_scan`): VFIMamba's Mixed-SSM mixing of
two frames. Initialisation as Mamba/VMamba: ``A_log = log(1..d_state)`` per channel, ``D = 1``,
``softplus(dt_bias)`` log-uniform in ``[dt_min, dt_max]``, ``dt_proj`` weights uniform ±``dt_rank^-0.5``.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import nn

from panconv_vision.kernels.selective_scan import (
    cross_scan,
    cross_selective_scan,
    interleaved_selective_scan,
    scan_orders,
)

DIRECTIONS = 4



def add_ssm_parameters(module: nn.Module, inner: int, d_state: int, dt_rank: int, k: int = DIRECTIONS) -> None:
    """Register the ``k``-direction selective-scan parameters of VMamba's SS2D on ``module`` (the official names:
    ``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs`` (S4D-real), ``Ds``); draws no random
    numbers: :func:`init_ssm_parameters_` initialises them once the module's other layers exist."""
    module.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, inner))
    module.dt_projs_weight = nn.Parameter(torch.empty(k, inner, dt_rank))
    module.dt_projs_bias = nn.Parameter(torch.empty(k, inner))
    module.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k * inner, 1))
    module.Ds = nn.Parameter(torch.ones(k * inner))


def init_ssm_parameters_(module: nn.Module, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
    """Mamba/VMamba's initialisation of :func:`add_ssm_parameters`' tensors: uniform projections, and Δ's bias the
    inverse softplus of a log-uniform draw in ``[dt_min, dt_max]``."""
    k, inner = module.dt_projs_bias.shape
    dt_rank = module.dt_projs_weight.shape[-1]
    bound = inner ** -0.5
    nn.init.uniform_(module.x_proj_weight, -bound, bound)
    nn.init.uniform_(module.dt_projs_weight, -dt_rank ** -0.5, dt_rank ** -0.5)
    dt = torch.exp(torch.rand(k, inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=1e-4)
    with torch.no_grad():
        module.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # the inverse of softplus


class SS2D(nn.Module):
    """The 2-D selective-scan layer (see the module docstring); ``frames > 1``: the interleaved multi-frame scan."""

    def __init__(self, dim: Annotated[int, Ge(1)], d_state: Annotated[int, Ge(1)] = 16,
                 ssm_ratio: Annotated[float, Gt(0)] = 2.0, dt_rank: Annotated[int, Ge(1)] | None = None,
                 d_conv: Annotated[int, Ge(1)] = 3, frames: Annotated[int, Ge(1)] = 1,
                 dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        if dim < 1 or d_state < 1 or ssm_ratio <= 0 or d_conv < 1 or frames < 1:
            raise ValueError("SS2D: dim, d_state, d_conv, frames must be >= 1 and ssm_ratio > 0")
        inner = int(ssm_ratio * dim)
        self.dim, self.inner, self.d_state, self.frames = dim, inner, d_state, frames
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        add_ssm_parameters(self, inner, d_state, self.dt_rank)
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self._init_dt(dt_min, dt_max)

    def _init_dt(self, dt_min: float, dt_max: float) -> None:
        init_ssm_parameters_(self, dt_min, dt_max)

    def _scan_inputs(self, xs: torch.Tensor):
        """Per-direction ``Δ`` ``(N, 4, D, L)`` and ``B``, ``C`` ``(N, 4, d_state, L)`` from the scanned sequences."""
        x_dbl = torch.einsum("nkdl,kcd->nkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("nkrl,kdr->nkdl", dts, self.dt_projs_weight)
        return dts, Bs.contiguous(), Cs.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C)`` (``frames == 1``) or ``(N, T, H, W, C)`` (``T == frames``) -> same shape."""
        single = self.frames == 1
        if (single and x.dim() != 4) or (not single and (x.dim() != 5 or x.shape[1] != self.frames)) \
                or x.shape[-1] != self.dim:
            want = "(N, H, W, C)" if single else f"(N, {self.frames}, H, W, C)"
            raise ValueError(f"SS2D: expected {want} with C = {self.dim}, got {tuple(x.shape)}")
        frames = x if not single else x[:, None]
        n, t, h, w, _ = frames.shape
        u, z = self.in_proj(frames).chunk(2, dim=-1)
        u = u.reshape(n * t, h, w, self.inner).permute(0, 3, 1, 2)
        u = F.silu(self.conv(u)).view(n, t, self.inner, h, w)
        A = -torch.exp(self.A_logs.float())
        bias = self.dt_projs_bias.flatten().float()
        if single:
            xs = cross_scan(u[:, 0])                                                   # (N, 4, D, H*W)
            dts, Bs, Cs = self._scan_inputs(xs)
            y = cross_selective_scan(u[:, 0], dts, A, Bs, Cs, self.Ds.float(), delta_bias=bias)[:, None]
        else:
            orders, _ = scan_orders(t, h, w, str(u.device))
            canonical = u.transpose(1, 2).flatten(2)                                   # (N, D, T*H*W)
            xs = canonical[:, None].expand(-1, DIRECTIONS, -1, -1).gather(
                3, orders[None, :, None].expand(n, DIRECTIONS, self.inner, -1))
            dts, Bs, Cs = self._scan_inputs(xs)
            y = interleaved_selective_scan(u, dts, A, Bs, Cs, self.Ds.float(), delta_bias=bias)
        y = self.out_norm(y.permute(0, 1, 3, 4, 2)) * F.silu(z)                       # (N, T, H, W, D)
        out = self.out_proj(y)
        return out[:, 0] if single else out


__all__ = ["SS2D", "add_ssm_parameters", "init_ssm_parameters_"]
