"""HyperFormer (Hu et al., "HyperFormer: Enhancing Entity and Relation Interaction for
Hyper-Relational Knowledge Graph Completion", CIKM 2023), structure after the authors' code
(zhiweihu1103/HKGC-HyperFormer, ``knowformer.py`` / ``hyperformer.py``).

A query is a token sequence ``[e, r, MASK, q1, v1, ...]`` (``graph.KGFacts``). The model:

1. **Embeddings**: one table over specials, entities and relations (with inverses); entities and
   relations pass a shared LayerNorm (entities also ``entity_dropout``), specials do not.
2. **Triple pass**: the Transformer encoder over the query (padding masked); the output at the
   relation position is the contextual relation ``r~``; the output at ``MASK`` times every entity's
   raw embedding (the parameter table, not its LayerNorm-ed view) gives the *triple logits* (1-N scoring).
3. **Entity-neighbour aggregator**: each of the ``n_neighbors`` prompts ``[t, r^-1, MASK]`` of the
   query entity goes through the same encoder; the ``MASK`` outputs, averaged, are the entity
   context ``c_e``; each prompt is also scored (its answer is the query entity: the neighbour loss).
4. **Relation-qualifier aggregator**: every qualifier pair is composed (``compose``: DistMult
   ``k * v`` as the released run script, or TransE ``k + v``) and ``c_q`` is the mean over the pairs
   the statement has; a statement without qualifiers gets the ``(NO_QUAL_KEY, NO_QUAL_VALUE)`` pair.
   (The code fills its ``rel_neighbor_num`` slots by drawing the statement's pairs again at random,
   whose expectation is this mean; it uses the "no qualifier" pair only when there is none.)
5. **Convolution-based bidirectional interaction** over (entity, relation), (entity, qualifier),
   (relation, qualifier): each pair is concatenated, its features permuted into ``n_perm``
   chequer-board images (``2 * kernel_w x kernel_h``), circularly padded and convolved with one
   shared filter bank (depthwise over the permutations, InteractE), then BN/ReLU/FC/BN back to two
   vectors, one per side; a gated fusion (``g = sigma(W a + W b)``, ``g a + (1 - g) b``) merges the
   two views of each element: ``c_e'``, ``r'``, ``c_q'``.
6. **Mixed pass**: the query again, with the entity slot ``(x_e + c_e') / 2`` and the relation slot
   ``(x_r + c_q') / 2``; its ``MASK`` output gives the *mixed logits*.
7. **Encoder layers**: pre-LayerNorm self-attention, then a mixture-of-experts feed-forward
   (``n_experts`` ReLU MLPs, top-``top_k`` softmax gate, pre-LayerNorm residual, as FastMoE's
   ``FMoETransformerMLP`` used by the code; ``moe_gate: logits`` weights the experts by the raw top-k
   gate logits instead, which is what FastMoE 0.2.0, the version the code's README pins, does: its
   ``NaiveGate`` computes the softmax and returns the logits, fixed in FastMoE 1.0) or a dense GELU
   feed-forward (``n_experts: 0``); a final LayerNorm.

Loss (label-smoothed cross-entropy over entities): ``triple + mixed + 0.5 * neighbours``; scores
``triple logits + mixed logits``. Differences from the released code, all stated: logits are over
entities only (the code scores the whole vocabulary and keeps the entity slice for ranking); the
chequer permutations are drawn from ``perm_seed`` and saved as a buffer (the code draws them from
the global numpy state at every construction); the MoE is a dense loop over experts (FastMoE is a
CUDA extension); the qualifier-free "relation neighbour" loss is not used (the code disables it
when the interaction module is on, as in its run script); padding is masked in every pass (the code
masks it in the triple pass only, so its mixed pass attends to the padding of statements with fewer
qualifiers than slots). On statements without padding the forward equals the code's on shared weights
(``tests/test_hyperformer_parity.py``).

``use_qualifiers: false`` is the ablation: the qualifier tokens are masked out of both passes and
every qualifier slot is the "no qualifier" pair, the data and its filtered evaluation unchanged.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Model

from ..datasets.kg import MASK, NO_QUAL_KEY, NO_QUAL_VALUE, PAD, SPECIALS, vocab_size


# ----------------------------------------------------------------------------- building blocks
class MoEFeedForward(nn.Module):
    """Mixture-of-experts feed-forward with a pre-LayerNorm residual (FastMoE ``FMoETransformerMLP``
    with ``pre_lnorm``): ``x + dropout(sum_{i in top-k} g_i * expert_i(LN(x)))``, ``g`` the softmax of
    the gate's top-k logits (``gate="logits"``: the top-k logits themselves, as FastMoE 0.2.0), each expert
    ``Linear -> ReLU -> dropout -> Linear``. Every expert runs on
    every token (a dense loop; weights of unselected experts are zero), so outputs equal the routed
    computation and every expert gets a (possibly zero) gradient."""

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int, dropout: float,
                 gate: Literal["softmax", "logits"] = "softmax"):
        super().__init__()
        self.top_k, self.gate_mode = top_k, gate
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Linear(dim, n_experts)
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(n_experts, dim))
        for w, fan_in in ((self.w1, dim), (self.w2, hidden)):
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.act_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., n_experts)`` routing weights: softmax over the top-k gate logits (or those logits), zero
        elsewhere."""
        logits = self.gate(x)
        top, index = logits.topk(self.top_k, dim=-1)
        return torch.zeros_like(logits).scatter(-1, index, F.softmax(top, dim=-1) if self.gate_mode == "softmax"
                                                else top)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        weights = self.gate_weights(y)
        hidden = self.act_dropout(F.relu(torch.einsum("...d,edh->...eh", y, self.w1) + self.b1))
        experts = torch.einsum("...eh,ehd->...ed", hidden, self.w2) + self.b2
        return x + self.dropout((weights.unsqueeze(-1) * experts).sum(-2))


class DenseFeedForward(nn.Module):
    """``x + dropout(W2 dropout(gelu(W1 LN(x))))``: the code's non-MoE layer (``moe_mode`` off)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.w1, self.w2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.hidden_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.w2(self.hidden_dropout(F.gelu(self.w1(self.norm(x))))))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm self-attention with residual, then the (MoE) feed-forward block."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, n_experts: int, top_k: int, dropout: float,
                 attention_dropout: float, moe_gate: Literal["softmax", "logits"] = "softmax"):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, n_heads, dropout=attention_dropout, batch_first=True)
        # the code gives each expert intermediate_size // top_k hidden units
        self.ffn = (MoEFeedForward(dim, max(1, ffn_dim // top_k), n_experts, top_k, dropout, moe_gate) if n_experts
                    else DenseFeedForward(dim, ffn_dim, dropout))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        y = self.norm(x)
        x = x + self.attention(y, y, y, key_padding_mask=key_padding, need_weights=False)[0]
        return self.ffn(x)


class MoETransformerEncoder(nn.Module):
    """``n_layers`` encoder layers and a final LayerNorm."""

    def __init__(self, dim, n_layers, n_heads, ffn_dim, n_experts, top_k, dropout, attention_dropout,
                 moe_gate="softmax"):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, n_heads, ffn_dim, n_experts, top_k, dropout, attention_dropout,
                                                 moe_gate) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, key_padding)
        return self.norm(x)


def chequer_permutation(dim: int, kernel_h: int, n_perm: int, generator: torch.Generator) -> torch.Tensor:
    """``(n_perm, 2 * dim)`` indices into ``cat(a, b)``: InteractE's chequer arrangement (rows alternate
    which side comes first, the pattern flips between permutations), features of each side permuted."""
    kernel_w = dim // kernel_h
    rows = []
    for k in range(n_perm):
        pa, pb = torch.randperm(dim, generator=generator), torch.randperm(dim, generator=generator) + dim
        out, ia, ib = [], 0, 0
        for i in range(kernel_h):
            for _ in range(kernel_w):
                a_first = (i % 2 == 0) == (k % 2 == 0)
                first, second = (pa[ia], pb[ib]) if a_first else (pb[ib], pa[ia])
                out += [int(first), int(second)]
                ia, ib = ia + 1, ib + 1
        rows.append(out)
    return torch.tensor(rows, dtype=torch.int64)


class ChequerConvInteraction(nn.Module):
    """The convolution-based bidirectional interaction of a pair ``(a, b)`` -> ``(a', b')``.

    ``cat(a, b)`` permuted into ``n_perm`` chequer images of ``2 * kernel_w x kernel_h``, BatchNorm,
    dropout, circular padding, one ``channels x k x k`` filter bank shared across the permutations
    (grouped convolution), BatchNorm, ReLU, feature-map dropout, a linear map to ``2 * dim``,
    dropout, BatchNorm, split into the two sides. One module serves all three pairs, as in the code.
    """

    def __init__(self, dim: int, kernel_h: int, n_perm: int, channels: int, kernel: int, dropout: float,
                 seed: int):
        super().__init__()
        self.dim, self.kernel_h, self.kernel_w, self.n_perm = dim, kernel_h, dim // kernel_h, n_perm
        self.kernel, self.channels = kernel, channels
        with torch.device("cpu"):
            perm = chequer_permutation(dim, kernel_h, n_perm, torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.bn0 = nn.BatchNorm2d(n_perm)
        self.filters = nn.Parameter(torch.empty(channels, 1, kernel, kernel))
        nn.init.xavier_normal_(self.filters)
        self.bn1 = nn.BatchNorm2d(channels * n_perm)
        self.input_dropout = nn.Dropout(dropout)
        self.feature_dropout = nn.Dropout2d(dropout)
        self.hidden_dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * dim * channels * n_perm, 2 * dim)
        self.bn2 = nn.BatchNorm1d(2 * dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([a, b], 1)[:, self.perm]  # (B, P, 2 dim)
        x = x.reshape(-1, self.n_perm, 2 * self.kernel_w, self.kernel_h)
        x = self.input_dropout(self.bn0(x))
        p = self.kernel // 2
        if p:
            x = torch.cat([x[..., -p:, :], x, x[..., :p, :]], 2)
            x = torch.cat([x[..., -p:], x, x[..., :p]], 3)
        x = F.conv2d(x, self.filters.repeat(self.n_perm, 1, 1, 1), groups=self.n_perm)
        x = self.feature_dropout(F.relu(self.bn1(x)))
        x = self.bn2(self.hidden_dropout(self.fc(x.flatten(1))))
        return x[:, :self.dim], x[:, self.dim:]


class GatedFusion(nn.Module):
    """``g = sigmoid(W p + W q)``; ``g * p + (1 - g) * q`` (the code's ``FuseNet``, one shared ``W``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear(p) + self.linear(q))
        return p * gate + q * (1 - gate)


class HyperFormer(Model):
    """HyperFormer for (hyper-relational) link prediction; sizes come from ``graph.KGFacts`` metadata."""

    metadata_inputs = ("n_entities", "n_relations", "max_qualifiers")

    def __init__(self, n_entities: Annotated[int, Ge(1)], n_relations: Annotated[int, Ge(1)],
                 max_qualifiers: Annotated[int, Ge(0)] = 0,
                 dim: Annotated[int, Ge(4)] = 64, kernel_h: Annotated[int, Ge(1)] = 8,
                 n_layers: Annotated[int, Ge(1)] = 2, n_heads: Annotated[int, Ge(1)] = 2,
                 ffn_dim: Annotated[int, Ge(1)] = 256,
                 n_experts: Annotated[int, Ge(0)] = 4, top_k: Annotated[int, Ge(1)] = 2,
                 moe_gate: Literal["softmax", "logits"] = "softmax",
                 n_perm: Annotated[int, Ge(1)] = 1, conv_channels: Annotated[int, Ge(1)] = 8,
                 conv_kernel: Annotated[int, Ge(1)] = 3,
                 input_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.5,
                 context_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 qual_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.3,
                 entity_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 hidden_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 attention_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 conv_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2,
                 label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 neighbor_weight: Annotated[float, Ge(0)] = 0.5,
                 compose: Literal["distmult", "transe"] = "distmult",
                 use_qualifiers: bool = True, use_neighbors: bool = True,
                 init_std: Annotated[float, Gt(0)] = 0.02,
                 perm_seed: Annotated[int, Interval(ge=0, lt=2**63)] = 0):
        super().__init__()
        for key, value, low in (("n_entities", n_entities, 1), ("n_relations", n_relations, 1), ("dim", dim, 4),
                                ("kernel_h", kernel_h, 1), ("n_layers", n_layers, 1), ("n_heads", n_heads, 1),
                                ("ffn_dim", ffn_dim, 1), ("n_perm", n_perm, 1), ("conv_channels", conv_channels, 1),
                                ("conv_kernel", conv_kernel, 1), ("max_qualifiers", max_qualifiers, 0),
                                ("n_experts", n_experts, 0), ("top_k", top_k, 1)):
            if value < low:
                raise ValueError(f"HyperFormer: {key} must be >= {low}, got {value}")
        if dim % kernel_h:
            raise ValueError(f"HyperFormer: dim ({dim}) must be a multiple of kernel_h ({kernel_h}): the pair "
                             f"(a, b) is reshaped into 2*kernel_w x kernel_h images with kernel_w = dim / kernel_h")
        if dim % n_heads:
            raise ValueError(f"HyperFormer: dim ({dim}) must be a multiple of n_heads ({n_heads})")
        if n_experts and top_k > n_experts:
            raise ValueError(f"HyperFormer: top_k ({top_k}) must be <= n_experts ({n_experts})")
        if moe_gate not in ("softmax", "logits"):
            raise ValueError(f"HyperFormer: moe_gate must be 'softmax' or 'logits', got {moe_gate!r}")
        if compose not in ("distmult", "transe"):
            raise ValueError(f"HyperFormer: compose must be 'distmult' or 'transe', got {compose!r}")
        for key, p in (("input_dropout", input_dropout), ("context_dropout", context_dropout),
                       ("qual_dropout", qual_dropout), ("entity_dropout", entity_dropout),
                       ("hidden_dropout", hidden_dropout), ("attention_dropout", attention_dropout),
                       ("conv_dropout", conv_dropout), ("label_smoothing", label_smoothing)):
            if not 0 <= p < 1:
                raise ValueError(f"HyperFormer: {key} must be in [0, 1), got {p}")
        self.n_entities, self.n_relations, self.max_qualifiers = int(n_entities), int(n_relations), int(max_qualifiers)
        self.dim, self.compose, self.use_qualifiers, self.use_neighbors = int(dim), compose, bool(use_qualifiers), \
            bool(use_neighbors)
        self.label_smoothing, self.neighbor_weight = float(label_smoothing), float(neighbor_weight)
        self.embedding = nn.Parameter(torch.empty(vocab_size(self.n_entities, self.n_relations), self.dim))
        nn.init.trunc_normal_(self.embedding, std=init_std, a=-2 * init_std, b=2 * init_std)
        self.element_norm = nn.LayerNorm(self.dim)
        self.entity_dropout = nn.Dropout(entity_dropout)
        self.input_dropout = nn.Dropout(input_dropout)
        self.context_dropout = nn.Dropout(context_dropout)
        self.qual_dropout = nn.Dropout(qual_dropout)
        self.encoder = MoETransformerEncoder(self.dim, n_layers, n_heads, ffn_dim, n_experts, top_k,
                                             hidden_dropout, attention_dropout, moe_gate)
        self.interaction = ChequerConvInteraction(self.dim, kernel_h, n_perm, conv_channels, conv_kernel,
                                                  conv_dropout, perm_seed)
        self.fuse = GatedFusion(self.dim)

    # ---- embeddings
    def element_embeddings(self) -> torch.Tensor:
        """The embedding table as the encoder sees it: LayerNorm on entities and relations, dropout on entities."""
        special = self.embedding[:SPECIALS]
        entity = self.entity_dropout(self.element_norm(self.embedding[SPECIALS:SPECIALS + self.n_entities]))
        relation = self.element_norm(self.embedding[SPECIALS + self.n_entities:])
        return torch.cat([special, entity, relation])

    def _encode(self, table: torch.Tensor, seq: torch.Tensor, entity_ctx=None, qual_ctx=None) -> torch.Tensor:
        x = table[seq]
        if entity_ctx is not None:
            x = torch.cat([((x[:, 0] + self.context_dropout(entity_ctx)) / 2).unsqueeze(1),
                           ((x[:, 1] + self.qual_dropout(qual_ctx)) / 2).unsqueeze(1), x[:, 2:]], 1)
        return self.encoder(self.input_dropout(x), key_padding=seq == PAD)

    def _scores(self, table: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """1-N scoring: the output against every entity's raw embedding (the code's ``__process_mask_feat``
        multiplies by the parameter table itself, not by its LayerNorm-ed view)."""
        return h @ self.embedding[SPECIALS:SPECIALS + self.n_entities].t()

    def _qualifier_context(self, table: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """Relation-qualifier aggregator: mean of the composed (key, value) pairs the statement has; the
        composed ``(NO_QUAL_KEY, NO_QUAL_VALUE)`` pair for a statement without any (or qualifiers unused)."""
        compose = (lambda k, v: k * v) if self.compose == "distmult" else (lambda k, v: k + v)
        b = seq.shape[0]
        none = compose(table[NO_QUAL_KEY], table[NO_QUAL_VALUE]).expand(b, -1)
        pairs = seq[:, 3:3 + 2 * self.max_qualifiers].reshape(b, -1, 2)
        if not self.use_qualifiers or not pairs.shape[1]:
            return none
        present = (pairs[..., 0] != PAD).unsqueeze(-1)  # (B, slots, 1)
        composed = compose(table[pairs[..., 0]], table[pairs[..., 1]]) * present
        count = present.sum(1)
        return torch.where(count > 0, composed.sum(1) / count.clamp(min=1), none)

    # ---- Model protocol
    def forward(self, batch: dict) -> dict:
        seq = batch["seq"]
        if not self.use_qualifiers:
            seq = torch.where(torch.arange(seq.shape[1], device=seq.device) >= 3, PAD, seq)
        table = self.element_embeddings()
        out = self._encode(table, seq)
        triple_logits = self._scores(table, out[:, 2])
        result = {"triple": triple_logits}
        if not self.use_neighbors:
            result["scores"] = triple_logits
            return result
        neighbors = batch["neighbors"]  # (B, k, 3)
        b, k, _ = neighbors.shape
        n_out = self._encode(table, neighbors.reshape(b * k, 3))[:, 2]
        result["neighbors"] = self._scores(table, n_out).reshape(b, k, -1)
        entity_ctx = n_out.reshape(b, k, -1).mean(1)
        qual_ctx = self._qualifier_context(table, seq)
        relation = out[:, 1]
        e_r, _ = self.interaction(entity_ctx, relation)
        e_q, q_e = self.interaction(entity_ctx, qual_ctx)
        _, q_r = self.interaction(relation, qual_ctx)  # the fused relation view is unused downstream (as in the code)
        entity_ctx, qual_ctx = self.fuse(e_r, e_q), self.fuse(q_e, q_r)
        mixed = self._encode(table, seq, entity_ctx, qual_ctx)[:, 2]
        result["mixed"] = self._scores(table, mixed)
        result["scores"] = triple_logits + result["mixed"]
        return result

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        ce = lambda logits, y: F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)  # noqa: E731
        losses = {"loss_triple": ce(outputs["triple"], labels)}
        if "mixed" in outputs:
            losses["loss_mixed"] = ce(outputs["mixed"], labels)
            # each prompt [t, r^-1, MASK] of the query entity e has e as its answer (the code's ``neighbors_label``)
            n = outputs["neighbors"]
            query_entity = batch["seq"][:, 0] - SPECIALS
            losses["loss_neighbors"] = self.neighbor_weight * ce(
                n.reshape(-1, n.shape[-1]), query_entity.repeat_interleave(n.shape[1]))
        return losses

    def predict(self, outputs: dict, batch: dict | None = None) -> torch.Tensor:
        """Scores ``(B, n_entities)`` of every entity as the answer (``graph.LinkPrediction`` ranks them)."""
        return outputs["scores"]

    # ---- conformance-kit examples
    @classmethod
    def example_config(cls) -> dict:
        return {"n_entities": 7, "n_relations": 3, "max_qualifiers": 1, "dim": 8, "kernel_h": 2, "n_layers": 1,
                "ffn_dim": 16, "n_experts": 3, "top_k": 2, "n_perm": 2, "conv_channels": 2}

    def example_inputs(self, batch_size: int = 2) -> dict:
        from ..datasets.kg import entity_token, relation_token

        g = torch.Generator().manual_seed(0)
        e = entity_token(torch.randint(0, self.n_entities, (batch_size,), generator=g))
        r = relation_token(torch.randint(0, self.n_relations, (batch_size,), generator=g), self.n_entities,
                           self.n_relations)
        cols = [e, r, torch.full_like(e, MASK)]
        for _ in range(self.max_qualifiers):
            cols.append(relation_token(torch.randint(0, self.n_relations, (batch_size,), generator=g),
                                       self.n_entities, self.n_relations))
            cols.append(entity_token(torch.randint(0, self.n_entities, (batch_size,), generator=g)))
        neighbors = torch.stack([
            entity_token(torch.randint(0, self.n_entities, (batch_size, 2), generator=g)),
            relation_token(torch.randint(0, self.n_relations, (batch_size, 2), generator=g), self.n_entities,
                           self.n_relations, inverse=True),
            torch.full((batch_size, 2), MASK)], -1)
        return {"seq": torch.stack(cols, 1), "labels": torch.randint(0, self.n_entities, (batch_size,), generator=g),
                "neighbors": neighbors}

