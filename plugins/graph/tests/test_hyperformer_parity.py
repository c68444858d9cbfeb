"""HyperFormer: forward parity with the authors' code (zhiweihu1103/HKGC-HyperFormer) on shared weights.

The official ``Knowformer`` (``src/models/knowformer.py`` + ``knowformer_encoder.py``) is imported from a local
checkout, never from the repository: set ``PANCONV_HYPERFORMER_OFFICIAL`` to the checkout's root (default
``/tmp/h1/HKGC-HyperFormer``; e.g. ``git -C <fetched mirror> archive HEAD | tar x -C <dir>``). Without it these
tests skip (CI has no checkout). ``test_recorded_official_outputs`` runs everywhere: it compares our forward with
the official outputs recorded in ``fixtures/hyperformer_official.pt`` (the toy batch and the code's logits; the
weights are regenerated from their seeds on both sides), rewritten from the checkout by
``PANCONV_RECORD_HYPERFORMER=1 pytest plugins/graph/tests/test_hyperformer_parity.py``.

Its encoder imports ``fmoe`` (FastMoE, a CUDA extension). The stand-in below follows FastMoE's semantics
(``FMoETransformerMLP`` -> ``FMoE`` -> ``NaiveGate`` + ``_Expert``): a ``Linear(d_model, num_expert)`` gate, the
top-k gate logits per token, the token sent to those k experts only (``htoh4`` -> activation -> ``h4toh``, each
an ``FMoELinear`` with weight ``(num_expert, out, in)`` and bias ``(num_expert, out)``), and the k outputs
combined with the gate scores (a batched ``gate_score @ outputs``). FastMoE >= 1.0 uses the softmax of the
top-k logits as the scores; FastMoE 0.2.0, the version the code's README pins, computes that softmax but
returns the raw top-k logits (``fmoe/gates/naive_gate.py`` at tag v0.2.0, fixed by commit a6ca7f6). Both are
checked: ``graph.HyperFormer(moe_gate="softmax")`` and ``moe_gate="logits"``.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panconv_graph.datasets.kg import MASK, NO_QUAL_KEY, NO_QUAL_VALUE, PAD, SPECIALS, KGFacts, vocab_size
from panconv_graph.models.hyperformer import HyperFormer

OFFICIAL = Path(os.environ.get("PANCONV_HYPERFORMER_OFFICIAL", "/tmp/h1/HKGC-HyperFormer"))
MODELS = OFFICIAL / "src" / "models"
FIXTURE = Path(__file__).parent / "fixtures" / "hyperformer_official.pt"
needs_official = pytest.mark.skipif(
    not (MODELS / "knowformer.py").is_file(),
    reason=f"no checkout of zhiweihu1103/HKGC-HyperFormer at {OFFICIAL} (set PANCONV_HYPERFORMER_OFFICIAL)")


# ----------------------------------------------------------------------------- FastMoE stand-in
class _Gate(nn.Module):
    """FastMoE ``NaiveGate``: ``gate = Linear(d_model, num_expert)``, top-k (unsorted) of its logits."""

    def __init__(self, d_model, num_expert, top_k, scores):
        super().__init__()
        self.gate = nn.Linear(d_model, num_expert)
        self.top_k, self.scores = top_k, scores

    def forward(self, inp):
        logits = self.gate(inp)
        top, index = torch.topk(logits, k=self.top_k, dim=-1, largest=True, sorted=False)
        return index, (F.softmax(top, dim=-1) if self.scores == "softmax" else top)


class _FMoELinear(nn.Module):
    def __init__(self, num_expert, in_feat, out_feat):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_expert, out_feat, in_feat))
        self.bias = nn.Parameter(torch.randn(num_expert, out_feat))

    def forward(self, inp, expert):  # one expert's tokens
        return inp @ self.weight[expert].t() + self.bias[expert]


class _Expert(nn.Module):
    def __init__(self, num_expert, d_model, d_hidden, activation):
        super().__init__()
        self.htoh4 = _FMoELinear(num_expert, d_model, d_hidden)
        self.h4toh = _FMoELinear(num_expert, d_hidden, d_model)
        self.activation = activation

    def forward(self, inp, expert):
        return self.h4toh(self.activation(self.htoh4(inp, expert)), expert)


def fmoe_module(scores: str) -> types.ModuleType:
    class FMoETransformerMLP(nn.Module):
        def __init__(self, num_expert=32, d_model=1024, d_hidden=4096, activation=None, top_k=2, **_):
            super().__init__()
            self.num_expert, self.d_model, self.top_k = num_expert, d_model, top_k
            self.gate = _Gate(d_model, num_expert, top_k, scores)
            self.experts = _Expert(num_expert, d_model, d_hidden, activation)

        def forward(self, inp):
            shape = inp.shape
            x = inp.reshape(-1, self.d_model)
            index, score = self.gate(x)
            # scatter: each (token, choice) goes to its expert; only the chosen experts run
            out = torch.zeros(x.shape[0], self.top_k, self.d_model, dtype=x.dtype)
            for e in range(self.num_expert):
                token, choice = (index == e).nonzero(as_tuple=True)
                if len(token):
                    out[token, choice] = self.experts(x[token], e)
            return torch.bmm(score.reshape(-1, 1, self.top_k), out).reshape(shape)

    module = types.ModuleType("fmoe")
    module.FMoETransformerMLP = FMoETransformerMLP
    return module


@pytest.fixture(params=["softmax", "logits"])
def official(request, monkeypatch):
    """The official ``Knowformer`` class, with FastMoE's gate scores as ``request.param``."""
    monkeypatch.setitem(sys.modules, "fmoe", fmoe_module(request.param))
    package = types.ModuleType("hkgc_official")
    package.__path__ = [str(MODELS)]  # the package's __init__ (contiguous_params, the data module) is not run
    monkeypatch.setitem(sys.modules, "hkgc_official", package)
    for name in ("hkgc_official.knowformer_encoder", "hkgc_official.knowformer"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return request.param, importlib.import_module("hkgc_official.knowformer").Knowformer


# ----------------------------------------------------------------------------- shared weights
N_E, N_R, MAX_Q = 10, 3, 2
SIZE = dict(dim=16, kernel_h=4, n_layers=2, n_heads=2, ffn_dim=32, n_experts=4, top_k=2, n_perm=2,
            conv_channels=3, conv_kernel=3)


def config(**kw) -> dict:
    v = vocab_size(N_E, N_R)
    base = dict(
        hidden_size=SIZE["dim"], num_hidden_layers=SIZE["n_layers"], num_attention_heads=SIZE["n_heads"],
        intermediate_size=SIZE["ffn_dim"], initializer_range=0.02, device="cpu",
        input_dropout_prob=0.5, context_dropout_prob=0.1, qual_dropout_prob=0.3, attention_dropout_prob=0.1,
        hidden_dropout_prob=0.1, entity_dropout_prob=0.1, residual_dropout_prob=0.0,
        add_ent_neighbors="True", add_rel_neighbors="True", use_interacte="True", ablation_mode="dismult",
        moe_mode="True", moe_num_expert=SIZE["n_experts"], moe_top_k=SIZE["top_k"],
        vocab_size=v, num_entities=N_E, num_relations=2 * N_R, num_specials=SPECIALS,
        special_begin_idx=0, special_end_idx=SPECIALS, entity_begin_idx=SPECIALS, entity_end_idx=SPECIALS + N_E,
        relation_begin_idx=SPECIALS + N_E, relation_end_idx=v,
        conv_input_dropout_prob=0.2, conv_hidden_dropout_prob=0.5, conv_feature_dropout_prob=0.5, conv_padding=0,
        conv_number_channel=SIZE["conv_channels"], conv_kernel_size=SIZE["conv_kernel"],
        conv_kernel_width=SIZE["dim"] // SIZE["kernel_h"], conv_kernel_height=SIZE["kernel_h"],
        conv_permution_size=SIZE["n_perm"])
    return {**base, **kw}


def randomise(module: nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic random (LayerNorm/BatchNorm affine not left at 1/0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.2) + (1.0 if "norm" in name
                    and name.endswith("weight") else 0.0))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def copy_into_official(ours: HyperFormer, theirs: nn.Module) -> None:
    """Our state dict -> the official module's names (nothing else changed; every official parameter that the
    forward uses is written; the unused ones, ``context_encoder``, ``pooler``, ``fc``, ``bn2``, ``norm1/2``
    and the dense feed-forward's sublayer, keep their values and are checked to play no part below)."""
    s = ours.state_dict()
    with torch.no_grad():
        theirs.ele_embedding.copy_(s["embedding"])
        theirs.entity_or_relation_layernorm_layer.load_state_dict(
            {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("element_norm.")})
        enc = theirs.triple_encoder
        for i, layer in enumerate(enc.layers):
            p = f"encoder.layers.{i}."
            layer.sublayer[0].norm.weight.copy_(s[p + "norm.weight"])
            layer.sublayer[0].norm.bias.copy_(s[p + "norm.bias"])
            w, b = s[p + "attention.in_proj_weight"].chunk(3), s[p + "attention.in_proj_bias"].chunk(3)
            for j in range(3):
                layer.self_attn.linears[j].weight.copy_(w[j])
                layer.self_attn.linears[j].bias.copy_(b[j])
            layer.self_attn.linears[3].weight.copy_(s[p + "attention.out_proj.weight"])
            layer.self_attn.linears[3].bias.copy_(s[p + "attention.out_proj.bias"])
            ff = layer.feed_forward
            ff.layer_norm.weight.copy_(s[p + "ffn.norm.weight"])
            ff.layer_norm.bias.copy_(s[p + "ffn.norm.bias"])
            ff.gate.gate.weight.copy_(s[p + "ffn.gate.weight"])
            ff.gate.gate.bias.copy_(s[p + "ffn.gate.bias"])
            ff.experts.htoh4.weight.copy_(s[p + "ffn.w1"].transpose(1, 2))
            ff.experts.htoh4.bias.copy_(s[p + "ffn.b1"])
            ff.experts.h4toh.weight.copy_(s[p + "ffn.w2"].transpose(1, 2))
            ff.experts.h4toh.bias.copy_(s[p + "ffn.b2"])
        enc.norm.weight.copy_(s["encoder.norm.weight"])
        enc.norm.bias.copy_(s["encoder.norm.bias"])
        for ours_bn, theirs_bn in (("bn0", theirs.bn0), ("bn1", theirs.bn1), ("bn2", theirs.bn3)):
            theirs_bn.load_state_dict({k.split(".", 2)[2]: v for k, v in s.items()
                                       if k.startswith(f"interaction.{ours_bn}.")})
        theirs.conv_filt.copy_(s["interaction.filters"])
        theirs.fc2.weight.copy_(s["interaction.fc.weight"])
        theirs.fc2.bias.copy_(s["interaction.fc.bias"])
        theirs.fuse_net.linear.weight.copy_(s["fuse.linear.weight"])
        theirs.fuse_net.linear.bias.copy_(s["fuse.linear.bias"])
    theirs.chequer_perm = s["interaction.perm"].clone()  # the code draws it from numpy's global state


def build_ours(scores: str, seed: int = 0, **kw) -> HyperFormer:
    torch.manual_seed(seed)
    ours = HyperFormer(n_entities=N_E, n_relations=N_R, max_qualifiers=MAX_Q, moe_gate=scores, **SIZE, **kw)
    randomise(ours, seed)
    return ours.eval()


def pair(official, seed=0, **kw):
    scores, knowformer = official
    ours = build_ours(scores, seed, **kw)
    theirs = knowformer(config(ablation_mode="dismult" if ours.compose == "distmult" else "transe"))
    randomise(theirs, seed + 1)  # the parts not copied hold other random values
    copy_into_official(ours, theirs)
    return ours.eval(), theirs.eval()


# ----------------------------------------------------------------------------- toy graph
def toy_batch(tmp_path, full: bool = True) -> dict:
    """A batch of ``graph.KGFacts`` queries over a toy hyper-relational graph (every statement with two qualifier
    pairs when ``full``, else some with one or none, so that their sequences carry padding)."""
    folder = tmp_path / "kg" / "toy"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    lines = {}
    for split, n in (("train", 24), ("valid", 4), ("test", 8)):
        rows = []
        for i in range(n):
            h, t, q1, q2 = (int(x) for x in torch.randint(0, N_E, (4,), generator=g))
            r, k1, k2 = (int(x) for x in torch.randint(0, N_R, (3,), generator=g))
            quals = [f"r{k1}", f"e{q1}", f"r{k2}", f"e{q2}"]
            if not full:
                quals = quals[: 4 - 2 * (i % 3)]
            rows.append("\t".join([f"e{h}", f"r{r}", f"e{t}", *quals]))
        lines[split] = rows
    # every entity and relation occurs (so that the vocabulary has the sizes the model was built with)
    lines["train"] += [f"e{i}\tr{i % N_R}\te{(i + 1) % N_E}\tr{(i + 1) % N_R}\te{(i + 2) % N_E}" +
                       (f"\tr{(i + 2) % N_R}\te{(i + 3) % N_E}" if full else "") for i in range(N_E)]
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = KGFacts(root=tmp_path, split="test", name="toy", n_neighbors=3)
    assert (data.n_entities, data.n_relations, data.max_qualifiers) == (N_E, N_R, MAX_Q)
    return data.collate([data[i] for i in range(len(data))])


def run_official(theirs, batch: dict, seq_mask_in_every_pass: bool = False) -> dict:
    """The official forward on our batch: ``context_ids`` = the neighbour prompts, one ``(B, 3)`` tensor per
    neighbour; ``rel_local_context_ids`` = one ``[key, value, MASK]`` prompt per qualifier slot, as its data
    module builds them: the statement's pairs drawn again to fill the slots (here: evenly, so that their mean is
    the mean over the pairs), the "no qualifier" pair when it has none."""
    seq, neighbors = batch["seq"], batch["neighbors"]
    b = seq.shape[0]
    pairs = seq[:, 3:].reshape(b, -1, 2)
    slots = []
    for i in range(b):
        present = [p for p in pairs[i].tolist() if p[0] != PAD] or [[NO_QUAL_KEY, NO_QUAL_VALUE]]
        slots.append([present[j % len(present)] for j in range(MAX_Q)])
    assert all(MAX_Q % len([p for p in pairs[i].tolist() if p[0] != PAD] or [0]) == 0 for i in range(b))
    rel = [torch.tensor([[*slots[i][j], MASK] for i in range(b)]) for j in range(MAX_Q)]
    context = [neighbors[:, j].contiguous() for j in range(neighbors.shape[1])]
    if seq_mask_in_every_pass:  # the code passes its padding mask to the first (triple) pass only
        forward, padding = theirs.triple_encoder.forward, (seq != 0).unsqueeze(1).unsqueeze(2)

        def masked(x, mask=None):
            return forward(x, mask=padding if mask is None and x.shape[1] == seq.shape[1] else mask)

        theirs.triple_encoder.forward = masked
    with torch.no_grad():
        return theirs(seq, context, rel, double_encoder=False)


def entity_slice(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, SPECIALS:SPECIALS + N_E]


def assert_triple_and_neighbours_match(out: dict, ref: dict) -> None:
    """Our triple and per-qualifier neighbour logits equal the official code's (entity columns), to 1e-5."""
    torch.testing.assert_close(out["triple"], entity_slice(ref["triple_neighbors"]), atol=1e-5, rtol=0)
    for j, logits in enumerate(ref["ent_neighbors"]):
        torch.testing.assert_close(out["neighbors"][:, j], entity_slice(logits), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- tests
@needs_official
@pytest.mark.parametrize("compose", ["distmult", "transe"])
def test_forward_equals_the_official_code_on_shared_weights(official, tmp_path, single_thread, compose):
    ours, theirs = pair(official, compose=compose)
    batch = toy_batch(tmp_path)
    assert (batch["seq"] != PAD).all()  # no padding: the code's forward and ours see the same tokens
    with torch.no_grad():
        out = ours(batch)
    ref = run_official(theirs, batch)
    assert_triple_and_neighbours_match(out, ref)
    torch.testing.assert_close(out["mixed"], entity_slice(ref["neighbors"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.predict(out, batch),
                               entity_slice(ref["triple_neighbors"]) + entity_slice(ref["neighbors"]), atol=1e-5,
                               rtol=0)
    assert out["mixed"].abs().max() > 1e-2 and not torch.allclose(out["mixed"], out["triple"], atol=1e-3)


@needs_official
def test_the_two_fastmoe_gate_versions_differ(official, tmp_path, single_thread):
    """A model built with the other gate semantics does not match: the comparison above can tell them apart."""
    scores, knowformer = official
    other = "logits" if scores == "softmax" else "softmax"
    ours, theirs = pair((other, knowformer))
    batch = toy_batch(tmp_path)
    with torch.no_grad():
        out = ours(batch)
    assert (out["triple"] - entity_slice(run_official(theirs, batch)["triple_neighbors"])).abs().max() > 1e-3


@needs_official
def test_padding_differs_only_by_the_mask_of_the_mixed_pass(official, tmp_path, single_thread):
    """Statements with fewer qualifiers than slots: the triple pass and the neighbour passes still match; the
    code's mixed pass attends to the padding (it passes no mask there), ours masks it; with the code's own
    padding mask handed to its mixed pass as well, everything matches again."""
    ours, theirs = pair(official, seed=3)
    batch = toy_batch(tmp_path, full=False)
    assert (batch["seq"] == PAD).any()
    with torch.no_grad():
        out = ours(batch)
    ref = run_official(theirs, batch)
    assert_triple_and_neighbours_match(out, ref)
    padded = (batch["seq"] == PAD).any(1)
    diff = (out["mixed"] - entity_slice(ref["neighbors"])).abs().amax(1)
    assert (diff[padded] > 1e-4).all() and (diff[~padded] < 1e-5).all()
    masked = run_official(theirs, batch, seq_mask_in_every_pass=True)
    torch.testing.assert_close(out["mixed"], entity_slice(masked["neighbors"]), atol=1e-5, rtol=0)


@needs_official
@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_HYPERFORMER"), reason="set PANCONV_RECORD_HYPERFORMER=1 to "
                    "rewrite fixtures/hyperformer_official.pt from the official checkout")
def test_record_official_outputs(official, tmp_path):
    scores, _ = official
    ours, theirs = pair(official)
    batch = toy_batch(tmp_path)
    batch = {"seq": batch["seq"][::2].clone(), "neighbors": batch["neighbors"][::2].clone()}  # 8 queries: a few KB
    ref = run_official(theirs, batch)
    record = torch.load(FIXTURE) if FIXTURE.is_file() and scores != "softmax" else {}
    record["batch"] = batch
    record[scores] = {"triple": entity_slice(ref["triple_neighbors"]),
                      "neighbors": torch.stack([entity_slice(x) for x in ref["ent_neighbors"]], 1),
                      "mixed": entity_slice(ref["neighbors"])}
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(record, FIXTURE)


@pytest.mark.parametrize("scores", ["softmax", "logits"])
def test_recorded_official_outputs(scores):
    """Our forward on the recorded toy batch equals the official code's recorded outputs (same seeded weights)."""
    record = torch.load(FIXTURE)
    ours = build_ours(scores)
    batch = record["batch"]
    with torch.no_grad():
        out = ours(batch)
    for key, expected in record[scores].items():
        torch.testing.assert_close(out[key], expected, atol=1e-5, rtol=0)
    other = build_ours("logits" if scores == "softmax" else "softmax")
    with torch.no_grad():
        assert (other(batch)["mixed"] - record[scores]["mixed"]).abs().max() > 1e-3


def test_qualifier_context_is_the_mean_over_the_pairs_present():
    """The relation-qualifier aggregator as the code feeds it: the mean of the composed pairs the statement has
    (the code's slots are those pairs drawn again, whose expectation is that mean), the composed "no qualifier"
    pair when it has none; padding slots play no part."""
    model = build_ours("softmax")
    table = model.element_embeddings()
    k1, v1, k2, v2 = SPECIALS + N_E, SPECIALS + 1, SPECIALS + N_E + 2, SPECIALS + 4
    seq = torch.tensor([[SPECIALS, SPECIALS + N_E + 1, MASK, k1, v1, k2, v2],
                        [SPECIALS, SPECIALS + N_E + 1, MASK, k1, v1, PAD, PAD],
                        [SPECIALS, SPECIALS + N_E + 1, MASK, k1, v1, k1, v1],
                        [SPECIALS, SPECIALS + N_E + 1, MASK, PAD, PAD, PAD, PAD]])
    with torch.no_grad():
        ctx = model._qualifier_context(table, seq)
        torch.testing.assert_close(ctx[0], (table[k1] * table[v1] + table[k2] * table[v2]) / 2)
        torch.testing.assert_close(ctx[1], table[k1] * table[v1])
        torch.testing.assert_close(ctx[2], ctx[1])
        torch.testing.assert_close(ctx[3], table[NO_QUAL_KEY] * table[NO_QUAL_VALUE])
        model.use_qualifiers = False
        torch.testing.assert_close(model._qualifier_context(table, seq), ctx[3].expand(4, -1))


def test_neighbour_prompts_are_scored_against_the_query_entity(tmp_path):
    """The code's ``neighbors_label`` is the query entity (each prompt ``[t, r^-1, MASK]`` of ``e`` has answer
    ``e``), not the query's answer."""
    model = build_ours("softmax", label_smoothing=0.0, neighbor_weight=0.5)
    batch = toy_batch(tmp_path)
    query_entity = batch["seq"][:, 0] - SPECIALS
    assert (query_entity != batch["labels"]).any()
    with torch.no_grad():
        out = model(batch)
        n = out["neighbors"]
        expected = torch.stack([F.cross_entropy(n[:, j], query_entity) for j in range(n.shape[1])]).mean()
        torch.testing.assert_close(model.loss(out, batch)["loss_neighbors"], 0.5 * expected)
