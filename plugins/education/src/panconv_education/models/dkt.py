"""DKT (Piech et al., "Deep Knowledge Tracing", NeurIPS 2015).

Eq. 1-2 of the paper: ``h_t = LSTM(x_t, h_{t-1})``, ``y_t = sigmoid(W_yh h_t + b_y)``, one probability
per skill; the prediction for ``r_{t+1}`` is the entry of ``y_t`` for ``q_{t+1}``. The one-hot input
``x_t`` (of ``2 * num_skills``) is an embedding table here (the same linear map, indexed); dropout on
the LSTM output as in the paper. The initial LSTM state is zero.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Interval
from torch import nn

from .layers import KnowledgeTracingModel, gather_next, interaction_tokens


class DKT(KnowledgeTracingModel):
    """An LSTM over the interactions; a sigmoid per skill."""

    def __init__(self, num_skills: Annotated[int, Ge(1)], embed_dim: Annotated[int, Ge(1)] = 200,
                 hidden_dim: Annotated[int, Ge(1)] = 200, num_layers: Annotated[int, Ge(1)] = 1,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"DKT: dropout must be in [0, 1), got {dropout}")
        self.num_skills = num_skills
        self.embedding = nn.Embedding(2 * num_skills + 1, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, num_skills)

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.embedding(interaction_tokens(batch["skills"], batch["responses"], self.num_skills))
        h, _ = self.lstm(x[:, :-1])  # zero initial state; the last step predicts nothing
        return gather_next(self.out(self.dropout(h)), batch["skills"])
