"""HaloNet: H1's parameter count, halo attention against brute-force neighbourhood attention, logits == timm's."""

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.models import halonet
from panconv_vision.testing import num_parameters, paper_classifier


def test_h1_param_count_matches_paper():
    with torch.device("meta"):
        n = num_parameters(paper_classifier("vision.halonet_h1"))
    assert n == 8_100_056  # timm's halonet_h1: the same
    assert abs(n - 8.1e6) / 8.1e6 < 0.01  # paper Table 2: H1 8.1M


@pytest.mark.parametrize("stride", [1, 2])
def test_halo_attention_matches_brute_force(stride):
    """Every query of a b x b block attends to the (b+2h)^2 neighbourhood of its block (zeros outside the
    map), logits q.k/sqrt(d) + q.r_row[a-i] + q.r_col[c-j] (i, j: the query's index in its block)."""
    torch.manual_seed(0)
    b, h, heads = 4, 1, 2
    attn = halonet.HaloAttention(8, 8, heads, b, h, stride)
    x = torch.randn(1, 8, 8, 8)
    out = attn(x)
    q = attn.q(x)
    kv = F.pad(attn.kv(x), [h] * 4)
    win, bq, d = b + 2 * h, b // stride, 4
    expected = torch.zeros_like(out)
    for head in range(heads):
        for by in range(8 // b):
            for bx in range(8 // b):
                keys = kv[0, head * 8:head * 8 + d, by * b:by * b + win, bx * b:bx * b + win].reshape(d, -1)
                vals = kv[0, head * 8 + d:head * 8 + 8, by * b:by * b + win, bx * b:bx * b + win].reshape(d, -1)
                for i in range(bq):
                    for j in range(bq):
                        qv = q[0, head * d:(head + 1) * d, by * bq + i, bx * bq + j]
                        rows = torch.arange(win).repeat_interleave(win)
                        cols = torch.arange(win).repeat(win)
                        logits = qv @ keys / d ** 0.5 + attn.rel_height[rows - i + win - 1] @ qv \
                            + attn.rel_width[cols - j + win - 1] @ qv
                        expected[0, head * d:(head + 1) * d, by * bq + i, bx * bq + j] = vals @ logits.softmax(0)
    assert torch.allclose(out, expected, atol=1e-5)


def test_stage_outputs_and_bad_sizes():
    model = halonet.HaloNet(**halonet.HaloNet.example_config()).eval()
    outs = model(model.example_inputs())
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (16, 8, 8), (16, 4, 4), (32, 2, 2)]
    with pytest.raises(ValueError, match="blocks"):
        model(torch.randn(1, 3, 72, 72))


def test_logits_match_timm_halonet_h1():
    timm = pytest.importorskip("timm")
    reference = timm.create_model("halonet_h1", num_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move norms, biases and statistics off their init so that every key matters
        for name, t in reference.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point() and t.dim() == 1:
                t.copy_(t + 0.3 * torch.randn(t.shape, generator=g))
    ours = panconv.create_model({"backbone": {"type": "vision.halonet_h1"},
                                 "head": {"type": "core.LinearClsHead", "num_classes": 10}}).eval()
    ours.load_state_dict(halonet.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(1, 3, 256, 256, generator=g)
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5
