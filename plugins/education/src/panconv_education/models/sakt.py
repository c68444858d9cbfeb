"""SAKT (Pandey & Karypis, "A Self-Attentive model for Knowledge Tracing", EDM 2019).

Sec. 3 of the paper: the interactions ``y_t = e_t + r_t E`` are embedded (``M``) and given a learned
position embedding (``M^ = M + P``, Eq. in Sec. 3.2); the next exercises are embedded (``E``) and are
the queries. One multi-head attention layer with a causal mask (the query for ``e_{t+1}`` sees the
interactions ``1 .. t`` only), ``S = LayerNorm(E + Attention(E W^Q, M^ W^K, M^ W^V))``; a position-wise
feed-forward ``F = LayerNorm(S + ReLU(S W_1 + b_1) W_2 + b_2)`` (residual connections and layer
normalisation, Sec. 3.4), dropout; ``p = sigmoid(F w + b)``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Interval
from torch import nn

from .layers import KnowledgeTracingModel, interaction_tokens


class SAKT(KnowledgeTracingModel):
    """Self-attention of the next exercise over the past interactions (causal)."""

    metadata_inputs = ("num_skills", "max_len")

    def __init__(self, num_skills: Annotated[int, Ge(1)], max_len: Annotated[int, Ge(2)] = 200,
                 embed_dim: Annotated[int, Ge(1)] = 64, num_heads: Annotated[int, Ge(1)] = 4,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"SAKT: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if not 0 <= dropout < 1:
            raise ValueError(f"SAKT: dropout must be in [0, 1), got {dropout}")
        self.num_skills, self.max_len = num_skills, max_len
        self.interaction_embedding = nn.Embedding(2 * num_skills + 1, embed_dim, padding_idx=0)   # M
        self.exercise_embedding = nn.Embedding(num_skills + 1, embed_dim, padding_idx=0)          # E
        self.position_embedding = nn.Embedding(max_len, embed_dim)                                # P
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(embed_dim, embed_dim))
        self.norm2 = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, 1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_skills": 7, "max_len": 12, "embed_dim": 16, "num_heads": 2}

    def forward(self, batch: dict) -> torch.Tensor:
        skills = batch["skills"]
        steps = skills.shape[1] - 1
        if skills.shape[1] > self.max_len:
            raise ValueError(f"SAKT: sequences of {skills.shape[1]} answers, but max_len is {self.max_len}")
        tokens = interaction_tokens(skills, batch["responses"], self.num_skills)[:, :-1]
        positions = torch.arange(steps, device=skills.device)
        keys = self.interaction_embedding(tokens) + self.position_embedding(positions)    # M^ (B, T-1, d)
        queries = self.exercise_embedding(skills[:, 1:])                                  # E (B, T-1, d)
        causal = torch.ones(steps, steps, dtype=torch.bool, device=skills.device).triu(1)  # True: not allowed
        attended, _ = self.attention(queries, keys, keys, attn_mask=causal, need_weights=False)
        s = self.norm1(queries + self.dropout(attended))
        f = self.norm2(s + self.dropout(self.ffn(s)))
        return self.out(f).squeeze(-1)
