"""ConViT: sizes, parameter counts (paper Table 1), GPSA's defining properties, logits == timm's."""

import pytest
import torch

import panconv
from panconv_vision.models import convit
from panconv_vision.testing import num_parameters, paper_classifier, randomize_

# paper Table 1 (ImageNet-1k head at 224^2), and ours counted on ConViT -> core.LinearClsHead
PAPER_PARAMS = {"tiny": 6e6, "tiny_plus": 10e6, "small": 27e6, "small_plus": 48e6, "base": 86e6, "base_plus": 152e6}
OUR_PARAMS = {"tiny": 5_710_512, "tiny_plus": 9_972_912, "small": 27_777_322, "small_plus": 48_979_882,
              "base": 86_540_040, "base_plus": 153_134_856}
TIMM_PARAMS = {"tiny": 5_710_512, "small": 27_777_322, "base": 86_540_040}  # timm convit_* (1000 classes)


def test_every_paper_size_is_registered():
    assert sorted(panconv.list_models("vision.convit_*")) == sorted(f"vision.convit_{n}" for n in PAPER_PARAMS)


@pytest.mark.parametrize("size", sorted(PAPER_PARAMS))
def test_param_count_matches_paper(size):
    with torch.device("meta"):
        n = num_parameters(paper_classifier(f"vision.convit_{size}"))
    assert n == OUR_PARAMS[size] == TIMM_PARAMS.get(size, n)
    # the paper gives whole millions: within half a unit, and within 1 % from 10M up; ConViT-S is the
    # and S+ are the exceptions: 27.78M in the official code (timm's count is the same) and 48.98M with the
    # S+ width of Table 1 (576), 27M and 48M in the table (rounded down; Ti's 5.71M is rounded up to 6M)
    tolerance = 0.03 * PAPER_PARAMS[size] if size.startswith("small") else max(0.5e6, 0.01 * PAPER_PARAMS[size])
    assert abs(n - PAPER_PARAMS[size]) <= tolerance


def test_gpsa_locality_init_peaks_each_head_at_its_offset():
    attn = convit.GPSA(dim=36, num_heads=9, grid=(5, 5), locality_strength=5.0)
    attn.local_init()
    pos = attn.pos_proj(attn.rel_offsets).permute(2, 0, 1).softmax(-1)  # (heads, L, L)
    centre = 12  # patch (2, 2)
    peaks = pos[:, centre].argmax(-1)
    offsets = {((int(p) // 5) - 2, (int(p) % 5) - 2) for p in peaks}
    assert offsets == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}  # the 9 heads cover a 3x3 kernel
    assert torch.equal(attn.v.weight, torch.eye(36))


def test_gate_at_one_is_pure_positional_attention():
    torch.manual_seed(0)
    attn = convit.GPSA(dim=8, num_heads=2, grid=(3, 3))
    with torch.no_grad():
        attn.gating_param.fill_(50.0)  # sigmoid -> 1: content attention switched off
    x = torch.randn(2, 9, 8)
    a = attn.attention(x)
    expected = attn.pos_proj(attn.rel_offsets).permute(2, 0, 1).softmax(-1)
    assert torch.allclose(a, expected.expand_as(a), atol=1e-6)
    assert torch.allclose(a.sum(-1), torch.ones(2, 2, 9))


def test_outputs_feature_map_and_class_token():
    model = convit.ConViT(**convit.ConViT.example_config()).eval()
    fmap, cls = model(torch.randn(2, 3, 32, 32))
    assert fmap.shape == (2, 16, 4, 4) and cls.shape == (2, 16)
    assert [f.name for f in model.feature_info] == ["norm", "cls_token"]
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="divisible"):
        convit.ConViT(embed_dim=10, num_heads=4)


def test_logits_match_timm():
    timm = pytest.importorskip("timm")
    kw = dict(embed_dim=64, num_heads=4, depth=4, local_layers=2)
    # timm's embed_dim is the per-head width
    reference = timm.models.convit.ConVit(num_classes=10, embed_dim=16, num_heads=4, depth=4,
                                          local_up_to_layer=2).eval()
    randomize_(reference, std=0.1)
    ours = panconv.create_model({"backbone": {"type": "vision.ConViT", **kw},
                                 "head": {"type": "core.LinearClsHead", "num_classes": 10}}).eval()
    ours.load_state_dict(convit.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5
