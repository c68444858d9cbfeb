import math

import pytest
import torch
import torch.nn.functional as F

from panconv_graph.datasets.recsys import RecSysData
from panconv_graph.evaluators.ranking import FullRanking
from panconv_graph.models.lightgcn import LightGCN, map_official_state_dict
from panconv_graph.models.mf import MF
from panconv_graph.models.ngcf import NGCF, drop_edges_symmetric


@pytest.mark.parametrize("cls", [LightGCN, MF, NGCF])
def test_example_forward_backward_and_ranking(cls):
    torch.manual_seed(0)
    model = cls(**cls.example_config())
    batch = model.example_inputs(4)
    losses = model.loss(model(batch), batch)
    assert set(losses) == {"loss", "loss_reg"} and all(v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    scores = model.predict(model({"users": torch.tensor([0, 2])}))
    assert scores.shape == (2, model.n_items)
    user_emb, item_emb = model.all_embeddings()
    torch.testing.assert_close(scores.dense(), user_emb[[0, 2]] @ item_emb.t())


def test_bpr_and_l2_by_hand():
    model = MF(n_users=2, n_items=3, embed_dim=2, reg=0.1)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0],                # users
                                                   [1.0, 1.0], [0.5, 0.0], [-1.0, 2.0]]))  # items
    batch = {"users": torch.tensor([0, 1]), "pos": torch.tensor([0, 2]), "neg": torch.tensor([1, 1])}
    losses = model.loss(model(batch), batch)
    # user 0: pos 1.0, neg 0.5; user 1: pos 4.0, neg 0.0
    bpr = (math.log1p(math.exp(0.5 - 1.0)) + math.log1p(math.exp(0.0 - 4.0))) / 2
    assert losses["loss"].item() == pytest.approx(bpr, rel=1e-6)
    sq = (1 + 4) + (2 + 5) + (0.25 + 0.25)       # ||u||^2 + ||pos||^2 + ||neg||^2 over the batch
    assert losses["loss_reg"].item() == pytest.approx(0.1 * 0.5 * sq / 2, rel=1e-6)


def test_lightgcn_bpr_uses_propagated_scores_and_layer0_l2():
    model = LightGCN(**LightGCN.example_config())
    batch = model.example_inputs(3)
    out = model(batch)
    final = model._final_embeddings(None)
    torch.testing.assert_close(out["users"], final[batch["users"]])
    torch.testing.assert_close(out["neg"], final[batch["neg"] + model.n_users])
    u, p, n = final[batch["users"]], final[batch["pos"] + model.n_users], final[batch["neg"] + model.n_users]
    expected = F.softplus((u * n).sum(1) - (u * p).sum(1)).mean()
    w = model.embedding.weight
    l2 = (w[batch["users"]].pow(2).sum() + w[batch["pos"] + model.n_users].pow(2).sum()
          + w[batch["neg"] + model.n_users].pow(2).sum()) * 0.5 / 3
    losses = model.loss(out, batch)
    torch.testing.assert_close(losses["loss"], expected)
    torch.testing.assert_close(losses["loss_reg"], model.reg * l2)


@pytest.mark.parametrize("cls", [LightGCN, MF])
def test_reference_code_weights_load_through_the_map(cls):
    """LightGCN-PyTorch's two tables (``embedding_user`` / ``embedding_item``, a ``module.`` prefix allowed) become
    our one ``embedding`` (users first), so a user's and an item's layer-0 rows are the reference's rows."""
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
    model = cls(n_users=5, n_items=7, embed_dim=4)
    model.load_state_dict(map_official_state_dict({"embedding_user.weight": users,
                                                   "module.embedding_item.weight": items}))  # strict
    torch.testing.assert_close(model.ego_embeddings()[3], users[3], rtol=0, atol=0)
    torch.testing.assert_close(model.ego_embeddings()[5 + 6], items[6], rtol=0, atol=0)
    with pytest.raises(KeyError, match="unexpected key in a LightGCN-PyTorch state dict: f.weight"):
        map_official_state_dict({"embedding_user.weight": users, "embedding_item.weight": items, "f.weight": users})
    with pytest.raises(KeyError, match="missing key in a LightGCN-PyTorch state dict: embedding_item.weight"):
        map_official_state_dict({"embedding_user.weight": users})
    with pytest.raises(ValueError, match="different widths"):
        map_official_state_dict({"embedding_user.weight": users, "embedding_item.weight": items[:, :3]})


def test_init_and_defaults():
    torch.manual_seed(0)
    model = LightGCN(n_users=300, n_items=400)
    assert (model.embed_dim, model.n_layers, model.reg) == (64, 3, 1e-4)
    assert model.embedding.weight.std().item() == pytest.approx(0.1, rel=0.02)


def test_eval_propagates_once_and_refreshes_after_update():
    model = LightGCN(**LightGCN.example_config())
    model.example_inputs()
    model.eval()
    first = model.all_embeddings()
    assert model.all_embeddings()[0] is first[0]   # cached within an evaluation
    with torch.no_grad():
        model.embedding.weight.add_(1.0)           # an optimizer step changes the parameters
    assert model.all_embeddings()[0] is not first[0]
    model.train()
    assert model._cache is None


def test_missing_graph_is_a_clear_error():
    model = LightGCN(**LightGCN.example_config())
    with pytest.raises(RuntimeError, match=r"has no graph: call model\.attach_data\(train_dataset\)"):
        model({"users": torch.tensor([0]), "pos": torch.tensor([0]), "neg": torch.tensor([1])})


@pytest.mark.parametrize("cls, kwargs, pattern", [
    (LightGCN, {"n_users": 0}, r"LightGCN: n_users and n_items must be positive \(got 0, 7\)"),
    (MF, {"n_items": -2}, r"MF: n_users and n_items must be positive"),
    (LightGCN, {"embed_dim": 0}, r"embed_dim must be positive, got 0"),
    (MF, {"reg": -1.0}, r"reg must be >= 0, got -1\.0"),
    (NGCF, {"init_std": 0.0}, r"init_std must be positive"),
    (LightGCN, {"n_layers": -1}, r"LightGCN: n_layers must be >= 0, got -1"),
    (LightGCN, {"backend": "dgl"}, r"LightGCN: backend must be 'csr' or 'pyg', got 'dgl'"),
    (NGCF, {"layer_dims": []}, r"NGCF: layer_dims must be a non-empty list of positive integers, got \[\]"),
    (NGCF, {"layer_dims": [8, 0]}, r"layer_dims must be .* got \[8, 0\]"),
    (NGCF, {"layer_dims": 8}, r"layer_dims must be .* got 8"),
    (NGCF, {"mess_dropout": 1.0}, r"NGCF: mess_dropout must be in \[0, 1\), got 1\.0"),
    (NGCF, {"node_dropout": -0.1}, r"NGCF: node_dropout must be in \[0, 1\)"),
])
def test_bad_constructor_arguments_raise_value_error(cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(**{**cls.example_config(), **kwargs})


@pytest.mark.parametrize("cls", [LightGCN, MF, NGCF])
def test_sizes_are_declared_metadata_inputs(cls):
    assert cls.metadata_inputs == ("n_users", "n_items")
    assert set(cls.metadata_inputs) <= set(RecSysData.metadata_keys)


def test_symmetric_edge_dropout():
    model = NGCF(**NGCF.example_config())
    model.example_inputs()
    torch.manual_seed(0)
    dropped = drop_edges_symmetric(model.adj, 0.5).to_dense()
    torch.testing.assert_close(dropped, dropped.t())
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], model.adj.to_dense()[kept] * 2)


def train(model, data, epochs, lr, batch_size=2048):
    model.attach_data(data)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        data.set_epoch(epoch)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).tolist()
        for start in range(0, len(data), batch_size):
            batch = data.collate(data.__getitems__(order[start:start + batch_size]))
            losses = model.loss(model(batch), batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    return model


def evaluate(model, data, batch_size=1024):
    model.eval()
    ev = FullRanking(ks=[20])
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.collate(data.__getitems__(list(range(start, min(start + batch_size, len(data))))))
            ev.process(batch, model.predict(model(batch), batch))
    return ev.compute()


def test_lightgcn_learns_on_lastfm(data_root):
    torch.manual_seed(0)
    train_data = RecSysData(data_root, "train", name="lastfm")
    val = RecSysData(data_root, "val", name="lastfm")
    model = LightGCN(train_data.n_users, train_data.n_items)
    model.attach_data(train_data)
    before = evaluate(model, val)["recall@20"]
    after = evaluate(train(model, train_data, epochs=2, lr=0.005), val)
    random_recall = 20 / train_data.n_items
    assert before < 10 * random_recall
    assert after["recall@20"] > 0.08 and after["recall@20"] > 50 * random_recall
    assert after["ndcg@20"] > 0.05


@pytest.mark.slow
def test_lightgcn_beats_mf_at_same_budget(data_root):
    train_data = RecSysData(data_root, "train", name="lastfm")
    val = RecSysData(data_root, "val", name="lastfm")
    results = {}
    for cls in (LightGCN, MF):
        torch.manual_seed(0)
        results[cls.__name__] = evaluate(train(cls(train_data.n_users, train_data.n_items), train_data,
                                               epochs=10, lr=0.005), val)
    assert results["LightGCN"]["recall@20"] > results["MF"]["recall@20"]
    assert results["LightGCN"]["ndcg@20"] > results["MF"]["ndcg@20"]


@pytest.mark.parametrize("cls", [LightGCN, NGCF])
def test_state_dict_round_trip(cls):
    import io

    torch.manual_seed(0)
    a = cls(**cls.example_config())
    torch.manual_seed(1)
    b = cls(**cls.example_config())
    for m in (a, b):
        m.attach_data(m.example_data())
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    a.eval(), b.eval()
    users = {"users": torch.tensor([0, 1, 4])}
    torch.testing.assert_close(a(users).dense(), b(users).dense())
