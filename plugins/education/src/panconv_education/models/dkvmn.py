"""DKVMN (Zhang et al., "Dynamic Key-Value Memory Networks for Knowledge Tracing", WWW 2017).

A static key memory ``M^k`` (``N x d_k``, one slot per latent concept) and a value memory ``M^v_t``
(``N x d_v``, the student's mastery of each concept, starting from a learned ``M^v_0``).

* attention (Eq. 1): ``w_t = softmax(M^k k_t)``, ``k_t = A q_t`` the skill's key embedding;
* read (Eq. 2-4): ``r_t = sum_i w_t(i) M^v_t(i)``, ``f_t = tanh(W_1 [r_t, k_t] + b_1)``,
  ``p_t = sigmoid(W_2 f_t + b_2)``;
* write (Eq. 5-8) with ``v_t = B (q_t, r_t)`` the interaction embedding: erase ``e_t = sigmoid(E v_t + b_e)``,
  ``M~^v(i) = M^v_{t-1}(i) (1 - w_t(i) e_t)``; add ``a_t = tanh(D v_t + b_a)``, ``M^v_t(i) = M~^v(i) + w_t(i) a_t``.

``p_{t+1}`` is read with ``q_{t+1}``'s key from the memory written with the interactions up to ``t``.
Defaults: the DKVMN release's settings for assist2009_updated (``N = 20``, ``d_k = 50``, ``d_v = 200``,
summary 50).
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge
from torch import nn

from .layers import KnowledgeTracingModel, interaction_tokens


class DKVMN(KnowledgeTracingModel):
    """Key-value memory with a softmax-attention read head and an erase/add write head."""

    def __init__(self, num_skills: Annotated[int, Ge(1)], memory_size: Annotated[int, Ge(1)] = 20,
                 key_dim: Annotated[int, Ge(1)] = 50, value_dim: Annotated[int, Ge(1)] = 200,
                 summary_dim: Annotated[int, Ge(1)] = 50, init_std: Annotated[float, Ge(0)] = 0.1):
        super().__init__()
        self.num_skills = num_skills
        self.key_embedding = nn.Embedding(num_skills + 1, key_dim, padding_idx=0)            # A
        self.value_embedding = nn.Embedding(2 * num_skills + 1, value_dim, padding_idx=0)    # B
        self.key_memory = nn.Parameter(torch.randn(memory_size, key_dim) * init_std)         # M^k
        self.value_memory = nn.Parameter(torch.randn(memory_size, value_dim) * init_std)     # M^v_0
        self.erase = nn.Linear(value_dim, value_dim)                                         # E, b_e
        self.add = nn.Linear(value_dim, value_dim)                                           # D, b_a
        self.summary = nn.Linear(value_dim + key_dim, summary_dim)                           # W_1, b_1
        self.out = nn.Linear(summary_dim, 1)                                                 # W_2, b_2

    def attention(self, keys: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``w = softmax(M^k k)`` over the ``N`` slots (``..., N``)."""
        return torch.softmax(keys @ self.key_memory.t(), dim=-1)

    @staticmethod
    def read(weights: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Eq. 2: ``r = sum_i w(i) M^v(i)``; ``weights (B, N)``, ``memory (B, N, d_v)``."""
        return torch.einsum("bn,bnd->bd", weights, memory)

    def write(self, weights: torch.Tensor, memory: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Eq. 5-8: erase then add, each slot in proportion to its attention weight."""
        erase = torch.sigmoid(self.erase(values))                                        # e_t (B, d_v)
        add = torch.tanh(self.add(values))                                               # a_t (B, d_v)
        w = weights.unsqueeze(-1)                                                        # (B, N, 1)
        return memory * (1 - w * erase.unsqueeze(1)) + w * add.unsqueeze(1)

    def forward(self, batch: dict) -> torch.Tensor:
        skills = batch["skills"]
        keys = self.key_embedding(skills)                                                # k_t (B, T, d_k)
        weights = self.attention(keys)                                                   # w_t (B, T, N)
        values = self.value_embedding(interaction_tokens(skills, batch["responses"], self.num_skills))
        memory = self.value_memory.unsqueeze(0).expand(skills.shape[0], -1, -1)
        reads = []
        for t in range(1, skills.shape[1]):
            memory = self.write(weights[:, t - 1], memory, values[:, t - 1])             # after (q_t, r_t)
            reads.append(self.read(weights[:, t], memory))                               # r_{t+1}
        if not reads:
            return keys.new_zeros(skills.shape[0], 0)
        r = torch.stack(reads, dim=1)                                                    # (B, T - 1, d_v)
        f = torch.tanh(self.summary(torch.cat([r, keys[:, 1:]], dim=-1)))                # Eq. 3
        return self.out(f).squeeze(-1)                                                   # Eq. 4 (logits)
