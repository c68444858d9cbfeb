import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models.classifier import PoolNorm
from panconv_vision.transforms import Mixup


def test_pool_norm_is_mean_then_layernorm():
    neck = PoolNorm([FeatureInfo(4, 8), FeatureInfo(6, 16)])
    with torch.no_grad():
        neck.norm.weight.uniform_(0.5, 1.5)
        neck.norm.bias.uniform_(-1, 1)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    expected = F.layer_norm(feats[1].mean((2, 3)), (6,), neck.norm.weight, neck.norm.bias, 1e-6)
    assert torch.allclose(neck(feats)[0], expected, atol=1e-6)
    assert neck.feature_info[0].channels == 6


def test_pool_norm_batch_is_batchnorm_then_mean():
    """RepLKNet's classifier: BatchNorm2d on the map, then global average pooling (train and eval)."""
    neck = PoolNorm([FeatureInfo(6, 16)], norm="batch")
    with torch.no_grad():
        neck.norm.weight.uniform_(0.5, 1.5)
        neck.norm.bias.uniform_(-1, 1)
        neck.norm.running_mean.uniform_(-1, 1)
        neck.norm.running_var.uniform_(0.5, 1.5)
    x = torch.randn(4, 6, 3, 5)
    bn = neck.norm
    for train in (True, False):
        neck.train(train)
        if train:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        normed = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps)
        expected = (normed * bn.weight[:, None, None] + bn.bias[:, None, None]).mean((2, 3))
        assert torch.allclose(neck([x])[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="norm"):
        PoolNorm([FeatureInfo(6, 16)], norm="group")


def test_mixup_mixes_inputs_and_labels_with_the_same_lambda_and_permutation():
    """Each input is a distinct one-hot row, so every mixed row reveals its lambda and partner."""
    n, classes = 6, 3
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = {"inputs": torch.eye(n), "labels": labels, "ids": torch.arange(n)}
    mix = Mixup(num_classes=classes, alpha=0.4, label_smoothing=0.1, seed=0)
    out = mix(batch)
    soft = F.one_hot(labels, classes).float() * 0.9 + 0.1 / classes
    assert out["labels"].shape == (n, classes) and torch.allclose(out["labels"].sum(1), torch.ones(n))
    assert torch.equal(out["ids"], batch["ids"])  # other keys pass through
    lam = None
    partners = []
    for i, row in enumerate(out["inputs"]):
        others = [j for j in range(n) if j != i and row[j] != 0]
        assert len(others) <= 1 and torch.isclose(row.sum(), torch.tensor(1.0))
        partners.append(others[0] if others else i)
        if others:
            lam = row[i].item() if lam is None else lam
            assert row[i].item() == pytest.approx(lam)  # one lambda for the whole batch
    assert lam is not None and 0 < lam < 1
    assert sorted(partners) == list(range(n))  # a permutation
    expected = torch.stack([lam * soft[i] + (1 - lam) * soft[j] for i, j in enumerate(partners)])
    assert torch.allclose(out["labels"], expected, atol=1e-6)  # the labels follow the same lambda and partners
    again = Mixup(num_classes=classes, alpha=0.4, label_smoothing=0.1, seed=0)(batch)
    assert torch.equal(again["inputs"], out["inputs"]) and torch.equal(again["labels"], out["labels"])


def test_mixup_unmixed_cases_still_give_soft_labels_and_bad_arguments_raise():
    batch = {"inputs": torch.randn(4, 2), "labels": torch.tensor([0, 1, 2, 0])}
    out = Mixup(num_classes=3, prob=0.0, seed=0)(batch)
    assert torch.equal(out["inputs"], batch["inputs"])
    assert torch.equal(out["labels"], F.one_hot(batch["labels"], 3).float())
    single = Mixup(num_classes=3, seed=0)({"inputs": batch["inputs"][:1], "labels": batch["labels"][:1]})
    assert torch.equal(single["inputs"], batch["inputs"][:1])
    mix = Mixup(num_classes=3, seed=5)
    first = mix(batch)["inputs"]
    mix.set_epoch(0)
    assert torch.equal(mix(batch)["inputs"], first)  # set_epoch reseeds: epoch 0 is the constructor's state
    mix.set_epoch(1)
    assert not torch.equal(mix(batch)["inputs"], first)
    for bad in ({"alpha": 0}, {"prob": 1.5}, {"label_smoothing": 1.0}, {"num_classes": 1}):
        with pytest.raises(ValueError):
            Mixup(**{"num_classes": 3, **bad})


def test_composed_classifier_from_config_learns_with_label_smoothing_and_mixup():
    """The registry composition (vision.ConvNeXt -> vision.PoolNorm -> core.LinearClsHead) fits a tiny
    two-class image problem (bright top half vs bright bottom half) with soft (mixup) targets."""
    cfg = {"backbone": {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16]},
           "neck": {"type": "vision.PoolNorm"},
           "head": {"type": "core.LinearClsHead", "label_smoothing": 0.1}}
    model = panconv.create_model(cfg, metadata={"num_classes": 2, "in_channels": 1})
    assert model.backbone.stem.conv.in_channels == 1 and model.head.fc.out_features == 2
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=g)
    x = 0.3 * torch.randn(64, 1, 16, 16, generator=g)
    x[labels == 0, :, :8] += 1
    x[labels == 1, :, 8:] += 1
    mix = Mixup(num_classes=2, alpha=0.2, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(60):
        batch = mix({"inputs": x, "labels": labels}) if step % 2 else {"inputs": x, "labels": labels}
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model.predict(model({"inputs": x})).argmax(-1) == labels).float().mean()
    assert acc > 0.95
