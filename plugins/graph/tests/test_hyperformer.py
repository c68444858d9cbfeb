"""HyperFormer: the defining structure (MoE routing, chequer interaction, both aggregators, the two passes and
the loss), checked on tiny instances; a short training run on the synthetic hyper-relational facts.

Forward parity with the authors' code (zhiweihu1103/HKGC-HyperFormer) on shared weights is in
test_hyperformer_parity.py; these tests check each part against its definition (see plugins/graph/README.md)."""

from __future__ import annotations

import pytest
import torch

from panconv_graph.datasets.kg import MASK, PAD, SPECIALS, KGFacts, entity_token, relation_token
from panconv_graph.evaluators.kg import LinkPrediction
from panconv_graph.models.hyperformer import (
    ChequerConvInteraction,
    GatedFusion,
    HyperFormer,
    MoEFeedForward,
    chequer_permutation,
)


def tiny(**kw):
    torch.manual_seed(0)
    return HyperFormer(**{**HyperFormer.example_config(), **kw})


def test_moe_routes_each_token_to_its_top_k_experts():
    torch.manual_seed(0)
    moe = MoEFeedForward(dim=6, hidden=5, n_experts=4, top_k=2, dropout=0.0).eval()
    x = torch.randn(3, 7, 6)
    w = moe.gate_weights(moe.norm(x))
    assert ((w > 0).sum(-1) == 2).all() and torch.allclose(w.sum(-1), torch.ones(3, 7))
    # the routed computation, token by token, only the chosen experts run
    y = moe.norm(x).reshape(-1, 6)
    logits = moe.gate(y)
    expected = []
    for t in range(y.shape[0]):
        top, idx = logits[t].topk(2)
        g = torch.softmax(top, 0)
        out = sum(g[j] * (torch.relu(y[t] @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e])
                  for j, e in enumerate(idx.tolist()))
        expected.append(out)
    assert torch.allclose(moe(x), x + torch.stack(expected).reshape(3, 7, 6), atol=1e-6)


def test_chequer_permutation_alternates_the_two_sides():
    perm = chequer_permutation(dim=6, kernel_h=2, n_perm=2, generator=torch.Generator().manual_seed(0))
    assert perm.shape == (2, 12)
    for k in range(2):
        assert sorted(perm[k].tolist()) == list(range(12))  # every feature of a and b exactly once
        side = (perm[k] >= 6).reshape(2, 3, 2)  # (kernel_h rows, kernel_w, pair): True = b
        for i in range(2):
            a_first = (i % 2 == 0) == (k % 2 == 0)
            assert (side[i, :, 0] == (not a_first)).all() and (side[i, :, 1] == a_first).all()


def test_interaction_is_bidirectional():
    torch.manual_seed(0)
    conv = ChequerConvInteraction(dim=8, kernel_h=2, n_perm=2, channels=3, kernel=3, dropout=0.0, seed=0).eval()
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    a_out, b_out = conv(a, b)
    assert a_out.shape == b_out.shape == (4, 8)
    for out in (a_out, b_out):  # each side's output depends on both inputs
        ga, gb = torch.autograd.grad(out.sum(), (a, b), retain_graph=True)
        assert ga.abs().sum() > 0 and gb.abs().sum() > 0


def test_gated_fusion():
    fuse = GatedFusion(4)
    p, q = torch.randn(2, 4), torch.randn(2, 4)
    g = torch.sigmoid(fuse.linear(p) + fuse.linear(q))
    assert torch.allclose(fuse(p, q), g * p + (1 - g) * q)


def inputs(model, with_qualifier=True):
    batch = model.example_inputs(3)
    if not with_qualifier:
        batch["seq"][:, 3:] = PAD
    return batch


def test_padding_is_ignored_and_qualifiers_matter_only_when_used():
    model = tiny().eval()
    batch = inputs(model, with_qualifier=False)
    out = model(batch)["scores"]
    with torch.no_grad():
        model.embedding[PAD] += 5.0  # the padding embedding never reaches a result
    assert torch.allclose(model(batch)["scores"], out, atol=1e-5)
    full = inputs(model)
    assert not torch.allclose(model(full)["scores"], model(batch)["scores"], atol=1e-4)
    ablated = tiny(use_qualifiers=False).eval()
    assert torch.allclose(ablated(full)["scores"], ablated(batch)["scores"], atol=1e-6)


def test_entity_neighbours_feed_the_mixed_pass_only():
    model = tiny().eval()
    batch = inputs(model)
    out = model(batch)
    other = dict(batch, neighbors=batch["neighbors"].flip(0))
    out2 = model(other)
    assert torch.allclose(out["triple"], out2["triple"])  # the triple pass sees the query only
    assert not torch.allclose(out["mixed"], out2["mixed"], atol=1e-4)
    assert torch.allclose(out["scores"], out["triple"] + out["mixed"])
    assert out["neighbors"].shape == (3, batch["neighbors"].shape[1], model.n_entities)


def test_loss_terms():
    model = tiny(label_smoothing=0.0, neighbor_weight=0.5).eval()
    batch = inputs(model)
    out = model(batch)
    losses = model.loss(out, batch)
    ce = torch.nn.functional.cross_entropy
    y = batch["labels"]
    assert torch.allclose(losses["loss_triple"], ce(out["triple"], y))
    assert torch.allclose(losses["loss_mixed"], ce(out["mixed"], y))
    n = out["neighbors"]
    query_entity = batch["seq"][:, 0] - SPECIALS  # each neighbour prompt's answer is the query entity
    manual = torch.stack([ce(n[:, j], query_entity) for j in range(n.shape[1])]).mean()
    assert torch.allclose(losses["loss_neighbors"], 0.5 * manual)
    plain = tiny(use_neighbors=False).eval()
    assert set(plain.loss(plain(batch), batch)) == {"loss_triple"}


def test_scores_use_every_entity_and_only_entities():
    model = tiny().eval()
    batch = inputs(model)
    assert model.predict(model(batch)).shape == (3, model.n_entities)
    table = model.element_embeddings()
    assert table.shape[0] == SPECIALS + model.n_entities + 2 * model.n_relations
    # 1-N scoring against the raw entity embeddings (as the code's __process_mask_feat)
    seq = batch["seq"]
    h = model._encode(table, seq)[:, 2]
    assert torch.allclose(model(batch)["triple"], h @ model.embedding[SPECIALS:SPECIALS + model.n_entities].t(),
                          atol=1e-5)


@pytest.mark.parametrize(("key", "value"), [("dim", 9), ("n_heads", 3), ("top_k", 4), ("input_dropout", 1.0),
                                            ("compose", "rotate"), ("n_layers", 0)])
def test_bad_arguments(key, value):
    with pytest.raises(ValueError):
        tiny(**{key: value})


def test_tokens():
    assert entity_token(0) == SPECIALS and relation_token(1, 5, 3, inverse=True) == SPECIALS + 5 + 3 + 1
    assert MASK != PAD


def _train(model, data, epochs, lr=3e-3, batch_size=128, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for epoch in range(epochs):
        data.set_epoch(epoch)
        model.train()
        order = torch.randperm(len(data))
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data.collate([data[int(i)] for i in order[start:start + batch_size]])
            loss = sum(v for k, v in model.loss(model(batch), batch).items())
            opt.zero_grad()
            loss.backward()
            opt.step()


def _evaluate(model, data):
    model.eval()
    ev = LinkPrediction()
    with torch.no_grad():
        for start in range(0, len(data), 256):
            batch = data.collate([data[i] for i in range(start, min(start + 256, len(data)))])
            ev.process(batch, model.predict(model(batch)))
    return ev.compute()


def test_steps_on_one_batch_lower_its_loss():
    model = tiny(input_dropout=0.0, entity_dropout=0.0, hidden_dropout=0.0, conv_dropout=0.0, label_smoothing=0.0,
                 qual_dropout=0.0, context_dropout=0.0, attention_dropout=0.0)
    batch = model.example_inputs(8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = sum(model.loss(model(batch), batch).values())
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_training_fits_the_synthetic_facts(tmp_path):
    """The model can learn: the filtered MRR of its own training queries rises well above the untrained one
    (generalisation to held-out facts needs the bigger run of examples/graph_hyperformer_synthetic.yaml)."""
    synthetic = {"n_clusters": 4, "cluster_size": 5, "n_relations": 2, "n_contexts": 2, "seed": 0}
    train = KGFacts(root=tmp_path, split="train", name="synthetic-hyper", synthetic=synthetic)
    test = train
    torch.manual_seed(0)
    model = HyperFormer(**train.metadata, dim=16, kernel_h=4, n_layers=1, ffn_dim=32, n_experts=2, top_k=1,
                        input_dropout=0.1)
    before = _evaluate(model, test)
    _train(model, train, epochs=40, batch_size=32)
    after = _evaluate(model, test)
    assert after["mrr"] > before["mrr"] + 0.3, (before, after)
