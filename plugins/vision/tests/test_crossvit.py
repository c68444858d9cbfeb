"""CrossViT: sizes, parameter counts (paper Table 1/4), cross-attention fusion, logits == timm's."""

import pytest
import torch

import panconv
from panconv_vision.models import crossvit
from panconv_vision.testing import num_parameters, paper_classifier, randomize_

# paper Tables 1 and 4 (ImageNet-1k head, 240^2 input; 408^2 for the _408 models, the paper's 384 row)
PAPER_PARAMS = {"tiny": 6.9e6, "small": 26.7e6, "base": 104.7e6, "9": 8.6e6, "15": 27.4e6, "18": 43.3e6,
                "9_dagger": 8.8e6, "15_dagger": 28.2e6, "18_dagger": 44.3e6, "15_dagger_408": 28.5e6,
                "18_dagger_408": 44.6e6}
# ours on CrossViT -> vision.CrossViTClsHead; timm's crossvit_* give the same counts
OUR_PARAMS = {"tiny": 7_014_800, "small": 26_856_272, "base": 105_025_232, "9": 8_553_296, "15": 27_528_464,
              "18": 43_271_408, "9_dagger": 8_776_592, "15_dagger": 28_209_008, "18_dagger": 44_266_976,
              "15_dagger_408": 28_500_080, "18_dagger_408": 44_606_560}


def test_every_paper_size_is_registered():
    assert sorted(panconv.list_models("vision.crossvit_*")) == sorted(f"vision.crossvit_{n}" for n in PAPER_PARAMS)


@pytest.mark.parametrize("size", sorted(PAPER_PARAMS))
def test_param_count_matches_paper(size):
    with torch.device("meta"):
        n = num_parameters(paper_classifier(f"vision.crossvit_{size}"))
    assert n == OUR_PARAMS[size]
    # CrossViT-Ti is the exception: 7.01M in the official code (and timm), 6.9M in the paper's Table 1
    assert abs(n - PAPER_PARAMS[size]) / PAPER_PARAMS[size] < (0.02 if size == "tiny" else 0.01)


def test_fusion_changes_only_the_class_tokens():
    torch.manual_seed(0)
    encoder = crossvit.MultiScaleEncoder((8, 16), (0, 0), 0, (2, 2), (2, 2), True, [0.0])
    xs = [torch.randn(2, 5, 8), torch.randn(2, 3, 16)]
    out = encoder(xs)
    assert torch.equal(out[0][:, 1:], xs[0][:, 1:]) and torch.equal(out[1][:, 1:], xs[1][:, 1:])
    assert not torch.allclose(out[0][:, 0], xs[0][:, 0])
    # the S-branch class token depends on the L-branch patch tokens (and not on its own patch tokens)
    other = [xs[0], xs[1].clone()]
    other[1][:, 1:] += torch.randn(2, 2, 16)
    assert not torch.allclose(encoder(other)[0][:, 0], out[0][:, 0])
    own = [xs[0].clone(), xs[1]]
    own[0][:, 1:] += torch.randn(2, 4, 8)
    assert torch.allclose(encoder(own)[0][:, 0], out[0][:, 0])


def test_outputs_and_head():
    model = crossvit.CrossViT(**crossvit.CrossViT.example_config()).eval()
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 8, 8), (2, 16, 3, 3), (2, 8), (2, 16)]
    head = crossvit.CrossViTClsHead(model.feature_info, num_classes=5)
    logits = head(outs)
    assert torch.allclose(logits, (head.fc[0](outs[2]) + head.fc[1](outs[3])) / 2)
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(2, 3, 40, 40))


@pytest.mark.parametrize("conv_patch_embed", [False, True])
def test_logits_match_timm(conv_patch_embed):
    timm = pytest.importorskip("timm")
    kw = dict(embed_dim=(32, 64), depth=((1, 2, 0), (1, 1, 0)), num_heads=(4, 4), mlp_ratio=(3, 3, 1))
    reference = timm.models.crossvit.CrossVit(img_size=240, img_scale=(1.0, 224 / 240), patch_size=(12, 16),
                                              multi_conv=conv_patch_embed, num_classes=10, **kw).eval()
    randomize_(reference, std=0.1)
    ours = panconv.create_model({"backbone": {"type": "vision.CrossViT", "conv_patch_embed": conv_patch_embed, **kw},
                                 "head": {"type": "vision.CrossViTClsHead", "num_classes": 10}}).eval()
    ours.load_state_dict(crossvit.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5
