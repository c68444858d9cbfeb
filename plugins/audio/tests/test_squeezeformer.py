import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_audio.models.conformer import Conformer
from panconv_audio.models.layers import DepthwiseSeparableSubsampling, subsampled_length
from panconv_audio.models.squeezeformer import (
    RelPositionMultiHeadAttention,
    Squeezeformer,
    SqueezeformerEncoder,
    TimeReduction,
)

# The official configurations (github.com/kssteven418/Squeezeformer,
# examples/squeezeformer/configs/squeezeformer-{XS,S,SM,M,ML,L}.yml): encoder_num_blocks,
# encoder_dmodel, encoder_num_heads, encoder_head_size, encoder_time_reduce_idx,
# encoder_time_recover_idx, time_masking.num_masks. Every size: encoder_dropout 0.1, relmha without
# attention-weight dropout, Keras LayerNormalization (epsilon 1e-3) and SyncBatchNormalization
# (epsilon 1e-3, momentum 0.985), SpecAugment 2 frequency masks (mask_factor 27) and time masks of
# up to 5% (p_upperbound 0.05).
OFFICIAL = {
    "xs": (16, 144, 4, 36, 7, 15, 5),
    "s": (18, 196, 4, 49, 8, 17, 5),
    "sm": (16, 256, 4, 64, 7, 15, 5),
    "m": (20, 324, 4, 81, 9, 19, 7),
    "ml": (18, 512, 8, 64, 8, 17, 10),
    "l": (22, 640, 8, 80, 10, 21, 10),
}
#: paper Table 7 (millions), counted with the CTC decoder over the official 128-token SentencePiece vocabulary
PAPER_PARAMS_M = {"xs": 9.0, "s": 18.6, "sm": 28.2, "m": 55.6, "ml": 125.1, "l": 236.3}


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _build_on_meta(name, **kwargs):
    with torch.device("meta"):
        return panconv.build("model", name, frontend=None, **kwargs)


def test_every_paper_size_is_registered_and_no_more():
    names = set(panconv.list_components("model", "audio.squeezeformer_*"))
    assert names == {f"audio.squeezeformer_{s}" for s in [*OFFICIAL, "nano"]}


@pytest.mark.parametrize("size", list(OFFICIAL))
def test_sizes_match_the_official_configs(size):
    blocks, dim, heads, head_size, reduce_idx, recover_idx, time_masks = OFFICIAL[size]
    model = _build_on_meta(f"audio.squeezeformer_{size}", n_mels=80)
    enc = model.encoder_net
    assert (len(enc.blocks), enc.d_model, enc.blocks[0].mhsa.h, enc.blocks[0].mhsa.dk) == (blocks, dim, heads,
                                                                                           head_size)
    assert (enc.reduce_idx, enc.recover_idx) == (reduce_idx, recover_idx)
    assert model.specaug.time_masks == time_masks and model.specaug.time_ratio == 0.05
    assert model.specaug.freq_masks == 2
    block = enc.blocks[0]
    assert enc.drop.p == block.drop.p == block.ff1[2].p == block.ff1[4].p == block.conv.drop.p == 0.1
    assert block.mhsa.drop.p == 0.0                                          # no attention-weight dropout
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4 * blocks + 1 and all(m.eps == 1e-3 for m in norms)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == blocks and all(m.eps == 1e-3 and m.momentum == pytest.approx(1 - 0.985) for m in bns)


@pytest.mark.parametrize("size", list(OFFICIAL))
def test_param_counts_match_paper(size):
    # Table 7 counts encoder + CTC decoder over the official 128-token SentencePiece vocabulary
    n = _count(_build_on_meta(f"audio.squeezeformer_{size}", n_mels=80, vocab_size=128)) / 1e6
    assert abs(n / PAPER_PARAMS_M[size] - 1) < 0.01, f"{size}: {n:.2f}M vs paper {PAPER_PARAMS_M[size]}M"


def test_full_model_count_is_encoder_plus_decoder():
    m = _build_on_meta("audio.squeezeformer_xs", vocab_size=128)
    assert _count(m) == _count(m.encoder_net) + 144 * 128 + 128


def test_nano_keeps_the_settings_of_the_measured_runs():
    model = _build_on_meta("audio.squeezeformer_nano")
    enc = model.encoder_net
    assert (len(enc.blocks), enc.d_model, enc.reduce_idx, enc.recover_idx) == (6, 64, 3, 5)
    assert enc.blocks[0].mhsa.drop.p == 0.1
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert all((m.eps, m.momentum) == (1e-5, 0.1) for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))


@pytest.mark.parametrize("size", list(OFFICIAL))
def test_temporal_unet_indices_of_each_size(size):
    """Blocks before reduce_idx at T/4, up to recover_idx at T/8, from recover_idx on at T/4 again."""
    blocks, _, _, _, reduce_idx, recover_idx, _ = OFFICIAL[size]
    enc = SqueezeformerEncoder(d_model=16, num_layers=blocks, heads=2, n_mels=16, kernel_size=3,
                               reduce_idx=reduce_idx, recover_idx=recover_idx).eval()
    t = 66
    _, _, trace = enc.forward_with_lengths(torch.randn(1, t, 16), return_trace=True)
    t4 = (t // 2) // 2
    assert trace == [t4] * reduce_idx + [(t4 + 1) // 2] * (recover_idx - reduce_idx) + [t4] * (blocks - recover_idx)


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
    # default: reduce before block 7, recover before the last block
    assert trace == [t4] * 7 + [half] * 2 + [t4]
    assert out.shape == (2, t4, 32) and lengths[0] == t4


def _official_time_reduction(red: TimeReduction, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """What the official TimeReductionLayer computes (re-derived from its description, our weights): mask,
    pad kernel - stride frames on the right, VALID depthwise conv + pointwise conv, then zero-pad the
    output to ceil(T / 2) frames (the length of ``pad_mask[:, ::2]``)."""
    y = F.pad((x * valid[..., None]).transpose(1, 2), (0, red.k - red.s))
    y = red.pw(red.dw(y)).transpose(1, 2)
    return F.pad(y, (0, 0, 0, -(-x.shape[1] // 2) - y.shape[1]))


def test_odd_frame_count_at_time_reduction():
    torch.manual_seed(0)
    red = TimeReduction(8)
    x = torch.randn(1, 9, 8)                                                # an odd number of frames
    valid = torch.ones(1, 9, dtype=torch.bool)
    ours, lengths = red(x, torch.tensor([9]), valid)
    official = _official_time_reduction(red, x, valid)
    assert ours.shape == official.shape == (1, 5, 8) and lengths.tolist() == [5]   # both ceil(9 / 2) frames
    torch.testing.assert_close(ours[:, :4], official[:, :4])              # the first floor(9 / 2) frames agree
    assert torch.equal(official[:, 4], torch.zeros(1, 8))                 # official: an appended zero frame
    assert ours[:, 4].abs().sum() > 0                                      # ours: computed from the last frame
    # ours is what the official layer computes for the same utterance padded into an even-length batch,
    # so our outputs do not depend on the batch's padded length
    x10, valid10 = F.pad(x, (0, 0, 0, 1)), F.pad(valid, (0, 1))
    torch.testing.assert_close(ours, _official_time_reduction(red, x10, valid10))
    ours10, _ = red(x10, torch.tensor([9]), valid10)
    torch.testing.assert_close(ours10, ours)
    # even frame counts: identical
    x8, valid8 = x[:, :8], valid[:, :8]
    torch.testing.assert_close(red(x8, torch.tensor([8]), valid8)[0], _official_time_reduction(red, x8, valid8))


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


@pytest.mark.parametrize("t", [48, 52])   # 12 and 13 frames after subsampling: even and odd at the reduction
def test_padding_does_not_change_valid_outputs(t):
    torch.manual_seed(0)
    enc = SqueezeformerEncoder(d_model=16, num_layers=4, heads=2, n_mels=16, kernel_size=3, reduce_idx=1,
                               dropout=0.0).eval()
    x = torch.randn(1, t, 16)
    a, la = enc.forward_with_lengths(x, torch.tensor([t]))
    for pad in (4, 8):  # padded frames are zeros, as the collate makes them
        xp = torch.cat([x, torch.zeros(1, pad, 16)], 1)
        b, lb = enc.forward_with_lengths(xp, torch.tensor([t]))
        assert la.tolist() == lb.tolist() == [t // 4]
        torch.testing.assert_close(a[:, : t // 4], b[:, : t // 4], atol=1e-5, rtol=1e-5)  # measured 4.8e-7


def test_backbone_view_and_feature_info():
    enc = SqueezeformerEncoder(**SqueezeformerEncoder.example_config())
    feats = enc(enc.example_inputs())
    assert len(feats) == 1 and feats[0].shape[1] == enc.feature_info[0].channels == 32
    assert enc.feature_info[0].reduction == 4


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_model=30, heads=4), "divisible"),
    (dict(num_layers=8, reduce_idx=7, recover_idx=9), "reduce_idx < recover_idx < num_layers"),
    (dict(num_layers=8, reduce_idx=5, recover_idx=4), "reduce_idx < recover_idx"),
    (dict(kernel_size=30), "odd"),
    (dict(dropout=1.5), "dropout"),
    (dict(bn_momentum=2.0), "bn_momentum"),
    (dict(decoder="viterbi"), "decoder"),
    (dict(frontend="mfcc"), "front-end"),
    (dict(vocab_size=10), "vocab_size"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Squeezeformer(**{**Squeezeformer.example_config(), **kwargs})


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
    a, b = _build_on_meta("audio.squeezeformer_xs"), _build_on_meta("audio.conformer_xs")
    # same width/depth: parameter budgets within 25% (Squeezeformer drops the second FFN per block
    # but keeps 4 modules per block by pairing MF/CF; the Conformer GLU conv has a 2x pointwise)
    assert 0.75 < _count(a) / _count(b) < 1.25


def test_ctc_overfits_two_utterances():
    torch.manual_seed(0)
    # BatchNorm momentum 0.1: the official 0.015 (Keras 0.985) leaves the running statistics that eval mode
    # uses far from the batch statistics after 120 steps
    m = Squeezeformer(d_model=32, num_layers=4, heads=2, reduce_idx=1, kernel_size=7, sample_rate=8000,
                      n_mels=40, spec_augment=False, dropout=0.0, bn_momentum=0.1)
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
