import pytest
import torch

from panconv_audio.models import squeezeformer as sq
from panconv_audio.models.asr import DepthwiseSeparableSubsampling, subsampled_length
from panconv_audio.models.conformer import Conformer, conformer_xs
from panconv_audio.models.squeezeformer import RelPositionMultiHeadAttention, Squeezeformer, SqueezeformerEncoder


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", list(sq.SIZES))
def test_param_counts_match_paper(size):
    # the paper counts encoder + CTC decoder over its 128-token SentencePiece vocabulary
    layers, dim, heads = sq.SIZES[size]
    with torch.device("meta"):  # the encoder alone (the front-end has no parameters) ...
        enc = SqueezeformerEncoder(d_model=dim, num_layers=layers, heads=heads, n_mels=80)
    n = (_count(enc) + dim * 128 + 128) / 1e6  # ... + the linear CTC decoder
    assert abs(n / sq.PAPER_PARAMS_M[size] - 1) < 0.01, f"{size}: {n:.2f}M vs paper {sq.PAPER_PARAMS_M[size]}M"


def test_full_model_count_is_encoder_plus_decoder():
    m = sq.squeezeformer_xs(vocab_size=128)
    n = (_count(m.encoder_net) + 144 * 128 + 128)
    assert _count(m) == n
    assert abs(n / 1e6 / sq.PAPER_PARAMS_M["xs"] - 1) < 0.01


def test_paper_table_dims():
    assert sq.SIZES == {"xs": (16, 144, 4), "s": (18, 196, 4), "sm": (16, 256, 4), "m": (20, 324, 4),
                        "ml": (18, 512, 8), "l": (22, 640, 8)}
    with torch.device("meta"):
        enc = SqueezeformerEncoder(*sq.SIZES["xs"][1:2], num_layers=16, heads=4)
    assert (enc.reduce_idx, enc.recover_idx, len(enc.blocks)) == (7, 15, 16)


@pytest.mark.parametrize("t", [16, 17, 50, 51, 101, 333])
def test_subsampling_output_length_formula(t):
    sub = DepthwiseSeparableSubsampling(n_mels=80, channels=8, d_model=16)
    y, lengths = sub(torch.randn(2, t, 80), torch.tensor([t, t - 3]))
    assert y.shape == (2, (t // 2) // 2, 16)
    assert lengths.tolist() == [(t // 2) // 2, ((t - 3) // 2) // 2]
    assert int(subsampled_length(torch.tensor(t))) == (t // 2) // 2


@pytest.mark.parametrize("t", [64, 66, 70])
def test_temporal_unet_halves_then_restores_time(t):
    enc = SqueezeformerEncoder(d_model=32, num_layers=10, heads=2, n_mels=40, kernel_size=7).eval()
    x = torch.randn(2, t, 40)
    out, lengths, trace = enc.forward_with_lengths(x, torch.tensor([t, t - 8]), return_trace=True)
    t4 = (t // 2) // 2
    half = (t4 + 1) // 2
    # blocks 0..6 at T/4, blocks 7..(L-2) at T/8 (ceil), the last block back at T/4
    assert trace == [t4] * 7 + [half] * 2 + [t4]
    assert out.shape == (2, t4, 32) and lengths[0] == t4


def test_unet_skip_connection_is_used():
    torch.manual_seed(0)
    enc = SqueezeformerEncoder(d_model=16, num_layers=4, heads=2, n_mels=16, kernel_size=3, reduce_idx=1).eval()
    x = torch.randn(1, 40, 16)
    base = enc.forward_with_lengths(x)[0]
    with torch.no_grad():  # a zero recover projection leaves only the skip path into the last block
        enc.time_recover.weight.zero_()
        enc.time_recover.bias.zero_()
    skip_only = enc.forward_with_lengths(x)[0]
    assert not torch.allclose(base, skip_only)


def test_rel_shift_matches_relative_indexing():
    n, h, t = 1, 2, 5
    rel = torch.randn(n, h, t, 2 * t - 1)  # column r <-> relative position (t-1) - r
    shifted = RelPositionMultiHeadAttention.rel_shift(rel)
    for i in range(t):
        for j in range(t):
            assert torch.equal(shifted[:, :, i, j], rel[:, :, i, (t - 1) - (i - j)])


def test_padding_does_not_change_valid_outputs():
    torch.manual_seed(0)
    enc = SqueezeformerEncoder(d_model=16, num_layers=4, heads=2, n_mels=16, kernel_size=3, reduce_idx=1,
                               dropout=0.0).eval()
    x = torch.randn(1, 48, 16)
    a, la = enc.forward_with_lengths(x, torch.tensor([48]))
    xp = torch.cat([x, torch.zeros(1, 16, 16)], 1)  # padded frames are zeros, as the collate makes them
    b, lb = enc.forward_with_lengths(xp, torch.tensor([48]))
    assert la.tolist() == lb.tolist() == [12]
    torch.testing.assert_close(a[:, :12], b[:, :12], atol=1e-4, rtol=1e-4)


def test_backbone_view_and_feature_info():
    enc = SqueezeformerEncoder(**SqueezeformerEncoder.example_config())
    feats = enc(enc.example_inputs())
    assert len(feats) == 1 and feats[0].shape[1] == enc.feature_info[0].channels == 32
    assert enc.feature_info[0].reduction == 4


@pytest.mark.parametrize("cls", [Squeezeformer, Conformer])
def test_model_forward_loss_predict(cls):
    torch.manual_seed(0)
    m = cls(**cls.example_config())
    batch = m.example_inputs(2)
    out = m(batch)
    losses = m.loss(out, batch)
    assert torch.isfinite(losses["loss_ctc"])
    losses["loss_ctc"].backward()
    m.eval()
    with torch.no_grad():
        preds = m.predict(m(batch), batch)
    assert len(preds) == 2 and all(isinstance(p, str) for p in preds)
    m.decoder_mode = "beam"
    with torch.no_grad():
        assert len(m.predict(m(batch), batch)) == 2


def test_conformer_budget_close_to_squeezeformer():
    a, b = sq.squeezeformer_xs(), conformer_xs()
    # same width/depth: parameter budgets within 25% (Squeezeformer drops the second FFN per block
    # but keeps 4 modules per block by pairing MF/CF; the Conformer GLU conv has a 2x pointwise)
    assert 0.75 < _count(a) / _count(b) < 1.25


def test_ctc_overfits_two_utterances():
    torch.manual_seed(0)
    m = Squeezeformer(d_model=32, num_layers=4, heads=2, reduce_idx=1, kernel_size=7, sample_rate=8000,
                      n_mels=40, spec_augment=False, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    batch = {"inputs": torch.randn(2, 8000, generator=g), "input_lengths": torch.tensor([8000, 8000]),
             "texts": ["ab", "ba"]}
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(120):
        loss = m.loss(m(batch), batch)["loss_ctc"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        assert m.predict(m(batch), batch) == ["ab", "ba"]
