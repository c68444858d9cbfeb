"""PGD adversarial training: the attack stays in its ball and in the pixel range, raises the loss, leaves
the parameters' gradients and BatchNorm statistics alone; the wrapper trains on attacked inputs and
evaluates on clean ones; bad arguments are one-line errors."""

import pytest
import torch
import torch.nn as nn

from panconv_vision.models.adversarial import AdversarialTraining, pgd_attack

CLASSIFIER = {"backbone": {"type": "vision.ConvNeXt", "depths": [1], "dims": [8], "patch_size": 2},
              "neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead"}}


def _linear_problem():
    torch.manual_seed(0)
    net = nn.Linear(16, 3)
    x, y = torch.rand(8, 16), torch.arange(8) % 3
    return net, x, y, (lambda z: nn.functional.cross_entropy(net(z), y))


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_pgd_stays_in_its_ball_and_the_pixel_range_and_raises_the_loss(norm, eps):
    net, x, y, loss = _linear_problem()
    adv = pgd_attack(loss, x, eps, eps / 4, 10, norm)
    delta = adv - x
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-6).all())
    assert adv.min() >= 0 and adv.max() <= 1
    assert loss(adv) > loss(x) + 1e-3
    assert net.weight.grad is None  # the attack leaves no gradient on the parameters


def test_linf_pgd_on_a_linear_model_finds_the_sign_attack():
    """For a linear binary score the L-inf optimum is x + eps * sign(w) (inside the pixel range)."""
    w = torch.tensor([[1.0, -2.0, 0.5, -0.25]])
    x = torch.full((1, 4), 0.5)
    adv = pgd_attack(lambda z: (z @ w.T).sum(), x, 0.1, 0.03, 20, "linf", random_start=False)
    assert torch.allclose(adv, x + 0.1 * w.sign(), atol=1e-6)


def test_the_wrapper_attacks_in_training_and_not_in_evaluation():
    torch.manual_seed(0)
    model = AdversarialTraining(CLASSIFIER, epsilon=0.3, step_size=0.1, steps=3, mean=0.5, std=0.25,
                                num_classes=3, in_channels=1)
    batch = {"inputs": torch.randn(4, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 0])}
    inner = model.model
    stats = {k: v.clone() for k, v in inner.state_dict().items() if "running" in k}
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), inner(batch))
    model.train()
    adv = model.adversarial(batch)
    pixels = (adv - batch["inputs"]) * 0.25
    assert 0 < pixels.abs().max() <= 0.3 + 1e-5  # the ball is in pixel units
    assert inner.training  # the attack's eval mode is undone
    assert all(torch.equal(inner.state_dict()[k], v) for k, v in stats.items())
    clean = inner.loss(inner(batch), batch)["loss"]
    attacked = model.loss(model(batch), batch)["loss"]
    assert attacked > clean
    assert all(p.grad is None for p in model.parameters())


def test_a_train_mode_attack_uses_batch_statistics_and_restores_the_running_ones():
    torch.manual_seed(0)
    with_bn = {"backbone": {"type": "vision.MobileNetV1", "width_mult": 0.25}, "neck": {"type": "core.GlobalAvgPool"},
               "head": {"type": "core.LinearClsHead"}}
    model = AdversarialTraining(with_bn, epsilon=0.3, step_size=0.1, steps=3, mean=0.5, std=0.25,
                                attack_mode="train", num_classes=3, in_channels=1).train()
    batch = {"inputs": torch.randn(4, 1, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}
    inner = model.model
    stats = {k: v.clone() for k, v in inner.state_dict().items() if "running" in k or "num_batches" in k}
    assert stats
    adv = model.adversarial(batch)
    assert inner.training
    assert all(torch.equal(inner.state_dict()[k], v) for k, v in stats.items())
    with torch.no_grad():
        assert inner.loss(inner({**batch, "inputs": adv}), batch)["loss"] > inner.loss(inner(batch), batch)["loss"]


def test_the_wrapper_rejects_bad_arguments():
    with pytest.raises(ValueError, match="attack_mode must be 'eval' or 'train'"):
        AdversarialTraining(CLASSIFIER, attack_mode="both", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        AdversarialTraining(CLASSIFIER, norm="l1", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match="std must be > 0"):
        AdversarialTraining(CLASSIFIER, std=0.0, num_classes=3, in_channels=1)


def test_the_example_config_is_valid():
    from pathlib import Path

    from panconv.testing import dry_run

    code, out, err = dry_run("examples/analysis_unlearnable_adversarial_mnist.yaml",
                             cwd=Path(__file__).resolve().parents[3])
    assert code == 0 and "config is valid (model vision.AdversarialTraining" in out, err


@pytest.mark.parametrize("override, key", [("model.steps=0", "model.steps"),
                                           ("model.model.backbone.width_mult=-1", "model")])
def test_the_example_config_is_validated(override, key):
    from pathlib import Path

    from panconv.testing import assert_rejected_at_validation

    root = Path(__file__).resolve().parents[3]
    assert_rejected_at_validation("examples/analysis_unlearnable_adversarial_mnist.yaml", override, key, cwd=root)
