"""What MF-BPR, LightGCN and NGCF share: embedding tables, the BPR objective, full-ranking scores,
and the recommender verb ``recommend(users, k, exclude_seen=True)``.

Batches (from ``graph.RecSysData``): training ``{"users", "pos", "neg"}``; evaluation
``{"users", ...}``. ``forward`` returns the final embeddings of the batch (training) or the
scores of every item for each batch user (evaluation, a lazy ``UserItemScores``); ``loss`` is BPR plus the reference
code's L2 term on the layer-0 embeddings of the batch:
``reg * 0.5 * (||e_u||^2 + ||e_i||^2 + ||e_j||^2) / batch_size`` (LightGCN-PyTorch ``bpr_loss``).

The models are tied to their training data: ``attach_data(train_dataset)`` gives them the
user-item graph (LightGCN, NGCF) and the items each user has seen (what ``recommend`` excludes).
The engine calls it before training and evaluation, ``panconv.load_model`` after loading weights.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import nn

from panconv.api import Model
from panconv.errors import DataError

from ..evaluators.ranking import UserItemScores, top_items


class Recommendations(NamedTuple):
    """What ``recommend`` returns: item ids and their scores, best first (``(users, k)``, or
    ``(k,)`` for one user id given as a scalar)."""

    items: torch.Tensor
    scores: torch.Tensor


def seen_items_csr(users, items, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(offsets[n_users + 1], items)``: the distinct items of each user, sorted, as CSR."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    key = np.unique(users * n_items + items)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(key // n_items, minlength=n_users), out=offsets[1:])
    return torch.from_numpy(offsets), torch.from_numpy(key % n_items)


def gather_rows(offsets: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``rows`` of a CSR pair as a new CSR pair ``(values, offsets[len(rows) + 1])``."""
    start, end = offsets[rows], offsets[rows + 1]
    counts = end - start
    out_offsets = torch.zeros(len(rows) + 1, dtype=torch.int64, device=offsets.device)
    torch.cumsum(counts, 0, out=out_offsets[1:])
    total = int(out_offsets[-1])
    pos = torch.repeat_interleave(start - out_offsets[:-1], counts, output_size=total) + \
        torch.arange(total, device=offsets.device)
    return values[pos], out_offsets


class BPRRecommender(Model):
    """Base of the user-item embedding models trained with BPR.

    Subclasses implement ``_final_embeddings(batch_nodes)`` (the final embeddings of the
    requested user/item node ids, ``None`` for all nodes). Node ids: users ``0..n_users-1``,
    items ``n_users + item``.
    """

    needs_graph = True
    #: filled by the engine from ``graph.RecSysData.metadata`` when the config leaves them unset
    metadata_inputs = ("n_users", "n_items")

    def __init__(self, n_users: Annotated[int, Ge(1)], n_items: Annotated[int, Ge(1)],
                 embed_dim: Annotated[int, Ge(1)] = 64, reg: Annotated[float, Ge(0)] = 1e-4,
                 init_std: Annotated[float, Gt(0)] = 0.1):
        super().__init__()
        name = type(self).__name__
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"{name}: n_users and n_items must be positive "
                             f"(got {n_users}, {n_items}); they come from the dataset metadata")
        if embed_dim <= 0:
            raise ValueError(f"{name}: embed_dim must be positive, got {embed_dim}")
        if reg < 0:
            raise ValueError(f"{name}: reg must be >= 0, got {reg}")
        if init_std <= 0:
            raise ValueError(f"{name}: init_std must be positive, got {init_std}")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.embed_dim, self.reg = int(embed_dim), float(reg)
        # one table for users (rows 0..n_users-1) and items (rows n_users..): the graph's node order
        self.embedding = nn.Embedding(self.n_users + self.n_items, self.embed_dim)
        nn.init.normal_(self.embedding.weight, std=init_std)  # LightGCN Sec. 4.1.2: N(0, 0.1)
        self.adj: torch.Tensor | None = None
        #: the training items of each user, CSR ``(offsets, items)`` (set by ``attach_data``)
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: tuple | None = None

    # ---- training data: graph and seen items
    def attach_data(self, dataset) -> None:
        """Take the training interactions of ``dataset`` (``n_users``, ``n_items`` and
        ``interactions() -> (users, items)``): the normalised adjacency for the graph models and
        each user's seen items for ``recommend``."""
        from ..kernels.spmm import normalized_adjacency

        name = type(self).__name__
        if (dataset.n_users, dataset.n_items) != (self.n_users, self.n_items):
            raise DataError(f"{name}: built for {self.n_users} users / {self.n_items} items but the data "
                            f"{_describe(dataset)} has {dataset.n_users} / {dataset.n_items}; "
                            f"train on (or load the model with) the data set it was built for")
        users, items = (np.asarray(a, dtype=np.int64) for a in dataset.interactions())
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"{name}: interactions() must return two 1-D arrays of equal length, "
                             f"got shapes {users.shape} and {items.shape}")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users
                           or items.min() < 0 or items.max() >= self.n_items):
            raise DataError(f"{name}: the interactions of {_describe(dataset)} hold ids outside "
                            f"{self.n_users} users / {self.n_items} items")
        self.seen = seen_items_csr(users, items, self.n_users, self.n_items)
        if self.needs_graph:
            self.adj = normalized_adjacency(users, items, self.n_users, self.n_items)
        self._cache = None

    def _graph(self) -> torch.Tensor:
        if self.adj is None:
            raise RuntimeError(f"{type(self).__name__} has no graph: call model.attach_data(train_dataset) "
                               f"first (the engine and panconv.load_model do this)")
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

    # ---- the recommender verb
    def recommend(self, users: Any, k: int = 20, exclude_seen: bool = True) -> Recommendations:
        """The ``k`` best items for each user id in ``users``, best first.

        ``users``: one id or a sequence (list, numpy array, tensor) of ids in ``0..n_users-1``.
        Returns ``Recommendations(items, scores)``: int64 item ids and their float32 scores
        (``y_ui = e_u . e_i`` of the final embeddings), shaped ``(len(users), k)`` (``(k,)`` for a
        scalar id), on the model's device. With ``exclude_seen`` the items each user interacted
        with in the attached training data are never recommended. The model is scored in eval
        mode (no dropout) without gradients; a model in training mode is put back afterwards.

        Needs the training data (``attach_data``; done by the engine and ``panconv.load_model``)
        for the graph models, and for every model when ``exclude_seen`` is set. Raises
        ``ValueError`` for ids outside ``0..n_users-1``, for ``k`` outside ``1..n_items``, and when
        ``k`` exceeds the number of items a user has not seen.
        """
        name = type(self).__name__
        ids, scalar = self._user_ids(users)
        if isinstance(k, bool):
            raise ValueError(f"{name}.recommend: k must be an integer in 1..{self.n_items}, got {k!r}")
        try:
            k = operator.index(k)
        except TypeError:
            raise ValueError(f"{name}.recommend: k must be an integer in 1..{self.n_items}, got {k!r}") from None
        if not 1 <= k <= self.n_items:
            raise ValueError(f"{name}.recommend: k must be in 1..{self.n_items} (the number of items), got {k}")
        if (exclude_seen or self.needs_graph) and self.seen is None:
            why = "the graph and each user's seen items" if self.needs_graph else "each user's seen items"
            raise RuntimeError(f"{name}.recommend needs the training data ({why}): call "
                               f"model.attach_data(train_dataset) first (panconv.load_model does this "
                               f"when the run's training data is found)"
                               + ("" if self.needs_graph else ", or pass exclude_seen=False"))
        seen_items = seen_offsets = None
        if exclude_seen:
            seen_items, seen_offsets = gather_rows(self.seen[0], self.seen[1], ids)
            unseen = self.n_items - seen_offsets.diff()
            short = torch.nonzero(unseen < k).flatten()
            if len(short):
                first = int(short[0])
                raise ValueError(f"{name}.recommend: k={k} but user {int(ids[first])} has only "
                                 f"{int(unseen[first])} unseen items; lower k or pass exclude_seen=False")
        if self.training:
            self.eval()
            try:
                return self._rank(ids, k, seen_items, seen_offsets, scalar)
            finally:
                self.train()
        return self._rank(ids, k, seen_items, seen_offsets, scalar)

    def _rank(self, ids, k, seen_items, seen_offsets, scalar) -> Recommendations:
        with torch.no_grad():
            user_emb, item_emb = self.all_embeddings()
            device = item_emb.device
            if seen_items is not None:
                seen_items, seen_offsets = seen_items.to(device), seen_offsets.to(device)
            scores = UserItemScores(user_emb[ids.to(device)], item_emb)
            items, values = top_items(scores, seen_items, seen_offsets, k, return_scores=True)
        if scalar:
            return Recommendations(items[0], values[0])
        return Recommendations(items, values)

    def _user_ids(self, users: Any) -> tuple[torch.Tensor, bool]:
        """``users`` as a 1-D int64 CPU tensor (and whether a scalar was given); ValueError if bad."""
        name = type(self).__name__
        try:
            ids = users.detach().cpu() if isinstance(users, torch.Tensor) else torch.as_tensor(np.asarray(users))
        except (TypeError, ValueError, RuntimeError, OverflowError):
            ints = users if isinstance(users, (list, tuple)) else [users]
            if all(isinstance(u, int) and not isinstance(u, bool) for u in ints):  # beyond int64
                bad = [u for u in ints if not 0 <= u < self.n_users]
                raise ValueError(f"{name}.recommend: unknown user ids {_short(bad)}; "
                                 f"ids are 0..{self.n_users - 1} ({self.n_users} users)") from None
            raise ValueError(f"{name}.recommend: users must be integer ids, got {_short(users)}") from None
        if ids.numel() == 0 and ids.dim() == 1:
            ids = ids.to(torch.int64)  # [] reads as float
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex() or ids.dim() > 1:
            raise ValueError(f"{name}.recommend: users must be one integer id or a 1-D sequence of them, "
                             f"got {_short(users)}")
        scalar = ids.dim() == 0
        ids = ids.reshape(-1).to(torch.int64)
        bad = ids[(ids < 0) | (ids >= self.n_users)]
        if len(bad):
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise ValueError(f"{name}.recommend: unknown user ids {bad[:5].tolist()}{more}; "
                             f"ids are 0..{self.n_users - 1} ({self.n_users} users)")
        return ids, scalar

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


def _describe(dataset) -> str:
    folder = getattr(dataset, "folder", None)
    return f"in {folder}" if folder is not None else f"of {type(dataset).__name__}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
