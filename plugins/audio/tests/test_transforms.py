import pytest
import torch

import panconv
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


# --------------------------------------------------------------------------- as data transforms (data.transforms)


def _speech_batch(sample_rate=8000, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([sample_rate, sample_rate - 900, sample_rate - 1701])
    wav = torch.randn(3, sample_rate, generator=g) * 0.1
    for i, n in enumerate(lengths.tolist()):
        wav[i, n:] = 0  # zero padding, as the speech collate makes it
    return {"inputs": wav, "input_lengths": lengths, "texts": ["one two", "three", "nine"],
            "labels": torch.tensor([1, 2, 0])}


def test_transforms_are_batch_level_and_registered():
    for name, cls in [("audio.LogMel", LogMel), ("audio.Fbank", Fbank), ("audio.SpecAugment", SpecAugment)]:
        assert cls.level == "batch"
        assert isinstance(panconv.build("transform", name), cls)


@pytest.mark.parametrize("cls", [LogMel, Fbank])
def test_frontend_on_a_batch_replaces_inputs_and_lengths(cls):
    fe = cls(sample_rate=8000, n_mels=40)
    batch = _speech_batch()
    out = fe(batch)
    feats, lengths = fe(batch["inputs"], batch["input_lengths"])
    assert torch.equal(out["inputs"], feats) and torch.equal(out["input_lengths"], lengths)
    assert out["texts"] == batch["texts"] and torch.equal(out["labels"], batch["labels"])
    assert batch["inputs"].dim() == 2                                      # the input batch is not modified
    with pytest.raises(ValueError, match="no 'inputs'"):
        fe({"mixture": batch["inputs"]})


def test_specaugment_on_a_batch_masks_features():
    torch.manual_seed(0)
    batch = LogMel(8000, 40)(_speech_batch())
    masked = SpecAugment(freq_masks=2, freq_width=10, time_masks=3)(batch)
    assert torch.equal(masked["input_lengths"], batch["input_lengths"])
    assert ((masked["inputs"] == 0) & (batch["inputs"] != 0)).any()
    assert torch.equal(masked["inputs"] != batch["inputs"], (masked["inputs"] == 0) & (batch["inputs"] != 0))


@pytest.mark.parametrize("kwargs", [dict(n_mels=0), dict(hop_ms=-1.0)])
def test_bad_frontend_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="positive"):
        LogMel(**kwargs)


def test_bad_specaugment_arguments_raise_value_error():
    with pytest.raises(ValueError, match="time_ratio"):
        SpecAugment(time_ratio=2.0)


def _models(name):
    """The same seeded model twice: with its own front-end, and with frontend=None (features from the data)."""
    from panconv_audio.models.cmoe import CMoE

    if name == "cmoe":
        kwargs = dict(num_classes=10, widths=(8, 16), depths=(1, 1), sample_rate=8000, n_mels=32)
        make = lambda **kw: CMoE(**kwargs, **kw)  # noqa: E731
    else:
        make = lambda **kw: panconv.build("model", name, sample_rate=8000, n_mels=32, **kw)  # noqa: E731
    torch.manual_seed(0)
    own = make()
    torch.manual_seed(0)
    from_data = make(frontend=None)
    return own, from_data


@pytest.mark.parametrize("name", ["audio.squeezeformer_nano", "audio.conformer_nano", "cmoe"])
def test_frontend_in_data_transforms_gives_the_same_training_step(name):
    """Moving the front-end from the model into data.transforms changes nothing: same features, same init, same
    loss and gradients in training mode (dropout and SpecAugment draw the same random numbers)."""
    own, from_data = _models(name)
    raw = _speech_batch()
    feats = LogMel(8000, 32)(raw)
    results = []
    for model, batch in [(own, raw), (from_data, feats)]:
        model.train()
        torch.manual_seed(5)
        loss = sum(v for k, v in model.loss(model(batch), batch).items() if "loss" in k)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    assert len(results[0][1]) == len(results[1][1]) > 0
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a model with its own front-end also takes the features; one without takes only features
    own.eval()
    with torch.no_grad():
        first, second = own(raw), own(feats)
    key = "logits" if name == "cmoe" else "log_probs"
    torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="frontend=None expects features"):
        from_data(raw)
    with pytest.raises(ValueError, match="n_mels=32"):
        own(LogMel(8000, 40)(raw))
