"""``panconv profile``: categories add up to the total, FLOPs per category are the analytic counts, and
the unfused attention path does the same arithmetic as SDPA."""

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panconv_vision.tools import profile as P

B, C, H, W, HEADS = 2, 8, 6, 6, 2


class SelfAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)

    def forward(self, x):  # (B, L, C)
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class TemporalAttention(SelfAttention):
    pass


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(2, C)
        self.attn = SelfAttention(C)
        self.temporal = TemporalAttention(C)
        self.fc = nn.Linear(C, 5, bias=False)

    def forward(self, x):
        y = self.norm(self.conv(x)).flatten(2).transpose(1, 2)  # (B, HW, C)
        y = self.attn(y)
        y = self.temporal(y)
        return self.fc(y.mean(1))


def run_tiny(sdpa=True):
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(B, 3, H, W)
    return P.profile(model, lambda: model(x), sdpa=sdpa)


def test_categories_add_up_to_the_total():
    r = run_tiny()
    assert sum(v["ms"] for v in r["categories"].values()) == pytest.approx(r["total_ms"], rel=1e-9)
    assert sum(v["flops"] for v in r["categories"].values()) == r["total_flops"]
    assert set(r["categories"]) == set(P.CATEGORIES)
    assert all(r["categories"][c]["ms"] > 0 for c in ("convolution", "spatial_attention", "temporal_attention",
                                                       "normalization", "linear"))


def test_flops_per_category_are_the_analytic_counts():
    L, D = H * W, C // HEADS
    conv = 2 * B * C * 3 * 9 * H * W
    attention = 2 * B * L * C * 3 * C + 2 * B * L * C * C + 4 * B * HEADS * L * L * D  # qkv, proj, q k^T and a v
    scaling = B * HEADS * L * L  # the unfused path's element-wise `scores * scale` (the profiler counts aten::mul)
    for sdpa in (True, False):
        r = run_tiny(sdpa)
        assert r["categories"]["convolution"]["flops"] == conv
        # a fused kernel is counted as the two matrix products; torch's CPU math fallback as the unfused path
        expected = {attention + scaling} if not sdpa else {attention, attention + scaling}
        assert r["categories"]["spatial_attention"]["flops"] in expected
        assert r["categories"]["temporal_attention"]["flops"] in expected
        assert r["categories"]["linear"]["flops"] == 2 * B * C * 5


def test_attention_modules_report_their_sequence_length():
    r = run_tiny()
    by_name = {a["module"]: a for a in r["attention"]}
    assert by_name["attn"]["tokens"] == H * W and by_name["attn"]["category"] == "spatial_attention"
    assert by_name["temporal"]["category"] == "temporal_attention" and by_name["temporal"]["calls"] == 2


def test_math_attention_equals_sdpa():
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    mask = torch.rand(5, 5) > 0.3
    mask[:, 0] = True
    for kwargs in ({}, {"is_causal": True}, {"attn_mask": mask}, {"scale": 0.3}):
        assert torch.allclose(P.math_attention(q, k, v, **kwargs), F.scaled_dot_product_attention(q, k, v, **kwargs),
                              atol=1e-6)


def test_module_categories():
    assert P.module_category("blocks.0.attn", nn.MultiheadAttention(4, 1)) == "spatial_attention"
    assert P.module_category("temp_attentions.0.x", SelfAttention(4)) == "temporal_attention"
    assert P.module_category("norm", nn.LayerNorm(4)) == "normalization"
    assert P.module_category("down", nn.Sequential()) is None
    assert P.op_category("aten::conv2d") == "convolution" and P.op_category("aten::addmm") == "linear"


def test_profile_command_on_a_config(tmp_path):
    import gzip
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    file = tmp_path / "mnist.pkl.gz"
    with gzip.open(file, "wb") as fh:
        pickle.dump(tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (8, 4, 4)), fh)
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  backbone: {type: vision.MobileNetV1, width_mult: 0.25}\n"
                      "  neck: {type: core.GlobalAvgPool}\n  head: {type: core.LinearClsHead}\n"
                      f"data: {{type: vision.MNIST, file: '{file}', splits: {{train: train, test: test}}}}\n")
    args = argparse.Namespace(config=str(config), checkpoint=None, device="cpu", data_root=str(tmp_path),
                              output=str(tmp_path / "out"), diffusers=None, batch_size=2, input_size=None)
    assert P.main(args) == 0
    report = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert report["sdpa"]["categories"]["convolution"]["flops"] > 0.9 * report["sdpa"]["total_flops"]
    assert (tmp_path / "out" / "profile.png").is_file() and (tmp_path / "out" / "profile.html").is_file()
