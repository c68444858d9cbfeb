"""Slot Attention: slot permutation equivariance, the scenes generator, ARI/AMI against scikit-learn, Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

import panconv
from panconv_vision.datasets.scenes import ShapeScenes, shape_mask
from panconv_vision.evaluators.segmentation import (
    Dice,
    ObjectDiscovery,
    adjusted_mutual_info,
    adjusted_rand_index,
    kmeans_segments,
)
from panconv_vision.models.slot_attention import SlotAttention, SlotAttentionAE, position_grid


# ---------------------------------------------------------------- the model
def _tiny(**kw):
    torch.manual_seed(0)
    return SlotAttentionAE(**{**SlotAttentionAE.example_config(), **kw}).eval()


def test_slot_attention_is_permutation_equivariant_in_the_slots():
    """Permuting the initial slots permutes the output slots, the attention and the per-slot decodings the
    same way, and leaves the reconstruction unchanged (the model treats slots as a set)."""
    model = _tiny(num_slots=4)
    images = torch.rand(2, 3, 8, 8)
    slots0 = model.slot_attention.initial_slots(2, torch.Generator().manual_seed(1))
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a = model.forward_slots(images, slots0)
        b = model.forward_slots(images, slots0[:, perm])
    assert torch.allclose(b["slots"], a["slots"][:, perm], atol=1e-5)
    assert torch.allclose(b["attn"], a["attn"][:, :, perm], atol=1e-6)
    assert torch.allclose(b["alpha"], a["alpha"][:, perm], atol=1e-6)
    assert torch.allclose(b["recon"], a["recon"], atol=1e-5)
    # and the slots are not trivially identical (the check above would pass vacuously)
    assert (a["slots"][:, 0] - a["slots"][:, 1]).abs().max() > 1e-3


def test_attention_is_a_softmax_over_slots_and_alphas_partition_each_pixel():
    model = _tiny()
    with torch.no_grad():
        out = model({"inputs": torch.rand(2, 3, 8, 8)})
    assert torch.allclose(out["attn"].sum(-1), torch.ones(2, 64), atol=1e-5 * 3)
    assert torch.allclose(out["alpha"].sum(1), torch.ones(2, 1, 8, 8), atol=1e-6)
    assert torch.allclose(out["recon"], (out["rgb"] * out["alpha"]).sum(1))
    masks = model.predict(out)["masks"]
    assert masks.shape == (2, 8, 8) and masks.max() < 3


def test_eval_is_reproducible_and_training_samples_new_slots():
    model = _tiny()
    x = {"inputs": torch.rand(2, 3, 8, 8)}
    with torch.no_grad():
        assert torch.equal(model(x)["recon"], model(x)["recon"])
        model.train()
        assert not torch.equal(model(x)["slots"], model(x)["slots"])


def test_slot_attention_module_shapes_and_bad_sizes():
    sa = SlotAttention(num_slots=3, dim=8, input_dim=5, iters=2)
    slots, attn = sa(torch.randn(2, 10, 5), sa.initial_slots(2))
    assert slots.shape == (2, 3, 8) and attn.shape == (2, 10, 3)
    assert position_grid(2, 3)[0, 1, 2].tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="broadcast"):
        SlotAttentionAE(image_size=30, broadcast=8, upsamples=2)
    with pytest.raises(ValueError, match="expected"):
        _tiny()({"inputs": torch.rand(2, 3, 16, 16)})


def test_registered_configurations():
    ours = panconv.create_model("vision.slot_attention_scenes")
    assert sum(p.numel() for p in ours.parameters()) == 108_564
    with torch.device("meta"):
        clevr = panconv.create_model("vision.slot_attention_clevr6")
    assert clevr.image_size == 128 and clevr.slot_attention.num_slots == 7
    assert sum(p.numel() for p in clevr.parameters()) == 890_308


# ---------------------------------------------------------------- the scenes
def test_scenes_are_seeded_disjoint_and_masks_match_the_pixels():
    a = ShapeScenes(split="train", num_images=20, image_size=24, seed=3)
    b = ShapeScenes(split="train", num_images=20, image_size=24, seed=3)
    val = ShapeScenes(split="val", num_images=20, image_size=24, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, val.images)
    assert a.images.shape == (20, 3, 24, 24) and a.masks.shape == (20, 24, 24)
    for image, mask in zip(a.images, a.masks):
        assert mask.max() <= 4 and (mask > 0).any()
        background = mask == 0
        assert torch.allclose(image[:, background], torch.full_like(image[:, background], 0.1))
        for k in mask.unique()[1:]:     # each visible object is one flat colour
            pixels = image[:, mask == k]
            assert torch.allclose(pixels, pixels[:, :1].expand_as(pixels))
    # occlusion happens: some scene has an object with fewer pixels than its shape would cover
    counts = [len(m.unique()) - 1 for m in a.masks]
    assert min(counts) >= 1 and max(counts) <= 4


def test_shapes_cover_the_expected_areas():
    size = 200
    circle = shape_mask("circle", 100, 100, 50, size).sum()
    square = shape_mask("square", 100, 100, 50, size).sum()
    triangle = shape_mask("triangle", 100, 100, 50, size).sum()
    assert circle == pytest.approx(math.pi * 50 ** 2, rel=0.01)
    assert square == pytest.approx(100 ** 2, rel=0.03)
    assert triangle == pytest.approx(100 * 100 / 2, rel=0.03)
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("star", 1, 1, 1, 4)


# ---------------------------------------------------------------- ARI / AMI / Dice
def test_ari_and_ami_equal_scikit_learn():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 400))
        a = rng.integers(0, int(rng.integers(1, 7)), n)
        b = rng.integers(0, int(rng.integers(1, 7)), n)
        if trial % 3 == 0:                      # correlated labelings, not only chance-level ones
            b = (a * 7 + 3) % 11
            b[: n // 5] = 0
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-10)
        assert adjusted_mutual_info(a, b) == pytest.approx(adjusted_mutual_info_score(a, b), abs=1e-8)
    for a, b in (([0, 0], [1, 1]), ([0, 1, 2], [5, 6, 7]), ([0, 0, 0], [0, 1, 2]), ([3], [3])):
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))
        assert adjusted_mutual_info(a, b) == pytest.approx(adjusted_mutual_info_score(a, b))


def test_object_discovery_scores_the_foreground_and_the_kmeans_baseline():
    scenes = ShapeScenes(split="test", num_images=6, image_size=16)
    batch = scenes.collate([scenes[i] for i in range(6)])
    truth = batch["masks"]
    evaluator = ObjectDiscovery(kmeans=5, position_weight=0.5)
    evaluator.process(batch, {"masks": (truth + 3) % 7})        # a relabelling of the truth: perfect
    metrics = evaluator.compute()
    assert metrics["fg_ari"] == pytest.approx(1.0) and metrics["ami"] == pytest.approx(1.0)
    assert 0.3 < metrics["kmeans_fg_ari"] <= 1.0                  # flat colours: k-means does well
    # all pixels in one slot: ARI 0 overall; the foreground ARI is 0 too unless only one object is visible
    evaluator = ObjectDiscovery()
    evaluator.process(batch, {"masks": torch.zeros_like(truth)})
    assert evaluator.compute()["ari"] == pytest.approx(0.0)
    segments = kmeans_segments(batch["inputs"], 3)
    assert segments.shape == truth.shape and segments.max() <= 2
    with pytest.raises(ValueError, match="differ in shape"):
        ObjectDiscovery().process(batch, {"masks": truth[:, :4]})


def test_dice():
    truth = torch.tensor([[[0, 1, 1, 2]], [[0, 0, 2, 2]]])
    pred = torch.tensor([[[1, 1, 0, 2]], [[0, 0, 0, 2]]])
    evaluator = Dice(num_classes=3)
    evaluator.process({"masks": truth}, {"masks": pred})
    metrics = evaluator.compute()
    # class 1: image 1 only (absent in both in image 2): 2*1/(2+2); class 2: image 1 = 1, image 2 = 2*1/(1+2)
    assert metrics["dice_1"] == pytest.approx(0.5)
    assert metrics["dice_2"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["dice"] == pytest.approx((0.5 + 5 / 6) / 2)
    with pytest.raises(ValueError, match="num_classes"):
        Dice(num_classes=1)
