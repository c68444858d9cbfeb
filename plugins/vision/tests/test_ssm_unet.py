"""SSM U-Net: the VSS block sees the whole image (the CNN block a 5x5 window), registered sizes match,
the medical-like generator is seeded and labelled, and the segmenter learns the organ."""

from __future__ import annotations

import pytest
import torch

import panconv
from panconv_vision.datasets.medical_shapes import MedicalShapes, ellipse
from panconv_vision.evaluators.segmentation import Dice
from panconv_vision.models.ssm_unet import Block, SSMUNet, soft_dice_loss


@pytest.mark.parametrize("block", ["vss", "conv"])
def test_receptive_field_of_one_block(block):
    """One VSS block: the output at a corner depends on every pixel (four directional scans); one conv block:
    only on the 5x5 window around it."""
    torch.manual_seed(0)
    layer = Block(8, block, d_state=4, ssm_ratio=1.0, mlp_ratio=0.0, drop_path_rate=0.0)
    x = torch.randn(1, 9, 9, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x)[0, 0, 0].sum(), x)
    reach = grad[0].abs().sum(-1) > 0
    if block == "vss":
        assert reach.all()
    else:
        assert reach[:3, :3].all() and not reach[3:].any() and not reach[:, 3:].any()


def test_shapes_loss_and_prediction():
    torch.manual_seed(0)
    model = SSMUNet(**SSMUNet.example_config())
    batch = model.example_inputs(3)
    logits = model(batch)
    assert logits.shape == (3, 3, 8, 8)
    losses = model.loss(logits, batch)
    assert set(losses) == {"loss_ce", "loss_dice"} and all(torch.isfinite(v) for v in losses.values())
    assert model.predict(logits)["masks"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        model({"inputs": torch.randn(1, 1, 10, 10)})
    with pytest.raises(ValueError, match="same length"):
        SSMUNet(dims=(8, 16), depths=(1,))


def test_soft_dice_loss_is_zero_for_a_confident_correct_prediction_and_one_for_a_wrong_one():
    target = torch.tensor([[[0, 1], [2, 2]]])
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(right, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(wrong, target, eps=0.0).item() == pytest.approx(1.0, abs=1e-6)


def test_registered_twins_have_the_same_size_within_one_percent():
    ssm = panconv.create_model("vision.ssm_unet_shapes", num_classes=3)
    cnn = panconv.create_model("vision.cnn_unet_shapes", num_classes=3)
    n_ssm, n_cnn = (sum(p.numel() for p in m.parameters()) for m in (ssm, cnn))
    assert (n_ssm, n_cnn) == (323_651, 326_439)
    assert abs(n_cnn / n_ssm - 1) < 0.01
    assert any(type(m).__name__ == "SS2D" for m in ssm.modules())
    assert not any(type(m).__name__ == "SS2D" for m in cnn.modules())


def test_medical_shapes_are_seeded_and_labelled():
    a = MedicalShapes(split="train", num_images=12, image_size=32, seed=1)
    b = MedicalShapes(split="train", num_images=12, image_size=32, seed=1)
    t = MedicalShapes(split="test", num_images=12, image_size=32, seed=1)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, t.images)
    assert a.images.shape == (12, 1, 32, 32) and a.masks.shape == (12, 32, 32)
    assert set(a.masks.unique().tolist()) == {0, 1, 2}
    assert a.metadata == {"num_classes": 3, "in_channels": 1}
    # the organ is brighter than the surrounding tissue on average, the lesions darker than the organ
    clean = MedicalShapes(num_images=12, image_size=32, texture=0, bias=0, noise=0, seed=1)
    organ, lesion = clean.images[:, 0][clean.masks == 1], clean.images[:, 0][clean.masks == 2]
    assert torch.allclose(organ, torch.full_like(organ, 0.5)) and torch.allclose(lesion, torch.full_like(lesion, 0.4))
    assert ellipse(101, 50.5, 50.5, 20, 40, 0.0).sum() == pytest.approx(3.14159 * 800, rel=0.02)


@pytest.mark.parametrize("block", ["vss", "conv"])
def test_learns_the_organ(block):
    data = MedicalShapes(split="train", num_images=64, image_size=16, seed=0)
    torch.manual_seed(0)
    model = SSMUNet(num_classes=3, dims=(16, 32), depths=(1, 1), block=block, patch=2, d_state=4, ssm_ratio=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(40):
        i = (step * 16) % 64
        batch = {"inputs": data.images[i:i + 16], "masks": data.masks[i:i + 16]}
        loss = sum(model.loss(model(batch), batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held = MedicalShapes(split="val", num_images=32, image_size=16, seed=0)
    batch = {"inputs": held.images, "masks": held.masks}
    evaluator = Dice(num_classes=3)
    with torch.no_grad():
        evaluator.process(batch, model.predict(model(batch)))
    assert evaluator.compute()["dice_1"] > 0.6
