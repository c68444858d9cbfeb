import pytest
import torch

from panconv.builder import build_model
from panconv_vision.models.classifier import Mixup, PoolNorm


def test_pool_norm_is_mean_then_layernorm():
    from panconv.api import FeatureInfo

    neck = PoolNorm([FeatureInfo(4, 8), FeatureInfo(6, 16)])
    with torch.no_grad():
        neck.norm.weight.uniform_(0.5, 1.5)
        neck.norm.bias.uniform_(-1, 1)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    expected = torch.nn.functional.layer_norm(feats[1].mean((2, 3)), (6,), neck.norm.weight, neck.norm.bias, 1e-6)
    assert torch.allclose(neck(feats)[0], expected, atol=1e-6)
    assert neck.feature_info[0].channels == 6


def test_mixup_soft_labels():
    mix = Mixup(num_classes=3, alpha=0.4, label_smoothing=0.1, seed=0)
    batch = {"inputs": torch.arange(4.0).view(4, 1), "labels": torch.tensor([0, 1, 2, 0])}
    out = mix(batch)
    assert out["labels"].shape == (4, 3)
    assert torch.allclose(out["labels"].sum(1), torch.ones(4))
    lam_x = out["inputs"]  # inputs and labels are mixed with the same lambda and permutation
    assert not torch.equal(lam_x, batch["inputs"])
    again = Mixup(num_classes=3, alpha=0.4, label_smoothing=0.1, seed=0)(batch)
    assert torch.equal(again["inputs"], out["inputs"])
    with pytest.raises(ValueError):
        Mixup(3, alpha=0)


def test_composed_classifier_from_config_learns_with_label_smoothing_and_mixup():
    """The registry composition (vision.ConvNeXt -> vision.PoolNorm -> core.LinearClsHead) fits a tiny
    two-class image problem (bright top half vs bright bottom half) with soft (mixup) targets."""
    cfg = {"backbone": {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16]},
           "neck": {"type": "vision.PoolNorm"},
           "head": {"type": "core.LinearClsHead", "label_smoothing": 0.1}}
    model = build_model(cfg, {"num_classes": 2, "in_channels": 1})
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
