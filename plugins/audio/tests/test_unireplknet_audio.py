"""UniRepLKNet's audio pathway: the spectrogram as a one-channel image (the official layout) and the vision
backbone it feeds."""

import pytest
import torch

from panconv_audio.models.unireplknet_audio import UniRepLKNetAudio
from panconv_audio.transforms import LogMel


def _model(**kw):
    torch.manual_seed(0)
    return UniRepLKNetAudio(**{**UniRepLKNetAudio.example_config(), **kw}).eval()


def test_features_become_a_bins_by_frames_image_as_the_official_code():
    model = _model(frontend=None)  # n_mels 32, 32 frames
    feats = torch.randn(2, 32, 32)
    # the official ast_models.py: x (B, frames, bins) -> x.unsqueeze(1).transpose(2, 3)
    torch.testing.assert_close(model.embed(feats), feats.unsqueeze(1).transpose(2, 3))
    assert model.embed(feats)[0, 0, 5, 7] == feats[0, 7, 5]  # height = frequency, width = time


def test_short_spectrograms_are_zero_padded_and_long_ones_cropped_to_target_frames():
    model = _model(frontend=None)
    short, long = torch.randn(2, 20, 32), torch.randn(2, 50, 32)
    image = model.embed(short)
    assert image.shape == (2, 1, 32, 32)
    torch.testing.assert_close(image[..., :20], short.unsqueeze(1).transpose(2, 3))
    assert (image[..., 20:] == 0).all()
    torch.testing.assert_close(model.embed(long), long[:, :32].unsqueeze(1).transpose(2, 3))


def test_waveforms_go_through_the_front_end_and_the_vision_backbone():
    from panconv_vision.models.unireplknet import UniRepLKNet

    model = _model(frontend="logmel")
    assert isinstance(model.backbone, UniRepLKNet) and model.backbone.stem[0].in_channels == 1
    wav = model.example_inputs()
    feats, _ = LogMel(8000, 32)(wav, None)
    with torch.no_grad():
        ours = model(wav)
        frames = feats.shape[1]
        image = torch.nn.functional.pad(feats.unsqueeze(1).transpose(2, 3), (0, max(0, 32 - frames)))[..., :32]
        direct = model.backbone(image)
    for a, b in zip(ours, direct):
        torch.testing.assert_close(a, b)


def test_spec_augment_masks_only_in_training():
    model = _model(frontend=None, spec_augment=True)
    feats = torch.randn(4, 32, 32) + 5.0  # no bin is zero before masking
    torch.testing.assert_close(model.embed(feats), model.embed(feats))
    assert (model.embed(feats) != 0).all()
    model.train()
    torch.manual_seed(1)
    assert (model.embed(feats) == 0).any()


def test_bad_inputs_are_refused_with_the_shape():
    model = _model(frontend=None)
    with pytest.raises(ValueError, match="features have 16 bins"):
        model(torch.randn(2, 30, 16))
    with pytest.raises(ValueError, match="frontend=None expects features"):
        model(torch.randn(2, 4000))
    with pytest.raises(ValueError, match="inputs must be waveforms"):
        model(torch.randn(2, 1, 30, 32))


def test_the_official_size_has_its_count():
    """The official Speech Commands size (UniRepLKNet-S, 128 bins x 128 frames), backbone only."""
    import panconv

    with torch.device("meta"):
        model = panconv.get_component("backbone", "audio.unireplknet_audio_speechcommands")()
    assert sum(p.numel() for p in model.parameters()) == 55_685_304
