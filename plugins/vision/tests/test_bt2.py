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


# --------------------------------------------------------------------------- ResNet-50 (the official ImageNet sizes)

FIXTURE_R50 = Path(__file__).parent / "fixtures" / "bt2_resnet50_parity.pt"
R50_EMB, R50_ADD, R50_CLASSES = 16, 4, 10     # small embeddings and classes; the trunk is the whole ResNet-50


def _r50_old_config() -> dict:
    return {"type": "vision.EmbeddingNet", "num_classes": R50_CLASSES, "in_channels": 3, "img_size": 32,
            "arch": "resnet50", "embed_dim": R50_EMB}


def _seeded(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Values for every parameter and buffer in state-dict order that keep a 50-layer net's activations O(1):
    convs / linears N(0, 1 / fan_in), BatchNorm weight U(0.5, 1.5), bias and mean N(0, 0.1), var U(0.5, 1.5);
    orthogonal maps: N(0, 1) generators on an identity base (so they stay orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked") or name.startswith("pseudo") or t.dtype != torch.float32:
                continue
            if name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "1.weight")) and t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("base"):          # the orthogonal parametrisation's base: the identity
                t.copy_(torch.eye(t.shape[0]))
            elif name.endswith("original"):
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
    return model.eval()


def _r50_models():
    old = _seeded(EmbeddingNet(num_classes=R50_CLASSES, in_channels=3, img_size=32, arch="resnet50",
                               embed_dim=R50_EMB), 0)
    new = _seeded(BT2(num_classes=R50_CLASSES, in_channels=3, img_size=32, arch="resnet50", embed_dim=R50_EMB,
                      to_add=R50_ADD, C=C, old_model=_r50_old_config()), 1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    return old, new, x


def _to_official(official: torch.nn.Module, ours: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Load our state into the official module in order (official keys in ``skip`` keep their values)."""
    theirs = {k: v for k, v in official.state_dict().items() if k not in skip}
    values = [v for k, v in ours.state_dict().items() if not k.startswith("pseudo")]
    assert len(theirs) == len(values)
    official.load_state_dict({**official.state_dict(), **{k: v.reshape(t.shape) for (k, t), v in
                                                           zip(theirs.items(), values)}})


def _record_resnet50(root: str) -> None:
    resnet = _load(Path(root) / "models" / "resnet.py", "bt2_official_resnet")
    old, new, x = _r50_models()
    official_old = resnet.ResNet50(num_classes=R50_CLASSES, embedding_dim=R50_EMB)
    official_new = resnet.ResNet50_ortho(num_classes=R50_CLASSES, embedding_dim=R50_EMB, embedding_dim_old=R50_EMB,
                                         to_add_dim=R50_ADD, C=C)
    counts = {"old": sum(p.numel() for p in official_old.parameters()),
              "new": sum(p.numel() for p in official_new.parameters()),
              "new_inner_fc": official_new.resnet.fc.weight.numel()}
    _to_official(official_old, old)
    _to_official(official_new, new, skip=("resnet.fc.weight",))
    with torch.no_grad():
        logits, feature = official_old.eval()(x)
        outputs = official_new.eval()(x)
    torch.save({"old": [logits, feature.flatten(1)], "new": [o.reshape(2, -1) for o in outputs], "counts": counts,
                "source": "YifeiZhou02/BT-2 models/resnet.py ResNet50, ResNet50_ortho (ml-fct ResNet)"}, FIXTURE_R50)


def test_resnet50_parity_with_the_official_code(single_thread):
    """Our ``arch="resnet50"`` models = the official ``ResNet50`` (old / independent) and ``ResNet50_ortho``
    (BT^2) forwards on shared weights (the whole trunk, last block giving the embedding), <= 1e-5."""
    if os.environ.get("PANCONV_RECORD_BT2"):
        _record_resnet50(os.environ["PANCONV_RECORD_BT2"])
    rec = torch.load(FIXTURE_R50)
    old, new, x = _r50_models()
    with torch.no_grad():
        out = old(x)
        torch.testing.assert_close([out["logits"], out["embedding"]], rec["old"], atol=1e-5, rtol=1e-5)
        got = list(new.transform(new.embedding(new.encoder(x))))
        torch.testing.assert_close(got, rec["new"], atol=1e-5, rtol=1e-5)
        for m in (new.transform.ortholinear_p, new.transform.ortholinear_old2):     # non-trivial, orthogonal
            torch.testing.assert_close(m.weight @ m.weight.T, torch.eye(m.weight.shape[0]), atol=1e-5, rtol=0)
            assert (m.weight - torch.eye(m.weight.shape[0])).abs().max() > 0.1
    # parameter counts at the fixture's sizes: the official modules' (BT^2: less the unused inner resnet.fc)
    assert sum(p.numel() for p in old.parameters()) == rec["counts"]["old"]
    assert sum(p.numel() for p in new.parameters()) == rec["counts"]["new"] - rec["counts"]["new_inner_fc"]


def test_registered_resnet50_sizes_are_the_official_imagenet_ones():
    # official configs/imagenet_backbone_old.yaml (ResNet50, embedding 128, 1000-way fc) and
    # configs/imagenet_transfer.yaml (ResNet50_ortho, 128 + 128, to_add_dim 32, C 2), counted with the official
    # models/resnet.py: 22,911,552 and 23,561,408 (of which 256,000 the unused inner resnet.fc we leave out)
    import panconv

    with torch.device("meta"):
        old = panconv.create_model("vision.embedding_resnet50")
        new = panconv.create_model("vision.bt2_resnet50")
    assert sum(p.numel() for p in old.parameters()) == 22_911_552
    assert sum(p.numel() for p in new.parameters()) == 23_561_408 - 256_000
    assert new.encoder.out_dim == 256 and new.transform.to_add == 32 and new.transform.C == 2.0
    assert isinstance(new.embedding, torch.nn.Identity) and new.pseudo_classifier.shape == (1000, 128)
    # the trunk is torchvision's ResNet-50 but for the last block (2048 -> 128 / 256 with a projection shortcut)
    import torchvision

    tv = sum(p.numel() for n, p in torchvision.models.resnet50().named_parameters()
             if not n.startswith(("fc.", "layer4.2.")))
    last = sum(p.numel() for p in old.encoder.layer4[2].parameters())
    assert sum(p.numel() for p in old.encoder.parameters()) == tv + last
    assert last == 2048 * 512 + 2 * 512 + 512 * 512 * 9 + 2 * 512 + 512 * 128 + 2 * 128 + 2048 * 128 + 2 * 128
    with pytest.raises(ValueError, match="depths"):
        from panconv_vision.models.bt2 import ResNetEncoder

        ResNetEncoder(3, 16, depths=(1, 1, 1, 1))
