"""What MF-BPR, LightGCN and NGCF share: embedding tables, the BPR objective, full-ranking scores.

Batches (from ``graph.RecSysData``): training ``{"users", "pos", "neg"}``; evaluation
``{"users", ...}``. ``forward`` returns the final embeddings of the batch (training) or the
scores of every item for each batch user (evaluation, a lazy ``UserItemScores``); ``loss`` is BPR plus the reference
code's L2 term on the layer-0 embeddings of the batch:
``reg * 0.5 * (||e_u||^2 + ||e_i||^2 + ||e_j||^2) / batch_size`` (LightGCN-PyTorch ``bpr_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import Model
from panconv.errors import ConfigError

from ..evaluators.ranking import UserItemScores


class BPRRecommender(Model):
    """Base of the user-item embedding models trained with BPR.

    Subclasses implement ``_final_embeddings(batch_nodes)`` (the final embeddings of the
    requested user/item node ids, ``None`` for all nodes). Node ids: users ``0..n_users-1``,
    items ``n_users + item``.
    """

    needs_graph = True

    def __init__(self, n_users: int, n_items: int, embed_dim: int = 64, reg: float = 1e-4,
                 init_std: float = 0.1):
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ConfigError(f"{type(self).__name__}: n_users and n_items must be positive "
                              f"(got {n_users}, {n_items}); they come from the dataset metadata")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.embed_dim, self.reg = int(embed_dim), float(reg)
        # one table for users (rows 0..n_users-1) and items (rows n_users..): the graph's node order
        self.embedding = nn.Embedding(self.n_users + self.n_items, self.embed_dim)
        nn.init.normal_(self.embedding.weight, std=init_std)  # LightGCN Sec. 4.1.2: N(0, 0.1)
        self.adj: torch.Tensor | None = None
        self._cache: tuple | None = None

    # ---- graph
    def attach_data(self, dataset) -> None:
        """Build the normalised adjacency from the training interactions of ``dataset``."""
        from ..kernels.spmm import normalized_adjacency

        if (dataset.n_users, dataset.n_items) != (self.n_users, self.n_items):
            raise ConfigError(f"{type(self).__name__}: built for {self.n_users} users / {self.n_items} items "
                              f"but the data has {dataset.n_users} / {dataset.n_items}")
        if not self.needs_graph:
            return
        users, items = dataset.interactions()
        self.adj = normalized_adjacency(users, items, self.n_users, self.n_items)
        self._cache = None

    def _graph(self) -> torch.Tensor:
        if self.adj is None:
            raise ConfigError(f"{type(self).__name__} has no graph: call model.attach_data(train_dataset) "
                              f"first (the engine does this before training and evaluation)")
        device = self.embedding.weight.device
        if self.adj.device != device:
            self.adj = self.adj.to(device)
        return self.adj

    def ego_embeddings(self) -> torch.Tensor:
        """Layer-0 embeddings of every node (users first, then items)."""
        return self.embedding.weight

    @property
    def user_weight(self) -> torch.Tensor:
        return self.embedding.weight[: self.n_users]

    @property
    def item_weight(self) -> torch.Tensor:
        return self.embedding.weight[self.n_users:]

    def _final_embeddings(self, nodes: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # ---- evaluation cache: propagate once per evaluation
    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def all_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings of every node; cached while in eval mode and unchanged."""
        version = tuple(p._version for p in self.parameters())
        if self.training or self._cache is None or self._cache[0] != version:
            with torch.no_grad():
                out = self._final_embeddings(None)
            users, items = out[: self.n_users], out[self.n_users:]
            if self.training:
                return users, items
            self._cache = (version, users, items)
        return self._cache[1], self._cache[2]

    # ---- Model protocol
    def forward(self, batch: dict):
        users = batch["users"]
        if "pos" not in batch:  # ranking: scores of every item for each user, computed when ranked
            user_emb, item_emb = self.all_embeddings()
            return UserItemScores(user_emb[users], item_emb)
        pos, neg = batch["pos"], batch["neg"]
        nodes = torch.cat([users, pos + self.n_users, neg + self.n_users])
        unique, inverse = torch.unique(nodes, return_inverse=True)
        final = self._final_embeddings(unique)[inverse]
        ego = self.embedding(nodes)  # layer-0 embeddings of the batch, for the L2 term
        b = users.shape[0]
        return {"users": final[:b], "pos": final[b:2 * b], "neg": final[2 * b:], "ego": ego}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        u, p, n = outputs["users"], outputs["pos"], outputs["neg"]
        pos_scores = (u * p).sum(-1)
        neg_scores = (u * n).sum(-1)
        bpr = F.softplus(neg_scores - pos_scores).mean()  # -ln sigmoid(pos - neg), Eq. 15
        # ||e_u^0||^2 + ||e_i^0||^2 + ||e_j^0||^2 summed over the batch, halved, / batch size
        l2 = 0.5 * outputs["ego"].pow(2).sum() / u.shape[0]
        return {"loss": bpr, "loss_reg": self.reg * l2}

    def predict(self, outputs, batch: dict | None = None):
        """Scores ``(batch users, n_items)`` as ``UserItemScores`` (``.dense()`` for the matrix);
        ``graph.FullRanking`` scores, masks seen items and ranks them block by block."""
        return outputs

    # ---- conformance-kit examples
    @classmethod
    def example_config(cls) -> dict:
        return {"n_users": 5, "n_items": 7, "embed_dim": 8}

    def example_data(self):
        """A tiny in-memory stand-in for a training dataset (for ``attach_data``)."""
        import numpy as np

        class _Tiny:
            n_users, n_items = self.n_users, self.n_items

            @staticmethod
            def interactions():
                users = np.arange(max(self.n_users, self.n_items)) % self.n_users
                items = np.arange(max(self.n_users, self.n_items)) % self.n_items
                return users, items

        return _Tiny()

    def example_inputs(self, batch_size: int = 2) -> dict:
        if self.adj is None and self.needs_graph:
            self.attach_data(self.example_data())
        g = torch.Generator().manual_seed(0)
        return {"users": torch.randint(0, self.n_users, (batch_size,), generator=g),
                "pos": torch.randint(0, self.n_items, (batch_size,), generator=g),
                "neg": torch.randint(0, self.n_items, (batch_size,), generator=g)}
