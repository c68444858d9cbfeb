"""``recommend(users, k, exclude_seen)`` against a brute-force ranking on a tiny graph."""

import numpy as np
import pytest
import torch

from panconv_graph.datasets.recsys import RecSysData
from panconv_graph.models.lightgcn import LightGCN
from panconv_graph.models.mf import MF
from panconv_graph.models.ngcf import NGCF

N_USERS, N_ITEMS = 7, 11
CONFIGS = {LightGCN: {"embed_dim": 6, "n_layers": 2}, NGCF: {"embed_dim": 6, "layer_dims": [6, 4]},
           MF: {"embed_dim": 6}}


def tiny_data(tmp_path, seed=0):
    """A random user-item graph (every user 1..5 training items), written as RecSysData files."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "recsys" / "tiny"
    folder.mkdir(parents=True)
    train, test = [], []
    for u in range(N_USERS):
        perm = rng.permutation(N_ITEMS - 1)  # the last item is only held out (so n_items == N_ITEMS)
        n = int(rng.integers(1, 6))
        train.append(" ".join(map(str, [u, *sorted(perm[:n].tolist())])))
        test.append(f"{u} {perm[n]} {N_ITEMS - 1}")
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    data = RecSysData(tmp_path, "train", name="tiny")
    assert (data.n_users, data.n_items) == (N_USERS, N_ITEMS)
    seen = {u: set() for u in range(data.n_users)}
    for u, i in zip(*(a.tolist() for a in data.interactions())):
        seen[u].add(i)
    return data, seen


def build(cls, data, seed=0):
    torch.manual_seed(seed)
    model = cls(data.n_users, data.n_items, **CONFIGS[cls])
    model.attach_data(data)
    return model


def brute_force(model, users, k, seen=None):
    """Every item scored with Python loops from the final embeddings; seen items dropped; sorted."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        final = model._final_embeddings(None).double()
    model.train(was_training)
    user_emb, item_emb = final[: model.n_users], final[model.n_users:]
    items, scores = [], []
    for u in users:
        ranked = sorted(((float(user_emb[u] @ item_emb[i]), i) for i in range(model.n_items)
                         if seen is None or i not in seen[u]), reverse=True)[:k]
        items.append([i for _, i in ranked])
        scores.append([s for s, _ in ranked])
    return items, scores


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("cls", [LightGCN, NGCF, MF])
def test_matches_brute_force(tmp_path, cls, exclude_seen):
    data, seen = tiny_data(tmp_path)
    model = build(cls, data)
    users = [3, 0, 6, 3, 5]
    max_k = N_ITEMS - max(len(seen[u]) for u in users) if exclude_seen else N_ITEMS
    for k in sorted({1, 3, max_k}):
        rec = model.recommend(users, k=k, exclude_seen=exclude_seen)
        assert rec.items.shape == rec.scores.shape == (len(users), k)
        assert rec.items.dtype == torch.int64 and rec.scores.dtype == torch.float32
        items, scores = brute_force(model, users, k, seen if exclude_seen else None)
        assert rec.items.tolist() == items
        torch.testing.assert_close(rec.scores.double(), torch.tensor(scores, dtype=torch.float64),
                                   rtol=1e-5, atol=1e-6)
        if exclude_seen:
            assert not any(i in seen[u] for u, row in zip(users, rec.items.tolist()) for i in row)
    if not exclude_seen:  # the full ranking of a user holds its seen items too
        assert set(model.recommend([3], k=N_ITEMS, exclude_seen=False).items[0].tolist()) == set(range(N_ITEMS))


def test_scalar_user_numpy_and_tensor_ids(tmp_path):
    data, seen = tiny_data(tmp_path)
    model = build(LightGCN, data)
    one = model.recommend(4, k=3)
    assert one.items.shape == one.scores.shape == (3,)
    assert torch.all(one.scores[:-1] >= one.scores[1:])
    batch = model.recommend(np.array([4, 2]), k=3)
    assert torch.equal(batch.items[0], one.items)
    assert torch.equal(model.recommend(torch.tensor([4, 2]), k=3).items, batch.items)
    items, scores = model.recommend([4], k=3)  # a named tuple: unpacks as (items, scores)
    assert torch.equal(items[0], one.items)
    empty = model.recommend([], k=2)
    assert empty.items.shape == (0, 2)


@pytest.mark.parametrize("users, pattern", [
    ([0, N_USERS], rf"unknown user ids \[{N_USERS}\]; ids are 0\.\.{N_USERS - 1}"),
    ([-1, 2], r"unknown user ids \[-1\]"),
    ([2 ** 70], r"unknown user ids \[1180591620717411303424\]"),
    ([0.0, 1.0], r"users must be one integer id or a 1-D sequence"),
    ([[0, 1]], r"users must be one integer id or a 1-D sequence"),
    ([True], r"users must be one integer id or a 1-D sequence"),
    (["a"], r"users must be integer ids, got \['a'\]"),
    (None, r"users must be integer ids, got None"),
])
def test_bad_user_ids(tmp_path, users, pattern):
    model = build(MF, tiny_data(tmp_path)[0])
    with pytest.raises(ValueError, match=pattern):
        model.recommend(users, k=2)


@pytest.mark.parametrize("k, pattern", [
    (0, rf"k must be in 1\.\.{N_ITEMS} \(the number of items\), got 0"),
    (N_ITEMS + 1, rf"k must be in 1\.\.{N_ITEMS}"),
    (-3, r"got -3"),
    (2.0, r"k must be an integer"),
    (True, r"k must be an integer"),
    ("5", r"k must be an integer"),
])
def test_k_out_of_range(tmp_path, k, pattern):
    model = build(LightGCN, tiny_data(tmp_path)[0])
    with pytest.raises(ValueError, match=pattern):
        model.recommend([0], k=k)


def test_k_beyond_a_users_unseen_items(tmp_path):
    data, seen = tiny_data(tmp_path)
    model = build(LightGCN, data)
    heavy = max(seen, key=lambda u: len(seen[u]))
    unseen = N_ITEMS - len(seen[heavy])
    assert model.recommend([heavy], k=unseen).items.shape == (1, unseen)
    with pytest.raises(ValueError, match=rf"k={unseen + 1} but user {heavy} has only {unseen} unseen items"):
        model.recommend([heavy], k=unseen + 1)
    assert model.recommend([heavy], k=unseen + 1, exclude_seen=False).items.shape == (1, unseen + 1)


def test_training_data_is_required_and_named(tmp_path):
    data, _ = tiny_data(tmp_path)
    torch.manual_seed(0)
    graph_model = LightGCN(data.n_users, data.n_items, embed_dim=4)
    for exclude_seen in (True, False):  # LightGCN scores need the graph either way
        with pytest.raises(RuntimeError, match=r"needs the training data.*attach_data\(train_dataset\)"):
            graph_model.recommend([0], k=2, exclude_seen=exclude_seen)
    mf = MF(data.n_users, data.n_items, embed_dim=4)
    with pytest.raises(RuntimeError, match=r"attach_data\(train_dataset\).*or pass exclude_seen=False"):
        mf.recommend([0], k=2)
    items, _ = brute_force(mf, [0], 2)
    assert mf.recommend([0], k=2, exclude_seen=False).items.tolist() == items  # MF scores need no graph


def test_scores_in_eval_mode_and_restores_training_mode(tmp_path):
    data, seen = tiny_data(tmp_path)
    model = build(NGCF, data)
    model.mess_dropout = 0.5  # dropout would make training-mode scores random
    model.train()
    first = model.recommend([1, 2], k=4)
    assert model.training and model.embedding.weight.grad is None
    assert not first.scores.requires_grad
    torch.testing.assert_close(model.recommend([1, 2], k=4).scores, first.scores)
    items, _ = brute_force(model, [1, 2], 4, seen)
    assert first.items.tolist() == items
    model.eval()
    assert torch.equal(model.recommend([1, 2], k=4).items, first.items)
    assert not model.training


@pytest.mark.parametrize("cls", [LightGCN, NGCF, MF])
def test_recommends_the_same_after_reloading_weights_and_data(tmp_path, cls):
    """What ``panconv.load_model`` does: build from the saved sizes, load weights, attach the
    training split read again from disk."""
    data, _ = tiny_data(tmp_path)
    trained = build(cls, data, seed=0)
    opt = torch.optim.Adam(trained.parameters(), lr=0.05)
    data.set_epoch(0)
    batch = data.collate(data.__getitems__(list(range(len(data)))))
    for _ in range(3):  # move the weights away from any initialisation
        losses = trained.loss(trained(batch), batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    torch.save(trained.state_dict(), tmp_path / "weights.pth")
    sizes = {"n_users": trained.n_users, "n_items": trained.n_items}
    torch.manual_seed(123)
    loaded = cls(**sizes, **CONFIGS[cls])
    loaded.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True))
    loaded.eval()
    loaded.attach_data(RecSysData(tmp_path, "train", name="tiny"))
    trained.eval()
    for users in ([0, 1, 2, 3], [6]):
        a, b = trained.recommend(users, k=3), loaded.recommend(users, k=3)
        assert torch.equal(a.items, b.items)
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)


def test_attach_data_refuses_other_sizes(tmp_path):
    from panconv.errors import DataError

    data, _ = tiny_data(tmp_path)
    model = MF(data.n_users + 1, data.n_items, embed_dim=4)
    with pytest.raises(DataError, match=rf"built for {N_USERS + 1} users / {N_ITEMS} items but the data in "
                                        rf".*tiny has {N_USERS} / {N_ITEMS}"):
        model.attach_data(data)
