"""UniRepLKNet's time-series pathway: the official embedding (instance norm, circular token conv, sinusoidal
positions), the row-major layout of the embedded series as an image, and the vision backbone it feeds."""

import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch

from panconv_sequence.models.unireplknet_series import UniRepLKNetSeries, sinusoidal_positions

OFFICIAL = Path(os.environ.get("PANCONV_UNIREPLKNET_OFFICIAL", "/tmp/w5_unireplknet"))


def _model(**kw):
    torch.manual_seed(0)
    return UniRepLKNetSeries(**{**UniRepLKNetSeries.example_config(), **kw}).eval()


def test_embedding_is_laid_out_row_major_in_a_zero_padded_square():
    model = _model(d_model=6, map_size=8)
    emb = torch.randn(2, 9, 6)  # 54 values in a 64-pixel map
    image = model.to_map(emb)
    assert image.shape == (2, 1, 8, 8)
    flat = image[:, 0].reshape(2, -1)
    for t, d in [(0, 0), (0, 5), (1, 0), (4, 3), (8, 5)]:
        torch.testing.assert_close(flat[:, t * 6 + d], emb[:, t, d])
        row, col = divmod(t * 6 + d, 8)
        torch.testing.assert_close(image[:, 0, row, col], emb[:, t, d])
    assert (flat[:, 54:] == 0).all()


def test_a_series_too_long_for_the_map_is_refused_with_the_size_needed():
    model = _model(d_model=8, map_size=16)  # 256 values: 32 steps fit, 33 do not
    model(torch.randn(1, 32, 2))
    with pytest.raises(ValueError, match="raise map_size to at least 17"):
        model(torch.randn(1, 33, 2))
    with pytest.raises(ValueError, match=r"expects series \(N, L, 2\)"):
        model(torch.randn(1, 10, 3))


def test_token_embedding_is_a_circular_kernel_3_convolution_plus_sinusoidal_positions():
    model = _model(instance_norm=False)
    x = torch.randn(2, 10, 2)
    w = model.token.weight  # (d_model, C, 3)
    expected = torch.stack([sum(x[:, (t + k - 1) % 10] @ w[:, :, k].T for k in range(3)) for t in range(10)], 1)
    pe = sinusoidal_positions(10, model.d_model)
    assert pe[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / model.d_model)))
    assert pe[3, 3].item() == pytest.approx(math.cos(3 / 10000 ** (2 / model.d_model)))
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), expected + pe)


def test_instance_norm_makes_the_features_invariant_to_each_series_offset_and_scale():
    model = _model()
    x = torch.randn(3, 20, 2)
    scale, shift = torch.tensor([[[2.0, 0.5]]]), torch.tensor([[[10.0, -3.0]]])
    with torch.no_grad():
        a, b = model(x)[-1], model(x * scale + shift)[-1]
        raw = _model(instance_norm=False)
        c, d = raw(x)[-1], raw(x * scale + shift)[-1]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(c, d, atol=1e-2)


def test_features_come_from_the_vision_backbone():
    from panconv_vision.models.unireplknet import UniRepLKNet

    model = _model()
    assert isinstance(model.backbone, UniRepLKNet) and model.backbone.stem[0].in_channels == 1
    x = model.example_inputs()
    with torch.no_grad():
        ours = model(x)
        direct = model.backbone(model.to_map(model.embed(x)))
    assert [f.shape[1] for f in ours] == [i.channels for i in model.feature_info]
    for a, b in zip(ours, direct):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not (OFFICIAL / "Time-Series/layers/Embed.py").is_file(),
                    reason=f"official UniRepLKNet checkout not at {OFFICIAL} (set PANCONV_UNIREPLKNET_OFFICIAL)")
def test_embedding_equals_the_official_token_and_positional_embedding():
    spec = importlib.util.spec_from_file_location("official_embed", OFFICIAL / "Time-Series/layers/Embed.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    model = _model(instance_norm=False, d_model=8)
    token, position = official.TokenEmbedding(2, 8), official.PositionalEmbedding(8)
    token.tokenConv.weight.data.copy_(model.token.weight.data)
    x = torch.randn(3, 24, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), token(x) + position(x), atol=1e-6, rtol=1e-6)


def test_without_panconv_vision_the_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "panconv_vision.models.unireplknet", None)   # as if not installed
    with pytest.raises(ImportError, match=r"panconv-sequence\[unireplknet\]"):
        UniRepLKNetSeries(in_channels=1, d_model=8, map_size=8, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))


def test_the_official_size_has_its_count():
    """The official Global Temp/Wind encoder (48 x 768 -> 192 x 192, UniRepLKNet-S), backbone only."""
    import panconv

    with torch.device("meta"):
        model = panconv.get_component("backbone", "sequence.unireplknet_series_global_temp")()
    assert sum(p.numel() for p in model.parameters()) == 55_521_722
