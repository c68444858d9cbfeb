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
* :func:`sinkhorn`, :func:`diffpalm_pairing`: the soft permutation and the optimisation. The hard assignment is
  the greedy maximum of ``X`` by default; ``assignment="hungarian"`` takes the exact maximum-weight permutation
  instead (:func:`hungarian_assignment`, the paper's read-out, here in pure Python with no scipy); ``runs=K``
  repeats the optimisation with ``K`` masking seeds and reads the pairing off the runs' average
  (:func:`combine_runs`: the mean of their soft permutations, or a vote of their hard pairings), in the spirit
  of the paper's averaging over runs; ``estimator="straight_through"`` feeds the hard permutation forward and
  the soft one backward (the paper's gradient bypass; the default feeds the soft one both ways).
* :func:`diffpalm_iterative`: the paper's iterative fixing of confident pairs (fixed pairs enter the next
  round as hard, paired context: :func:`diffpalm_scores`' ``fixed``).
* :func:`mi_ipa` (:func:`pmi_tables`, :func:`pmi_pair_scores`) and :func:`dca_ipa` (:func:`mean_field_couplings`,
  :func:`dca_tables`): the coevolution baselines the paper compares with, both the Iterative Pairing Algorithm
  (:func:`iterative_pairing`, Bitbol et al. 2016) started from a random pairing, scoring pairs by mutual
  information (MI-IPA) or by mean-field Potts couplings (DCA-IPA).

Not here: the 100M-parameter pre-trained MSA Transformer, real Pfam pairs (HK-RR, MALG-MALK), the phylogenetic
structure of real species (the Potts rows are independent samples). The default optimisation differs from the
official code's by design (both families masked, B permuted as soft one-hots, annealed ``tau``, Adam);
:class:`OfficialRecipe` (``diffpalm_scores(..., recipe=...)``) follows the official one instead (A permuted and
masked alone, straight-through, Adadelta with a plateau schedule, mean-centring, optional Gumbel noise), verified
step by step against the official code in ``tests/test_diffpalm_official.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from panconv.api import Model


class PottsPairs:
    """A seeded Potts model over A|B whose inter-family couplings make correct pairs predictable."""

    def __init__(self, la: int = 8, lb: int = 8, q: int = 4, n_links: int = 8, coupling: float = 1.5,
                 n_intra: int = 4, field_scale: float = 0.3, seed: int = 0):
        if min(la, lb, q) < 2 or n_links < 1 or n_links > la * lb:
            raise ValueError(f"need la, lb, q >= 2 and 1 <= n_links <= la*lb, got {la}, {lb}, {q}, {n_links}")
        if n_intra > la * (la - 1) // 2 + lb * (lb - 1) // 2:
            raise ValueError(f"n_intra ({n_intra}) exceeds the position pairs inside the families "
                             f"({la * (la - 1) // 2 + lb * (lb - 1) // 2})")
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

    def pairing_task(self, species: int, paralogs: int, seed: int = 0, sweeps: int = 40,
                     sample_seed: int | None = None) -> tuple[list[torch.Tensor], ...]:
        """A paralog-pairing problem: ``species x paralogs`` sampled pairs, B's rows shuffled within each species.

        Returns ``(a_rows, b_rows, truths)``, one entry per species: A's rows in order, B's rows shuffled, and
        ``truths[s][i]`` the position of A row ``i``'s true partner among the shuffled B rows (the input of
        ``pairing_precision``). The sample is drawn with ``sample_seed`` (default ``seed``), the shuffles with ``seed``.
        """
        g = torch.Generator().manual_seed(seed)
        pairs = self.sample(species * paralogs, sweeps=sweeps, seed=seed if sample_seed is None else sample_seed)
        a_rows, b_rows, truths = [], [], []
        for s in range(species):
            block, shuffle = pairs[s * paralogs:(s + 1) * paralogs], torch.randperm(paralogs, generator=g)
            a_rows.append(block[:, :self.la])
            b_rows.append(block[shuffle, self.la:])
            truths.append(torch.argsort(shuffle))
        return a_rows, b_rows, truths


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


class MSATransformer(Model):
    """A small MSA language model: ``(B, R, L)`` ids or ``(B, R, L, q+1)`` soft one-hots -> ``(B, R, L, q)`` logits.

    Token ``q`` is the mask. Rows are exchangeable (no row positions), columns have learned positions. As a
    registered model (``genomics.MSATransformer``) it trains by masked language modelling through the engine on
    ``genomics.PottsMSA``: ``forward(batch)`` reads ``batch["inputs"]``, ``loss`` is the cross-entropy on
    ``batch["targets"]`` (``-100`` at the unmasked tokens), ``predict`` the log-probabilities.
    """

    metadata_inputs = ("q", "length")

    def __init__(self, q: Annotated[int, Ge(2)] = 4, length: Annotated[int, Ge(1)] = 16, d: Annotated[int, Ge(1)] = 48,
                 layers: Annotated[int, Ge(1)] = 2, heads: Annotated[int, Ge(1)] = 4):
        super().__init__()
        if d % heads:
            raise ValueError(f"d ({d}) must be a multiple of heads ({heads})")
        self.q, self.mask_id, self.length = q, q, length
        self.embed = nn.Parameter(torch.randn(q + 1, d) * 0.1)
        self.position = nn.Parameter(torch.randn(length, d) * 0.1)
        self.layers = nn.ModuleList(AxialLayer(d, heads) for _ in range(layers))
        self.norm, self.out = nn.LayerNorm(d), nn.Linear(d, q)

    def forward(self, x: torch.Tensor | dict) -> torch.Tensor:
        x = x["inputs"] if isinstance(x, dict) else x
        if x.dim() != (4 if x.is_floating_point() else 3) or x.shape[2] != self.length:
            raise ValueError(f"MSATransformer takes ids (B, R, {self.length}) or soft one-hots (B, R, {self.length}, "
                             f"{self.q + 1}), got {x.dtype} {tuple(x.shape)}")
        soft = x if x.is_floating_point() else F.one_hot(x.long(), self.q + 1).float()
        h = soft @ self.embed + self.position
        for layer in self.layers:
            h = layer(h)
        return self.out(self.norm(h))

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        targets = batch["targets"].reshape(-1)
        return {"loss": F.cross_entropy(outputs.reshape(-1, self.q), targets, ignore_index=-100)}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.log_softmax(-1)

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        rows = torch.randint(self.q, (batch_size, 4, self.length), generator=g)
        inputs, chosen = mask_tokens(rows, 0.3, self.mask_id, g)
        inputs[:, 0, 0], chosen[:, 0, 0] = self.mask_id, True
        return {"inputs": inputs, "targets": torch.where(chosen, rows, torch.full_like(rows, -100))}

    @classmethod
    def example_config(cls) -> dict:
        return {"q": 4, "length": 6, "d": 16, "layers": 1, "heads": 2}


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


def hungarian_assignment(scores: torch.Tensor) -> torch.Tensor:
    """``perm`` maximising ``sum_i scores[i, perm[i]]`` exactly (the Hungarian algorithm, Kuhn-Munkres with
    potentials, O(m^3)); ``perm[i]`` is the B row paired to A row ``i``. ``-inf`` entries (excluded pairs) are
    only used when no permutation avoids them."""
    weights = scores.detach().double().cpu()
    m = weights.shape[-1]
    if weights.shape != (m, m):
        raise ValueError(f"hungarian_assignment takes a square (m, m) score matrix, got {tuple(scores.shape)}")
    finite = torch.isfinite(weights)
    if not finite.all():
        # an excluded entry costs more than any assignment made of allowed entries can gain
        low, high = (float(weights[finite].min()), float(weights[finite].max())) if finite.any() else (0.0, 0.0)
        weights = torch.where(finite, weights, torch.full_like(weights, low - (high - low + 1.0) * (m + 1)))
    cost = (-weights).tolist()                                    # minimise the cost = maximise the scores
    inf = math.inf
    u, v = [0.0] * (m + 1), [0.0] * (m + 1)                        # row / column potentials (1-based)
    match, way = [0] * (m + 1), [0] * (m + 1)                      # match[j]: the row assigned to column j
    for i in range(1, m + 1):
        match[0], j0 = i, 0
        slack, used = [inf] * (m + 1), [False] * (m + 1)
        while True:                                                # grow an alternating tree from row i
            used[j0] = True
            i0, delta, j1 = match[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if reduced < slack[j]:
                        slack[j], way[j] = reduced, j0
                    if slack[j] < delta:
                        delta, j1 = slack[j], j
            for j in range(m + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    slack[j] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:                                                  # flip the augmenting path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    perm = torch.empty(m, dtype=torch.long)
    for j in range(1, m + 1):
        perm[match[j] - 1] = j - 1
    return perm


ASSIGNMENTS = {"greedy": greedy_assignment, "hungarian": hungarian_assignment}


def combine_runs(runs: list[list[torch.Tensor]], tau: float = 0.2,
                 average: Literal["soft", "hard"] = "soft") -> list[torch.Tensor]:
    """Per species, one score matrix from several DiffPALM runs (``runs[k][s]``: run ``k``'s learned scores ``X_s``,
    :func:`diffpalm_scores`), to read a hard pairing off (:func:`hungarian_assignment` or
    :func:`greedy_assignment`).

    ``average="soft"``: the log of the runs' mean soft permutation ``mean_k Sinkhorn(X_ks / tau)`` (the final
    temperature), so the Hungarian read-out is the permutation with the largest product of averaged entries.
    ``average="hard"``: a vote, the fraction of runs whose Hungarian pairing puts A row ``i`` with B row ``j``, ties
    broken by the mean soft permutation (its weight is too small to outvote a single run)."""
    if not runs:
        raise ValueError("combine_runs needs at least one run")
    if average not in ("soft", "hard"):
        raise ValueError(f"average must be 'soft' or 'hard', got {average!r}")
    combined = []
    for per_species in zip(*runs):
        soft = torch.stack([sinkhorn(x.double(), tau, iterations=50) for x in per_species]).mean(0)
        if average == "soft":
            combined.append(soft.clamp_min(1e-300).log())
            continue
        m = soft.shape[-1]
        votes = torch.stack([F.one_hot(hungarian_assignment(x), m).double() for x in per_species]).mean(0)
        combined.append(votes + soft / (m * (len(per_species) + 1)))
    return combined


RUN_SEED_STRIDE = 10_007   # run k of diffpalm_pairing(runs=K, seed=s) masks with seed s + k * RUN_SEED_STRIDE


@dataclass(frozen=True)
class OfficialRecipe:
    """The optimisation of the official DiffPALM code (Bitbol-Lab/DiffPALM, ``DiffPALM.train``), for
    :func:`diffpalm_scores`' ``recipe``; the defaults are the official ones (the paper's example notebook runs
    ``epochs=100, std_init=0, lr=9, weight_decay=0.1, noise_std=True, noise_scheduler=True, rand_perm=True``).

    Against the default recipe it changes: which family moves (the *A* rows are permuted, ``A_perm[j] = sum_i
    P[i, j] A[i]``, and sit beside B row ``j``; B stays in place), what is masked (only A tokens, each with
    probability ``p_mask``; B is never masked), the loss (cross-entropy on the masked A tokens against the permuted
    A one-hots, which are the hard ones forward and the soft ones backward), the estimator (always
    straight-through: the hard Hungarian matching forward, Sinkhorn at a fixed ``tau`` with
    ``sinkhorn_iterations`` backward), the scores (``std_init * randn`` at the start, mean-centred before every
    iteration), the steps (``epochs`` optimiser steps, each on the gradient summed over ``batch_size`` masks of
    ``loss / batch_size``, then one more ``batch_size`` masks that only evaluate), the optimiser (``optimizer``
    from ``torch.optim`` by name with ``lr`` and ``weight_decay``; with ``plateau``, torch's default
    ``ReduceLROnPlateau`` stepped on the summed loss of each batch: the official code ignores its
    ``scheduler_kwargs``) and the noise (with ``noise``, Gumbel noise ``-log(-log(u))`` times ``noise_factor``,
    times the scores' std with ``noise_std``, times ``lr_now / lr`` with ``noise_scheduler``, drawn once per batch
    and added to the scores before both the matching and Sinkhorn; ``rand_perm`` shuffles the scores' rows and
    columns before the matching, which only changes how ties are broken).

    The random numbers come from a ``torch.Generator`` seeded with :func:`diffpalm_scores`' ``seed`` and are
    drawn in the official order (the initial scores per species; per batch the noise, then the shuffles; per
    iteration the mask), so the trajectory equals the official one run after ``torch.manual_seed(seed)``
    (``tests/test_diffpalm_official.py``). The official ``positive_examples`` are :func:`diffpalm_scores`'
    ``context``."""

    epochs: int = 1
    p_mask: float = 0.7
    std_init: float = 0.1
    tau: float = 1.0
    sinkhorn_iterations: int = 10
    batch_size: int = 1
    optimizer: str = "Adadelta"
    lr: float = 1.0
    weight_decay: float = 0.0
    plateau: bool = True
    noise: bool = True
    noise_factor: float = 0.1
    noise_std: bool = False
    noise_scheduler: bool = False
    rand_perm: bool = False
    mean_centering: bool = True

    def __post_init__(self):
        if min(self.epochs, self.batch_size, self.sinkhorn_iterations) < 1:
            raise ValueError(f"OfficialRecipe needs epochs, batch_size and sinkhorn_iterations >= 1, got "
                             f"{self.epochs}, {self.batch_size}, {self.sinkhorn_iterations}")
        if not 0.0 < self.p_mask <= 1.0 or self.tau <= 0.0:
            raise ValueError(f"OfficialRecipe needs 0 < p_mask <= 1 and tau > 0, got {self.p_mask}, {self.tau}")
        if not isinstance(getattr(torch.optim, self.optimizer, None), type):
            raise ValueError(f"OfficialRecipe.optimizer must name a torch.optim optimiser, got {self.optimizer!r}")


def gumbel_noise(uniform: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log(u))`` from uniform ones (with the official code's ``1e-20`` guards)."""
    return -torch.log(-torch.log(uniform + 1e-20) + 1e-20)


def _official_scores(model: MSATransformer, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], la: int,
                     recipe: OfficialRecipe, seed: int, fixed: list[dict[int, int]] | None,
                     history: dict | None, context: torch.Tensor | None) -> list[torch.Tensor]:
    """:func:`diffpalm_scores` under :class:`OfficialRecipe` (see there); ``fixed`` as the official
    ``fixed_pairings`` (a species with a single free row left has that pair fixed implicitly)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    q, sizes = model.q, [len(a) for a in a_rows]
    rows, cols, pairs = [], [], []                      # per species: free A rows, free B rows, fixed (i, j)
    for s, m in enumerate(sizes):
        given = dict(fixed[s]) if fixed is not None else {}
        free_a = [i for i in range(m) if i not in given]
        free_b = [j for j in range(m) if j not in given.values()]
        if fixed is not None and len(free_a) == 1:
            given[free_a[0]], free_a, free_b = free_b[0], [], []
        rows.append(torch.tensor(free_a, dtype=torch.long))
        cols.append(torch.tensor(free_b, dtype=torch.long))
        pairs.append(given)
    scores = [(recipe.std_init * torch.randn(len(r), len(r), generator=g)).requires_grad_() for r in rows]
    optimizer = getattr(torch.optim, recipe.optimizer)([{"params": x} for x in scores], lr=recipe.lr,
                                                       weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer) if recipe.plateau else None

    def place(block: torch.Tensor, s: int, background: float, pair: float) -> torch.Tensor:
        """Species ``s``'s ``(m, m)`` matrix: ``block`` on its free rows x columns, ``pair`` at fixed pairs."""
        full = torch.full((sizes[s], sizes[s]), background)
        for i, j in pairs[s].items():
            full[i, j] = pair
        return full.index_put((rows[s][:, None], cols[s][None, :]), block) if len(block) else full

    def matching(x: torch.Tensor, shuffle: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if shuffle is None:
            return F.one_hot(hungarian_assignment(x), len(x)).float()
        r0, r1 = (F.one_hot(perm, len(x)).float() for perm in shuffle)
        return r0.t() @ F.one_hot(hungarian_assignment(r0 @ x @ r1.t()), len(x)).float() @ r1

    a_onehot = F.one_hot(torch.cat(a_rows), q + 1).float()                            # (D, la, q+1)
    b_onehot = F.one_hot(torch.cat(b_rows), q + 1).float()
    mask_vec = F.one_hot(torch.tensor(model.mask_id), q + 1).float()
    starts = [sum(sizes[:s]) for s in range(len(sizes))]
    never_masked = [start + j for start, given in zip(starts, pairs) for j in given.values()]
    iterations, batch = recipe.epochs * recipe.batch_size, recipe.batch_size
    losses, lrs, snapshots, pairings = [], [], [], []
    for it in range(iterations + batch):                 # the last batch only evaluates
        if it % batch == 0:
            snapshots.append([x.detach().clone() for x in scores])
            uniforms = [torch.rand(x.shape, generator=g) if recipe.noise else None for x in scores]
            shuffles = [tuple(torch.randperm(len(x), generator=g) for _ in range(2)) if recipe.rand_perm else None
                        for x in scores]
        factor = recipe.noise_factor
        if recipe.noise_scheduler:
            factor = recipe.noise_factor * optimizer.param_groups[0]["lr"] / recipe.lr
        if recipe.mean_centering:
            with torch.no_grad():
                for x in scores:
                    x -= x.mean()
        hard, soft = [], []
        for s, (x, uniform, shuffle) in enumerate(zip(scores, uniforms, shuffles)):
            if len(x) and recipe.noise:
                x = x + gumbel_noise(uniform) * (factor * x.std() if recipe.noise_std else factor)
            free_hard = matching(x.detach(), shuffle) if len(x) else x.detach()      # empty: all pairs fixed
            free_soft = sinkhorn(x, recipe.tau, recipe.sinkhorn_iterations) if len(x) else x
            hard.append(place(free_hard, s, 0.0, 1.0))
            soft.append(place(free_soft, s, 0.0, 1.0))
        pairings.append([h.argmax(1) for h in hard])
        # permute the A rows (a_perm[j] = sum_i P[i, j] a[i]): hard forward, soft backward
        a_soft = torch.einsum("pq,prs->qrs", torch.block_diag(*soft), a_onehot)
        a_hard = torch.einsum("pq,prs->qrs", torch.block_diag(*hard), a_onehot)
        a_perm = (a_hard - a_soft).detach() + a_soft
        chosen = torch.rand((len(a_perm), la), generator=g) < recipe.p_mask               # A tokens only
        chosen[never_masked] = False                    # the A row beside a fixed pair's B row is its partner
        inputs = torch.cat([torch.where(chosen[..., None], mask_vec, a_perm), b_onehot], dim=1)
        if context is not None:
            inputs = torch.cat([context, inputs])
        logits = model(inputs[None])[0, len(inputs) - len(a_perm):, :la]
        loss = F.cross_entropy(logits[chosen], a_perm[..., :q][chosen]) / batch
        losses.append(loss.item() * batch)
        if it < iterations:
            loss.backward()
            if (it + 1) % batch == 0:
                optimizer.step()
                optimizer.zero_grad()
                if scheduler is not None:
                    scheduler.step(sum(losses[-batch:]))
                lrs.append(optimizer.param_groups[0]["lr"])
    if history is not None:
        history.update(loss=losses, lr=lrs, scores=snapshots, pairings=pairings)
    return [place(x.detach(), s, -math.inf, 0.0) for s, x in enumerate(scores)]


def diffpalm_scores(model: MSATransformer, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], la: int,
                    steps: int = 150, lr: float = 0.1, mask_prob: float = 0.3, tau: tuple[float, float] = (1.0, 0.2),
                    seed: int = 0, fixed: list[dict[int, int]] | None = None,
                    estimator: Literal["soft", "straight_through"] = "soft", recipe: OfficialRecipe | None = None,
                    history: dict | None = None,
                    context: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """DiffPALM's optimisation on one paired MSA: species ``s`` has A rows ``a_rows[s]`` ``(m_s, la)`` and shuffled
    B rows ``b_rows[s]`` ``(m_s, lb)``. Learns per-species scores ``X_s`` so that ``Sinkhorn(X_s / tau)`` (``tau``
    annealed geometrically from ``tau[0]`` to ``tau[1]``) pairs the rows that minimise the frozen model's masked-LM
    loss on the A and B columns; returns the ``X_s``. ``fixed[s]`` maps A rows to B rows already paired (the
    iterative procedure's confident pairs): their entries of ``P`` are a hard one (every other entry of their row
    and column is excluded), so they enter the MSA as paired context and only the other rows are optimised.

    ``estimator="soft"`` (default) feeds the soft permutation ``P @ onehot(B)`` forward and back.
    ``"straight_through"`` is the paper's gradient bypass: the forward pass feeds the *hard* permutation of the
    current scores (:func:`hungarian_assignment`, ties broken by a tiny seeded jitter), so the frozen model always
    sees a real paired MSA, while the gradient flows through the soft one (``hard + soft - soft.detach()``). The
    masks are the same as with ``"soft"`` for the same ``seed``.

    ``recipe=OfficialRecipe(...)`` runs the official code's optimisation instead (:class:`OfficialRecipe`: it
    permutes and masks the A family only, Adadelta with a plateau schedule, optional Gumbel noise, ...) with the
    random numbers of ``torch.manual_seed(seed)``; its fields replace ``steps``, ``lr``, ``mask_prob``, ``tau`` and
    ``estimator``, which must then stay at their defaults. The returned scores are its final (mean-centred)
    scores, ``-inf`` outside the allowed pairs when ``fixed`` is given.

    ``history``: a dict to fill with the per-iteration losses (``"loss"``); with ``recipe`` also the learning rate
    after each step (``"lr"``), the scores at the start of each batch before centring (``"scores"``, the official
    ``list_log_alpha``, free blocks only) and the hard pairings fed forward at each iteration (``"pairings"``).

    ``context``: known pairs ``(A rows (n, la), B rows (n, lb))`` placed above the MSA as extra rows, never masked
    and outside the loss (the official ``positive_examples``)."""
    context_rows = None
    if context is not None:
        context_rows = F.one_hot(torch.cat(context, dim=1), model.q + 1).float()          # (n, la + lb, q+1)
    if recipe is not None:
        defaults = {"steps": 150, "lr": 0.1, "mask_prob": 0.3, "tau": (1.0, 0.2), "estimator": "soft"}
        given = {"steps": steps, "lr": lr, "mask_prob": mask_prob, "tau": tuple(tau), "estimator": estimator}
        changed = [name for name in defaults if given[name] != defaults[name]]
        if changed:
            raise ValueError(f"diffpalm_scores: {', '.join(changed)} do not apply with recipe=OfficialRecipe(...); "
                             "set its fields instead (epochs, lr, p_mask, tau)")
        return _official_scores(model, a_rows, b_rows, la, recipe, seed, fixed, history, context_rows)
    if estimator not in ("soft", "straight_through"):
        raise ValueError(f"estimator must be 'soft' or 'straight_through', got {estimator!r}")
    g = torch.Generator().manual_seed(seed)
    jitter = torch.Generator().manual_seed(seed + 1)            # tie-breaking of the hard forward pass only
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    q = model.q
    scores = [torch.zeros(len(a), len(a), requires_grad=True) for a in a_rows]
    log_allowed = [torch.zeros(len(a), len(a)) for a in a_rows]
    for s, pairs in enumerate(fixed or []):
        for i, j in pairs.items():
            log_allowed[s][i, :], log_allowed[s][:, j] = -math.inf, -math.inf
            log_allowed[s][i, j] = 0.0
    optimizer = torch.optim.Adam(scores, lr=lr)
    a_all = torch.cat(a_rows)
    b_onehot = [F.one_hot(b, q + 1).float() for b in b_rows]
    for step in range(steps):
        tau_now = tau[0] * (tau[1] / tau[0]) ** (step / max(1, steps - 1))
        parts = []
        for x, allowed, b in zip(scores, log_allowed, b_onehot):
            p = sinkhorn(x + allowed * tau_now, tau_now)
            if estimator == "straight_through":
                noise = 1e-6 * torch.rand(x.shape, generator=jitter)
                hard = F.one_hot(hungarian_assignment(x.detach() + allowed + noise), len(x)).to(p.dtype)
                p = hard + p - p.detach()
            parts.append(p @ b.flatten(1))
        b_soft = torch.cat(parts).view(len(a_all), -1, q + 1)
        # mask A tokens (hard ids) and B tokens (their soft one-hots replaced by the mask token)
        a_in, a_mask = mask_tokens(a_all, mask_prob, model.mask_id, g)
        b_mask = torch.rand(b_soft.shape[:2], generator=g) < mask_prob
        mask_vec = F.one_hot(torch.tensor(model.mask_id), q + 1).float()
        b_in = torch.where(b_mask[..., None], mask_vec, b_soft)
        inputs = torch.cat([F.one_hot(a_in, q + 1).float(), b_in], dim=1)
        if context_rows is not None:
            inputs = torch.cat([context_rows, inputs])
        log_p = model(inputs[None])[0, len(inputs) - len(a_all):].log_softmax(-1)     # (R, L, q)
        loss_a = -(log_p[:, :la].gather(-1, a_all[..., None])[..., 0] * a_mask).sum()
        loss_b = -(log_p[:, la:] * b_soft[..., :q] * b_mask[..., None]).sum()         # soft targets
        loss = (loss_a + loss_b) / max(1, int(a_mask.sum() + b_mask.sum()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if history is not None:
            history.setdefault("loss", []).append(loss.item())
    return [(x.detach() + allowed) for x, allowed in zip(scores, log_allowed)]


def diffpalm_pairing(model: MSATransformer, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], la: int,
                     steps: int = 150, lr: float = 0.1, mask_prob: float = 0.3, tau: tuple[float, float] = (1.0, 0.2),
                     seed: int = 0, fixed: list[dict[int, int]] | None = None,
                     assignment: Literal["greedy", "hungarian"] = "greedy", runs: int = 1,
                     average: Literal["soft", "hard"] = "soft",
                     estimator: Literal["soft", "straight_through"] = "soft",
                     recipe: OfficialRecipe | None = None,
                     context: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """DiffPALM on one paired MSA (:func:`diffpalm_scores`): each species' hard pairing ``perm`` (A row ``i`` <->
    B row ``perm[i]``), read off its learned scores by ``assignment``: the greedy maximum (default) or the exact
    maximum-weight permutation (``"hungarian"``, the paper's). With ``runs=K > 1`` the optimisation runs ``K``
    times (run ``k`` with masking seed ``seed + k * RUN_SEED_STRIDE``; run 0 is the single run) and the pairing is
    read off their combination (:func:`combine_runs` with ``average``, at the final temperature ``tau[1]``).
    ``estimator`` is :func:`diffpalm_scores`' (the soft relaxation, or the paper's straight-through hard forward);
    ``recipe=OfficialRecipe(...)`` runs the official code's optimisation instead (:class:`OfficialRecipe`; runs are
    then combined at its ``tau``); ``context`` is :func:`diffpalm_scores`' (known pairs as extra rows)."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment!r}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if average not in ("soft", "hard"):
        raise ValueError(f"average must be 'soft' or 'hard', got {average!r}")
    every = [diffpalm_scores(model, a_rows, b_rows, la, steps, lr, mask_prob, tau, seed + k * RUN_SEED_STRIDE, fixed,
                             estimator, recipe, context=context) for k in range(runs)]
    scores = every[0] if runs == 1 else combine_runs(every, tau[1] if recipe is None else recipe.tau, average)
    return [ASSIGNMENTS[assignment](x) for x in scores]


def diffpalm_iterative(model: MSATransformer, a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], la: int,
                       rounds: int = 3, steps: int = 150, tau: tuple[float, float] = (1.0, 0.2), seed: int = 0,
                       return_rounds: bool = False, assignment: Literal["greedy", "hungarian"] = "greedy",
                       **kwargs) -> list[torch.Tensor] | list[list[torch.Tensor]]:
    """DiffPALM with the paper's iterative fixing of confident pairs: after each round the most confident of the
    still-free pairs (the largest entries ``P[i, perm[i]]`` of the final soft permutation, over all species; a
    ``1 / (rounds - r)`` share of them in round ``r``, so the last round places the rest) are fixed and enter the
    next round as paired context (:func:`diffpalm_scores`' ``fixed``). Returns the hard pairings (with
    ``return_rounds``, those of every round: round 0 is :func:`diffpalm_pairing` with the same ``seed``). Each
    round's hard pairing is read off by ``assignment`` (as in :func:`diffpalm_pairing`). With
    ``recipe=OfficialRecipe(...)`` (passed on to :func:`diffpalm_scores`) the confidences are read at its ``tau``."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment!r}")
    fixed: list[dict[int, int]] = [{} for _ in a_rows]
    total = sum(len(a) for a in a_rows)
    history = []
    for r in range(rounds):
        scores = diffpalm_scores(model, a_rows, b_rows, la, steps=steps, tau=tau, seed=seed + r, fixed=fixed, **kwargs)
        perms = [ASSIGNMENTS[assignment](x) for x in scores]
        history.append(perms)
        free = total - sum(len(f) for f in fixed)
        if r == rounds - 1 or free == 0:
            break
        candidates = []
        for s, (x, perm) in enumerate(zip(scores, perms)):
            p = sinkhorn(x, tau[1] if kwargs.get("recipe") is None else kwargs["recipe"].tau, iterations=50)
            candidates += [(float(p[i, perm[i]]), s, i, int(perm[i])) for i in range(len(perm)) if i not in fixed[s]]
        candidates.sort(reverse=True)
        for _, s, i, j in candidates[:math.ceil(free / (rounds - r))]:
            fixed[s][i] = j
    return history if return_rounds else history[-1]


def pmi_tables(a: torch.Tensor, b: torch.Tensor, q: int, pseudocount: float = 0.15) -> torch.Tensor:
    """``(la, lb, q, q)`` pointwise mutual information ``ln f_ij(x, y) / (f_i(x) f_j(y))`` between every A column ``i``
    and B column ``j`` of the paired rows ``a`` ``(n, la)``, ``b`` ``(n, lb)``, frequencies with a pseudocount as
    in MI-IPA (Bitbol et al. 2016): ``f = (1 - lambda) counts / n + lambda / q`` (``lambda / q^2`` for pairs)."""
    oa, ob = F.one_hot(a, q).double(), F.one_hot(b, q).double()
    n, lam = len(a), pseudocount
    fa = (1 - lam) * oa.mean(0) + lam / q
    fb = (1 - lam) * ob.mean(0) + lam / q
    fab = (1 - lam) * torch.einsum("nix,njy->ijxy", oa, ob) / n + lam / q ** 2
    return (fab / (fa[:, None, :, None] * fb[None, :, None, :])).log()


def pmi_pair_scores(pmi: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(m, m)`` scores ``S[k, l] = sum_{i in A, j in B} T_ij(a_k,i, b_l,j)`` of pairing A row k with B row l, for
    any ``(la, lb, q, q)`` table ``T``: the PMI (MI-IPA) or the mean-field DCA couplings (DCA-IPA)."""
    q = pmi.shape[-1]
    return torch.einsum("kix,ijxy,ljy->kl", F.one_hot(a, q).double(), pmi, F.one_hot(b, q).double())


def potts_frequencies(x: torch.Tensor, q: int, pseudocount: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One- and two-site frequencies ``f_i(a)`` ``(L, q)`` and ``f_ij(a, b)`` ``(L, L, q, q)`` of the rows ``x``
    ``(n, L)``, with the pseudocount of mean-field DCA (Morcos et al. 2011; Bitbol et al. 2016):
    ``f_i = (1 - lambda) counts / n + lambda / q``, ``f_ij = (1 - lambda) counts / n + lambda / q^2`` for ``i != j``
    and ``f_ii(a, b) = f_i(a) delta_ab`` (consistent marginals)."""
    onehot, lam, length = F.one_hot(x, q).double(), pseudocount, x.shape[1]
    f_i = (1 - lam) * onehot.mean(0) + lam / q
    f_ij = (1 - lam) * torch.einsum("nia,njb->ijab", onehot, onehot) / len(x) + lam / q ** 2
    f_ij[torch.arange(length), torch.arange(length)] = torch.diag_embed(f_i)
    return f_i, f_ij


def zero_sum_gauge(e: torch.Tensor) -> torch.Tensor:
    """Couplings ``(..., q, q)`` in the zero-sum (Ising) gauge: every row and column of each block sums to zero."""
    return e - e.mean(-1, keepdim=True) - e.mean(-2, keepdim=True) + e.mean((-2, -1), keepdim=True)


def mean_field_couplings(f_i: torch.Tensor, f_ij: torch.Tensor) -> torch.Tensor:
    """Mean-field DCA couplings ``(L, L, q, q)`` from the frequencies (:func:`potts_frequencies`): the connected
    correlations ``C_ij(a, b) = f_ij(a, b) - f_i(a) f_j(b)`` over the first ``q - 1`` states (the last is the
    reference state, lattice-gas gauge) form an ``L(q-1)`` square matrix, and ``e_ij(a, b) = -(C^-1)_ij(a, b)``,
    ``e_ij(a, q) = e_ij(q, b) = 0``; returned in the zero-sum gauge, with ``e_ii = 0``. Convention: ``P(x) ~
    exp(sum_i h_i(x_i) + sum_{i<j} e_ij(x_i, x_j))``, so a larger coupling sum is a more likely sequence (a pair's
    score is minus its interaction energy under an energy ``H = -sum h - sum e``)."""
    length, q = f_i.shape
    c = f_ij - f_i[:, None, :, None] * f_i[None, :, None, :]
    reduced = c[:, :, :q - 1, :q - 1].permute(0, 2, 1, 3).reshape(length * (q - 1), length * (q - 1))
    inverse = torch.linalg.inv(reduced).reshape(length, q - 1, length, q - 1).permute(0, 2, 1, 3)
    e = torch.zeros(length, length, q, q, dtype=f_i.dtype)
    e[:, :, :q - 1, :q - 1] = -inverse
    e = zero_sum_gauge(e)
    e[torch.arange(length), torch.arange(length)] = 0.0
    return e


def dca_tables(a: torch.Tensor, b: torch.Tensor, q: int, pseudocount: float = 0.5) -> torch.Tensor:
    """``(la, lb, q, q)`` inter-family mean-field DCA couplings (:func:`mean_field_couplings`) inferred from the
    concatenated paired rows ``a|b`` (the whole A|B model is inferred; its A x B block is returned)."""
    e = mean_field_couplings(*potts_frequencies(torch.cat([a, b], dim=1), q, pseudocount))
    return e[:a.shape[1], a.shape[1]:]


def iterative_pairing(a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], q: int, tables,
                      increment: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    """The Iterative Pairing Algorithm (IPA, Bitbol et al. 2016), started without known pairs: the first training
    set is a random pairing within each species; each iteration fits ``tables(a, b, q)`` -> ``(la, lb, q, q)`` on
    the current training pairs, scores every within-species pair by the summed table entries
    (:func:`pmi_pair_scores`), assigns each species greedily, ranks the assigned pairs by their confidence gap
    (score minus the best alternative in its row or column) and takes the ``n * increment`` most confident as the
    next training set, until all pairs are in. Returns the hard pairings. Not here: the paper's sequence
    reweighting (our rows are independent samples) and its Hungarian assignment."""
    g = torch.Generator().manual_seed(seed)
    total = sum(len(a) for a in a_rows)
    increment = increment or max(1, total // 6)
    train = [(s, i, int(j)) for s, a in enumerate(a_rows) for i, j in enumerate(torch.randperm(len(a), generator=g))]
    n = 1
    while True:
        table = tables(torch.stack([a_rows[s][i] for s, i, _ in train]),
                       torch.stack([b_rows[s][j] for s, _, j in train]), q)
        perms, ranked = [], []
        for s, (a, b) in enumerate(zip(a_rows, b_rows)):
            scores = pmi_pair_scores(table, a, b)
            perm = greedy_assignment(scores)
            perms.append(perm)
            for i, j in enumerate(perm.tolist()):
                others = torch.cat([scores[i, torch.arange(len(perm)) != j], scores[torch.arange(len(perm)) != i, j]])
                gap = float(scores[i, j] - others.max()) if len(others) else math.inf
                ranked.append((gap, s, i, j))
        if n * increment >= total:
            return perms
        ranked.sort(reverse=True)
        train = [(s, i, j) for _, s, i, j in ranked[:n * increment]]
        n += 1


def mi_ipa(a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], q: int, increment: int | None = None,
           pseudocount: float = 0.15, seed: int = 0) -> list[torch.Tensor]:
    """MI-IPA (Bitbol, PLoS Comput Biol 2018; the DiffPALM paper's coevolution baseline): the IPA
    (:func:`iterative_pairing`) scoring pairs by their summed pointwise mutual information (:func:`pmi_tables`,
    pseudocount 0.15)."""
    return iterative_pairing(a_rows, b_rows, q, lambda a, b, q: pmi_tables(a, b, q, pseudocount), increment, seed)


def dca_ipa(a_rows: list[torch.Tensor], b_rows: list[torch.Tensor], q: int, increment: int | None = None,
            pseudocount: float = 0.5, seed: int = 0) -> list[torch.Tensor]:
    """DCA-IPA (Bitbol, Dwyer, Colwell & Wingreen, PNAS 2016): the IPA (:func:`iterative_pairing`) scoring pairs by
    their inter-family coupling sum ``sum_{i in A, j in B} e_ij(a_i, b_j)`` under the mean-field Potts couplings
    inferred from the current training pairs (:func:`dca_tables`; pseudocount 0.5 as in the paper, zero-sum gauge,
    no APC or Frobenius norm: the couplings themselves score the pair)."""
    return iterative_pairing(a_rows, b_rows, q, lambda a, b, q: dca_tables(a, b, q, pseudocount), increment, seed)


def pairing_precision(perms: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    """Fraction of A rows paired to their true B partner (over all species)."""
    right = sum(int((p == t).sum()) for p, t in zip(perms, truths))
    return right / sum(len(t) for t in truths)


__all__ = ["ASSIGNMENTS", "RUN_SEED_STRIDE", "AxialLayer", "MSATransformer", "OfficialRecipe", "PottsPairs",
           "combine_runs", "dca_ipa", "dca_tables", "diffpalm_iterative", "diffpalm_pairing", "diffpalm_scores",
           "greedy_assignment", "gumbel_noise", "hungarian_assignment", "iterative_pairing", "mask_tokens",
           "mean_field_couplings", "mi_ipa", "pairing_precision", "pmi_pair_scores", "pmi_tables", "potts_frequencies",
           "sinkhorn", "train_msa_lm", "zero_sum_gauge"]
