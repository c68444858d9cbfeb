import inspect

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models.fpn import FPN
from panconv_vision.models.layers import is_token_output
from panconv_vision.testing import randomize_

# every registered backbone class (not the size variants), from the registry
BACKBONES = [n for n in panconv.list_components("backbone", "vision.*")
             if inspect.isclass(panconv.get_component("backbone", n))]


def test_every_vision_backbone_is_covered():
    assert {"vision.ConvNeXt", "vision.HorNet", "vision.UniRepLKNet", "vision.RepLKNet"} <= set(BACKBONES)


@pytest.mark.parametrize("name", BACKBONES)
def test_fpn_sizes_itself_from_feature_info(name):
    cls = panconv.get_component("backbone", name)
    backbone = cls(**cls.example_config()).eval()
    n_maps = sum(not is_token_output(f) for f in backbone.feature_info)
    if n_maps == 0:  # a class-token-only encoder (Frozen in Time's SpaceTimeTransformer): a clear refusal
        with pytest.raises(ValueError, match="leaves no input among 0 features"):
            FPN(backbone.feature_info, out_channels=16, num_outs=1)
        return
    fpn = FPN(backbone.feature_info, out_channels=16, num_outs=n_maps + 1).eval()
    x = backbone.example_inputs(2)
    feats = backbone(x)
    outs = fpn(feats)
    maps = [f for f, info in zip(feats, backbone.feature_info) if not is_token_output(info)]
    assert len(outs) == len(fpn.feature_info) == len(maps) + 1
    for out, info in zip(outs, fpn.feature_info):
        assert out.shape[:2] == (2, 16) == (2, info.channels)
        assert out.shape[-1] == -(-x.shape[-1] // info.reduction)  # ceil: stride-2 levels round up
    assert [f.reduction for f in fpn.feature_info[:-1]] == [f.reduction for f in backbone.feature_info
                                                             if not is_token_output(f)]


def test_top_down_pathway_matches_eq():
    info = [FeatureInfo(4, 4), FeatureInfo(6, 8), FeatureInfo(8, 16)]
    fpn = randomize_(FPN(info, out_channels=5))
    c = [torch.randn(1, 4, 16, 16), torch.randn(1, 6, 8, 8), torch.randn(1, 8, 4, 4)]
    lat = [m(x) for m, x in zip(fpn.lateral_convs, c)]
    p2 = lat[2]
    p1 = lat[1] + F.interpolate(p2, scale_factor=2, mode="nearest")
    p0 = lat[0] + F.interpolate(p1, scale_factor=2, mode="nearest")
    expected = [fpn.fpn_convs[i](p) for i, p in enumerate([p0, p1, p2])]
    for got, exp in zip(fpn(c), expected):
        assert torch.allclose(got, exp, atol=1e-6)


def test_extra_levels_norm_and_start_level():
    info = FPN.example_in_features()
    fpn = FPN(info, out_channels=8, num_outs=5, start_level=1, extra="conv",
              norm_cfg={"type": "GN", "num_groups": 4}, act_cfg={"type": "ReLU"})
    assert [f.reduction for f in fpn.feature_info] == [8, 16, 32, 64, 128]
    outs = fpn(fpn.example_inputs(2, size=128))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]
    assert any(isinstance(m, torch.nn.GroupNorm) for m in fpn.modules())
    with pytest.raises(ValueError, match="num_outs"):
        FPN(info, num_outs=2)
