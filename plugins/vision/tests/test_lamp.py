"""LAMP (Wu et al. CVPR 2024): the inflated U-Net equals the image U-Net frame by frame at initialisation, the
temporal layers are causal / first-frame-keyed as the official code, first-frame conditioning in training and
sampling, the shared-noise initialisation, the tuned parameter set, and the motion measure on real clips."""

import math

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.datasets.digits import MNIST
from panconv_vision.datasets.video import MovingMNIST
from panconv_vision.models.ddpm import DDPM, AttentionBlock
from panconv_vision.models.lamp import (
    LAMP,
    MotionDirection,
    TemporalConv,
    ddim_timesteps,
    direction_vector,
    displacement,
    first_frame_attention,
    shared_noise,
)

TINY = dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,), norm_groups=4,
            timesteps=30, sample_steps=4)


def _randomise(module, std=0.2):
    for p in module.parameters():
        torch.nn.init.normal_(p, std=std)


def _frozen_unet_trained_like(model):
    """Give the image U-Net non-zero weights everywhere (its zero-initialised convs included)."""
    torch.manual_seed(1)
    _randomise(model.unet, 0.1)
    for block in model.unet.modules():  # attention strong enough to tell frames apart
        if isinstance(block, AttentionBlock):
            _randomise(block.qkv, 0.5)
            _randomise(block.proj_out, 0.5)


def test_inflated_unet_equals_the_image_unet_frame_by_frame_at_init():
    torch.manual_seed(0)
    model = LAMP(first_frame_attention=False, **TINY)
    _frozen_unet_trained_like(model)
    video, t = torch.randn(2, 4, 1, 8, 8), torch.tensor([3, 17])
    inflated = model.video_unet(video, t)
    per_frame = model.unet(video.flatten(0, 1), t.repeat_interleave(4)).view_as(inflated)
    torch.testing.assert_close(inflated, per_frame, atol=1e-5, rtol=1e-5)
    # with LAMP's first-frame attention: frame 1 is still the image model's, and so is a static clip everywhere
    ffa = LAMP(**TINY)
    ffa.load_state_dict(model.state_dict())
    torch.testing.assert_close(ffa.video_unet(video, t)[:, 0], per_frame[:, 0], atol=1e-5, rtol=1e-5)
    static = video[:, :1].expand_as(video).contiguous()
    torch.testing.assert_close(ffa.video_unet(static, t), model.unet(static.flatten(0, 1), t.repeat_interleave(4))
                               .view_as(static), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ffa.video_unet(video, t)[:, 1:], per_frame[:, 1:], atol=1e-3)
    # once the motion layers move away from zero, the frames interact
    _randomise(model.temporal_convs, 0.1)
    assert not torch.allclose(model.video_unet(video, t), per_frame, atol=1e-3)


def test_temporal_conv_is_the_gated_causal_conv_of_the_official_code():
    torch.manual_seed(0)
    layer = TemporalConv(3)
    _randomise(layer)
    x = torch.randn(2 * 5, 3, 4, 4)  # 2 clips of 5 frames
    y = layer(x, 5)
    # reference: y_f = x_f + (sum_k W_k x_{f-2+k} + b) * sigmoid(gate(x_f)), frames before the first are zero
    clips = x.view(2, 5, 3, 4, 4)
    w, b = layer.conv1d.weight, layer.conv1d.bias  # (C, C, 3)
    ref = []
    for f in range(5):
        acc = b.view(1, 3, 1, 1).expand(2, 3, 4, 4).clone()
        for k in range(3):
            src = f - 2 + k
            if src >= 0:
                acc = acc + torch.einsum("oc,bchw->bohw", w[:, :, k], clips[:, src])
        ref.append(clips[:, f] + acc * torch.sigmoid(layer.conv_gate(clips[:, f])))
    torch.testing.assert_close(y.view(2, 5, 3, 4, 4), torch.stack(ref, 1), atol=1e-5, rtol=1e-5)
    # causal: changing the last frame changes nothing before it
    x2 = x.clone().view(2, 5, 3, 4, 4)
    x2[:, -1] += 1
    torch.testing.assert_close(layer(x2.view_as(x), 5).view(2, 5, 3, 4, 4)[:, :-1], y.view(2, 5, 3, 4, 4)[:, :-1])


def test_first_frame_attention_keys_and_values_come_from_the_first_frame():
    torch.manual_seed(0)
    block = AttentionBlock(8, num_heads=2, groups=4)
    _randomise(block)
    update = torch.nn.Conv1d(8, 8, 1)
    _randomise(update)
    x = torch.randn(3 * 4, 8, 3, 3)  # 3 clips of 4 frames
    y = first_frame_attention(block, update, x, 4).view(3, 4, 8, 3, 3)
    x2 = x.clone().view(3, 4, 8, 3, 3)
    x2[:, 2] = torch.randn(3, 8, 3, 3)  # another frame 3 changes frame 3's output only
    y2 = first_frame_attention(block, update, x2.view_as(x), 4).view(3, 4, 8, 3, 3)
    torch.testing.assert_close(y2[:, [0, 1, 3]], y[:, [0, 1, 3]])
    assert not torch.allclose(y2[:, 2], y[:, 2])
    # frame 1 alone: the image block with queries W_q x + update(x)
    torch.nn.init.zeros_(update.weight)
    torch.nn.init.zeros_(update.bias)
    torch.testing.assert_close(first_frame_attention(block, update, x, 4).view(3, 4, 8, 3, 3)[:, 0],
                               block(x.view(3, 4, 8, 3, 3)[:, 0]), atol=1e-5, rtol=1e-5)


def test_only_the_motion_layers_and_query_projections_train():
    model = LAMP(**TINY)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"temporal_convs", "temporal_attns", "query_updates"}
    assert not any(p.requires_grad for p in model.unet.parameters())
    assert all(p.requires_grad for p in LAMP(tune="all", **TINY).parameters())
    # the image U-Net is exactly DDPM's: a DDPM checkpoint's "unet." entries initialise it
    ddpm = DDPM(**{k: v for k, v in TINY.items() if k != "sample_steps"})
    assert {k: v.shape for k, v in model.unet.state_dict().items()} == \
        {k: v.shape for k, v in ddpm.unet.state_dict().items()}


def test_training_keeps_the_first_frame_clean_and_scores_the_others():
    torch.manual_seed(0)
    model = LAMP(**TINY)
    _frozen_unet_trained_like(model)
    seen = {}
    original = model.video_unet

    def spy(x, t):
        seen["x"], seen["t"] = x.clone(), t
        return original(x, t)

    model.video_unet = spy
    batch = {"inputs": torch.rand(3, 4, 1, 8, 8), "labels": torch.tensor([0, 1, 0])}
    out = model(batch)
    x0 = model.prepare(batch["inputs"])
    torch.testing.assert_close(seen["x"][:, 0], x0[:, 0])  # clean first frame
    assert not torch.allclose(seen["x"][:, 1:], x0[:, 1:])
    assert out["eps"].shape == (3, 3, 1, 8, 8) and out["noise"].shape == (3, 3, 1, 8, 8)
    loss = model.loss(out, batch)["loss"]
    torch.testing.assert_close(loss, F.mse_loss(out["eps"], out["noise"]))
    loss.backward()
    assert model.temporal_convs["out"].conv_gate.weight.grad is not None
    # tuning on one motion: only its clips are used; a batch without one gives a zero loss that still backprops
    tuned = LAMP(motion=0, **TINY)
    assert tuned(batch)["eps"].shape[0] == 2
    empty = {"inputs": batch["inputs"], "labels": torch.tensor([3, 4, 5])}
    loss = tuned.loss(tuned(empty), empty)["loss"]
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_shared_noise_is_the_official_mix_with_the_first_frame():
    g = torch.Generator().manual_seed(0)
    eps = shared_noise((2, 5, 1, 6, 6), 0.2, g)
    raw = torch.randn(2, 5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(eps[:, 0], raw[:, 0])
    torch.testing.assert_close(eps[:, 3], 0.2 * raw[:, 0] + 0.8 * raw[:, 3])
    big = shared_noise((1, 3, 1, 100, 100), 0.5)
    corr = torch.corrcoef(torch.stack([big[0, 1].flatten(), big[0, 2].flatten()]))[0, 1]
    assert abs(float(corr) - 0.5) < 0.05  # (r^2) / (r^2 + (1-r)^2) = 0.5 between two later frames at r = 0.5


def test_sampling_keeps_the_given_first_frame_and_is_seeded():
    torch.manual_seed(0)
    model = LAMP(**TINY).eval()
    _frozen_unet_trained_like(model)
    first = torch.randn(2, 1, 8, 8)
    a = model.sample(first, 4, torch.Generator().manual_seed(3))
    b = model.sample(first, 4, torch.Generator().manual_seed(3))
    assert a.shape == (2, 4, 1, 8, 8)
    torch.testing.assert_close(a[:, 0], first)
    torch.testing.assert_close(a, b)
    assert torch.isfinite(a).all()
    assert ddim_timesteps(1000, 25)[0] == 999 and ddim_timesteps(1000, 25)[-1] == 0
    assert len(ddim_timesteps(30, 4)) == 4
    out = model({"inputs": torch.rand(2, 3, 1, 8, 8)})
    assert model.predict(out)["displacement"].shape == (2, 2)


def test_motion_measure_recovers_the_direction_of_real_moving_mnist_clips(tmp_path):
    data = MovingMNIST(file=MNIST.example(tmp_path)["file"], length=16, frames=5, size=40, speed_min=2.5,
                       speed_max=3.0)
    clips = torch.stack([data[i]["inputs"] for i in range(16)])
    labels = torch.stack([data[i]["labels"] for i in range(16)])
    d = displacement(clips)
    for k in range(8):
        if (labels == k).any():
            metric = MotionDirection(direction=k)
            metric.process({}, {"displacement": d[labels == k]})
            result = metric.compute()
            assert result["motion_acc"] == 1.0 and result["motion_cos"] > 0.95, (k, result)
            assert 4 * 2.5 - 1.5 < result["motion_along"] < 4 * 3.0 + 1.5
    assert torch.allclose(direction_vector(2), torch.tensor([-1.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert abs(float(direction_vector(1)[1]) - math.sqrt(0.5)) < 1e-12


def test_bad_arguments_and_inputs_raise_value_error():
    with pytest.raises(ValueError, match="sample_steps"):
        LAMP(**{**TINY, "sample_steps": 31})
    with pytest.raises(ValueError, match=r"clips \(B, F >= 2"):
        LAMP(**TINY)({"inputs": torch.rand(2, 1, 8, 8)})
    with pytest.raises(ValueError, match="divisible"):
        LAMP(**TINY)({"inputs": torch.rand(1, 3, 1, 9, 9)})
    with pytest.raises(ValueError, match="direction"):
        MotionDirection(direction=8)
