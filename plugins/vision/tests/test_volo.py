"""VOLO: sizes, parameter counts (paper Table 2/3), outlook attention against its definition, logits == timm's."""

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.models import volo
from panconv_vision.testing import fill_, num_parameters, paper_classifier

PAPER_PARAMS = {"d1": 27e6, "d2": 59e6, "d3": 86e6, "d4": 193e6, "d5": 296e6}  # Table 2, ImageNet-1k head
# ours on VOLO -> vision.VOLOClsHead (class and auxiliary heads); timm's volo_* give the same counts
OUR_PARAMS = {"d1": 26_632_040, "d1_384": 26_777_960, "d2": 58_678_336, "d2_384": 58_872_896, "d3": 86_325_072,
              "d3_448": 86_626_128, "d4": 192_961_520, "d4_448": 193_413_104, "d5": 295_455_584,
              "d5_448": 295_907_168, "d5_512": 296_091_488}


def test_every_paper_size_is_registered():
    assert sorted(panconv.list_models("vision.volo_*")) == sorted(f"vision.volo_{n}" for n in OUR_PARAMS)


@pytest.mark.parametrize("name", sorted(OUR_PARAMS))
def test_param_count_matches_paper(name):
    with torch.device("meta"):
        n = num_parameters(paper_classifier(f"vision.volo_{name}"))
    assert n == OUR_PARAMS[name]
    paper = PAPER_PARAMS[name.split("_")[0]]
    assert abs(n - paper) <= max(0.5e6, 0.01 * paper)  # the paper gives whole millions


def test_outlook_attention_matches_its_definition():
    """Eq. 2-5 written out per window: A = softmax(W_A x_centre) (K^2 x K^2), y_window = A V_window,
    outputs summed over the windows covering each location, then projected."""
    torch.manual_seed(0)
    attn = volo.OutlookAttention(dim=4, num_heads=1, kernel_size=3, padding=1, stride=1)
    x = torch.randn(1, 5, 5, 4)
    v = attn.v(x).permute(0, 3, 1, 2)
    v = F.pad(v, (1, 1, 1, 1))
    a = (attn.attn(x).reshape(1, 5, 5, 9, 9) * 4 ** -0.5).softmax(-1)
    out = torch.zeros(1, 4, 7, 7)
    for i in range(5):
        for j in range(5):
            window = v[0, :, i:i + 3, j:j + 3].reshape(4, 9)  # C x K^2
            out[0, :, i:i + 3, j:j + 3] += (a[0, i, j] @ window.T).T.reshape(4, 3, 3)
    expected = attn.proj(out[:, :, 1:6, 1:6].permute(0, 2, 3, 1))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_outputs_and_head():
    model = volo.VOLO(**volo.VOLO.example_config()).eval()
    fmap, cls = model(torch.randn(2, 3, 32, 32))
    assert fmap.shape == (2, 16, 2, 2) and cls.shape == (2, 16)
    head = volo.VOLOClsHead(model.feature_info, num_classes=5)
    tokens = fmap.flatten(2).transpose(1, 2)
    assert torch.allclose(head([fmap, cls]), head.fc(cls) + 0.5 * head.aux_fc(tokens).max(1).values)


def test_logits_match_timm():
    timm = pytest.importorskip("timm")
    kw = dict(layers=(2, 1, 1), embed_dims=(32, 64, 64), num_heads=(2, 4, 4), stem_hidden_dim=16)
    reference = timm.models.volo.VOLO(num_classes=10, **kw).eval()
    fill_(reference)
    ours = panconv.create_model({"backbone": {"type": "vision.VOLO", **kw},
                                 "head": {"type": "vision.VOLOClsHead", "num_classes": 10}}).eval()
    ours.load_state_dict(volo.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5
