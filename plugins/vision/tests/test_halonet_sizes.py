"""HaloNet H0-H7: the paper's scaling rules (Table 2) as registered sizes, their parameter counts, the final
1x1 conv and the inner/value/output widths against timm's ByobNet built by the same rules, and zero padding
of maps that the blocks do not divide (H7 at 600^2)."""

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.models import halonet
from panconv_vision.testing import num_parameters, paper_classifier

# paper Table 2 (ImageNet-1k head): params in millions, as printed
PAPER_PARAMS = {"h0": 5.5, "h1": 8.1, "h2": 9.4, "h3": 11.8, "h4": 19.1, "h5": 30.7, "h6": 43.4, "h7": 67.4}
# ours: backbone -> core.LinearClsHead (1000 classes)
OUR_PARAMS = {"h0": 5_500_952, "h1": 8_100_056, "h2": 9_404_312, "h3": 11_841_304, "h4": 19_101_976,
              "h5": 30_717_272, "h6": 43_456_792, "h7": 67_433_240}


def test_every_paper_size_is_registered():
    assert sorted(panconv.list_models("vision.halonet_h*")) == sorted(f"vision.halonet_{n}" for n in OUR_PARAMS)


@pytest.mark.parametrize("name", sorted(OUR_PARAMS))
def test_param_count_matches_paper(name):
    with torch.device("meta"):
        n = num_parameters(paper_classifier(f"vision.halonet_{name}"))
    assert n == OUR_PARAMS[name]
    paper = PAPER_PARAMS[name] * 1e6
    assert abs(n - paper) / paper < 0.005  # H3 is the farthest: +0.35 %


def test_scaling_rules_give_the_widths():
    """H5 (r_v 2.5, r_b 2, d_f 1536): query/key width 64 * 2^i, value width r_v x that, output r_b x that."""
    with torch.device("meta"):
        model = paper_classifier("vision.halonet_h5").backbone
    for i, stage in enumerate(model.stages):
        attn = stage[-1].attn
        assert attn.q.out_channels == 64 * 2 ** i
        assert attn.kv.out_channels == 64 * 2 ** i + round(2.5 * 64 * 2 ** i)
        assert stage[-1].conv3.conv.out_channels == 2 * 64 * 2 ** i
    assert [len(s) for s in model.stages] == [3, 3, 23, 3]
    assert model.final_conv.conv.out_channels == 1536 and model.feature_info[-1].channels == 1536


@pytest.mark.parametrize("rb,df", [(1.5, 1024), (0.5, 0)])
def test_logits_match_timm_byobnet_by_the_same_rules(rb, df):
    """timm has only halonet_h1; its ByobNet built by the paper's rules (output width r_b * 64 * 2^i, bottleneck
    ratio 1 / r_b, final conv d_f) gives our logits on shared weights (r_v = 1: timm's block has no value ratio).
    Shallow and with 2 x 2 blocks so that it runs in a second; the widths are H3's (r_b 1.5, d_f 1024) / H0's."""
    timm = pytest.importorskip("timm")
    from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg

    chans = tuple(round(c * rb) for c in (64, 128, 256, 512))
    cfg = ByoModelCfg(blocks=tuple(ByoBlockCfg(type="self_attn", d=d, c=c, s=s, gs=0, br=1 / rb)
                                   for d, c, s in zip((1, 1, 2, 1), chans, (1, 2, 2, 2))),
                      stem_chs=64, stem_type="7x7", stem_pool="maxpool", num_features=df,
                      self_attn_layer="halo", self_attn_kwargs=dict(block_size=2, halo_size=1))
    reference = ByobNet(cfg, num_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # norms, biases and statistics off their init so that every key matters
        for name, t in reference.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point() and t.dim() == 1:
                t.copy_(t + 0.3 * torch.randn(t.shape, generator=g))
    ours = panconv.create_model({
        "backbone": {"type": "vision.HaloNet", "depths": [1, 1, 2, 1], "channels": list(chans),
                     "inner_channels": [64, 128, 256, 512], "block_size": 2, "halo_size": 1, "final_channels": df},
        "head": {"type": "core.LinearClsHead", "num_classes": 10}}).eval()
    assert timm is not None
    ours.load_state_dict(halonet.map_timm_state_dict(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        expected, got = reference(x), ours({"inputs": x})
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max() <= 1e-5


def _brute_force(attn: halonet.HaloAttention, x: torch.Tensor, b: int, h: int, stride: int) -> torch.Tensor:
    """(kv channels per head: keys then values, as the layer reshapes them.) Per query: the (b+2h)^2
    neighbourhood of its block on the grid of b x b blocks that tiles the map from its top-left corner;
    keys/values zero wherever that neighbourhood leaves the map (after the last row/column too when the
    blocks overhang it)."""
    heads, (hh, ww) = attn.num_heads, x.shape[2:]
    d, dv = attn.dim_qk, attn.dim_v
    q, kv = attn.q(x), attn.kv(x)
    nby, nbx = -(-hh // b), -(-ww // b)
    kv = F.pad(kv, [h, h + nbx * b - ww, h, h + nby * b - hh])
    win, bq = b + 2 * h, b // stride
    out = torch.zeros(1, heads * dv, q.shape[2], q.shape[3])
    rows, cols = torch.arange(win).repeat_interleave(win), torch.arange(win).repeat(win)
    for head in range(heads):
        k0, v0 = head * (d + dv), head * (d + dv) + d
        for by in range(nby):
            for bx in range(nbx):
                keys = kv[0, k0:k0 + d, by * b:by * b + win, bx * b:bx * b + win].reshape(d, -1)
                vals = kv[0, v0:v0 + dv, by * b:by * b + win, bx * b:bx * b + win].reshape(dv, -1)
                for i in range(bq):
                    for j in range(bq):
                        y, xx = by * bq + i, bx * bq + j
                        if y >= q.shape[2] or xx >= q.shape[3]:
                            continue
                        qv = q[0, head * d:(head + 1) * d, y, xx]
                        logits = qv @ keys / d ** 0.5 + attn.rel_height[rows - i + win - 1] @ qv \
                            + attn.rel_width[cols - j + win - 1] @ qv
                        out[0, head * dv:(head + 1) * dv, y, xx] = vals @ logits.softmax(0)
    return out


@pytest.mark.parametrize("stride,side", [(1, 6), (2, 6), (2, 7), (1, 5)])
def test_pad_to_blocks_is_zero_keys_beyond_the_map(stride, side):
    torch.manual_seed(0)
    b, h = 4, 1
    attn = halonet.HaloAttention(8, 8, 2, b, h, stride, pad_to_blocks=True)
    x = torch.randn(1, 8, side, side)
    out = attn(x)
    assert out.shape[2:] == (-(-side // stride),) * 2  # = a strided 1x1 conv's output (the shortcut)
    assert torch.allclose(out, _brute_force(attn, x, b, h, stride), atol=1e-5)
    with pytest.raises(ValueError, match="pad_to_blocks"):
        halonet.HaloAttention(8, 8, 2, b, h, stride)(x)


def test_padded_network_keeps_resnet_shapes():
    """A whole net whose later maps the blocks do not divide (as H7 at 600^2: 150 -> 75 -> 38 -> 19)."""
    model = halonet.HaloNet(depths=(1, 2, 2, 2), channels=(8, 16, 16, 32), stem_channels=8, block_size=2,
                            halo_size=1, num_heads=2, pad_to_blocks=True, final_channels=24).eval()
    outs = model(torch.randn(1, 3, 24, 24))  # 6 -> 3 -> 2 -> 1
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 6, 6), (16, 3, 3), (16, 2, 2), (24, 1, 1)]
    assert [f.channels for f in model.feature_info] == [8, 16, 16, 24]
