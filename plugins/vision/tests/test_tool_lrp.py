"""``panconv lrp``: relevance conservation (the test that can fail), BN folding, and parity with zennit."""

import argparse
import json

import pytest
import torch
from torch import nn

from panconv.api import ComposedModel, LinearClsHead
from panconv_vision.models.e2gc import MobileNetV1
from panconv_vision.tools import lrp


def plain(m, x):
    return m(x)


def small_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(6, 3))
    bn = net[1]
    bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def mobilenet_classifier(seed=0, biases=True):
    """A composed MobileNet-V1 classifier with random BN statistics; ``biases=False``: every folded bias is 0
    (BN means and shifts 0, no head bias), the setting where LRP must conserve relevance exactly."""
    import panconv

    torch.manual_seed(seed)
    backbone = MobileNetV1(width_mult=0.25, in_channels=1)
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
            if biases:
                m.running_mean.uniform_(-0.2, 0.2), m.bias.data.uniform_(-0.1, 0.1)
    neck = panconv.build("neck", "core.GlobalAvgPool", backbone.feature_info)
    head = LinearClsHead(neck.feature_info, num_classes=10)
    if not biases:
        head.fc.bias.data.zero_()
    return ComposedModel(backbone, head, neck).eval()


def test_batchnorm_folding_keeps_the_function():
    net = small_net()
    x = torch.randn(3, 1, 8, 8)
    folded, names = lrp.fold_batchnorm(net, plain, x)
    assert names == ["1"] and isinstance(folded[1], nn.Identity)
    assert torch.allclose(folded(x), net(x), atol=1e-6)
    assert isinstance(net[1], nn.BatchNorm2d)  # the original is untouched


@pytest.mark.parametrize("rule", ["zplus", "epsilon"])
def test_relevance_is_conserved_through_a_composed_mobilenet(rule):
    """Sum of input relevance = the explained logit, and every layer hands on what it receives
    (BN folded, depthwise convs, functional global mean pool in the neck, linear head)."""
    model = mobilenet_classifier(biases=False)
    x = torch.randn(2, 1, 32, 32).abs()  # z+ assumes non-negative inputs at the first layer too
    e = lrp.lrp(model, x, rule=rule)
    logit = e.logits.gather(1, e.target.view(-1, 1))[:, 0]
    assert torch.allclose(e.relevance.flatten(1).sum(1), logit, rtol=1e-3, atol=1e-5)
    assert len(e.folded) == 27 and not e.unsupported
    names = [t[0] for t in e.trace]
    assert "mean" in names and "head.fc" in names and "backbone.stem.0" in names
    for name, r_out, r_in in e.trace:
        assert r_in == pytest.approx(r_out, rel=1e-3, abs=1e-5), name


def test_a_wrong_rule_breaks_conservation():
    """The same check fails where relevance leaks: biases (BN shifts) that carry activations keep a
    share of it (epsilon rule) or drop it (z+ without biases)."""
    model = mobilenet_classifier(biases=True)
    x = torch.randn(2, 1, 32, 32).abs()
    e = lrp.lrp(model, x, rule="zplus", bias=False)
    logit = e.logits.gather(1, e.target.view(-1, 1))[:, 0]
    assert not torch.allclose(e.relevance.flatten(1).sum(1), logit, rtol=1e-3)


def test_residual_sum_splits_relevance_in_proportion():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
            self.fc = nn.Linear(2, 2, bias=False)

        def forward(self, x):
            y = x + torch.relu(self.conv(x))
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    x = torch.rand(1, 2, 6, 6)
    e = lrp.lrp(Residual(), x, rule="zplus", forward=plain)
    assert e.relevance.sum() == pytest.approx(float(e.logits.max()), rel=1e-4)


def test_rules_are_validated():
    with pytest.raises(ValueError, match="unknown rule"):
        lrp.Rule("gamma")
    with pytest.raises(ValueError, match="alpha must be >= 1"):
        lrp.Rule("alphabeta", alpha=0.5)


@pytest.mark.parametrize("rule,alpha", [("epsilon", 1.0), ("zplus", 1.0), ("alphabeta", 2.0)])
def test_matches_zennit(rule, alpha):
    zennit = pytest.importorskip("zennit")  # noqa: F841
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite
    from zennit.rules import AlphaBeta, Epsilon, Norm, Pass, ZPlus

    net = small_net()
    x = torch.randn(2, 1, 8, 8)
    ours = lrp.lrp(net, x, rule=rule, alpha=alpha, forward=plain)
    theirs_rule = {"epsilon": Epsilon(1e-6), "zplus": ZPlus(), "alphabeta": AlphaBeta(alpha=2.0, beta=1.0)}[rule]
    composite = LayerMapComposite(layer_map=[(nn.ReLU, Pass()), (nn.AdaptiveAvgPool2d, Norm()),
                                             (nn.Conv2d, theirs_rule), (nn.Linear, theirs_rule)],
                                  canonizers=[SequentialMergeBatchNorm()])
    index = ours.target.view(-1, 1)
    start = torch.zeros_like(ours.logits).scatter(1, index, ours.logits.gather(1, index))
    with Gradient(model=net, composite=composite) as attributor:
        _, theirs = attributor(x, start)
    assert torch.allclose(ours.relevance, theirs, atol=1e-5 * float(theirs.abs().max()))


def test_saliency_and_the_eigen_cam_comparison():
    model = mobilenet_classifier()
    x = torch.randn(2, 1, 32, 32)
    e = lrp.lrp(model, x, rule="epsilon")
    sr = lrp.saliency(e.relevance)
    assert sr.shape == (2, 32, 32) and float(sr.min()) == 0.0 and float(sr.max()) == pytest.approx(1.0)
    cc = lrp.compare_with_cam(model, x, e)
    assert cc.shape == (2,) and bool(((cc >= -1) & (cc <= 1)).all())
    assert float(lrp.correlation(sr, sr).min()) == pytest.approx(1.0)


def test_lrp_command(tmp_path):
    import gzip
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    file = tmp_path / "mnist.pkl.gz"
    with gzip.open(file, "wb") as fh:
        pickle.dump(tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (8, 4, 4)), fh)
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  backbone: {type: vision.MobileNetV1, width_mult: 0.25}\n"
                      "  neck: {type: core.GlobalAvgPool}\n  head: {type: core.LinearClsHead}\n"
                      f"data: {{type: vision.MNIST, file: '{file}', splits: {{train: train, test: test}}}}\n")
    args = argparse.Namespace(config=str(config), checkpoint=None, device="cpu", data_root=str(tmp_path),
                              output=str(tmp_path / "out"), rule="zplus", epsilon=1e-6, alpha=1.0, index=0, count=3,
                              target=None)
    assert lrp.main(args) == 0
    report = json.loads((tmp_path / "out" / "lrp.json").read_text())
    assert len(report["input_relevance"]) == 3 and len(report["folded_batchnorm"]) == 27
    assert (tmp_path / "out" / "lrp.png").is_file()
