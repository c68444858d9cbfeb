"""BT^2 and its baselines (independent training, BCT): parity of the basis transformation and of the loss
with the official code, the basis-transformation identities, bad arguments, the pseudo classifier, and
the backward-compatible retrieval evaluator against scikit-learn.

Parity: ``fixtures/bt2_parity.pt`` holds the official ``ResNet_ortho`` forward (its head: ``fc3``, the two
orthogonal maps, ``fc_out``; the ResNet trunk replaced by the given features) and the official
``TransferTrainer.train`` loss, on our seeded weights (YifeiZhou02/BT-2, ``models/resnet.py``,
``trainers/transfer_trainer.py``). Regenerate with the official repository extracted (not committed)::

    PANCONV_RECORD_BT2=/tmp/bt2_official pytest plugins/vision/tests/test_bt2.py
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.evaluators.embedding_retrieval import CompatibleRetrieval, cross_retrieval
from panconv_vision.models.bt2 import BT2, BasisTransformation, EmbeddingNet, bt2_loss, pseudo_classifier

FIXTURE = Path(__file__).parent / "fixtures" / "bt2_parity.pt"
D_NEW, D_OLD, TO_ADD, CLASSES, C, N = 8, 6, 4, 5, 2.0, 7
LAMBDAS = (1.0, 10.0, 5.0)  # the official cifar100_transfer.yaml: lambda_1, lambda_2, lambda_3


def _ours() -> BasisTransformation:
    torch.manual_seed(0)
    head = BasisTransformation(D_NEW, D_OLD, TO_ADD, CLASSES, C).eval()
    with torch.no_grad():   # non-trivial orthogonal maps (the parametrisation starts at the identity)
        for name, p in head.named_parameters():
            if name.endswith("original"):
                p.normal_()
    return head


def _inputs():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(N, D_NEW + D_OLD, generator=g)
    labels = torch.randint(0, CLASSES, (N,), generator=g)
    phi_old = F.normalize(torch.randn(N, D_OLD, generator=g), dim=1)
    phi_p = F.normalize(torch.randn(N, D_NEW, generator=g), dim=1)
    pseudo = torch.randn(CLASSES, D_OLD, generator=g)
    return f, labels, phi_old, phi_p, pseudo


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(root: str) -> None:
    root = Path(root)
    sys.path.insert(0, str(root))       # transfer_trainer imports utils.*
    try:
        resnet = _load(root / "models" / "resnet.py", "bt2_official_resnet")
        trainer = _load(root / "trainers" / "transfer_trainer.py", "bt2_official_transfer_trainer")
    finally:
        sys.path.remove(str(root))

    class Trunk(torch.nn.Module):      # stands for the ResNet: hands over the given features
        def forward(self, x):
            return None, x

    official = resnet.ResNet_ortho(resnet.Bottleneck, [1, 1, 1, 1], num_classes=CLASSES, embedding_dim=D_NEW,
                                   embedding_dim_old=D_OLD, norm_feature=True, to_add_dim=TO_ADD, C=C)
    official.resnet = Trunk()
    state = {k: (v[..., None, None] if k == "fc3.weight" else v) for k, v in _ours().state_dict().items()}
    official.load_state_dict(state)
    f, labels, phi_old, phi_p, pseudo = _inputs()
    x = f[..., None, None]
    official.eval()
    with torch.no_grad():
        outputs = official(x)

    class Accelerator:
        @staticmethod
        def backward(loss):
            loss.backward()

    paths = [f"img{i}" for i in range(N)]
    loss = trainer.TransferTrainer().train(
        train_loader=[((paths, x), labels)], model=official, old_feature_dict=dict(zip(paths, phi_old)),
        new_feature_dict=dict(zip(paths, phi_p)), criterion=None,
        optimizer=torch.optim.SGD(official.parameters(), lr=0.0), device="cpu", accelerator=Accelerator(),
        pseudo_classifier=pseudo, lambda_1=LAMBDAS[0], lambda_2=LAMBDAS[1], lambda_3=LAMBDAS[2])
    torch.save({"outputs": [o.detach().reshape(N, -1) for o in outputs], "loss": float(loss),
                "source": "YifeiZhou02/BT-2 models/resnet.py ResNet_ortho, trainers/transfer_trainer.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_BT2"):
        _record(os.environ["PANCONV_RECORD_BT2"])
    rec = torch.load(FIXTURE)
    head = _ours()
    f, labels, phi_old, phi_p, pseudo = _inputs()
    with torch.no_grad():
        outputs = head(f)
    for ours, official in zip(outputs, rec["outputs"]):
        torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)
    logits, bct, new, _ = outputs
    losses = bt2_loss(logits, bct, new, labels, phi_old, pseudo, phi_p, LAMBDAS)
    assert set(losses) == {"loss_ce", "loss_influence", "loss_old", "loss_new"}
    assert float(sum(losses.values())) == pytest.approx(rec["loss"], rel=1e-5)


def test_basis_transformation_is_orthonormal_and_keeps_the_new_space():
    head = _ours()
    f, *_ = _inputs()
    with torch.no_grad():
        _, bct, new, joint = head(f)
        for m in (head.ortholinear_p, head.ortholinear_old2):
            torch.testing.assert_close(m.weight @ m.weight.T, torch.eye(m.weight.shape[0]), atol=1e-5, rtol=0)
        old = F.normalize(F.normalize(head.fc3(F.relu(f)), dim=1)[:, :TO_ADD], dim=1)
    assert joint.shape == (N, D_NEW + TO_ADD) and bct.shape == (N, D_OLD)
    # the new embedding is an orthonormal change of basis of [old part; C * phi_new']: its Gram matrix is
    # <a_i, a_j> + C^2 <n_i, n_j>, whatever the learned rotations
    torch.testing.assert_close(joint @ joint.T, old @ old.T + C ** 2 * (new @ new.T), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint[:, :D_OLD], bct)


def _old():
    return {"type": "vision.EmbeddingNet", "num_classes": 3, "img_size": 8, "width": 4, "stages": 1, "embed_dim": 6}


def test_bad_arguments_are_one_line_errors():
    cases = [
        (lambda: BT2(num_classes=3, img_size=8, width=4, stages=1), "old_model is required"),
        (lambda: BT2(num_classes=3, img_size=8, width=4, stages=1, embed_dim=4, to_add=8, old_model=_old()),
         "to_add"),
        (lambda: BT2(num_classes=3, img_size=8, width=4, stages=1, C=0.0, old_model=_old()), "C must be"),
        (lambda: EmbeddingNet(num_classes=3, img_size=8, width=4, stages=1, embed_dim=5, old_model=_old(),
                              influence_weight=1.0), "embed_dim == the old model's (6)"),
        (lambda: EmbeddingNet(num_classes=3, img_size=8, width=4, stages=1, influence_weight=1.0), "needs an old"),
        (lambda: EmbeddingNet(num_classes=3, img_size=8, arch="resnet"), "arch must be"),
        (lambda: EmbeddingNet(num_classes=3, img_size=8, width=0), "out of range"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            make()
        assert "\n" not in str(err.value)


def test_old_model_is_frozen_and_outside_the_state_dict():
    model = BT2(num_classes=3, img_size=8, width=4, stages=1, embed_dim=6, to_add=2, old_model=_old())
    assert not any(k.startswith("_old") for k in model.state_dict())
    assert all(not p.requires_grad for p in model._old.parameters())
    batch = model.example_inputs(4)
    out = model(batch)
    assert out["embedding"].shape == (4, 8) and out["old_features"].shape == (4, 6)
    # the old features are the old model's own embedding of the same images
    torch.testing.assert_close(out["old_features"], model._old.embed(batch["inputs"]))


def test_pseudo_classifier_is_the_class_mean_of_old_embeddings():
    class Data:
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(10, 1, 8, 8, generator=g)
            self.y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])

        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"inputs": self.x[i], "labels": self.y[i]}

        def collate(self, items):
            return {"inputs": torch.stack([i["inputs"] for i in items]),
                    "labels": torch.stack([i["labels"] for i in items])}

    torch.manual_seed(0)
    old = EmbeddingNet(num_classes=3, img_size=8, width=4, stages=1, embed_dim=6).eval()
    data = Data()
    pc = pseudo_classifier(old, data, 3, batch_size=4)
    with torch.no_grad():
        emb = old.embed(data.x)
    for c in range(3):
        torch.testing.assert_close(pc[c], emb[data.y == c].mean(0))
    model = BT2(num_classes=3, img_size=8, width=4, stages=1, embed_dim=6, to_add=2, old_model=_old())
    model.attach_data(data)
    assert bool(model.pseudo_ready)
    torch.testing.assert_close(model.pseudo_classifier, pseudo_classifier(model._old, data, 3))


def test_compatibility_loss_pulls_the_bct_part_to_the_old_space():
    torch.manual_seed(0)
    model = BT2(num_classes=3, img_size=8, width=4, stages=1, embed_dim=6, to_add=2, old_model=_old(),
                lambda_1=0.0, lambda_2=0.0, lambda_3=1.0)
    batch = model.example_inputs(16)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        loss = model.loss(model(batch), batch)["loss_old"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    with torch.no_grad():
        out = model(batch)
    # after training the compatible coordinates point where the old model does: new-query/old-gallery works
    cos = (F.normalize(out["embedding"][:, :6], dim=1) * out["old_features"]).sum(1)
    assert float(cos.mean()) > 0.8


def test_cross_retrieval_matches_scikit_learn():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(30, 5, generator=g), torch.randn(30, 7, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    got = cross_retrieval(q, gal, labels, ks=(1, 5))
    sim = F.normalize(q, dim=1) @ F.normalize(gal[:, :5], dim=1).T
    aps, hits1, hits5 = [], [], []
    for i in range(30):
        keep = torch.arange(30) != i
        s, rel = sim[i, keep], (labels[keep] == labels[i])
        if not rel.any():
            continue
        aps.append(average_precision_score(rel.numpy(), s.numpy()))
        top = s.argsort(descending=True)
        hits1.append(bool(rel[top[:1]].any()))
        hits5.append(bool(rel[top[:5]].any()))
    assert got["map"] == pytest.approx(sum(aps) / len(aps), rel=1e-9)
    assert got["r1"] == pytest.approx(sum(hits1) / len(hits1))
    assert got["r5"] == pytest.approx(sum(hits5) / len(hits5))


def test_compatible_retrieval_reports_the_three_settings():
    ev = CompatibleRetrieval(ks=(1,))
    _, batches, _ = CompatibleRetrieval.example()
    for batch, outputs in batches:
        ev.process(batch, outputs)
    got = ev.compute()
    assert set(got) == {f"{a}_{m}" for a in ("new_new", "new_old", "old_new", "old_old") for m in ("r1", "map")}
    assert got["new_new_r1"] == 1.0 and got["old_old_r1"] == 0.0 and 0.0 < got["new_old_map"] < 1.0
    with pytest.raises(ValueError, match="ks must be"):
        CompatibleRetrieval(ks=())


def test_builds_on_the_meta_device_with_a_real_old_model():
    """Config validation builds models on the meta device: the old model is still loaded with real weights."""
    with torch.device("meta"):
        model = BT2(num_classes=3, img_size=8, width=4, stages=1, embed_dim=6, to_add=2, old_model=_old())
        bct = EmbeddingNet(num_classes=3, img_size=8, width=4, stages=1, embed_dim=6, old_model=_old(),
                           influence_weight=1.0)
    assert model.encoder.features[0].weight.is_meta and bct.fc.weight.is_meta
    assert not next(model._old.parameters()).is_meta and model.pseudo_classifier.shape == (3, 6)
