"""DiffPALM (Lupo, Sgarbossa & Bitbol 2024, "Pairing interacting protein sequences using masked language
modeling"), scaled down to what trains on a CPU here.

The method: two families of interacting proteins (A, B) each have several paralogs per species; which A pairs
with which B inside a species is unknown. Concatenate A_i with B_{pi(i)} in every row of a paired MSA; a frozen
MSA language model's masked-LM loss is lower when the pairs are right, because the coevolving residues of A then
predict the masked residues of B (and back). DiffPALM relaxes each species' permutation ``pi`` to a doubly
stochastic matrix ``P = Sinkhorn(X / tau)`` of learnable scores ``X`` (``m x m`` per species), feeds the B rows as
``P @ onehot(B)`` (soft one-hot inputs), and descends the masked-LM loss in ``X``; the hard pairing is then read
off ``X``. The paper iterates this, fixing the most confident pairs as context for the next round.

What is here (faithful in kind, scaled down in size, see ``benchmarks/genomics_diffpalm_potts.py``):

* :class:`PottsPairs`: a seeded Potts model over the concatenated sequence A|B (alphabet ``q``, lengths ``la``,
  ``lb``) whose couplings link A and B positions (``n_links`` inter-family pairs of strength ``coupling``) plus a
  few intra-family couplings and random fields; :meth:`PottsPairs.sample` draws sequences by Gibbs sampling.
  This is the documented generator standing in for real paired MSAs (the MSA Transformer's weights are not
  available offline).
* :class:`MSATransformer`: a small axial-attention MSA language model (row attention over positions, column
  attention over the rows, as the MSA Transformer, with learned positional embeddings), trained here by masked
  language modelling on sampled paired MSAs. It accepts soft one-hot inputs (``(R, L, q)`` probabilities).
* :func:`sinkhorn`, :func:`diffpalm_pairing`: the soft permutation and the optimisation; the hard assignment
  is the greedy maximum of ``X`` (the paper uses the Hungarian algorithm; for the ``m <= 8`` paralogs here the
  greedy read-out of a converged ``X`` agrees with it in the runs we checked, and needs no scipy).

Not here: the 100M-parameter pre-trained MSA Transformer, real Pfam pairs (HK-RR, MALG-MALK), the phylogenetic
structure of real species (the Potts rows are independent samples), and the paper's multi-run averaging.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PottsPairs:
    """A seeded Potts model over A|B whose inter-family couplings make correct pairs predictable."""

    def __init__(self, la: int = 8, lb: int = 8, q: int = 4, n_links: int = 8, coupling: float = 1.5,
                 n_intra: int = 4, field_scale: float = 0.3, seed: int = 0):
        if min(la, lb, q) < 2 or n_links < 1 or n_links > la * lb:
            raise ValueError(f"need la, lb, q >= 2 and 1 <= n_links <= la*lb, got {la}, {lb}, {q}, {n_links}")
        g = torch.Generator().manual_seed(seed)
        self.la, self.lb, self.q, self.length = la, lb, q, la + lb
        self.fields = field_scale * torch.randn(self.length, q, generator=g)
        self.couplings = torch.zeros(self.length, self.length, q, q)
        pairs = set()
        while len(pairs) < n_links:                                   # A position i <-> B position j
            pairs.add((int(torch.randint(la, (), generator=g)), la + int(torch.randint(lb, (), generator=g))))
        while len(pairs) < n_links + n_intra:                         # a few couplings inside a family
            i, j = sorted(torch.randperm(self.length, generator=g)[:2].tolist())
            if (i < la) == (j < la):
                pairs.add((i, j))
        self.links = sorted(pairs)
        for i, j in self.links:
            # a random permutation of the alphabet is favoured: residue a at i "wants" sigma(a) at j
            sigma = torch.randperm(q, generator=g)
            block = torch.full((q, q), -coupling / q)
            block[torch.arange(q), sigma] = coupling
            self.couplings[i, j], self.couplings[j, i] = block, block.t()

    @torch.no_grad()
    def sample(self, n: int, sweeps: int = 40, seed: int = 0) -> torch.Tensor:
        """``(n, la + lb)`` sequences (ids ``0..q-1``) by ``sweeps`` Gibbs sweeps of ``n`` independent chains."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(self.q, (n, self.length), generator=g)
        for _ in range(sweeps):
            for i in range(self.length):
                onehot = F.one_hot(x, self.q).float()                                   # (n, L, q)
                energy = self.fields[i] + torch.einsum("nlb,lab->na", onehot, self.couplings[i])
                x[:, i] = torch.multinomial(energy.softmax(-1), 1, generator=g)[:, 0]
        return x


class AxialLayer(nn.Module):
    """Row attention (over positions, within each sequence), then column attention (over rows), then an MLP."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.row_norm, self.col_norm, self.mlp_norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.row = nn.MultiheadAttention(d, heads, batch_first=True)
        self.col = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:                      # (B, R, L, d)
        b, r, length, d = h.shape
        x = self.row_norm(h).reshape(b * r, length, d)
        h = h + self.row(x, x, x, need_weights=False)[0].reshape(b, r, length, d)
        x = self.col_norm(h).transpose(1, 2).reshape(b * length, r, d)
        h = h + self.col(x, x, x, need_weights=False)[0].reshape(b, length, r, d).transpose(1, 2)
        return h + self.mlp(self.mlp_norm(h))


class MSATransformer(nn.Module):
    """A small MSA language model: ``(B, R, L)`` ids or ``(B, R, L, q+1)`` soft one-hots -> ``(B, R, L, q)`` logits.

    Token ``q`` is the mask. Rows are exchangeable (no row positions), columns have learned positions.
    """

    def __init__(self, q: int, length: int, d: int = 48, layers: int = 2, heads: int = 4):
        super().__init__()
        self.q, self.mask_id = q, q
        self.embed = nn.Parameter(torch.randn(q + 1, d) * 0.1)
        self.position = nn.Parameter(torch.randn(length, d) * 0.1)
        self.layers = nn.ModuleList(AxialLayer(d, heads) for _ in range(layers))
        self.norm, self.out = nn.LayerNorm(d), nn.Linear(d, q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = F.one_hot(x, self.q + 1).float() if x.dtype == torch.long else x
        h = soft @ self.embed + self.position
        for layer in self.layers:
            h = layer(h)
        return self.out(self.norm(h))


def mask_tokens(x: torch.Tensor, prob: float, mask_id: int, generator: torch.Generator | None = None,
                columns: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked ids, boolean mask)``: each token (in ``columns``, default all) masked with probability ``prob``."""
    chosen = torch.rand(x.shape, generator=generator) < prob
    if columns is not None:
        keep = torch.zeros_like(chosen)
        keep[..., columns] = True
        chosen &= keep
    return torch.where(chosen, torch.full_like(x, mask_id), x), chosen


def train_msa_lm(model: MSATransformer, potts: PottsPairs, steps: int = 600, depth: int = 16, batch: int = 8,
                 lr: float = 3e-3, mask_prob: float = 0.15, seed: int = 0, pool: int = 20_000) -> list[float]:
    """Masked-LM training on random paired MSAs of ``depth`` rows drawn from ``pool`` Potts samples; losses."""
    g = torch.Generator().manual_seed(seed)
    data = potts.sample(pool, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        rows = data[torch.randint(pool, (batch, depth), generator=g)]
        inputs, chosen = mask_tokens(rows, mask_prob, model.mask_id, g)
        logits = model(inputs)
        loss = F.cross_entropy(logits[chosen], rows[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def sinkhorn(scores: torch.Tensor, tau: float = 1.0, iterations: int = 20) -> torch.Tensor:
    """A doubly stochastic matrix from ``(..., m, m)`` scores: alternate row/column normalisation of exp(X/tau)."""
    log_p = scores / tau
    for _ in range(iterations):
        log_p = log_p - log_p.logsumexp(-1, keepdim=True)
        log_p = log_p - log_p.logsumexp(-2, keepdim=True)
    return log_p.exp()


def greedy_assignment(scores: torch.Tensor) -> torch.Tensor:
    """``perm`` with ``perm[i]`` = the B row paired to A row ``i``: repeatedly take the largest remaining score."""
    scores = scores.detach().clone().double()
    m = scores.shape[-1]
    perm = torch.empty(m, dtype=torch.long)
    for _ in range(m):
        flat = int(scores.argmax())
        i, j = divmod(flat, m)
        perm[i] = j
        scores[i, :], scores[:, j] = -math.inf, -math.inf
    return perm


def diffpalm_pairing(model: MSATransformer, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], la: int,
                     steps: int = 150, lr: float = 0.1, mask_prob: float = 0.3, tau: tuple[float, float] = (1.0, 0.2),
                     seed: int = 0) -> list[torch.Tensor]:
    """DiffPALM on one paired MSA: species ``s`` has A rows ``a_rows[s]`` ``(m_s, la)`` and shuffled B rows
    ``b_rows[s]`` ``(m_s, lb)``. Learns per-species scores ``X_s`` so that ``Sinkhorn(X_s / tau)`` (``tau`` annealed
    geometrically from ``tau[0]`` to ``tau[1]``) pairs the rows that minimise the frozen model's masked-LM loss on the
    A and B columns; returns each species' hard pairing ``perm`` (A row ``i`` <-> B row ``perm[i]``)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    q = model.q
    scores = [torch.zeros(len(a), len(a), requires_grad=True) for a in a_rows]
    optimizer = torch.optim.Adam(scores, lr=lr)
    a_all = torch.cat(a_rows)
    b_onehot = [F.one_hot(b, q + 1).float() for b in b_rows]
    for step in range(steps):
        tau_now = tau[0] * (tau[1] / tau[0]) ** (step / max(1, steps - 1))
        b_soft = torch.cat([sinkhorn(x, tau_now) @ b.flatten(1) for x, b in zip(scores, b_onehot)])
        b_soft = b_soft.view(len(a_all), -1, q + 1)
        # mask A tokens (hard ids) and B tokens (their soft one-hots replaced by the mask token)
        a_in, a_mask = mask_tokens(a_all, mask_prob, model.mask_id, g)
        b_mask = torch.rand(b_soft.shape[:2], generator=g) < mask_prob
        mask_vec = F.one_hot(torch.tensor(model.mask_id), q + 1).float()
        b_in = torch.where(b_mask[..., None], mask_vec, b_soft)
        inputs = torch.cat([F.one_hot(a_in, q + 1).float(), b_in], dim=1)[None]
        log_p = model(inputs)[0].log_softmax(-1)                                       # (R, L, q)
        loss_a = -(log_p[:, :la].gather(-1, a_all[..., None])[..., 0] * a_mask).sum()
        loss_b = -(log_p[:, la:] * b_soft[..., :q] * b_mask[..., None]).sum()         # soft targets
        loss = (loss_a + loss_b) / max(1, int(a_mask.sum() + b_mask.sum()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [greedy_assignment(x) for x in scores]


def pairing_precision(perms: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    """Fraction of A rows paired to their true B partner (over all species)."""
    right = sum(int((p == t).sum()) for p, t in zip(perms, truths))
    return right / sum(len(t) for t in truths)


__all__ = ["AxialLayer", "MSATransformer", "PottsPairs", "diffpalm_pairing", "greedy_assignment", "mask_tokens",
           "pairing_precision", "sinkhorn", "train_msa_lm"]
