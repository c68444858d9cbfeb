"""E2GC: the analytic cost model against direct counts; MobileNet-V1 / ResNeXt-50 sizes; torchvision parity."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import panconv
from panconv_vision.models.e2gc import (
    MobileNetV1,
    ResNeXt,
    energy,
    group_conv_cost,
    network_cost,
    optimal_group_size,
)
from panconv_vision.testing import fill_, num_parameters, paper_classifier

COUNTS = {"vision.mobilenet_v1": 4_231_976, "vision.mobilenet_v1_e2gc_g2": 4_276_616,
          "vision.mobilenet_v1_e2gc_g4": 4_365_896, "vision.mobilenet_v1_e2gc_g8": 4_544_456,
          "vision.resnext50_32x4d": 25_028_904, "vision.resnext50_e2gc_g4": 23_886_120,
          "vision.resnext50_e2gc_g8": 24_157_992, "vision.resnext50_e2gc_g16": 24_701_736}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
    with torch.device("meta"):
        assert num_parameters(paper_classifier(name)) == COUNTS[name]


def test_group_conv_cost_counts_what_the_layer_does():
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=True)
    cost = group_conv_cost(16, 32, 15, 14, 3, 2, 4, bias=True, batch=2)
    assert cost.params == num_parameters(conv)
    y = conv(torch.randn(2, 16, 15, 14))
    assert cost.output_words == y.numel() and cost.input_words == 2 * 16 * 15 * 14
    # MACs = outputs x (taps per output): each output reads k^2 c_in/g inputs
    assert cost.macs == y.numel() * 9 * 16 // 4
    assert cost.data_movement == cost.input_words + cost.weight_words + cost.output_words
    with pytest.raises(ValueError, match="groups"):
        group_conv_cost(16, 30, 8, 8, groups=4)


def test_constant_groups_vs_constant_group_size():
    # FgGC (g fixed): MACs and arithmetic intensity rise with the width; E2GC (G fixed): intensity stays put
    fixed_g = [group_conv_cost(c, c, 14, 14, groups=32) for c in (128, 256, 512, 1024)]
    fixed_size = [group_conv_cost(c, c, 14, 14, groups=c // 4) for c in (128, 256, 512, 1024)]
    ai_g = [c.arithmetic_intensity for c in fixed_g]
    ai_s = [c.arithmetic_intensity for c in fixed_size]
    assert ai_g == sorted(ai_g) and ai_g[-1] > 4 * ai_g[0] * 0.75
    assert max(ai_s) / min(ai_s) < 1.2
    # FgGC's MACs grow with the square of the width, E2GC's linearly
    assert fixed_g[-1].macs / fixed_g[0].macs == 64 and fixed_size[-1].macs / fixed_size[0].macs == 8
    assert energy(fixed_size[-1]) < energy(fixed_g[-1])


def test_optimal_group_size_balances_compute_and_data_movement():
    g = optimal_group_size(256, 56, 56)
    cost = group_conv_cost(256, 256, 56, 56, groups=256 // g)
    ratio = 4.6 * cost.macs / (640.0 * cost.data_movement)
    assert 0.5 < ratio < 2.0
    # the balance point does not depend on the width for large maps: a constant group size
    assert optimal_group_size(128, 56, 56) == optimal_group_size(512, 56, 56) == 32
    # cheaper data movement moves it to smaller groups
    assert optimal_group_size(256, 56, 56, e_move=64.0) < g


def test_network_cost_matches_the_modules():
    m = MobileNetV1(group_size=4, width_mult=0.25)
    total, layers = network_cost(m, torch.randn(1, 3, 64, 64))
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(layers) == len(convs)
    assert total.params == sum(num_parameters(c) for c in convs)
    # MobileNet-V1 1.0 at 224^2: 569M multiply-adds in the paper (Table 1 of Howard et al.); ours 568M + head
    full, _ = network_cost(MobileNetV1(), torch.randn(1, 3, 224, 224))
    assert abs(full.macs + 1024 * 1000 - 569e6) / 569e6 < 0.01


def test_e2gc_layers_have_the_constant_group_size():
    m = ResNeXt(group_size=8)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d) and mod.groups > 1:
            assert mod.in_channels // mod.groups == 8
    fixed = ResNeXt()
    sizes = sorted({mod.in_channels // mod.groups for mod in fixed.modules()
                    if isinstance(mod, nn.Conv2d) and mod.groups > 1})
    assert sizes == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="does not divide"):
        MobileNetV1(group_size=3)


def test_resnext50_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    ours = panconv.create_model({"backbone": {"type": "vision.resnext50_32x4d"}, "neck": {"type": "core.GlobalAvgPool"},
                                 "head": {"type": "core.LinearClsHead", "num_classes": 10}})
    fill_(ours)
    ours.eval()
    theirs = torchvision.models.resnext50_32x4d(num_classes=10).eval()
    theirs.load_state_dict({k: v for k, v in zip(theirs.state_dict(), ours.state_dict().values())})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ours({"inputs": x}), theirs(x)
    scale = b.abs().max()
    torch.testing.assert_close(a / scale, b / scale, atol=1e-5, rtol=0)
    assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9999
