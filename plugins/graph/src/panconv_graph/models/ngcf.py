"""NGCF (Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019).

Layer l (Eq. 7, matrix form): E^(l) = LeakyReLU( (L + I) E^(l-1) W1 + (L E^(l-1) ⊙ E^(l-1)) W2 ),
L = D^-1/2 A D^-1/2 (the same normalised bipartite adjacency as LightGCN), LeakyReLU slope 0.2,
message dropout after each layer, optional node (edge) dropout on L during training; the final
representation concatenates E^(0) and the L2-normalised E^(1..L) (as the reference code does),
the score is their inner product, trained with BPR + L2 on the layer-0 embeddings of the batch.

Node dropout here drops undirected edges of L (both directions at once, kept entries scaled by
1/(1-p)) so the matrix stays symmetric and the symmetric sparse kernel applies.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from ..kernels.spmm import make_csr, spmm_sym
from .layers import BPRRecommender


def drop_edges_symmetric(adj: torch.Tensor, p: float) -> torch.Tensor:
    """Drop each undirected edge of a symmetric CSR matrix with probability ``p`` (rescale 1/(1-p))."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    n = adj.shape[0]
    row = torch.repeat_interleave(torch.arange(n, device=col.device), crow.diff())
    lo, hi = torch.minimum(row, col), torch.maximum(row, col)
    # one coin per undirected edge: hash the unordered pair into a per-call random table
    pair = lo * n + hi
    _, inverse = torch.unique(pair, return_inverse=True)
    keep = torch.rand(int(inverse.max()) + 1, device=col.device) >= p
    mask = keep[inverse]
    new_val = torch.where(mask, val / (1 - p), torch.zeros_like(val))
    return make_csr(crow, col, new_val, adj.shape)


class NGCF(BPRRecommender):
    """NGCF with ``len(layer_dims)`` propagation layers (default 3 x 64)."""

    def __init__(self, n_users: Annotated[int, Ge(1)], n_items: Annotated[int, Ge(1)],
                 embed_dim: Annotated[int, Ge(1)] = 64,
                 layer_dims: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (64, 64, 64),
                 reg: Annotated[float, Ge(0)] = 1e-4, init_std: Annotated[float, Gt(0)] = 0.1,
                 mess_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 node_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 leaky_slope: Annotated[float, Ge(0)] = 0.2):
        super().__init__(n_users, n_items, embed_dim, reg, init_std)
        widths = list(layer_dims) if isinstance(layer_dims, (list, tuple)) else []
        if not widths or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in widths):
            raise ValueError(f"NGCF: layer_dims must be a non-empty list of positive integers, got {layer_dims!r}")
        for arg, p in (("mess_dropout", mess_dropout), ("node_dropout", node_dropout)):
            if not 0 <= p < 1:
                raise ValueError(f"NGCF: {arg} must be in [0, 1), got {p}")
        dims = [self.embed_dim, *(int(d) for d in widths)]
        self.W1 = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.W2 = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for lin in [*self.W1, *self.W2]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.mess_dropout, self.node_dropout, self.leaky_slope = float(mess_dropout), float(node_dropout), leaky_slope

    def _final_embeddings(self, nodes: torch.Tensor | None) -> torch.Tensor:
        adj = self._graph()
        if self.training and self.node_dropout > 0:
            adj = drop_edges_symmetric(adj, self.node_dropout)
        ego = self.ego_embeddings()
        outs = [ego]
        for w1, w2 in zip(self.W1, self.W2):
            side = spmm_sym(adj, ego)                                  # L E
            ego = F.leaky_relu(w1(side + ego) + w2(side * ego), self.leaky_slope)
            ego = F.dropout(ego, self.mess_dropout, self.training)
            outs.append(F.normalize(ego, p=2, dim=1))
        out = torch.cat(outs, 1)
        return out if nodes is None else out[nodes]

    @classmethod
    def example_config(cls) -> dict:
        return {"n_users": 5, "n_items": 7, "embed_dim": 8, "layer_dims": [8, 8]}
