"""MF-BPR (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009):
y_ui = e_u · e_i on free embeddings, the same BPR loss and L2 term as LightGCN (the K = 0 case of
LightGCN, and the MF baseline of the LightGCN/NGCF papers)."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt

from .layers import BPRRecommender


class MF(BPRRecommender):
    """Matrix factorisation trained with BPR (no graph)."""

    needs_graph = False

    def __init__(self, n_users: Annotated[int, Ge(1)], n_items: Annotated[int, Ge(1)],
                 embed_dim: Annotated[int, Ge(1)] = 64, reg: Annotated[float, Ge(0)] = 1e-4,
                 init_std: Annotated[float, Gt(0)] = 0.1):
        super().__init__(n_users, n_items, embed_dim, reg, init_std)

    def _final_embeddings(self, nodes: torch.Tensor | None) -> torch.Tensor:
        emb = self.ego_embeddings()
        return emb if nodes is None else emb[nodes]
