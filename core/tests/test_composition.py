"""Backbone -> neck -> head composition sizes itself from feature_info."""

import pytest
import torch
from torch import nn

import panconv
from panconv.api import Backbone, ComposedModel, FeatureInfo, Head, Neck, feature_info_of
from panconv.builder import build_model


class TwoStage(Backbone):
    def __init__(self, width: int = 4):
        super().__init__()
        self.a = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.b = nn.Conv2d(width, 3 * width, 3, stride=2, padding=1)
        self.feature_info = [FeatureInfo(width, 2, "a"), FeatureInfo(3 * width, 4, "b")]

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]


class ToWidth(Neck):
    """A tiny FPN-like neck: every level projected to ``out_channels``."""

    def __init__(self, in_features, out_channels: int = 5):
        super().__init__(in_features)
        self.proj = nn.ModuleList(nn.Conv2d(f.channels, out_channels, 1) for f in self.in_features)
        self.feature_info = [FeatureInfo(out_channels, f.reduction, f"proj{i}") for i, f in enumerate(in_features)]

    def forward(self, features):
        return [p(f) for p, f in zip(self.proj, features)]


class Concat(Head):
    metadata_inputs = ("num_classes",)

    def __init__(self, in_features, num_classes: int = 2):
        super().__init__(in_features)
        self.fc = nn.Linear(sum(f.channels for f in self.in_features), num_classes)

    def forward(self, features):
        return self.fc(torch.cat([f.mean((2, 3)) for f in features], 1))

    def loss(self, outputs, batch):
        return {"loss": nn.functional.cross_entropy(outputs, batch["labels"])}


class _LocalPlugin:
    @panconv.hookimpl
    def panconv_register_models(self, register):
        register("TwoStage", TwoStage, kind="backbone")
        register("ToWidth", ToWidth, kind="neck")
        register("Concat", Concat, kind="head")


@pytest.fixture
def local_components():
    from panconv import plugins

    manager = plugins.reset(entry_points=False)
    manager.collect()
    manager.add_plugin(_LocalPlugin(), "local")
    return manager


@pytest.mark.parametrize("width", [2, 4, 7])
def test_neck_and_head_size_themselves(local_components, width):
    model = build_model({"backbone": {"type": "TwoStage", "width": width}, "neck": {"type": "ToWidth"},
                         "head": {"type": "Concat"}}, metadata={"num_classes": 6})
    assert isinstance(model, ComposedModel)
    assert [p.in_channels for p in model.neck.proj] == [width, 3 * width]
    assert model.head.fc.in_features == 10 and model.head.fc.out_features == 6  # num_classes from metadata
    out = model({"inputs": torch.randn(2, 3, 16, 16)})
    assert out.shape == (2, 6)
    feats = model.backbone(torch.randn(1, 3, 16, 16))
    for f, info in zip(feats, feature_info_of(model.backbone)):
        assert f.shape[1] == info.channels and 16 // f.shape[-1] == info.reduction


def test_composition_without_neck_uses_backbone_info(local_components):
    model = panconv.create_model({"backbone": {"type": "TwoStage", "width": 3}, "head": {"type": "Concat"}})
    assert model.head.fc.in_features == 3 + 9
    batch = {"inputs": torch.randn(4, 3, 8, 8), "labels": torch.tensor([0, 1, 0, 1])}
    loss = model.loss(model(batch), batch)["loss"]
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_explicit_config_value_beats_metadata(local_components):
    model = build_model({"backbone": {"type": "TwoStage"}, "head": {"type": "Concat", "num_classes": 3}},
                        metadata={"num_classes": 6})
    assert model.head.fc.out_features == 3


def test_builtin_pool_and_linear_head():
    model = panconv.create_model({"backbone": {"type": "core.MLP", "in_dim": 5, "hidden": [7]},
                                  "neck": {"type": "core.GlobalAvgPool"},
                                  "head": {"type": "core.LinearClsHead", "num_classes": 4, "label_smoothing": 0.1}})
    batch = {"inputs": torch.randn(3, 5), "labels": torch.tensor([0, 3, 1])}
    out = model(batch)
    assert out.shape == (3, 4)
    probs = model.predict(out, batch)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    smoothed = model.loss(out, batch)["loss"]
    uniform = (-out.log_softmax(-1).mean(-1)).mean()
    manual = (1 - 0.1) * nn.functional.cross_entropy(out, batch["labels"]) + 0.1 * uniform
    assert torch.allclose(smoothed, manual, atol=1e-6)
