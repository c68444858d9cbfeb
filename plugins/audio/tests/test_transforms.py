import torch

from panconv_audio.transforms import Fbank, LogMel, SpecAugment


def test_logmel_shapes_and_lengths():
    fe = LogMel(sample_rate=8000, n_mels=40)
    wav = torch.randn(2, 8000)
    feats, lengths = fe(wav, torch.tensor([8000, 4000]))
    assert feats.shape == (2, 8000 // 80 + 1, 40)
    assert lengths.tolist() == [101, 51]
    # per-utterance normalisation over valid frames; padded frames are zero
    assert feats[1, 51:].abs().max() == 0
    assert feats[0].mean(0).abs().max() < 1e-4


def test_fbank_matches_kaldi_framing():
    from torchaudio.compliance import kaldi

    fe = Fbank(sample_rate=16000, n_mels=80, normalize=False)
    wav = torch.randn(1, 16000) * 0.1
    feats, lengths = fe(wav)
    ref = kaldi.fbank(wav * 32768, num_mel_bins=80, sample_frequency=16000, dither=0.0, energy_floor=0.0)
    assert feats.shape[1] == ref.shape[0] == lengths[0] == 98
    torch.testing.assert_close(feats[0], ref)


def test_specaugment_masks_in_training_only():
    torch.manual_seed(0)
    sa = SpecAugment(freq_masks=2, freq_width=10, time_masks=5, time_ratio=0.05)
    x = torch.ones(4, 200, 80)
    lengths = torch.tensor([200, 150, 100, 200])
    y, _ = sa(x, lengths)
    assert (y == 0).any() and (y == 1).any()
    # no time mask wider than 5% of the utterance
    for i, n in enumerate(lengths.tolist()):
        zero_frames = (y[i] == 0).all(-1)
        run = best = 0
        for z in zero_frames.tolist():
            run = run + 1 if z else 0
            best = max(best, run)
        assert best <= max(int(0.05 * n), 0) * 5
    sa.eval()
    assert torch.equal(sa(x, lengths)[0], x)
