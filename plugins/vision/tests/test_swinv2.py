"""Swin V2: sizes, parameter counts, the V2 identities, logits == timm's and torchvision's swin_v2_t."""

import math

import pytest
import torch

import panconv
from panconv_vision.models import swinv2
from panconv_vision.testing import num_parameters, paper_classifier, randomize_

PAPER_PARAMS = {"tiny": 28e6, "small": 50e6, "base": 88e6, "large": 197e6}  # ImageNet-1k head
OUR_PARAMS = {"tiny": 28_347_154, "small": 49_728_418, "base": 87_918_816, "large": 196_739_932}
VARIANTS = ["tiny_window8", "tiny_window16", "small_window8", "small_window16", "base_window8", "base_window16",
            "base_window12", "base_window12to16", "base_window12to24", "large_window12", "large_window12to16",
            "large_window12to24"]


def test_every_paper_size_and_window_is_registered():
    assert sorted(panconv.list_models("vision.swinv2_*")) == sorted(f"vision.swinv2_{v}" for v in VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_count_matches_paper(variant):
    size = variant.split("_")[0]
    with torch.device("meta"):
        n = num_parameters(paper_classifier(f"vision.swinv2_{variant}"))
    assert n == OUR_PARAMS[size]  # timm's swinv2_* with a 1000-class head: the same
    assert abs(n - PAPER_PARAMS[size]) <= max(0.5e6, 0.01 * PAPER_PARAMS[size])  # the paper gives whole millions


def test_res_post_norm_init_makes_every_block_the_identity():
    model = swinv2.SwinV2(**swinv2.SwinV2.example_config())
    block = model.layers[1].blocks[1]
    x = torch.randn(2, 8, 8, 16)
    assert torch.equal(block(x), x)


def test_cosine_attention_is_invariant_to_query_key_scale_and_temperature_is_clamped():
    torch.manual_seed(0)
    attn = swinv2.WindowAttentionV2(8, 2, (4, 4), (0, 0), qkv_bias=False)
    x = torch.randn(3, 16, 8)
    out = attn(x, (4, 4))
    with torch.no_grad():
        attn.qkv.weight[:16] *= 7.0  # scale q and k: cosine similarity does not change
    assert torch.allclose(attn(x, (4, 4)), out, atol=1e-5)
    with torch.no_grad():
        attn.logit_scale.fill_(10.0)  # 1/tau = e^10 is clamped to 100
        clamped = attn(x, (4, 4))
        attn.logit_scale.fill_(math.log(100.0))
    assert torch.allclose(attn(x, (4, 4)), clamped)


def test_position_bias_transfers_across_window_sizes():
    """Log-spaced coordinates (Eq. 4) normalised by the pre-training window: the offsets a 12-window
    model saw keep their coordinates when the window grows to 16, so the bias for them is unchanged."""
    torch.manual_seed(0)
    small = swinv2.WindowAttentionV2(8, 2, (12, 12), (0, 0))
    large = swinv2.WindowAttentionV2(8, 2, (16, 16), (12, 12))
    large.load_state_dict(small.state_dict())
    assert torch.allclose(large.coords_table[4:-4, 4:-4], small.coords_table)
    b_small, b_large = small.position_bias((12, 12)), large.position_bias((16, 16))
    assert b_small.shape == (2, 144, 144) and b_large.shape == (2, 256, 256)
    assert b_large.min() >= 0 and b_large.max() <= 16  # 16 * sigmoid


def test_any_input_size_and_window_larger_than_the_map():
    model = swinv2.SwinV2(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=8).eval()
    outs = model(torch.randn(1, 3, 36, 52))  # 9x13 then 5x7 maps: padding and a shrunk window
    assert [tuple(o.shape) for o in outs] == [(1, 8, 9, 13), (1, 16, 5, 7)]


@pytest.mark.parametrize("name,window,pretrained", [("swinv2_tiny_window8_256", 8, 0),
                                                   ("swinv2_base_window12to16_192to256", 16, (12, 12, 12, 6))])
def test_logits_match_timm(name, window, pretrained):
    timm = pytest.importorskip("timm")
    kw = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    reference = timm.create_model(name, num_classes=10, **kw).eval()
    randomize_(reference)
    ours = panconv.create_model({"backbone": {"type": "vision.SwinV2", **kw, "window_size": window,
                                              "pretrained_window_size": pretrained},
                                 "head": {"type": "core.LinearClsHead", "num_classes": 10}}).eval()
    ours.load_state_dict(swinv2.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5


def test_logits_match_torchvision_swin_v2_t():
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.swin_v2_t(num_classes=10).eval()
    tables = {k: v.clone() for k, v in reference.state_dict().items() if k.endswith("relative_coords_table")}
    randomize_(reference)
    reference.load_state_dict(tables, strict=False)  # constant tables, not weights: keep them
    ours = panconv.create_model({"backbone": {"type": "vision.swinv2_tiny_window8"},
                                 "head": {"type": "core.LinearClsHead", "num_classes": 10}}).eval()
    ours.load_state_dict(swinv2.map_torchvision_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5
