import pytest
import torch

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models import convnext
from panconv_vision.testing import num_parameters, paper_classifier, randomize_

# Paper figures of the ImageNet-1k classifier (backbone + global average pool + final LayerNorm +
# 1000-class linear head), the composition ConvNeXt.paper_head names; ours are counted on it.
PAPER_PARAMS = {"vision.convnext_tiny": 28.6e6, "vision.convnext_small": 50e6, "vision.convnext_base": 89e6,
                "vision.convnext_large": 198e6, "vision.convnext_xlarge": 350e6}
OUR_PARAMS = {"vision.convnext_tiny": 28_589_128, "vision.convnext_small": 50_223_688,
              "vision.convnext_base": 88_591_464, "vision.convnext_large": 197_767_336,
              "vision.convnext_xlarge": 350_196_968}
VARIANTS = panconv.list_models("vision.convnext_*")


def test_every_paper_size_is_registered_and_nothing_else():
    assert sorted(VARIANTS) == sorted(PAPER_PARAMS)


@pytest.mark.parametrize("name", VARIANTS)
def test_param_count_matches_paper(name):
    with torch.device("meta"):
        model = paper_classifier(name)
    n = num_parameters(model)
    assert n == OUR_PARAMS[name]
    assert abs(n - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01
    c = model.head.fc.in_features  # final LayerNorm (2C) and the 1000-way linear layer
    assert n - num_parameters(model.backbone) == 2 * c + 1000 * c + 1000


def test_feature_info_and_out_indices():
    model = convnext.ConvNeXt(**convnext.ConvNeXt.example_config()).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model(x)
    assert [f.shape for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4), (2, 32, 2, 2)]
    assert model.feature_info == [FeatureInfo(8, 4, "stages.0"), FeatureInfo(16, 8, "stages.1"),
                                  FeatureInfo(24, 16, "stages.2"), FeatureInfo(32, 32, "stages.3")]
    part = convnext.ConvNeXt(**convnext.ConvNeXt.example_config(), out_indices=(1, 2)).eval()
    part.load_state_dict(model.state_dict(), strict=False)
    out = part(x)
    assert [f.channels for f in part.feature_info] == [16, 24] and len(part.stages) == 3
    assert torch.allclose(out[0], feats[1]) and torch.allclose(out[1], feats[2])


def test_init_and_layer_scale():
    torch.manual_seed(0)
    model = panconv.get_component("backbone", "vision.convnext_tiny")()
    block = model.stages[2].blocks[0]
    assert torch.all(block.gamma == 1e-6)
    assert torch.all(block.pwconv1.bias == 0) and torch.all(model.stem.conv.bias == 0)
    w = block.pwconv1.weight
    assert abs(w.std().item() - 0.02) < 0.002 and w.abs().max() <= 2
    assert convnext.ConvNeXt(depths=(1,), dims=(8,), layer_scale_init_value=0).stages[0].blocks[0].gamma is None


def test_drop_path_is_stochastic_in_train_only():
    model = convnext.ConvNeXt(**convnext.ConvNeXt.example_config(), drop_path_rate=0.5)
    randomize_(model)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x)[-1], model(x)[-1])
    rates = [getattr(blk.drop_path, "p", 0.0) for stage in model.stages for blk in stage.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.5)


def test_logits_match_timm_convnext_tiny():
    timm = pytest.importorskip("timm")
    reference = timm.create_model("convnext_tiny", pretrained=False, num_classes=1000).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move layer scales, norms and biases off their init so every key matters
        for name, p in reference.named_parameters():
            if name.endswith("gamma") or "norm" in name or name.endswith("bias"):
                p.copy_(p + 0.1 * torch.randn(p.shape, generator=g))
    ours = paper_classifier("vision.convnext_tiny").eval()
    ours.load_state_dict(convnext.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two near-zero outputs
    assert (expected - got).abs().max() <= 1e-5


def test_patch_size_sets_the_stem_stride_and_reductions():
    model = convnext.ConvNeXt(depths=(1, 1, 1), dims=(8, 16, 24), patch_size=2)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8]
    assert [o.shape[-1] for o in model(torch.randn(1, 3, 28, 28))] == [14, 7, 3]
