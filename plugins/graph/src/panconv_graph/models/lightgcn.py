"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020), as in the paper and its reference code (gusye1234/LightGCN-PyTorch).

* Graph: Â = D^-1/2 A D^-1/2 of the bipartite user-item graph, no self-loops (Eq. 7).
* Propagation: E^(k+1) = Â E^(k), no feature transform, no nonlinearity (Eq. 3).
* Layer combination: E = sum_k α_k E^(k) with α_k = 1/(K+1) (Eq. 4).
* Score: y_ui = e_u · e_i (Eq. 5); BPR loss with L2 on the layer-0 embeddings of the batch,
  ``reg * 0.5 * (||e_u^0||^2 + ||e_i^0||^2 + ||e_j^0||^2) / batch_size`` (reference ``bpr_loss``).
* Init N(0, 0.1); defaults: 64-dim embeddings, 3 layers, reg 1e-4 (Sec. 4.1.2).

Training computes only the final embeddings of the batch's users and items: the last forward
hop and the first backward hop then touch only their edges (``kernels.spmm.lightgcn_propagate``).
``backend="pyg"`` runs the same propagation with ``torch_geometric.nn.LGConv`` instead.

Device path: where ``graph.spmm_sym`` runs its Triton kernel (CUDA; the CPU under
``TRITON_INTERPRET=1``), a training step gathers the batch's rows straight from the repeated node
ids (no ``torch.unique``, whose output size is read on the host) and the row-restricted hops use
the Triton row kernels (``kernels.spmm._LightGCNRowsDevice``): nothing in the step waits for the
host. The CPU path (``torch.sparse``, unique rows) is unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt

from ..kernels.spmm import lightgcn_propagate, uses_triton
from .layers import BPRRecommender


class LightGCN(BPRRecommender):
    """LightGCN. ``n_users``/``n_items`` come from the dataset metadata; the graph from
    ``attach_data(train_dataset)``."""

    def __init__(self, n_users: Annotated[int, Ge(1)], n_items: Annotated[int, Ge(1)],
                 embed_dim: Annotated[int, Ge(1)] = 64, n_layers: Annotated[int, Ge(0)] = 3,
                 reg: Annotated[float, Ge(0)] = 1e-4, init_std: Annotated[float, Gt(0)] = 0.1,
                 backend: Literal["csr", "pyg"] = "csr"):
        super().__init__(n_users, n_items, embed_dim, reg, init_std)
        if backend not in ("csr", "pyg"):
            raise ValueError(f"LightGCN: backend must be 'csr' or 'pyg', got {backend!r}")
        if n_layers < 0:
            raise ValueError(f"LightGCN: n_layers must be >= 0, got {n_layers}")
        self.n_layers, self.backend = int(n_layers), backend
        self._edge_index = None

    def _final_embeddings(self, nodes: torch.Tensor | None) -> torch.Tensor:
        adj = self._graph()
        emb = self.ego_embeddings()
        if self.backend == "pyg":
            out = self._propagate_pyg(adj, emb)
            return out if nodes is None else out[nodes]
        return lightgcn_propagate(adj, emb, self.n_layers, nodes)

    def forward(self, batch: dict):
        if "pos" in batch and self.backend == "csr" and uses_triton(self._graph(), self.embedding.weight):
            users, pos, neg = batch["users"], batch["pos"], batch["neg"]
            nodes = torch.cat([users, pos + self.n_users, neg + self.n_users])
            final = lightgcn_propagate(self._graph(), self.ego_embeddings(), self.n_layers, nodes)  # rows may repeat
            b = users.shape[0]
            ego = self.embedding.weight.index_select(0, nodes)  # backward: index_add_ (the embedding op may sort)
            return {"users": final[:b], "pos": final[b:2 * b], "neg": final[2 * b:], "ego": ego}
        return super().forward(batch)

    def _propagate_pyg(self, adj: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        from torch_geometric.nn import LGConv

        if self._edge_index is None or self._edge_index.device != emb.device:
            coo = adj.to_sparse_coo().coalesce()
            self._edge_index = coo.indices()
        conv = LGConv(normalize=True)  # gcn_norm without self-loops == Â
        acc, cur = emb, emb
        for _ in range(self.n_layers):
            cur = conv(cur, self._edge_index)
            acc = acc + cur
        return acc / (self.n_layers + 1)

    @classmethod
    def example_config(cls) -> dict:
        return {"n_users": 5, "n_items": 7, "embed_dim": 8, "n_layers": 2}


# ---- weights from the reference code ----------------------------------------------------------
def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference code's weights (gusye1234/LightGCN-PyTorch: ``LightGCN`` or ``PureMF``, whose state dict, as
    its ``.pth.tar`` files hold it, is ``embedding_user.weight`` (n_users, d) and ``embedding_item.weight``
    (n_items, d)) -> ours: ``embedding.weight``, users then items ((n_users + n_items, d)), for :class:`LightGCN` and
    :class:`~panconv_graph.models.mf.MF` alike. The ids are the reference code's (the same data files; ``n_users`` /
    ``n_items`` = 1 + the largest id), so nothing is re-indexed. A ``module.`` prefix is stripped; a missing table,
    tables of different widths or any other key raise a KeyError / ValueError naming it.
    """
    tables = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name not in ("embedding_user.weight", "embedding_item.weight"):
            raise KeyError(f"unexpected key in a LightGCN-PyTorch state dict: {key}")
        tables[name] = value
    for name in ("embedding_user.weight", "embedding_item.weight"):
        if name not in tables:
            raise KeyError(f"missing key in a LightGCN-PyTorch state dict: {name}")
    users, items = tables["embedding_user.weight"], tables["embedding_item.weight"]
    if users.dim() != 2 or items.dim() != 2 or users.shape[1] != items.shape[1]:
        raise ValueError(f"LightGCN-PyTorch embeddings of different widths or ranks: users {list(users.shape)}, "
                         f"items {list(items.shape)}")
    return {"embedding.weight": torch.cat([users, items])}
