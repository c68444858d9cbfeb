"""HRVMamba's ImageNet classifier: HRNet's classification head (``HRClsHead``) on the HRVMamba backbones.

Counts against the paper's ImageNet figures (14M / 20M / 61M), the head against timm's ``hrnet_w18_small`` head
(same count, same output on shared weights), and the head on a tiny backbone learning.
"""

from __future__ import annotations

import pytest
import torch

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models.hrvmamba import HRClsHead, HRVMamba, HRVMambaCls
from panconv_vision.testing import num_parameters, paper_classifier, randomize_

SIZES = {"tiny": ((16, 32, 64, 128), 32), "small": ((32, 64, 128, 256), 64), "base": ((80, 160, 320, 640), 64)}
#: HRNet's ImageNet head on branches 16/32/64/128 (HRVMamba-T = HRNet-W18-Small's widths): timm's count
W18_SMALL_HEAD = 11_709_544


@pytest.mark.parametrize("size,exact,paper_millions", [("tiny", 13_898_920, 14), ("small", 20_105_816, 20),
                                                       ("base", 60_552_360, 61)])
def test_cls_sizes_match_the_paper_imagenet_counts(size, exact, paper_millions, single_thread):
    with torch.device("meta"):
        model = paper_classifier(f"vision.hrvmamba_{size}_cls")
    assert isinstance(model.head, HRClsHead) and model.head.num_classes == 1000
    count = num_parameters(model)
    assert count == exact
    assert round(count / 1e6) == paper_millions                   # the paper gives whole millions
    assert abs(count - paper_millions * 1e6) / (paper_millions * 1e6) < 0.01
    # the same backbone (and state dict) as the registered pose-table size with the default multiscale output
    with torch.device("meta"):
        plain = panconv.get_component("backbone", f"vision.hrvmamba_{size}")()
    assert list(plain.state_dict()) == list(model.backbone.state_dict())
    assert num_parameters(plain) == num_parameters(model.backbone)


def test_other_layouts_do_not_reproduce_the_paper(single_thread):
    # DCNv4's pointwise projections (the released code's default): Tiny 15M, not the paper's 14M
    channels, stage1 = SIZES["tiny"]
    with torch.device("meta"):
        backbone = HRVMambaCls(channels=channels, stage1_channels=stage1, dcn_pointwise=True)
        head = HRClsHead(backbone.feature_info, 1000)
    assert round((num_parameters(backbone) + num_parameters(head)) / 1e6) == 15
    # the pose form (stage 4 fused into branch 0 only) gives one map: the head needs every branch
    pose = HRVMamba(channels=(8, 16, 24, 32), stage1_channels=8, stem_channels=16, modules=(1, 1, 1), blocks=1,
                    multiscale_output=False)
    head = HRClsHead([FeatureInfo(c, 4 * 2 ** i, f"branches.{i}") for i, c in enumerate((8, 16, 24, 32))], 5)
    with pytest.raises(ValueError, match="multiscale_output=True"):
        head(pose.eval()(torch.randn(2, 3, 32, 32)))


def test_head_equals_timm_hrnet_w18_small_head(single_thread):
    timm = pytest.importorskip("timm")
    ref = timm.create_model("hrnet_w18_small", pretrained=False).eval()
    parts = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
    head = HRClsHead([FeatureInfo(c, 4 * 2 ** i, f"branches.{i}") for i, c in enumerate((16, 32, 64, 128))],
                     1000).eval()
    ref_head = torch.nn.ModuleDict({p: getattr(ref, p) for p in parts})
    assert num_parameters(head) == num_parameters(ref_head) == W18_SMALL_HEAD
    randomize_(ref_head, seed=0, std=0.1)
    with torch.no_grad():
        for t in ref_head.state_dict().values():               # running variances must stay positive
            if t.is_floating_point() and t.dim() == 1:
                t.abs_().add_(0.5)
    ours, theirs = head.state_dict(), ref_head.state_dict()
    assert len(ours) == len(theirs)
    mapped = {}
    for (k, v), (rk, rv) in zip(ours.items(), theirs.items()):   # same layer order; Bottleneck names differ
        assert v.shape == rv.shape, (k, rk)
        assert k.split(".")[0] == rk.split(".")[0]
        mapped[k] = rv
    head.load_state_dict(mapped)
    torch.manual_seed(0)
    features = [torch.randn(2, c, 32 // 2 ** i, 32 // 2 ** i) for i, c in enumerate((16, 32, 64, 128))]
    ref.stages = lambda x: features                               # timm's own forward_features / forward_head
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(torch.zeros(1, 3, 8, 8)))   # the stem output is unused
        got = head(features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_create_model_on_a_cls_size_builds_the_hrnet_head(single_thread):
    model = panconv.create_model("vision.hrvmamba_tiny_cls", num_classes=10, channels=(8, 16, 24, 32),
                                 stage1_channels=8, stem_channels=16, modules=(1, 1, 1), blocks=1, in_channels=1)
    assert isinstance(model.head, HRClsHead) and model.head.classifier.out_features == 10
    assert [m.in_channels for m in model.head.incre_modules[0].body[0] if isinstance(m, torch.nn.Conv2d)] == [8]


def test_head_on_a_tiny_backbone_learns(single_thread):
    torch.manual_seed(0)
    backbone = HRVMamba(channels=(8, 16, 24, 32), stage1_channels=8, stem_channels=16, modules=(1, 1, 1), blocks=1,
                        in_channels=1, block="basic")
    head = HRClsHead(backbone.feature_info, 4, head_channels=(4, 8, 8, 16), final_channels=32)
    x = torch.randn(8, 1, 32, 32)
    batch = {"labels": torch.arange(8) % 4}
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    first = None
    for _ in range(40):
        loss = head.loss(head(backbone(x)), batch)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    with torch.no_grad():                                         # batch statistics, as in training
        probs = head.predict(head(backbone(x)))
    torch.testing.assert_close(probs.sum(-1), torch.ones(8))
    assert (probs.argmax(-1) == batch["labels"]).all()


@pytest.mark.parametrize("kwargs,match", [(dict(head_channels=(32, 64)), "one head width per branch"),
                                          (dict(num_classes=0), "must be >= 1"),
                                          (dict(final_channels=0), "must be >= 1")])
def test_bad_head_arguments_are_rejected(kwargs, match):
    features = [FeatureInfo(c, 4 * 2 ** i, f"branches.{i}") for i, c in enumerate((8, 16, 24))]
    with pytest.raises(ValueError, match=match):
        HRClsHead(features, **kwargs)
