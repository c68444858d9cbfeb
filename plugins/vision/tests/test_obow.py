"""OBoW: the BoW extractor (soft codes, online queue vocabulary), the dynamic BoW predictor, the momentum
teacher, parity with the official code, sizes.

Parity: ``fixtures/obow_parity.pt`` holds the official outputs (valeoai/obow ``obow/builder_obow.py``:
``BoWExtractor``, ``BoWPredictor`` and the whole ``OBoW`` training forward with its cosine momentum, two
steps, our backbone wrapped in the official feature-extractor interface) on our seeded weights and inputs.
Regenerate with the repository fetched (not committed)::

    PANCONV_RECORD_OBOW=/path/to/obow pytest plugins/vision/tests/test_obow.py
"""

import os
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import panconv
from panconv_vision.models.convnext import ConvNeXt
from panconv_vision.models.obow import (
    OFFICIAL_DROPPED,
    BoWExtractor,
    BoWPredictor,
    OBoW,
    ResNetTrunk,
    bow_perplexity,
    map_official_state_dict,
)
from panconv_vision.models.ssl import cosine_momentum
from panconv_vision.testing import fill_, num_parameters

FIXTURE = Path(__file__).parent / "fixtures" / "obow_parity.pt"


def test_codes_are_the_softmax_of_the_scaled_squared_distances():
    torch.manual_seed(0)
    ex = BoWExtractor(num_words=6, num_channels=4, inv_delta=10.0).eval()
    ex.min_distance_mean.fill_(0.7)
    f = torch.randn(2, 4, 5, 5)
    bow, codes = ex(f)
    inner = f[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1)  # border left out: (2, 3, 3, 4)
    d = ((inner[..., None, :] - ex.embedding) ** 2).sum(-1)  # (2, 3, 3, 6)
    expected = torch.softmax(-10.0 / 0.7 * d, dim=-1).permute(0, 3, 1, 2)
    torch.testing.assert_close(codes, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bow, expected.amax((2, 3)) / expected.amax((2, 3)).sum(1, keepdim=True))
    hard = BoWExtractor(num_words=6, num_channels=4, inv_delta=None).eval()
    hard.embedding.copy_(ex.embedding)
    _, codes = hard(f)
    assert torch.equal(codes.argmax(1), d.argmin(-1)) and torch.equal(codes.sum(1), torch.ones(2, 3, 3))


def test_the_vocabulary_is_a_queue_of_local_teacher_features():
    torch.manual_seed(0)
    ex = BoWExtractor(num_words=6, num_channels=3).train()
    old = ex.embedding.clone()
    f = torch.randn(4, 3, 7, 7)
    inner = f[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1)
    nearest = ((inner[..., None, :] - old) ** 2).sum(-1).min(-1).values.mean()
    torch.manual_seed(1)
    ex(f)
    # the distance average moves by 1 % toward the batch's mean nearest-word distance
    torch.testing.assert_close(ex.min_distance_mean, 0.99 * 0.5 + 0.01 * nearest.reshape(1))
    local = F.avg_pool2d(f[:, :, 1:-1, 1:-1], 3, 1).flatten(2)  # (4, 3, 9)
    for b in range(4):  # each new word is one 3x3-averaged position of its image
        assert any(torch.allclose(ex.embedding[b], local[b, :, j]) for j in range(9))
    assert torch.equal(ex.embedding[4:], old[4:]) and int(ex.embedding_ptr) == 4
    ex(f)  # wraps around: rows 4, 5, 0, 1
    assert int(ex.embedding_ptr) == 2
    assert not torch.equal(ex.embedding[4:], old[4:])


def test_predicted_weights_are_unit_vectors_scaled_by_kappa():
    torch.manual_seed(0)
    head = BoWPredictor(num_channels_out=5, num_channels_in=[3, 4], num_channels_hidden=7, kappa=5.0).eval()
    vocab = [torch.randn(6, 3), torch.randn(6, 4)]
    g = torch.randn(2, 5)
    logits = head([g], vocab)[0]
    for level in range(2):
        w = head.generators[level](vocab[level])
        torch.testing.assert_close(w.norm(dim=1), torch.ones(6))
        torch.testing.assert_close(logits[level], 5.0 * g @ w.t())
    assert not head.scale.requires_grad


def _tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(backbone=ConvNeXt(depths=(1, 1), dims=(8, 16), patch_size=2, in_channels=3), in_channels=3,
               num_words=8, inv_delta=10.0, kappa=5.0, momentum=0.99, momentum_steps=10, crop_size=12,
               patch_size=8)
    return OBoW(**{**cfg, **kw})


def test_teacher_follows_the_cosine_momentum_schedule():
    model = _tiny().train()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    teacher0 = [p.clone() for p in model.teacher.module.parameters()]
    batch = {"inputs": torch.randn(4, 3, 20, 20)}
    model(batch)
    alpha = cosine_momentum(0, 10, 0.99)
    for t0, t, s in zip(teacher0, model.teacher.module.parameters(), model.backbone.parameters()):
        torch.testing.assert_close(t, alpha * t0 + (1 - alpha) * s)
    assert int(model.momentum_step) == 1
    model.momentum_step.fill_(10)  # schedule done: alpha = 1, the teacher stays
    before = [p.clone() for p in model.teacher.module.parameters()]
    model(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.module.parameters()))


def test_student_views_and_loss():
    model = _tiny(num_crops=2, num_patches=3).train()
    batch = {"inputs": torch.randn(4, 3, 20, 20)}
    out = model(batch)
    assert [v[0].shape for v in out["logits"]] == [(8, 8), (12, 8)]  # B * n views, K words
    assert [t.shape for t in out["targets"]] == [(4, 8), (4, 8)]
    loss = model.loss(out, batch)
    by_hand = 0.0
    for view in out["logits"]:  # cross-entropy minus the targets' entropy, mean over levels
        terms = []
        for logits, target in zip(view, out["targets"]):
            t = target.repeat_interleave(logits.shape[0] // 4, 0)
            terms.append((-(t * F.log_softmax(logits, 1)).sum(1) + (t * torch.log(t.clamp_min(1e-30))).sum(1)).mean())
        by_hand = by_hand + sum(terms) / 2
    torch.testing.assert_close(loss["loss"], by_hand)
    perp = bow_perplexity(out["targets"][0])
    assert 1 <= perp[1] <= perp[0] <= 8


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="bow_levels"):
        _tiny(bow_levels=(0, 0))
    with pytest.raises(ValueError, match="crop_scale"):
        _tiny(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        _tiny()({"inputs": torch.randn(2, 1, 20, 20)})
    with pytest.raises(ValueError, match="at least 5x5"):
        _tiny().train()({"inputs": torch.randn(2, 3, 12, 12)})


def test_registered_size():
    assert sorted(panconv.list_models("vision.obow_*")) == ["vision.obow_resnet18", "vision.obow_resnet18_vanilla",
                                                            "vision.obow_resnet50"]
    with torch.device("meta"):
        model = panconv.create_model("vision.obow_resnet50")
    student = num_parameters(model.backbone)
    assert student == 23_508_032 and abs(student + 2048 * 1000 + 1000 - 25.6e6) / 25.6e6 < 0.01
    assert num_parameters(model.predictor) == 29_380_610
    assert model.bow_levels == (2, 3) and [b.embedding.shape for b in model.bow] == [(8192, 1024), (8192, 2048)]


def test_student_keys_are_the_backbone_keys():
    """``run.init_from: PATH`` (backbone. -> backbone.) fine-tunes the student."""
    model = _tiny()
    clf = panconv.create_model({"backbone": {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16],
                                             "patch_size": 2}, "neck": {"type": "vision.PoolNorm"},
                                "head": {"type": "core.LinearClsHead", "num_classes": 10}})
    ours = {k: v.shape for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert ours == {k: v.shape for k, v in clf.state_dict().items() if k.startswith("backbone.")}


# --------------------------------------------------------------------------- parity with the official code


def _ours():
    model = fill_(_tiny())
    with torch.no_grad():
        for ex in model.bow:
            ex.embedding.abs_()
            ex.embedding_ptr.zero_()
            ex.num_batches.zero_()
            ex.min_distance_mean.fill_(0.5)
        model.momentum_step.zero_()
        for name, p in model.named_parameters():
            if re.search(r"(norm|generators\.\d\.2)\.weight$", name):
                p.add_(1.0)
        model.predictor.scale.fill_(5.0)
    return model.train()


def _steps():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 3, 20, 20, generator=g), [torch.randn(8, 3, 12, 12, generator=g),
                                                       torch.randn(20, 3, 8, 8, generator=g)]) for _ in range(2)]


def _official_key(key, resnet=False):
    """Our key -> the official OBoW's: with the ``Adapter`` of ``_record`` around our backbone, or (``resnet``)
    with the official ResNet feature extractor (``_feature_blocks.0`` = conv1, bn, relu, maxpool; 1-4 = layer1-4)
    around the same torchvision layers as our ``ResNetTrunk``."""
    if key == "momentum_step":
        return "_iteration"
    if resnet:
        m = re.match(r"(backbone|teacher\.module)\.(stem\.0|stem\.1|stages\.\d)\.(.*)", key)
        if m:
            net = {"backbone": "feature_extractor", "teacher.module": "feature_extractor_teacher"}[m.group(1)]
            block = {"stem.0": "0.Conv", "stem.1": "0.bn"}.get(m.group(2)) or str(int(m.group(2)[-1]) + 1)
            return f"{net}._feature_blocks.{block}.{m.group(3)}"
    for ours, theirs in (("backbone.", "feature_extractor.net."), ("teacher.module.", "feature_extractor_teacher.net."),
                         ("predictor.scale", "bow_predictor.scale")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    m = re.match(r"predictor\.generators\.(\d)\.(\d)\.(.*)", key)
    if m:
        i, j, rest = m.groups()
        return f"bow_predictor.layers_w.{i}.b{i}_{ {'1': 'fc', '2': 'bn', '4': 'last_layer'}[j]}.{rest}"
    m = re.match(r"bow\.(\d)\.(.*)", key)
    if m:
        i, rest = m.groups()
        name = {"embedding": "_embedding", "embedding_ptr": "_embedding_ptr", "num_batches": "_track_num_batches",
                "min_distance_mean": "_min_distance_mean"}[rest]
        return f"bow_extractor.bow_extractor.{i}.{name}"
    raise KeyError(key)


def _state(model, official=False):
    """What the fixture compares after each step: vocabularies, distance averages, part of the teacher."""
    sd = model.state_dict()
    keys = ["bow.0.embedding", "bow.1.embedding", "bow.0.min_distance_mean", "bow.1.min_distance_mean",
            "teacher.module.stem.conv.weight", "teacher.module.stages.1.blocks.0.pwconv2.weight"]
    return {k: sd[_official_key(k) if official else k].flatten()[:128].clone() for k in keys}


def _record(path):
    sys.path.insert(0, path)
    from obow.builder_obow import OBoW as OfficialOBoW

    class Adapter(nn.Module):  # the official feature-extractor interface over our backbone
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, keys=None):
            maps = self.net(x)
            return maps[-1].mean((2, 3)) if keys is None else [maps[int(k[-1])] for k in keys]

    ours = _ours()
    official = OfficialOBoW(Adapter(ConvNeXt(depths=(1, 1), dims=(8, 16), patch_size=2, in_channels=3)), 16,
                            ["l0", "l1"], [dict(num_words=8, num_channels=8, inv_delta=10),
                                           dict(num_words=8, num_channels=16, inv_delta=10)],
                            dict(kappa=5), alpha=(0.99, 10)).train()
    theirs = official.state_dict()
    mapped = {_official_key(k): v for k, v in ours.state_dict().items() if k != "momentum_step"}
    assert set(theirs) - set(mapped) == {"_alpha", "_iteration"} and not set(mapped) - set(theirs)
    official.load_state_dict({**theirs, **mapped})
    record = {"source": "valeoai/obow obow/builder_obow.py (OBoW, BoWExtractor, BoWPredictor)", "steps": []}
    for i, (image, views) in enumerate(_steps()):
        torch.manual_seed(10 + i)
        losses, logs = official(image, views)
        record["steps"].append({"losses": losses[:2].detach(), "perplexity": torch.tensor(logs[:4]),
                                **_state(official, official=True)})
    torch.save(record, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_OBOW"):
        _record(os.environ["PANCONV_RECORD_OBOW"])
    rec = torch.load(FIXTURE)
    model = _ours()
    for i, ((image, views), expected) in enumerate(zip(_steps(), rec["steps"])):
        torch.manual_seed(10 + i)
        out = model.bow_step(image, views)
        losses = [model.loss({"logits": [v], "targets": out["targets"]}, {})["loss"] for v in out["logits"]]
        torch.testing.assert_close(torch.stack(losses).detach(), expected["losses"], atol=1e-5, rtol=1e-5)
        perplexity = [bow_perplexity(t) for t in out["targets"]]  # official logs: batch per level, image per level
        torch.testing.assert_close(torch.tensor([p[0] for p in perplexity] + [p[1] for p in perplexity]),
                                   expected["perplexity"], atol=1e-5, rtol=1e-5)  # measured 3.3e-6 on values ~8
        for key, value in _state(model).items():
            torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=1e-5, msg=key)


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_pretraining_improves_the_knn_accuracy_of_the_student(shared_data):
    """40 steps of OBoW on real digits lift the student's k-NN accuracy above its random initialisation
    (measured: 0.227 -> 0.29-0.31 on the first 1,000 validation digits)."""
    from panconv_vision.datasets.digits import MNIST
    from panconv_vision.evaluators.representation import knn_accuracy

    train = MNIST(root=shared_data, split="train", size=28, limit=4096)
    val = MNIST(root=shared_data, split="val", size=28, limit=1000)
    torch.manual_seed(0)
    model = OBoW(ConvNeXt(depths=(1, 1), dims=(32, 64), patch_size=2, in_channels=1), in_channels=1,
                 bow_levels=(-1,), num_words=2048, crop_size=20, patch_size=12, momentum_steps=384,
                 feature_norm=True)

    def knn():
        model.eval()
        with torch.no_grad():
            return knn_accuracy(model.student_features(val.inputs), val.labels)

    before = knn()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        model.train()
        batch = {"inputs": train.inputs[torch.randint(0, len(train), (32,), generator=g)]}
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert knn() > before + 0.03


def test_feature_norm_is_a_layernorm_on_the_pooled_feature():
    model = _tiny(feature_norm=True).eval()
    x = torch.randn(3, 3, 20, 20)
    pooled = model.backbone(x)[-1].mean((2, 3))
    torch.testing.assert_close(model.student_features(x), F.layer_norm(pooled, (16,), model.feature_norm.weight,
                                                                       model.feature_norm.bias, 1e-6))
    assert torch.equal(model(x)["features"], model.student_features(x))
    assert _tiny().feature_norm is None


# --------------------------------------------------------------------------- ResNet-18 (the ImageNet-20% study)

OBOW_OFFICIAL = Path(os.environ.get("PANCONV_OBOW_OFFICIAL", "/tmp/obow_official"))


def test_registered_resnet18_sizes_are_the_official_configs():
    # official config/ImageNet20/ResNet18_OBoW_{full,vanilla}.yaml; counts = the official OBoW modules'
    # (feature_extractor, bow_predictor; test below), without its 513,000-param monitoring linear classifier
    for name, levels, channels, head, views in (("obow_resnet18", (2, 3), [256, 512], 1_840_130, (2, 5)),
                                                ("obow_resnet18_vanilla", (3,), [512], 1_051_137, (1, 0))):
        with torch.device("meta"):
            model = panconv.create_model(f"vision.{name}")
        student = num_parameters(model.backbone)
        assert student == 11_176_512 and student + 512 * 1000 + 1000 == 11_689_512   # torchvision resnet18
        assert num_parameters(model.predictor) == head
        assert model.bow_levels == levels and [b.embedding.shape[1] for b in model.bow] == channels
        assert [b.embedding.shape[0] for b in model.bow] == [8192] * len(levels)
        assert (model.views[0], model.views[3]) == views
        assert model.bow[0].inv_delta == 10.0 and model.predictor.scale.shape == (len(levels),)


def _load_in_order(target: nn.Module, source: dict) -> None:
    theirs = target.state_dict()
    assert len(theirs) == len(source)
    assert all(v.shape == w.shape for v, w in zip(theirs.values(), source.values()))
    target.load_state_dict(dict(zip(theirs, source.values())))


def test_resnet_trunk_is_torchvision_resnet_without_pool_and_fc():
    import torchvision

    from panconv_vision.models.obow import ResNetTrunk

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None).eval()
    fill_(ref)
    trunk = ResNetTrunk("resnet18").eval()
    _load_in_order(trunk, {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = trunk(x)
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        expected = []
        for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
            y = layer(y)
            expected.append(y)
        torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
        pooled = trunk(x)[-1].mean((2, 3))
        torch.testing.assert_close(ref.fc(pooled), ref(x), atol=1e-5, rtol=1e-5)
    assert [f.channels for f in trunk.feature_info] == [64, 128, 256, 512]
    assert [f.reduction for f in trunk.feature_info] == [4, 8, 16, 32]
    assert [f.channels for f in ResNetTrunk("resnet50").feature_info] == [256, 512, 1024, 2048]
    gray = ResNetTrunk("resnet18", in_channels=1, out_indices=(1,))
    assert len(gray.stages) == 2 and [m.shape for m in gray(torch.randn(1, 1, 32, 32))] == [(1, 128, 4, 4)]
    with pytest.raises(ValueError, match="arch"):
        ResNetTrunk("resnet19")


@pytest.mark.skipif(not (OBOW_OFFICIAL / "obow" / "builder_obow.py").is_file(),
                    reason=f"official valeoai/obow checkout not at {OBOW_OFFICIAL} (set PANCONV_OBOW_OFFICIAL)")
def test_resnet18_obow_equals_the_official_modules(single_thread):
    sys.path.insert(0, str(OBOW_OFFICIAL))
    try:
        from obow.builder_obow import OBoW as OfficialOBoW
        from obow.feature_extractor import FeatureExtractor
    finally:
        sys.path.remove(str(OBOW_OFFICIAL))
    for name, keys in (("obow_resnet18", ["block3", "block4"]), ("obow_resnet18_vanilla", ["block4"])):
        extractor, channels = FeatureExtractor("resnet18", {"global_pooling": True})
        official = OfficialOBoW(extractor, channels, keys,
                                [dict(num_words=8192, num_channels={"block3": 256, "block4": 512}[k], inv_delta=10)
                                 for k in keys], dict(kappa=5), num_classes=1000)
        torch.manual_seed(0)
        ours = panconv.create_model(f"vision.{name}")
        assert num_parameters(official.feature_extractor) == num_parameters(ours.backbone)
        assert num_parameters(official.bow_predictor) == num_parameters(ours.predictor)
        assert num_parameters(official) - num_parameters(official.linear_classifier) \
            == num_parameters(ours.backbone) * 2 + num_parameters(ours.predictor)      # student + teacher
    fill_(ours.backbone)
    _load_in_order(official.feature_extractor, ours.backbone.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs = official.feature_extractor.eval()(x, ["block1", "block2", "block3", "block4", "GlobalPooling"])
        torch.testing.assert_close(ours.backbone.eval()(x), theirs[:4], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.eval().student_features(x), theirs[4].flatten(1), atol=1e-5, rtol=1e-5)


def _official_modules():
    sys.path.insert(0, str(OBOW_OFFICIAL))
    try:
        from obow.builder_obow import OBoW as OfficialOBoW
        from obow.feature_extractor import FeatureExtractor
    finally:
        sys.path.remove(str(OBOW_OFFICIAL))
    return OfficialOBoW, FeatureExtractor


@pytest.mark.skipif(not (OBOW_OFFICIAL / "obow" / "builder_obow.py").is_file(),
                    reason=f"official valeoai/obow checkout not at {OBOW_OFFICIAL} (set PANCONV_OBOW_OFFICIAL)")
def test_official_weights_give_the_official_outputs(single_thread):
    """A whole official OBoW (ResNet-18, two BoW levels, cosine momentum, the monitoring classifier), every part of
    its state distinct, through ``map_official_state_dict`` and a strict load: our student maps, teacher maps, BoW
    targets, predicted logits and momentum step equal the official ones, and so does the teacher's EMA step."""
    OfficialOBoW, FeatureExtractor = _official_modules()
    torch.manual_seed(0)
    extractor, channels = FeatureExtractor("resnet18", {"global_pooling": True})
    official = OfficialOBoW(extractor, channels, ["block3", "block4"],
                            [dict(num_words=16, num_channels=c, inv_delta=10) for c in (256, 512)], dict(kappa=5),
                            alpha=(0.99, 10), num_classes=1000)
    fill_(official)  # student and teacher differ, so do the levels' vocabularies and generators
    with torch.no_grad():
        official._iteration.fill_(3)
        for level, bow in enumerate(official.bow_extractor.bow_extractor):
            bow._embedding.abs_()
            bow._embedding_ptr.fill_(5 + level)
            bow._min_distance_mean.fill_(0.4 + 0.1 * level)
        official.bow_predictor.scale.copy_(torch.tensor([5.0, 4.0]))
    ours = OBoW(ResNetTrunk("resnet18"), bow_levels=(2, 3), num_words=16, inv_delta=10.0, momentum=0.99,
                momentum_steps=10)
    ours.load_state_dict(map_official_state_dict(official.state_dict()))  # strict
    assert int(ours.momentum_step) == 3
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))  # block4: 5x5 (local_average)
    names = ["block1", "block2", "block3", "block4"]
    official.eval()
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.backbone(x), official.feature_extractor(x, names), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.teacher(x), official.feature_extractor_teacher(x, names), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.bow_targets(x), list(official.generate_bow_targets(x)[0]), atol=1e-5,
                                   rtol=1e-5)
        vocabularies = [bow.embedding for bow in ours.bow]
        torch.testing.assert_close(ours.predictor([ours.student_features(x)], vocabularies),
                                   official.bow_predictor([official.feature_extractor(x)],
                                                          official.bow_extractor.get_dictionary()),
                                   atol=1e-4, rtol=1e-5)
    official.train()
    ours.train()
    official._update_teacher()   # the cosine momentum at iteration 3 of 10
    ours.update_teacher()
    assert int(ours.momentum_step) == 4 and official._iteration.item() == 4
    # the same EMA of the parameters, and the teacher keeps its own batch-norm statistics as the official one does
    theirs = map_official_state_dict(official.state_dict())
    for name, t in ours.teacher.module.state_dict().items():
        torch.testing.assert_close(t, theirs["teacher.module." + name], atol=1e-6, rtol=1e-6, msg=name)
    with torch.no_grad():  # a train-mode teacher forward updates its own statistics the same way on both sides
        ours.teacher(x)
        official.feature_extractor_teacher(x, names)
    theirs = map_official_state_dict(official.state_dict())
    for name, t in ours.teacher.module.state_dict().items():
        torch.testing.assert_close(t, theirs["teacher.module." + name], atol=1e-6, rtol=1e-6, msg=name)
    assert not torch.equal(ours.teacher.module.stem[1].running_mean, ours.backbone.stem[1].running_mean)


def test_the_teacher_keeps_its_own_batch_norm_statistics():
    """As the official OBoW: the momentum update averages the parameters only; the teacher's BN statistics are
    its own (the official live test above checks the same against the official code)."""
    model = OBoW(ResNetTrunk("resnet18", out_indices=(0, 1)), num_words=8, momentum_steps=10).train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model.backbone(x)                       # moves the student's statistics
    own = model.teacher.module.stem[1].running_mean.clone()
    model.update_teacher()
    assert torch.equal(model.teacher.module.stem[1].running_mean, own)
    model.teacher(x * 2 + 1)                # its own train-mode forward moves its own
    assert not torch.equal(model.teacher.module.stem[1].running_mean, own)
    assert not torch.equal(model.teacher.module.stem[1].running_mean, model.backbone.stem[1].running_mean)


def test_official_state_dict_map_inverts_the_official_names():
    """``map_official_state_dict`` on official names (``_official_key``: the ``Adapter`` names checked by the strict
    load of ``_record``, the ResNet names by the live test above) and official shapes (``_iteration`` a float of
    shape (1,)) gives back our keys and values exactly: the whole model as saved (``module.`` prefix, with
    ``_alpha`` and the monitoring classifier, which are dropped) or bare, and the torchvision-format student."""
    model = OBoW(ResNetTrunk("resnet18", out_indices=(0, 1)), num_words=8, momentum_steps=10)
    state = fill_(model).state_dict()
    state["momentum_step"].fill_(7)
    official = {_official_key(k, resnet=True): v for k, v in state.items()}
    assert not any(".net." in k for k in official)
    official["_iteration"] = torch.tensor([7.0])
    dropped = {"_alpha": torch.tensor([0.995]), "linear_classifier.layers.batch_norm.weight": torch.ones(128),
               "linear_classifier.layers.prediction_layer.weight": torch.ones(10, 128)}
    assert all(k.startswith(OFFICIAL_DROPPED) for k in dropped)
    for saved in ({**official, **dropped}, {"module." + k: v for k, v in {**official, **dropped}.items()}):
        mapped = map_official_state_dict(saved)
        assert list(mapped) == list(state)
        assert all(mapped[k] is v for k, v in state.items() if k != "momentum_step")
        assert mapped["momentum_step"].dtype == torch.long and mapped["momentum_step"].shape == ()
        assert int(mapped["momentum_step"]) == 7
        model.load_state_dict(mapped)  # strict

    # the torchvision-format student ("only feature extractor": conv1, bn1, layer1-4 and the BoW classifier fc)
    def torchvision_key(key):
        key = re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
        return re.sub(r"^stem\.1\.", "bn1.", re.sub(r"^stem\.0\.", "conv1.", key))

    torchvision = {torchvision_key(k): v for k, v in model.backbone.state_dict().items()}
    torchvision.update({"fc.weight": torch.ones(8, 128), "fc.bias": torch.zeros(8)})
    student = map_official_state_dict(torchvision)
    assert list(student) == ["backbone." + k for k in model.backbone.state_dict()]
    assert all(torch.equal(student["backbone." + k], v) for k, v in model.backbone.state_dict().items())

    with pytest.raises(KeyError, match="unexpected key in an official OBoW state dict: module.pos_embed"):
        map_official_state_dict({"module.pos_embed": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"official OBoW state dict: feature_extractor\._feature_blocks\.1\.Block"):
        map_official_state_dict({"feature_extractor._feature_blocks.1.Block.layer.0.bn1.weight": torch.zeros(1)})
