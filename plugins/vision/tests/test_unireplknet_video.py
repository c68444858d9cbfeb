"""UniRepLKNet's video pathway: the two clip-to-image layouts and the backbone they feed."""

import pytest
import torch

from panconv_vision.models.unireplknet import UniRepLKNet
from panconv_vision.models.unireplknet_video import UniRepLKNetVideo, grid_rows


def _model(**kw):
    torch.manual_seed(0)
    return UniRepLKNetVideo(**{**UniRepLKNetVideo.example_config(), "num_frames": 4, "in_channels": 1, **kw}).eval()


def test_frames_to_channels_puts_frame_t_channel_c_at_channel_t_times_c():
    model = _model(num_frames=4, in_channels=3)
    clips = torch.randn(2, 4, 3, 8, 8)
    image = model.to_image(clips)
    assert image.shape == (2, 12, 8, 8) and model.backbone.stem[0].in_channels == 12
    for t in range(4):
        for c in range(3):
            torch.testing.assert_close(image[:, t * 3 + c], clips[:, t, c])


def test_official_layout_is_the_official_raw_reshape_of_a_16_frame_clip():
    model = _model(num_frames=16, in_channels=3, layout="official")
    clips = torch.randn(2, 16, 3, 8, 8)
    image = model.to_image(clips)
    # the official Video/engine_for_finetuning.py: samples (B, C, T, H, W) -> samples.reshape(B, C, H * 4, W * 4)
    official = clips.permute(0, 2, 1, 3, 4).reshape(2, 3, 8 * 4, 8 * 4)
    torch.testing.assert_close(image, official)
    assert model.backbone.stem[0].in_channels == 3
    # not a grid of frames: image row r holds rows 4r % 8 ... of frame r // 2 side by side
    # (each frame fills 8 * 8 / 32 = 2 image rows; image row 5 = frame 2's rows 4 ... 7, its second row-block)
    torch.testing.assert_close(image[:, :, 5, 8:16], clips[:, 2, :, 5, :])


@pytest.mark.parametrize(("frames", "rows"), [(16, 4), (8, 2), (12, 3), (7, 1), (1, 1), (9, 3)])
def test_grid_rows_is_the_largest_divisor_up_to_the_square_root(frames, rows):
    assert grid_rows(frames) == rows


def test_features_are_the_vision_backbone_on_the_image_and_reparameterisation_keeps_them():
    model = _model()
    assert isinstance(model.backbone, UniRepLKNet)
    for p in model.parameters():  # non-trivial BN statistics / layer scales so the fold is tested
        p.data.add_(0.05 * torch.randn_like(p))
    clips = model.example_inputs()
    with torch.no_grad():
        ours = model(clips)
        direct = model.backbone(model.to_image(clips))
        model.reparameterize()
        deployed = model(clips)
    for a, b, c in zip(ours, direct, deployed):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)  # measured 3.6e-7 (values up to 3.0)


def test_frame_order_matters_in_both_layouts():
    for layout in ("channels", "official"):
        model = _model(layout=layout)
        clips = model.example_inputs()
        with torch.no_grad():
            a, b = model(clips)[-1], model(clips.flip(1))[-1]
        assert not torch.allclose(a, b, atol=1e-5), layout


def test_bad_clips_and_layouts_are_refused():
    model = _model()
    with pytest.raises(ValueError, match=r"expects clips \(N, 4, 1, H, W\)"):
        model(torch.randn(2, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="layout"):
        UniRepLKNetVideo(**{**UniRepLKNetVideo.example_config(), "layout": "grid"})


def test_the_official_size_has_its_count():
    """The official Kinetics-400 size (UniRepLKNet-B, 16 frames), backbone only."""
    import panconv

    with torch.device("meta"):
        model = panconv.get_component("backbone", "vision.unireplknet_video_k400")()
    assert sum(p.numel() for p in model.parameters()) == 97_841_184
