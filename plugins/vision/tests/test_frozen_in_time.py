"""Frozen in Time (Bain et al. ICCV 2021): the space-time Transformer, the dual encoder and the curriculum.

Parity: ``tests/fixtures/frozen_in_time_parity.pt`` holds the official ``SpaceTimeTransformer``'s outputs
(m-bain/frozen-in-time at ``OFFICIAL_COMMIT``, ``model/video_transformer.py``, run unchanged; it needs
``einops`` and ``timm``) for 4-, 2- and 1-frame inputs, on weights drawn from a seeded generator in
state-dict order (the two models' state dicts have the same names and shapes). Regenerate::

    git -C <frozen-in-time checkout> archive HEAD model | tar -x -C /tmp/fit_src
    pip install --target /tmp/fit_deps einops
    PYTHONPATH=/tmp/fit_deps PANCONV_RECORD_FROZEN=/tmp/fit_src \
        pytest plugins/vision/tests/test_frozen_in_time.py -k parity
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.frozen_in_time import FrozenInTime, SpaceTimeTransformer, sample_frames

FIXTURE = Path(__file__).parent / "fixtures" / "frozen_in_time_parity.pt"
OFFICIAL_COMMIT = "e1f13e178ce4d7ae5ef8a54232df46b5603194bf"
SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_frames=4)


def _weights_and_inputs(names_shapes: dict) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(shape, generator=g) * 0.2 for k, shape in sorted(names_shapes.items())}
    inputs = {t: torch.randn(2, t, 1, 32, 32, generator=g) for t in (4, 2, 1)}
    return state, inputs


def _ours(**kw) -> SpaceTimeTransformer:
    return SpaceTimeTransformer(**{"in_channels": 1, "heads": 4, "time_init": "random", **SMALL, **kw}).eval()


def _record(source: Path) -> None:
    sys.path.insert(0, str(source))
    from model.video_transformer import SpaceTimeTransformer as Official

    official = Official(in_chans=1, num_heads=4, num_classes=0, time_init="rand", **SMALL).eval()
    state, inputs = _weights_and_inputs({k: v.shape for k, v in official.state_dict().items()})
    official.load_state_dict(state)
    with torch.no_grad():
        outputs = {f"frames{t}": official(x).clone() for t, x in inputs.items()}   # not views
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(outputs, FIXTURE)


def test_parity_with_the_official_space_time_transformer():
    if os.environ.get("PANCONV_RECORD_FROZEN"):
        _record(Path(os.environ["PANCONV_RECORD_FROZEN"]))
    rec = torch.load(FIXTURE, weights_only=True)
    ours = _ours()
    state, inputs = _weights_and_inputs({k: v.shape for k, v in ours.state_dict().items()})
    ours.load_state_dict(state)                                  # strict: the official names, all of them
    with torch.no_grad():
        for t, x in inputs.items():
            torch.testing.assert_close(ours(x)[0], rec[f"frames{t}"], atol=1e-5, rtol=1e-5)
    assert rec["frames4"].abs().max() > 0.1 and not torch.allclose(rec["frames4"], rec["frames2"], atol=1e-3)


def test_fresh_model_on_an_image_is_timm_vit_with_the_same_weights():
    """The defining identity: zero-initialised temporal attention outputs 0, so a one-frame video (an image)
    goes through a plain ViT (timm's, [CLS] pooling, no head); the ViT entries of the state dict are timm's."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ours = _ours(time_init="zeros")
    vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=48,
                                                           depth=2, num_heads=4, num_classes=0,
                                                           global_pool="token").eval()
    missing, unexpected = vit.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and all(k == "temporal_embed" or ".timeattn." in k or ".norm3." in k for k in unexpected)
    image = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        # the temporal embedding of frame 0 is added to every patch: zero it for timm (which has none)
        ours.temporal_embed.zero_()
        torch.testing.assert_close(ours(image)[0], vit(image), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(image[:, None])[0], ours(image)[0])
        # a plain-ViT encoder (temporal=False) with the same weights agrees too
        plain = _ours(temporal=False)
        plain.load_state_dict({k: v for k, v in ours.state_dict().items() if k in plain.state_dict()})
        torch.testing.assert_close(plain(image)[0], vit(image), atol=1e-5, rtol=1e-5)


def test_the_temporal_embedding_makes_the_encoder_see_frame_order():
    """Attention is permutation-equivariant and [CLS] pools every token: only the temporal embedding
    tells frames apart (the temporal attention then mixes what it tells)."""
    torch.manual_seed(0)
    model = _ours()
    clip = torch.randn(2, 4, 1, 32, 32)
    with torch.no_grad():
        model.temporal_embed.normal_(std=0.5)
        forward, backward = model(clip)[0], model(clip.flip(1))[0]
        model.temporal_embed.zero_()
        # without the temporal embedding, the same output for any frame order (temporal attention on)
        torch.testing.assert_close(model(clip)[0], model(clip.flip(1))[0], atol=1e-5, rtol=1e-5)
    assert (forward - backward).abs().max() > 1e-3


def test_parameter_counts_match_the_official_code():
    with torch.device("meta"):
        video = panconv.build("backbone", "vision.spacetime_vit_base_patch16_224")
        full = panconv.create_model({"type": "vision.frozen_in_time_base"})
    assert sum(p.numel() for p in video.parameters()) == 114_168_576          # official SpaceTimeTransformer
    # official FrozenInTime = 114,168,576 + DistilBERT-base 66,362,880 + two 768->256 projections;
    # ours keeps BertEncoder's token-type embedding (1 x 768)
    assert sum(p.numel() for p in full.parameters()) == 114_168_576 + 66_362_880 + 2 * (768 * 256 + 256) + 768
    assert sum(p.numel() for p in full.text_model.parameters()) == 66_362_880 + 768


def test_sample_frames_takes_one_frame_per_segment():
    assert sample_frames(8, 4, random=False).tolist() == [0, 2, 4, 6]
    assert sample_frames(8, 1, random=False).tolist() == [3]
    assert sample_frames(3, 5, random=False).tolist() == [0, 1, 2]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = sample_frames(8, 4, random=True, generator=g)
        assert all(2 * i <= int(j) < 2 * i + 2 for i, j in enumerate(idx))


def _tiny(**kw) -> FrozenInTime:
    cfg = {**FrozenInTime.example_config(), "curriculum": [1, 2, 4], "curriculum_steps": [2, 4], **kw}
    return FrozenInTime(**cfg)


def test_curriculum_moves_from_images_to_longer_clips():
    torch.manual_seed(0)
    model = _tiny().train()
    batch = model.example_inputs(3)
    seen = []
    for _ in range(6):
        seen.append(model.frames_now())
        model.loss(model(batch), batch)["loss"].backward()
    assert seen == [1, 1, 2, 2, 4, 4] and int(model.curriculum_step) == 6
    model.eval()
    assert model.frames_now() == 4
    with torch.no_grad():
        model(batch)
    assert int(model.curriculum_step) == 6                                    # evaluation does not count
    # the stage survives a checkpoint round trip
    clone = _tiny()
    clone.load_state_dict(model.state_dict())
    assert clone.train().frames_now() == 4


def test_one_frame_stage_encodes_a_single_frame_as_an_image():
    torch.manual_seed(0)
    model = _tiny(curriculum=[1], curriculum_steps=[], eval_frames=1).eval()
    batch = model.example_inputs(2)
    with torch.no_grad():
        clip = model(batch)["video_embeddings"]
        middle = batch["inputs"][:, 1]                                       # 'uniform': the middle of 4 is 1
        image = model.encode_video(middle)
    torch.testing.assert_close(clip, image)


def test_mean_pool_baseline_averages_per_frame_image_embeddings():
    torch.manual_seed(0)
    model = _tiny(temporal="mean_pool", curriculum=[], curriculum_steps=[]).eval()
    assert not any(".timeattn." in k for k in model.state_dict()) and model.video_model.temporal_embed.shape[1] == 1
    clip = model.example_inputs(2)["inputs"]
    with torch.no_grad():
        pooled = model.encode_video(clip)
        frames = torch.stack([model.encode_video(clip[:, t]) for t in range(clip.shape[1])], 1).mean(1)
        torch.testing.assert_close(pooled, frames, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pooled, model.encode_video(clip.flip(1)), atol=1e-6, rtol=1e-5)


def test_loss_is_the_normalised_softmax_at_temperature_005():
    torch.manual_seed(0)
    model = _tiny().eval()
    batch = model.example_inputs(4)
    with torch.no_grad():
        out = model(batch)
        t, v = (torch.nn.functional.normalize(out[k], dim=-1) for k in ("text_embeddings", "video_embeddings"))
        logits = t @ v.T / 0.05
        target = torch.arange(4)
        want = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits.T, target))
        torch.testing.assert_close(model.loss(out, batch)["loss"], want)


def test_a_tiny_model_learns_to_match_clips_and_captions():
    torch.manual_seed(0)
    model = _tiny(curriculum=[], curriculum_steps=[], text_dropout=0.0).train()
    batch = model.example_inputs(6)
    batch["inputs"] = torch.rand_like(batch["inputs"])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss = model.loss(model(batch), batch)["loss"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


@pytest.mark.parametrize("kwargs, match", [
    (dict(curriculum=[1, 4], curriculum_steps=[]), "curriculum_steps needs 1"),
    (dict(curriculum=[1, 8], curriculum_steps=[3]), "1..num_frames"),
    (dict(curriculum=[1, 2, 4], curriculum_steps=[5, 3]), "increasing"),
    (dict(temporal="lstm"), "temporal must be"),
    (dict(img_size=20), "multiple of patch_size"),
])
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kwargs)


def test_bad_inputs_are_rejected_with_the_expected_shape():
    model = _tiny().eval()
    with pytest.raises(ValueError, match="more than num_frames"):
        model.video_model(torch.randn(1, 5, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(B, T, 1, 16, 16\)"):
        model.video_model(torch.randn(1, 2, 1, 24, 24))
    with pytest.raises(ValueError, match="token ids"):
        model.encode_text(torch.randn(2, 8))
