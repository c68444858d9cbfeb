"""``vision.selective_scan``: Mamba's S6 recurrence with input-dependent ``Δ``, ``B``, ``C``.

Shapes and options are those of mamba-ssm's ``selective_scan_fn`` (real ``A`` only):

* ``u``, ``delta``: ``(batch, D, L)``; ``A``: ``(D, N)``; ``D``: ``(D,)`` skip; ``z``: optional
  ``(batch, D, L)`` gate; ``delta_bias``: optional ``(D,)``; ``delta_softplus``: ``Δ ← softplus(Δ + bias)``;
* ``B``, ``C``: ``(D, N)`` (time-invariant), ``(batch, N, L)`` (input-dependent, shared by every
  channel) or ``(batch, G, N, L)`` (grouped: channel ``d`` uses group ``d // (D / G)``).

The recurrence, per batch row, channel ``d`` and state ``n``::

    h[t] = exp(Δ[t] A[d, n]) h[t-1] + Δ[t] B[n, t] u[t]      (h[-1] = 0, zero-order hold on A, Euler on B)
    y[t] = sum_n C[n, t] h[t] + D[d] u[t],     out = y * silu(z)   (when z is given)

It is the linear recurrence ``h[t] = a[t] h[t-1] + b[t]``, whose step ``(a, b)`` composes
associatively: ``(a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)``. Three implementations:

* the reference (:func:`selective_scan_reference`): the sequential loop over ``t``, in float32;
* ``parallel`` (PyTorch, any device): the work-efficient odd-even (Blelloch-style) scan of the
  composed steps in ``2 ceil(log2 L)`` rounds of whole-tensor operations (O(L) work, log depth), its backward the
  reverse scan of the gradient (as mambapy's pscan: autograd keeps ``a`` and the states, not every
  round) — the default on a CPU and the backward of the Triton path;
* ``triton``: one program per (batch row, block of channels) keeps the ``(BLOCK_D, N)`` state in
  registers and walks ``t`` (the recurrence is never materialised at ``(batch, D, L, N)``); Δ's
  bias and softplus, the ``D`` skip and the ``silu(z)`` gate are fused. Its backward is a Triton
  kernel too: the reverse scan ``∂h[t] = C[t] ∂y[t] + a[t+1] ∂h[t+1]`` walked chunk by chunk from the
  end, each chunk's states recomputed from the state the forward saved at its start (as mamba-ssm's
  CUDA backward), all eight input gradients fused in the one pass.

Built on it: :func:`cross_scan` / :func:`cross_merge` and :func:`cross_selective_scan` (VMamba's
SS2D: four scans of an image, row-major and column-major, forwards and backwards, each with its
own ``Δ``, ``B``, ``C``), and :func:`interleaved_selective_scan` (VFIMamba's multi-frame scan:
the tokens of ``T`` frames interleaved — at each pixel, the frames in turn — then scanned in
the same four directions).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from panconv.api import Kernel


# ---------------------------------------------------------------- shapes and shared pieces
def _check(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"selective_scan: u and delta must both be (batch, D, L), got u {tuple(u.shape)}, "
                         f"delta {tuple(delta.shape)}")
    batch, dim, _ = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (D, N) = ({dim}, N), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (real S6 only)")
    n_state = A.shape[1]
    for name, X in (("B", B), ("C", C)):
        ok = ((X.dim() == 2 and X.shape == (dim, n_state))
              or (X.dim() == 3 and X.shape == (batch, n_state, u.shape[2]))
              or (X.dim() == 4 and X.shape[0] == batch and X.shape[2:] == (n_state, u.shape[2])
                  and X.shape[1] >= 1 and dim % X.shape[1] == 0))
        if not ok:
            raise ValueError(f"selective_scan: {name} must be (D, N), (batch, N, L) or (batch, G, N, L) with G "
                             f"dividing D (D={dim}, N={n_state}, L={u.shape[2]}), got {tuple(X.shape)}")
    for name, X, shape in (("D", D, (dim,)), ("z", z, tuple(u.shape)), ("delta_bias", delta_bias, (dim,))):
        if X is not None and tuple(X.shape) != shape:
            raise ValueError(f"selective_scan: {name} must be {shape}, got {tuple(X.shape)}")


def _expand_state_input(X: torch.Tensor, batch: int, dim: int, length: int) -> torch.Tensor:
    """``B`` or ``C`` in any accepted layout -> ``(batch, D, L, N)`` (a broadcast view where possible)."""
    if X.dim() == 2:                          # (D, N): time-invariant
        return X[None, :, None, :].expand(batch, dim, length, X.shape[1])
    if X.dim() == 3:                          # (batch, N, L): one for every channel
        return X.transpose(1, 2)[:, None].expand(batch, dim, length, X.shape[1])
    groups = X.shape[1]                       # (batch, G, N, L): channel d uses group d // (D / G)
    return X.transpose(2, 3).repeat_interleave(dim // groups, dim=1)


def _discretise(u, delta, A, B, delta_bias, delta_softplus):
    """``(a, b)`` of the recurrence ``h[t] = a[t] h[t-1] + b[t]``, both ``(batch, D, L, N)``, float32 (float64
    for float64 inputs)."""
    batch, dim, length = u.shape
    work = _work_dtype(u)
    u, delta, A = u.to(work), delta.to(work), A.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    a = torch.exp(delta[..., None] * A[:, None, :])
    b = (delta * u)[..., None] * _expand_state_input(B.to(work), batch, dim, length)
    return a, b


def _work_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _readout(h, u, C, D, z, dtype):
    batch, dim, length = u.shape
    work = h.dtype
    y = (h * _expand_state_input(C.to(work), batch, dim, length)).sum(-1)
    if D is not None:
        y = y + D.to(work)[:, None] * u.to(work)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype)


# ---------------------------------------------------------------- reference: the sequential loop
def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """The S6 scan by a loop over time (float32 inside, float64 for float64; the output in ``u``'s dtype).

    Returns ``out`` ``(batch, D, L)``, or ``(out, last_state)`` with ``last_state`` ``(batch, D, N)``
    (float32) when ``return_last_state``. Differentiable by autograd.
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    a, b = _discretise(u, delta, A, B, delta_bias, delta_softplus)
    h = torch.zeros_like(b[:, :, 0])
    states = []
    for t in range(u.shape[2]):
        h = a[:, :, t] * h + b[:, :, t]
        states.append(h)
    hs = torch.stack(states, dim=2) if states else b
    out = _readout(hs, u, C, D, z, u.dtype)
    return (out, h) if return_last_state else out


selective_scan = Kernel("vision.selective_scan", reference=selective_scan_reference,
                        doc="Mamba's S6 selective scan (selective_scan_fn's shapes): sequential reference, "
                            "log-depth parallel PyTorch scan, Triton recurrent kernel with fused softplus/D/gate")


def _make_inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    batch, dim, n_state, length = (2, 6, 4, 23) if seed == 0 else (1, 8, 3, 16)
    u = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    delta = 0.5 * torch.randn(batch, dim, length, generator=g, dtype=dtype)
    A = -torch.exp(0.5 * torch.randn(dim, n_state, generator=g)).to(dtype)
    if seed == 0:   # input-dependent B, C shared by all channels, a z gate, softplus with bias
        B = torch.randn(batch, n_state, length, generator=g, dtype=dtype)
        C = torch.randn(batch, n_state, length, generator=g, dtype=dtype)
        kwargs = dict(z=torch.randn(batch, dim, length, generator=g, dtype=dtype),
                      delta_bias=torch.randn(dim, generator=g, dtype=dtype), delta_softplus=True)
    else:           # grouped B (2 groups) and a time-invariant C, raw Δ made positive
        delta = delta.abs()
        B = torch.randn(batch, 2, n_state, length, generator=g, dtype=dtype)
        C = torch.randn(dim, n_state, generator=g, dtype=dtype)
        kwargs = {}
    D = torch.randn(dim, generator=g, dtype=dtype)
    args = tuple(t.to(device) for t in (u, delta, A, B, C, D))
    return args, {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


selective_scan.make_inputs = _make_inputs


# ---------------------------------------------------------------- parallel: associative scan in log2(L) rounds
def _odd_even_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All ``h[t] = a[t] h[t-1] + b[t]`` along dim 0 by the work-efficient odd-even (Blelloch-style) scan.

    Adjacent steps are composed pairwise, ``(a, b)[2k] ∘ (a, b)[2k+1] = (a[2k] a[2k+1], a[2k+1] b[2k] +
    b[2k+1])``, the half-length problem is scanned recursively (its states are the odd states), and the
    even states follow in one step, ``h[2k] = a[2k] h[2k-1] + b[2k]``: ``2 ceil(log2 L)`` rounds of
    whole-tensor operations, O(L) work. An odd length is padded with the identity step ``(1, 0)``.
    """
    length = a.shape[0]
    if length == 1:
        return b
    if length % 2:
        a = torch.cat([a, torch.ones_like(a[:1])])
        b = torch.cat([b, torch.zeros_like(b[:1])])
    a0, a1, b0, b1 = a[0::2], a[1::2], b[0::2], b[1::2]
    h_odd = _odd_even_scan(a0 * a1, a1 * b0 + b1)
    h_even = b0.clone()
    h_even[1:] += a0[1:] * h_odd[:-1]
    return torch.stack([h_even, h_odd], 1).flatten(0, 1)[:length]


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, b)`` with its backward as one reverse scan: ``∂b[t] = g[t] + a[t+1] ∂b[t+1]``,
    ``∂a[t] = ∂b[t] h[t-1]`` (so autograd stores only ``a`` and ``h``, not the rounds)."""

    @staticmethod
    def forward(ctx, a, b):
        h = _odd_even_scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad):
        a, h = ctx.saved_tensors
        a_next = torch.cat([a[1:], torch.zeros_like(a[:1])]).flip(0)
        grad_b = _odd_even_scan(a_next, grad.flip(0)).flip(0)
        grad_a = torch.zeros_like(h)
        grad_a[1:] = grad_b[1:] * h[:-1]
        return grad_a, grad_b


def linear_scan_parallel(a: torch.Tensor, b: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """All ``h[t] = a[t] h[t-1] + b[t]`` (``h[-1] = 0``) along ``dim`` by the odd-even parallel scan.

    ``2 ceil(log2 L)`` rounds of whole-tensor operations (log depth, O(L) work); differentiable, its
    backward being the reverse scan (:class:`_LinearScan`).
    """
    h = _LinearScan.apply(a.movedim(dim, 0).contiguous(), b.movedim(dim, 0).contiguous())
    return h.movedim(0, dim)


@selective_scan.implementation("parallel", backend="torch", dtypes=(torch.float32, torch.float64),
                               atol=1e-4, rtol=1e-4)
def selective_scan_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False):
    """The S6 scan by :func:`linear_scan_parallel` (same arguments and result as the reference)."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    a, b = _discretise(u, delta, A, B, delta_bias, delta_softplus)
    hs = linear_scan_parallel(a, b, dim=2)
    out = _readout(hs, u, C, D, z, u.dtype)
    return (out, hs[:, :, -1]) if return_last_state else out


# ---------------------------------------------------------------- Triton: recurrent kernel, state in registers
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

if triton is not None:
    @triton.jit
    def _selective_scan_fwd_kernel(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, out_ptr, last_ptr,
                                   ckpt_ptr, DIM, L, N, B_PER_G, C_PER_G, N_CHUNKS,
                                   s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
                                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                                   SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr, CHUNK: tl.constexpr,
                                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
        pid_b = tl.program_id(0)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        d_ok, n_ok = d < DIM, n < N
        dn_ok = d_ok[:, None] & n_ok[None, :]
        A = tl.load(a_ptr + d[:, None] * N + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
        if HAS_D:
            skip = tl.load(d_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
        batch = pid_b.to(tl.int64)
        row = batch * DIM * L + d.to(tl.int64) * L                     # u, delta, z, out: contiguous (batch, D, L)
        b_base = batch * s_bb + (d // B_PER_G)[:, None] * s_bg + n[None, :] * s_bn
        c_base = batch * s_cb + (d // C_PER_G)[:, None] * s_cg + n[None, :] * s_cn
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        t = pid_b * 0      # an int32 loop counter (a literal 0 would be a constexpr that the loop re-types)
        while t < L:  # (a `while`: the interpreter, under NumPy 2, cannot take a runtime bound in range())
            u = tl.load(u_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt = dt + bias
            if SOFTPLUS:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            Bt = tl.load(b_ptr + b_base + t * s_bl, mask=dn_ok, other=0.0).to(tl.float32)
            Ct = tl.load(c_ptr + c_base + t * s_cl, mask=dn_ok, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt
            y = tl.sum(h * Ct, axis=1)
            if HAS_D:
                y = y + skip * u
            if HAS_Z:
                zt = tl.load(z_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                y = y * zt * tl.sigmoid(zt)
            tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=d_ok)
            if SAVE_CKPT:   # the state entering each chunk (for the backward): ckpt[c] = h[c*CHUNK - 1]
                ckpt = ((batch * DIM + d.to(tl.int64)) * N_CHUNKS + (t + 1) // CHUNK)[:, None] * N + n[None, :]
                tl.store(ckpt_ptr + ckpt, h, mask=dn_ok & ((t + 1) % CHUNK == 0) & (t + 1 < L))
            t += 1
        last = (batch * DIM + d.to(tl.int64))[:, None] * N + n[None, :]
        tl.store(last_ptr + last, h, mask=dn_ok)

    @triton.jit
    def _selective_scan_bwd_kernel(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, ckpt_ptr, gout_ptr,
                                   glast_ptr, scratch_ptr, gu_ptr, gdt_ptr, gz_ptr, ga_ptr, gb_ptr, gc_ptr, gd_ptr,
                                   gbias_ptr, DIM, L, N, B_PER_G, C_PER_G, N_CHUNKS,
                                   s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
                                   s_gbb, s_gbg, s_gbn, s_gbl, s_gcb, s_gcg, s_gcn, s_gcl,
                                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                                   SOFTPLUS: tl.constexpr, HAS_GLAST: tl.constexpr, B_VARYING: tl.constexpr,
                                   C_VARYING: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
                                   BLOCK_N: tl.constexpr):
        """The reverse scan, chunk by chunk from the end: each chunk's states are recomputed from the state
        saved at its start (into a per-program scratch tile), then walked backwards carrying
        ``∂h[t] = C[t] ∂y[t] + a[t+1] ∂h[t+1]``. A block of channels never straddles a ``B``/``C`` group, so
        the gradient of an input-dependent ``B``/``C`` is summed over the block before one atomic add."""
        pid_b, pid_d = tl.program_id(0), tl.program_id(1)
        d_loc = tl.arange(0, BLOCK_D)
        d = pid_d * BLOCK_D + d_loc
        n = tl.arange(0, BLOCK_N)
        d_ok, n_ok = d < DIM, n < N
        dn_ok = d_ok[:, None] & n_ok[None, :]
        A = tl.load(a_ptr + d[:, None] * N + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
        if HAS_D:
            skip = tl.load(d_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
        batch = pid_b.to(tl.int64)
        row = batch * DIM * L + d.to(tl.int64) * L
        b_base = batch * s_bb + (d // B_PER_G)[:, None] * s_bg + n[None, :] * s_bn
        c_base = batch * s_cb + (d // C_PER_G)[:, None] * s_cg + n[None, :] * s_cn
        gb_base = batch * s_gbb + ((pid_d * BLOCK_D) // B_PER_G) * s_gbg + n * s_gbn
        gc_base = batch * s_gcb + ((pid_d * BLOCK_D) // C_PER_G) * s_gcg + n * s_gcn
        state = (batch * DIM + d.to(tl.int64))[:, None] * N + n[None, :]
        tile = BLOCK_D * BLOCK_N
        scratch = (pid_b * tl.num_programs(1) + pid_d).to(tl.int64) * (CHUNK * tile) + (d_loc[:, None] * BLOCK_N
                                                                                          + n[None, :])
        if HAS_GLAST:
            carry = tl.load(glast_ptr + state, mask=dn_ok, other=0.0).to(tl.float32)
        else:
            carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        grad_a = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        grad_b = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)      # time-invariant B, C only
        grad_c = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        grad_d = tl.zeros((BLOCK_D,), dtype=tl.float32)
        grad_bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
        c = N_CHUNKS - 1 + pid_b * 0
        while c >= 0:
            t0 = c * CHUNK
            t1 = tl.minimum(t0 + CHUNK, L)
            h0 = tl.load(ckpt_ptr + ((batch * DIM + d.to(tl.int64)) * N_CHUNKS + c)[:, None] * N + n[None, :],
                         mask=dn_ok, other=0.0)
            h = h0
            t = t0
            while t < t1:                                     # recompute the chunk's states
                u = tl.load(u_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                dt = tl.load(dt_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                if HAS_BIAS:
                    dt = dt + bias
                if SOFTPLUS:
                    dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
                Bt = tl.load(b_ptr + b_base + t * s_bl, mask=dn_ok, other=0.0).to(tl.float32)
                h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt
                tl.store(scratch_ptr + scratch + (t - t0) * tile, h)
                t += 1
            tl.debug_barrier()
            t = t1 - 1
            while t >= t0:                                    # and walk them backwards
                u = tl.load(u_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                raw = tl.load(dt_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                if HAS_BIAS:
                    raw = raw + bias
                dt = raw
                if SOFTPLUS:
                    dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
                Bt = tl.load(b_ptr + b_base + t * s_bl, mask=dn_ok, other=0.0).to(tl.float32)
                Ct = tl.load(c_ptr + c_base + t * s_cl, mask=dn_ok, other=0.0).to(tl.float32)
                h_t = tl.load(scratch_ptr + scratch + (t - t0) * tile)
                h_prev = tl.where(t > t0, tl.load(scratch_ptr + scratch + tl.maximum(t - t0 - 1, 0) * tile), h0)
                gy = tl.load(gout_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                if HAS_Z:
                    zt = tl.load(z_ptr + row + t, mask=d_ok, other=0.0).to(tl.float32)
                    sz = tl.sigmoid(zt)
                    y = tl.sum(h_t * Ct, axis=1)
                    if HAS_D:
                        y = y + skip * u
                    tl.store(gz_ptr + row + t, gy * y * sz * (1.0 + zt * (1.0 - sz)), mask=d_ok)
                    gy = gy * zt * sz
                gh = gy[:, None] * Ct + carry                     # ∂h[t]
                a = tl.exp(dt[:, None] * A)
                g_log_a = gh * h_prev * a                         # ∂(Δ[t] A)
                grad_a += g_log_a * dt[:, None]
                gh_b = tl.sum(gh * Bt, axis=1)
                g_dt = tl.sum(g_log_a * A, axis=1) + gh_b * u
                g_u = gh_b * dt
                if HAS_D:
                    g_u += gy * skip
                    grad_d += gy * u
                if B_VARYING:
                    tl.atomic_add(gb_ptr + gb_base + t * s_gbl, tl.sum(gh * (dt * u)[:, None], axis=0), mask=n_ok)
                else:
                    grad_b += gh * (dt * u)[:, None]
                if C_VARYING:
                    tl.atomic_add(gc_ptr + gc_base + t * s_gcl, tl.sum(gy[:, None] * h_t, axis=0), mask=n_ok)
                else:
                    grad_c += gy[:, None] * h_t
                carry = a * gh
                if SOFTPLUS:
                    g_dt = tl.where(raw <= 20.0, g_dt * tl.sigmoid(raw), g_dt)
                if HAS_BIAS:
                    grad_bias += g_dt
                tl.store(gu_ptr + row + t, g_u, mask=d_ok)
                tl.store(gdt_ptr + row + t, g_dt, mask=d_ok)
                t -= 1
            tl.debug_barrier()
            c -= 1
        # per-batch partials of the parameters' gradients (summed over the batch by the caller)
        tl.store(ga_ptr + state, grad_a, mask=dn_ok)
        if not B_VARYING:
            tl.store(gb_ptr + state, grad_b, mask=dn_ok)
        if not C_VARYING:
            tl.store(gc_ptr + state, grad_c, mask=dn_ok)
        if HAS_D:
            tl.store(gd_ptr + batch * DIM + d, grad_d, mask=d_ok)
        if HAS_BIAS:
            tl.store(gbias_ptr + batch * DIM + d, grad_bias, mask=d_ok)

    def _as_grouped(X: torch.Tensor, dim: int) -> tuple[torch.Tensor, int, tuple[int, int, int, int]]:
        """``B``/``C`` -> (tensor, channels per group, strides of a (batch, G, N, L) view; 0 = broadcast)."""
        if X.dim() == 2:                      # (D, N): group = channel, no batch or time stride
            X = X.contiguous()
            return X, 1, (0, X.stride(0), X.stride(1), 0)
        if X.dim() == 3:                      # (batch, N, L): a single group
            return X, dim, (X.stride(0), 0, X.stride(1), X.stride(2))
        return X, dim // X.shape[1], tuple(X.stride())

    def _block_sizes(dim: int, n_state: int, *per_group: int) -> tuple[int, int]:
        """(BLOCK_D, BLOCK_N); BLOCK_D divides every channels-per-group given (a block within one group)."""
        block_n = triton.next_power_of_2(n_state)
        block_d = max(1, min(triton.next_power_of_2(dim), 4096 // block_n, 32))
        for per in per_group:
            while per % block_d:
                block_d //= 2
        return block_d, block_n

    def _selective_scan_triton_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk=None):
        """Runs the forward kernel; with ``chunk``, also saves the state entering every ``chunk`` steps."""
        batch, dim, length = u.shape
        n_state = A.shape[1]
        u, delta = u.contiguous(), delta.contiguous()
        out = torch.empty_like(u)
        last = torch.empty(batch, dim, n_state, device=u.device, dtype=torch.float32)
        n_chunks = triton.cdiv(length, chunk) if chunk else 1
        ckpt = torch.zeros(batch, dim, n_chunks, n_state, device=u.device, dtype=torch.float32) if chunk else last
        Bv, b_per_g, sb = _as_grouped(B, dim)
        Cv, c_per_g, sc = _as_grouped(C, dim)
        block_d, block_n = _block_sizes(dim, n_state)
        zc = z.contiguous() if z is not None else u
        grid = (batch, triton.cdiv(dim, block_d))
        _selective_scan_fwd_kernel[grid](
            u, delta, A.contiguous(), Bv, Cv, D.contiguous() if D is not None else u, zc,
            delta_bias.contiguous() if delta_bias is not None else u, out, last, ckpt,
            dim, length, n_state, b_per_g, c_per_g, n_chunks, *sb, *sc,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), SAVE_CKPT=bool(chunk), CHUNK=chunk or 1,
            BLOCK_D=block_d, BLOCK_N=block_n)
        return out, last, (ckpt if chunk else None)

    def _selective_scan_triton_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, chunk,
                                   grad_out, grad_last):
        """All the input gradients in one reverse pass (float32 accumulation; cast to each input's dtype)."""
        batch, dim, length = u.shape
        n_state = A.shape[1]
        f32 = dict(device=u.device, dtype=torch.float32)
        u, delta = u.contiguous(), delta.contiguous()
        grad_out = grad_out.contiguous() if grad_out is not None else torch.zeros_like(u)
        Bv, b_per_g, sb = _as_grouped(B, dim)
        Cv, c_per_g, sc = _as_grouped(C, dim)
        varying = [X.dim() > 2 for X in (B, C)]
        block_d, block_n = _block_sizes(dim, n_state, *[per for per, v in ((b_per_g, varying[0]),
                                                                            (c_per_g, varying[1])) if v])
        n_dblocks = triton.cdiv(dim, block_d)
        grad_u, grad_delta = torch.empty(u.shape, **f32), torch.empty(u.shape, **f32)
        grad_z = torch.empty(u.shape, **f32) if z is not None else grad_u
        grad_A = torch.empty(batch, dim, n_state, **f32)
        grads_bc, strides_bc = [], []
        for X, vary in zip((B, C), varying):
            G = torch.zeros(X.shape, **f32) if vary else torch.empty(batch, dim, n_state, **f32)
            grads_bc.append(G)
            strides_bc.append(_as_grouped(G, dim)[2] if vary else (0, 0, 0, 0))
        grad_D = torch.empty(batch, dim, **f32) if D is not None else grad_u
        grad_bias = torch.empty(batch, dim, **f32) if delta_bias is not None else grad_u
        scratch = torch.empty(batch * n_dblocks * chunk * block_d * block_n, **f32)
        _selective_scan_bwd_kernel[(batch, n_dblocks)](
            u, delta, A.contiguous(), Bv, Cv, D.contiguous() if D is not None else u,
            z.contiguous() if z is not None else u, delta_bias.contiguous() if delta_bias is not None else u,
            ckpt, grad_out, grad_last.contiguous() if grad_last is not None else ckpt, scratch,
            grad_u, grad_delta, grad_z, grad_A, grads_bc[0], grads_bc[1], grad_D, grad_bias,
            dim, length, n_state, b_per_g, c_per_g, ckpt.shape[2], *sb, *sc, *strides_bc[0], *strides_bc[1],
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), HAS_GLAST=grad_last is not None, B_VARYING=varying[0],
            C_VARYING=varying[1], CHUNK=chunk, BLOCK_D=block_d, BLOCK_N=block_n)

        def param(G, X):                      # (batch, D, N) partials of a (D, N) parameter -> summed
            return G.sum(0).to(X.dtype)

        grad_B = grads_bc[0].to(B.dtype) if varying[0] else param(grads_bc[0], B)
        grad_C = grads_bc[1].to(C.dtype) if varying[1] else param(grads_bc[1], C)
        return (grad_u.to(u.dtype), grad_delta.to(delta.dtype), param(grad_A, A), grad_B, grad_C,
                param(grad_D, D) if D is not None else None, grad_z.to(z.dtype) if z is not None else None,
                param(grad_bias, delta_bias) if delta_bias is not None else None)
else:  # pragma: no cover
    def _selective_scan_triton_fwd(*args, **kwargs):
        raise RuntimeError("triton is not installed")

    def _selective_scan_triton_bwd(*args, **kwargs):
        raise RuntimeError("triton is not installed")


#: time steps per chunk of the Triton backward: the forward saves the state entering each chunk
#: (``(batch, D, ceil(L / CHUNK), N)`` float32), the backward recomputes one chunk's states at a time.
TRITON_BACKWARD_CHUNK = 64


class _TritonScan(torch.autograd.Function):
    """Triton forward (saving the chunk-start states when a gradient is wanted) and Triton backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        chunk = TRITON_BACKWARD_CHUNK if any(ctx.needs_input_grad[:8]) else None
        out, last, ckpt = _selective_scan_triton_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        *inputs, ckpt = ctx.saved_tensors
        grads = _selective_scan_triton_bwd(*inputs, ctx.delta_softplus, ckpt, ctx.chunk, grad_out, grad_last)
        return (*[g if need else None for g, need in zip(grads, ctx.needs_input_grad)], None)


def _triton_supports(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                     return_last_state=False) -> bool:
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]
    try:
        _check(u, delta, A, B, C, D, z, delta_bias)
    except ValueError:
        return False
    return all(t.device == u.device for t in tensors) and A.shape[1] <= 256


@selective_scan.implementation("triton", backend="triton", dtypes=(torch.float32,), supports=_triton_supports,
                               atol=1e-4, rtol=1e-4)
def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
    """The fused recurrent Triton kernel, differentiable through the Triton backward kernel."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    out, last = _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
    return (out, last) if return_last_state else out


# half precision: the same kernel (float32 state and arithmetic); only the stored output is rounded
selective_scan.implementation("triton_half", backend="triton", dtypes=(torch.float16, torch.bfloat16),
                              supports=_triton_supports, atol=1e-1, rtol=2e-2)(selective_scan_triton)

# Triton first (GPU, or the interpreter), then the parallel PyTorch scan; the loop is the reference.
selective_scan.implementations.sort(key=lambda impl: impl.backend != "triton")


# ---------------------------------------------------------------- 2-D cross-scan (SS2D) and multi-frame scans
@functools.lru_cache(maxsize=64)
def scan_orders(frames: int, height: int, width: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The four scan orders of a ``(frames, height, width)`` token grid (canonical index ``(t*H + i)*W + j``).

    Returns ``(orders, inverses)``, each ``(4, T*H*W)`` long: ``orders[k][s]`` is the canonical token
    visited at step ``s`` of direction ``k`` — 0: row-major, 1: column-major, 2 and 3: the same
    reversed — and at each pixel the ``T`` frames come in turn (interleaved); ``inverses[k]`` undoes it.
    """
    idx = torch.arange(frames * height * width).view(frames, height, width)
    row = idx.permute(1, 2, 0).reshape(-1)       # pixel (i, j) row-major, frames interleaved at each pixel
    col = idx.permute(2, 1, 0).reshape(-1)       # pixel (i, j) column-major, idem
    orders = torch.stack([row, col, row.flip(0), col.flip(0)])
    return orders.to(device), torch.argsort(orders, dim=1).to(device)


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """VMamba's CrossScan: ``(batch, C, H, W)`` -> ``(batch, 4, C, H*W)``, the four directions' sequences."""
    if x.dim() != 4:
        raise ValueError(f"cross_scan: expected (batch, C, H, W), got {tuple(x.shape)}")
    orders, _ = scan_orders(1, x.shape[2], x.shape[3], str(x.device))
    return x.flatten(2)[:, None].expand(-1, 4, -1, -1).gather(3, orders[None, :, None].expand(
        x.shape[0], 4, x.shape[1], -1))


def cross_merge(ys: torch.Tensor, height: int, width: int, frames: int = 1, reduce: bool = True) -> torch.Tensor:
    """The inverse of the four scans: ``(batch, 4, C, T*H*W)`` in scan order -> canonical order, summed over
    the directions (VMamba's CrossMerge: ``(batch, C, T*H*W)``) or kept apart (``reduce=False``)."""
    _, inverses = scan_orders(frames, height, width, str(ys.device))
    back = ys.gather(3, inverses[None, :, None].expand(ys.shape[0], 4, ys.shape[2], -1))
    return back.sum(1) if reduce else back


def _multi_direction_scan(x_flat, frames, height, width, delta, A, B, C, D, delta_bias, delta_softplus, reduce):
    batch, channels, tokens = x_flat.shape
    orders, _ = scan_orders(frames, height, width, str(x_flat.device))
    xs = x_flat[:, None].expand(-1, 4, -1, -1).gather(3, orders[None, :, None].expand(batch, 4, channels, -1))
    if delta.shape != (batch, 4, channels, tokens):
        raise ValueError(f"the four-direction scan: delta must be (batch, 4, C, L) = "
                         f"{(batch, 4, channels, tokens)} in each direction's scan order, got {tuple(delta.shape)}")
    if B.dim() != 4 or B.shape[1] != 4 or C.shape != B.shape:
        raise ValueError(f"the four-direction scan: B and C must be (batch, 4, N, L) (one group per direction), "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    ys = selective_scan(xs.reshape(batch, 4 * channels, tokens), delta.reshape(batch, 4 * channels, tokens),
                        A, B, C, D, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return cross_merge(ys.view(batch, 4, channels, tokens), height, width, frames, reduce)


def cross_selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                         delta_softplus: bool = True, reduce: bool = True) -> torch.Tensor:
    """VMamba's SS2D scan of an image ``x`` ``(batch, C, H, W)``.

    ``delta`` ``(batch, 4, C, H*W)``, ``B``/``C`` ``(batch, 4, N, H*W)``: each direction's own inputs,
    in that direction's scan order (as projected from :func:`cross_scan`'s sequences); ``A``
    ``(4*C, N)``, ``D`` and ``delta_bias`` ``(4*C,)``. Returns ``(batch, C, H, W)`` (the four outputs
    mapped back and summed) or ``(batch, 4, C, H, W)`` with ``reduce=False``.
    """
    if x.dim() != 4:
        raise ValueError(f"cross_selective_scan: expected x (batch, C, H, W), got {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    y = _multi_direction_scan(x.flatten(2), 1, height, width, delta, A, B, C, D, delta_bias, delta_softplus, reduce)
    return y.view(batch, channels, height, width) if reduce else y.view(batch, 4, channels, height, width)


def interleave_frames(frames: torch.Tensor) -> torch.Tensor:
    """``(batch, T, C, H, W)`` -> ``(batch, C, H*W*T)``: row-major pixels, the ``T`` frames' tokens in turn."""
    return frames.permute(0, 2, 3, 4, 1).flatten(2)


def interleaved_selective_scan(frames: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                               C: torch.Tensor, D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                               delta_softplus: bool = True, reduce: bool = True) -> torch.Tensor:
    """VFIMamba's scan of ``T`` frames ``(batch, T, C, H, W)`` with their tokens interleaved.

    The four directions visit the pixels row-major or column-major, forwards or backwards, and at
    each pixel the ``T`` frames' tokens one after the other, so every step of the recurrence sees
    both frames at neighbouring positions (the paper's interleaved token arrangement). ``delta``
    ``(batch, 4, C, T*H*W)`` and ``B``/``C`` ``(batch, 4, N, T*H*W)`` are in each direction's scan
    order; ``A`` ``(4*C, N)``. Returns ``(batch, T, C, H, W)`` (``(batch, 4, T, C, H, W)`` unreduced).
    """
    if frames.dim() != 5:
        raise ValueError(f"interleaved_selective_scan: expected frames (batch, T, C, H, W), got {tuple(frames.shape)}")
    batch, count, channels, height, width = frames.shape
    canonical = frames.transpose(1, 2).flatten(2)   # (batch, C, T*H*W) in canonical (t, i, j) order
    y = _multi_direction_scan(canonical, count, height, width, delta, A, B, C, D, delta_bias, delta_softplus, reduce)
    if reduce:
        return y.view(batch, channels, count, height, width).transpose(1, 2)
    return y.view(batch, 4, channels, count, height, width).transpose(2, 3)


__all__ = ["cross_merge", "cross_scan", "cross_selective_scan", "interleave_frames", "interleaved_selective_scan",
           "linear_scan_parallel", "scan_orders", "selective_scan", "selective_scan_parallel",
           "selective_scan_reference", "selective_scan_triton"]
