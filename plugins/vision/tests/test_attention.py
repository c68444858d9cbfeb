"""The shared pieces of the attention family (models/attention.py)."""

import torch
import torch.nn.functional as F

from panconv_vision.models import attention as A


def test_window_partition_round_trip_and_order():
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)
    windows = A.window_partition(x, (2, 3))
    assert windows.shape == (2 * 2 * 2, 6, 3)
    assert torch.equal(windows[1], x[0, 0:2, 3:6].reshape(6, 3))  # row-major windows, row-major tokens
    assert torch.equal(A.window_reverse(windows, (2, 3), (4, 6)), x)


def test_shifted_window_mask_separates_regions_that_were_not_neighbours():
    mask = A.shifted_window_mask((4, 4), (2, 2), (1, 1))
    assert mask.shape == (4, 4, 4)
    assert torch.all(mask[0] == 0)  # the top-left window holds one region
    last = mask[-1]  # the bottom-right window mixes four regions of the rolled map
    assert torch.all(torch.diagonal(last) == 0) and (last == -100).sum() == 12


def test_relative_position_index_is_a_function_of_the_offset():
    index = A.relative_position_index((3, 4))
    coords = [(i // 4, i % 4) for i in range(12)]
    for a in range(12):
        for b in range(12):
            dy, dx = coords[a][0] - coords[b][0], coords[a][1] - coords[b][1]
            assert index[a, b] == (dy + 2) * 7 + dx + 3


def test_attention_with_bias_matches_the_formula():
    torch.manual_seed(0)
    attn = A.Attention(8, 2, qkv_bias=True)
    x, bias = torch.randn(3, 5, 8), torch.randn(2, 5, 5)
    q, k, v = attn.qkv(x).reshape(3, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    expected = attn.proj(((q @ k.transpose(-2, -1)) / 2 + bias).softmax(-1).matmul(v).transpose(1, 2).reshape(3, 5, 8))
    assert torch.allclose(attn(x, bias), expected, atol=1e-6)


def test_class_attention_equals_the_class_row_of_full_attention():
    torch.manual_seed(0)
    ca = A.ClassAttention(8, 2, qkv_bias=True)
    x = torch.randn(2, 6, 8)
    k, v = ca.kv(x).reshape(2, 6, 2, 2, 4).permute(2, 0, 3, 1, 4)
    q = ca.q(x[:, :1]).reshape(2, 1, 2, 4).transpose(1, 2)
    expected = ca.proj(F.softmax(q @ k.transpose(-2, -1) / 2, -1).matmul(v).transpose(1, 2).reshape(2, 1, 8))
    assert torch.allclose(ca(x), expected, atol=1e-6)
    block = A.ClassBlock(8, 2)
    assert torch.equal(block(x)[:, 1:], x[:, 1:])  # patch tokens pass unchanged


def test_relative_bias_attention_uses_its_table():
    torch.manual_seed(0)
    attn = A.RelativeBiasAttention(8, 2, (2, 2))
    bias = attn.relative_bias()
    assert bias.shape == (2, 4, 4)
    assert torch.equal(bias[:, 0, 3], attn.relative_position_bias_table[0])  # offset (-1, -1): first entry


def test_mbconv_widths_stride_and_shortcut():
    block = A.MBConv(8, 16, expansion=4, stride=2).eval()
    assert block.expand.out_channels == 64  # expansion of the output width (MOAT/CoAtNet)
    assert block.se.fc1.out_channels == 4  # 0.25 x output width
    assert block(torch.randn(1, 8, 7, 7)).shape == (1, 16, 4, 4)
    same = A.MBConv(8, 8, se_ratio=0).eval()
    assert isinstance(same.shortcut, torch.nn.Identity) and isinstance(same.se, torch.nn.Identity)
