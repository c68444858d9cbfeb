"""MOAT: parameter counts against the official model zoo's table, the block's defining structure,
relative embeddings and unshifted window attention. (timm has no MOAT; forward parity with the official
TF2 code is in test_moat_parity.py.)"""

import pytest
import torch

import panconv
from panconv_vision.models import moat
from panconv_vision.testing import num_parameters, paper_classifier

# the official model zoo / paper Table 1 (ImageNet-1k, 224^2), and ours on MOAT -> PoolNorm -> LinearClsHead
PAPER_PARAMS = {"moat_0": 27.8e6, "moat_1": 41.6e6, "moat_2": 73.4e6, "moat_3": 190.0e6, "moat_4": 483.2e6,
                "tiny_moat_0": 3.4e6, "tiny_moat_1": 5.1e6, "tiny_moat_2": 9.8e6, "tiny_moat_3": 19.5e6}
OUR_PARAMS = {"moat_0": 27_846_892, "moat_1": 41_598_448, "moat_2": 73_422_408, "moat_3": 189_958_040,
              "moat_4": 483_214_184, "tiny_moat_0": 3_355_348, "tiny_moat_1": 5_122_895, "tiny_moat_2": 9_772_741,
              "tiny_moat_3": 19_534_390}


def test_every_size_is_registered():
    assert sorted(panconv.list_models("vision.*moat_*")) == sorted(f"vision.{n}" for n in PAPER_PARAMS)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_param_count_matches_the_model_zoo(name):
    with torch.device("meta"):
        n = num_parameters(paper_classifier(f"vision.{name}"))
    assert n == OUR_PARAMS[name]
    assert abs(n - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01 or abs(n - PAPER_PARAMS[name]) <= 0.05e6  # 0.1M


def test_moat_block_is_mbconv_then_attention_without_mlp():
    torch.manual_seed(0)
    block = moat.MOATBlock(16, 16, 1, head_dim=8, position_size=4, window_size=None).eval()
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features > 16 for m in block.modules())  # no MLP
    x = torch.randn(2, 16, 4, 4)
    y = block.mbconv(x).permute(0, 2, 3, 1)
    expected = (y + block.attn(block.norm(y))).permute(0, 3, 1, 2)
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_relative_embedding_indexes_key_minus_query():
    attn = moat.RelativeAttention2d(16, head_dim=8, position_size=3)
    bias = attn.position_bias(3, 3)
    table = attn.relative_position_embedding
    for qi in range(9):
        for ki in range(9):
            dy, dx = ki // 3 - qi // 3, ki % 3 - qi % 3
            assert torch.equal(bias[:, qi, ki], table[:, dy + 2, dx + 2])
    assert attn.position_bias(5, 5).shape == (2, 25, 25)  # resized table for a larger window


def test_window_attention_without_shift_is_per_window_global_attention():
    torch.manual_seed(0)
    block = moat.MOATBlock(16, 16, 1, head_dim=8, position_size=2, window_size=2).eval()
    x = torch.randn(1, 4, 4, 16)
    out = block.attention(x)
    for wy in (0, 2):
        for wx in (0, 2):
            window = x[:, wy:wy + 2, wx:wx + 2]
            assert torch.allclose(out[:, wy:wy + 2, wx:wx + 2], block.attn(window), atol=1e-6)


def test_stage_outputs_and_dense_windows():
    model = moat.MOAT(**moat.MOAT.example_config()).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (32, 2, 2)]
    dense = moat.MOAT(**{**moat.MOAT.example_config(), "window_size": 2}).eval()
    dense.load_state_dict(model.state_dict())
    assert dense(torch.randn(1, 3, 64, 64))[-1].shape == (1, 32, 2, 2)
    with pytest.raises(ValueError, match="windows"):
        dense(torch.randn(1, 3, 96, 96))  # the 3x3 stride-32 map does not divide into 2x2 windows
