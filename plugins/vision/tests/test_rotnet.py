"""RotNet: parameter counts and forward parity with the official NIN (gidariss/FeatureLearningRotNet),
the rotation batch, the features given to the probes, the probe classifiers, and learning on MNIST.

Parity: ``fixtures/rotnet_parity.pt`` holds the official code's outputs (``architectures/NetworkInNetwork.py``
with 4 blocks and ``NonLinearClassifier.py``'s ``MultLayer`` and ``NIN_ConvBlock3`` heads on block 2) for
weights that fill every entry of our state dict from a seeded generator, loaded into the official
modules entry by entry. The official files are Python-2-era; the recorder adapts them as it reads them
(tabs -> spaces, ``(k-1)/2`` -> ``(k-1)//2`` padding, ``BatchNorm2d`` -> ``BatchNorm1d`` on the 2-D
features of ``MultLayer``, which old PyTorch accepted). Regenerate, with the official code fetched
(not committed)::

    git -C <FeatureLearningRotNet checkout> archive HEAD architectures | tar -x -C /tmp/rotnet_src
    PANCONV_RECORD_ROTNET=/tmp/rotnet_src pytest plugins/vision/tests/test_rotnet.py -k parity
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.evaluators.representation import RotationAccuracy
from panconv_vision.models.rotnet import NetworkInNetwork, NINClassifier, RotNet

FIXTURE = Path(__file__).parent / "fixtures" / "rotnet_parity.pt"
OFFICIAL_COMMIT = "edafaba6561003292017d0a44272414356c959ff"


def _fill(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter and float buffer from a seeded generator (BN variances positive), in state-dict order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("weight") and t.dim() == 1:             # BN scale
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=g))
            else:
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / fan_in ** 0.5)


def _input(n=2, size=32, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _official_module(src: Path, name: str) -> types.ModuleType:
    text = (src / "architectures" / f"{name}.py").read_text().expandtabs(8)
    text = text.replace("padding = (kernel_size-1)/2", "padding = (kernel_size-1)//2")
    text = text.replace("        feat = F.avg_pool2d(feat, feat.size(3)).view(-1, self.nChannels)\n", "")
    text = text.replace("nn.BatchNorm2d(nFeats)", "nn.BatchNorm1d(nFeats)")
    module = types.ModuleType(f"official_{name}")
    exec(compile(text, f"{src}/architectures/{name}.py", "exec"), module.__dict__)
    return module


def _load_in_order(official: torch.nn.Module, ours_state: dict) -> None:
    theirs = official.state_dict()
    assert len(theirs) == len(ours_state)
    for (k, v), (k2, v2) in zip(theirs.items(), ours_state.items()):
        assert v.shape == v2.shape, (k, k2)
    official.load_state_dict(dict(zip(theirs, ours_state.values())))


def _ours():
    torch.manual_seed(0)
    rotnet = RotNet(num_blocks=4)
    _fill(rotnet, 0)
    heads = {}
    for head in ("mlp", "conv"):
        clf = NINClassifier(num_classes=10, block=2, head=head, img_size=32, freeze_backbone=True)
        clf.backbone.load_state_dict(rotnet.backbone.state_dict(), strict=False)
        _fill(clf.head, 1)
        heads[head] = clf.eval()
    return rotnet.eval(), heads


def _record(src: Path) -> None:
    nin = _official_module(src, "NetworkInNetwork")
    nlc = _official_module(src, "NonLinearClassifier")
    rotnet, heads = _ours()
    net = nin.create_model({"num_classes": 4, "num_stages": 4, "use_avg_on_conv3": False})
    _load_in_order(net, rotnet.state_dict())
    net.eval()
    x = _input()
    rec = {"commit": OFFICIAL_COMMIT}
    with torch.no_grad():
        feats = net(x, out_feat_keys=net.all_feat_names)
        rec["logits"] = feats[-1]
        rec["block_means"] = [f.mean((2, 3)) for f in feats[:-1]]
        for head, cls_type, channels in (("mlp", "MultLayer", 192 * 8 * 8), ("conv", "NIN_ConvBlock3", 192)):
            clf = nlc.create_model({"num_classes": 10, "nChannels": channels, "cls_type": cls_type})
            _load_in_order(clf, heads[head].head.state_dict())
            rec[head] = clf.eval()(feats[1])
    torch.save(rec, FIXTURE)


def test_parameter_counts_equal_the_official_nin():
    # official NetworkInNetwork(num_classes=4, num_stages=3/4/5, use_avg_on_conv3=False), 3-channel input
    for blocks, count in ((3, 1_004_484), (4, 1_411_140), (5, 1_817_796)):
        assert sum(p.numel() for p in RotNet(num_blocks=blocks).parameters()) == count
        assert panconv.create_model({"type": f"vision.rotnet_nin{blocks}"}).backbone.feature_info[-1].channels == 192


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_ROTNET"):
        _record(Path(os.environ["PANCONV_RECORD_ROTNET"]))
    rec = torch.load(FIXTURE, weights_only=True)
    rotnet, heads = _ours()
    x = _input()
    with torch.no_grad():
        maps = rotnet.backbone(x)
        logits = rotnet.classifier(maps[-1].mean((2, 3)))
        torch.testing.assert_close(logits, rec["logits"], atol=1e-5, rtol=1e-5)
        for got, want in zip(maps, rec["block_means"], strict=True):
            torch.testing.assert_close(got.mean((2, 3)), want, atol=1e-5, rtol=1e-5)
        for head in ("mlp", "conv"):
            torch.testing.assert_close(heads[head]({"inputs": x}), rec[head], atol=1e-5, rtol=1e-5)
    assert rec["logits"].abs().max() > 0.1                     # a non-trivial output


def test_forward_rotates_each_image_four_times_and_predict_gives_unrotated_block_features():
    torch.manual_seed(0)
    model = RotNet(in_channels=1, num_blocks=4, channels=(16, 12, 8), feature_block=3, feature_pool=2).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        out = model({"inputs": x})
        pred = model.predict(out)
        maps = model.backbone(x)
        rotated = model.backbone(torch.rot90(x, 1, (2, 3)))
    assert out["rotation_logits"].shape == (12, 4) and out["rotation_labels"].tolist() == [0, 1, 2, 3] * 3
    assert [m.shape[-1] for m in maps] == [14, 7, 7, 7]
    for i, m in enumerate(maps):
        torch.testing.assert_close(pred[f"block{i + 1}"], F.adaptive_avg_pool2d(m, 2).flatten(1))
    torch.testing.assert_close(pred["features"], pred["block3"])
    # the 90-degree copy of image 1 is row 4 * 1 + 1 of the rotated batch
    torch.testing.assert_close(out["maps"][0][5], rotated[0][1], atol=1e-5, rtol=1e-5)
    assert pred["rotation_logits"].shape == (3, 4, 4)
    torch.testing.assert_close(pred["rotation_logits"][1, 2], out["rotation_logits"][6])
    losses = model.loss(out, {"inputs": x})
    expected = F.cross_entropy(out["rotation_logits"], out["rotation_labels"])
    assert losses["loss"].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="feature_block"):
        RotNet(num_blocks=3, feature_block=4)


def test_feature_info_with_and_without_the_pool_after_block3():
    plain = NetworkInNetwork(in_channels=1, num_blocks=5, channels=(8, 6, 4))
    assert [(f.channels, f.reduction) for f in plain.feature_info] == [(4, 2), (8, 4), (8, 4), (8, 4), (8, 4)]
    pooled = NetworkInNetwork(in_channels=1, num_blocks=4, channels=(8, 6, 4), pool_after_block3=True)
    assert [f.reduction for f in pooled.feature_info] == [2, 4, 8, 8]
    assert [m.shape[-1] for m in pooled(torch.randn(1, 1, 32, 32))] == [16, 8, 4, 4]
    with pytest.raises(ValueError, match="channels"):
        NetworkInNetwork(channels=(8, 6))


def test_probe_classifier_loads_rotnet_blocks_and_keeps_them_frozen():
    torch.manual_seed(0)
    rotnet = RotNet(in_channels=1, num_blocks=4, channels=(16, 12, 8))
    probe = NINClassifier(num_classes=10, in_channels=1, block=2, head="mlp", img_size=28, channels=(16, 12, 8))
    ours, theirs = probe.state_dict(), rotnet.state_dict()
    backbone = {k: v for k, v in ours.items() if k.startswith("backbone.")}
    assert backbone and all(k in theirs and theirs[k].shape == v.shape for k, v in backbone.items())
    probe.load_state_dict({**ours, **{k: theirs[k] for k in backbone}})
    frozen = {k: v.clone() for k, v in probe.backbone.state_dict().items()}
    probe.train()
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    out = probe({"inputs": x})
    probe.loss(out, {"labels": y})["loss"].backward()
    assert all(p.grad is None for p in probe.backbone.parameters())
    assert all(p.grad is not None for p in probe.head.parameters())
    assert all(torch.equal(v, probe.backbone.state_dict()[k]) for k, v in frozen.items())   # BN stats too
    assert probe.head[1].in_features == 16 * 7 * 7
    with torch.no_grad():
        torch.testing.assert_close(probe.backbone(x)[-1], rotnet.eval().backbone(x)[1])
    assert NINClassifier(num_classes=10, in_channels=1, block=4, head="pool_linear",
                         channels=(16, 12, 8))({"inputs": x}).shape == (8, 10)


def test_rotation_accuracy_evaluator_by_class_and_rotation():
    logits = torch.zeros(3, 4, 4)
    logits[0] = torch.eye(4)                              # class 6: all right
    logits[1] = torch.eye(4)[[2, 1, 0, 3]]                # class 0: 0 and 180 confused
    logits[2] = torch.eye(4)[[0, 3, 2, 1]]                # class 0: 90 and 270 confused
    ev = RotationAccuracy()
    ev.process({"labels": torch.tensor([6, 0, 0])}, {"rotation_logits": logits})
    got = ev.compute()
    assert got["rotation_accuracy"] == pytest.approx(8 / 12)
    assert got["rotation_accuracy_class6"] == 1.0 and got["rotation_accuracy_class0"] == pytest.approx(0.5)
    assert [got[f"rotation_accuracy_rot{r}"] for r in range(4)] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert got["rotation_flip_class0"] == pytest.approx(4 / 8) and got["rotation_flip_class6"] == 0.0
    with pytest.raises(ValueError):
        ev.process({"labels": torch.tensor([1])}, {"rotation_logits": torch.zeros(1, 4)})


def test_rotnet_learns_rotations_of_real_digits(single_thread, tmp_path):
    from panconv_vision.datasets.digits import MNIST

    try:
        data = MNIST(root=tmp_path, split="train", limit=1024)  # 896 to train on, 128 held out
    except panconv.errors.DataError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    x = torch.stack([data[i]["inputs"] for i in range(len(data))])
    torch.manual_seed(0)
    model = RotNet(in_channels=1, num_blocks=3, channels=(16, 12, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for step in range(60):
        batch = {"inputs": x[(step * 32) % 896:(step * 32) % 896 + 32]}
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        held_out = model.predict(model({"inputs": x[896:]}))["rotation_logits"]
    accuracy = float((held_out.argmax(-1) == torch.arange(4)).float().mean())
    assert accuracy > 0.6, accuracy                       # chance: 0.25
    assert np.isfinite(accuracy)


def test_linear_probe_head_is_a_linear_map_of_rotnet_pooled_block_features():
    # the few-label study's probe (head="linear") = one linear layer on exactly the features RotNet.predict
    # gives the evaluators (block map average-pooled to feature_pool x feature_pool, flattened)
    torch.manual_seed(0)
    rotnet = RotNet(in_channels=1, num_blocks=4, channels=(16, 12, 8), feature_block=2, feature_pool=3).eval()
    probe = NINClassifier(num_classes=10, in_channels=1, block=2, head="linear", probe_pool=3, img_size=28,
                          channels=(16, 12, 8))
    backbone = {k: v for k, v in rotnet.state_dict().items() if k.startswith("backbone.blocks.0")
                or k.startswith("backbone.blocks.1")}
    probe.load_state_dict({**probe.state_dict(), **backbone})
    linear = probe.head[-1]
    assert linear.in_features == 16 * 3 * 3
    torch.nn.init.normal_(linear.weight)
    torch.nn.init.normal_(linear.bias)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        features = rotnet.predict(rotnet({"inputs": x}))["features"]
        torch.testing.assert_close(probe.eval()({"inputs": x}), features @ linear.weight.T + linear.bias)
    whole = NINClassifier(num_classes=10, in_channels=1, block=2, head="linear", probe_pool=0, img_size=28,
                          channels=(16, 12, 8))
    assert whole.head[-1].in_features == 16 * 7 * 7 and whole({"inputs": x}).shape == (5, 10)
    with pytest.raises(ValueError, match="probe_pool"):
        NINClassifier(num_classes=10, head="linear", probe_pool=-1)
