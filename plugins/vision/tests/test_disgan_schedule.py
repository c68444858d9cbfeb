"""DISGAN's training schedule: the pixel-loss warm-up (ESRGAN's pre-training) and the release's decaying,
shared-per-step instance noise, both driven by the model's own step counter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv.testing import assert_rejected_at_validation, dry_run
from panconv_vision.models.disgan import DISGAN

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "vision_disgan_mni152_long.yaml"


def _model(**kwargs) -> DISGAN:
    torch.manual_seed(0)
    return DISGAN(**{**DISGAN.example_config(), **kwargs}).train()


def test_defaults_keep_the_official_state_dict_and_losses():
    plain, scheduled = _model(), _model(pixel_warmup_iters=3)
    assert "steps" not in plain.state_dict() and plain.step_count == 0 and not plain.warming_up
    assert set(scheduled.state_dict()) == set(plain.state_dict()) | {"steps"}
    batch = plain.example_inputs(2)
    for _ in range(2):  # no counter, no schedule: every step is adversarial
        assert set(plain.loss(plain(batch), batch)) == {"loss_pixel", "loss_adv", "loss_disc"}
    assert plain.noise_std == plain.instance_noise == 0


def test_warmup_trains_the_generator_on_the_pixel_loss_alone_then_turns_adversarial():
    m = _model(pixel_warmup_iters=2, disc_levels=3, perceptual_weight=0.01, perceptual_width=4,
               perceptual_init="kaiming")
    batch = m.example_inputs(2)
    for step in range(2):
        assert m.warming_up and m.step_count == step
        out = m(batch)
        losses = m.loss(out, batch)
        assert set(losses) == {"loss_pixel"}
        assert torch.equal(losses["loss_pixel"], F.l1_loss(out, batch["targets"]))
        m.zero_grad()
        losses["loss_pixel"].backward()
        assert all(p.grad is None for p in m.discriminator.parameters())
        assert any(p.grad is not None and p.grad.abs().max() > 0 for p in m.generator.parameters())
    assert not m.warming_up and m.step_count == 2
    assert set(m.loss(m(batch), batch)) == {"loss_pixel", "loss_perceptual", "loss_adv", "loss_disc"}
    assert m.step_count == 3
    # evaluation does not count and returns the plain L1
    m.eval()
    assert set(m.loss(m(batch), batch)) == {"loss"} and m.step_count == 3


def test_the_counter_is_saved_so_a_resumed_run_continues_the_schedule():
    a = _model(pixel_warmup_iters=2)
    batch = a.example_inputs(2)
    for _ in range(2):
        a.loss(a(batch), batch)
    b = _model(pixel_warmup_iters=2)
    assert b.warming_up
    b.load_state_dict(a.state_dict())
    assert b.step_count == 2 and not b.warming_up
    assert "loss_adv" in b.loss(b(batch), batch)


def test_instance_noise_decays_linearly_over_the_adversarial_steps():
    m = _model(pixel_warmup_iters=2, instance_noise=1.0, instance_noise_decay_iters=4)
    batch = m.example_inputs(2)
    seen = []
    for _ in range(8):
        seen.append(m.noise_std)
        m.loss(m(batch), batch)
    assert seen == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    constant = _model(instance_noise=0.3)
    assert "steps" not in constant.state_dict()
    constant.loss(constant(batch), batch)
    assert constant.noise_std == 0.3


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_one_noise_draw_per_step_reaches_every_discriminator_input(sigma):
    m = _model(instance_noise=sigma)
    inputs = []
    m.discriminator.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    batch = m.example_inputs(2)
    out = m(batch)
    m.loss(out, batch)
    real = batch["targets"]
    # G's term (real, fake), then D's (real, fake): the same noise on all four
    noises = [inputs[0] - real, inputs[1] - out.detach(), inputs[2] - real, inputs[3] - out.detach()]
    for n in noises[1:]:
        torch.testing.assert_close(n, noises[0], atol=1e-6, rtol=0)
    assert (noises[0].std().item() > 0.4) == (sigma > 0) and noises[0].abs().max() < 5 * sigma + 1e-6


def test_bad_schedule_values_are_rejected():
    with pytest.raises(ValueError, match="pixel_warmup_iters"):
        DISGAN(**DISGAN.example_config(), pixel_warmup_iters=-1)
    with pytest.raises(ValueError, match="instance_noise_decay_iters"):
        DISGAN(**DISGAN.example_config(), instance_noise_decay_iters=-5)


def test_the_long_example_is_valid_and_bad_values_stop_at_validation():
    code, out, err = dry_run(EXAMPLE, cwd=REPO)
    assert code == 0, err
    for key in ("pixel_warmup_iters", "instance_noise_decay_iters"):
        assert_rejected_at_validation(EXAMPLE, f"model.{key}=-1", f"model.{key}", cwd=REPO)


def test_one_summed_step_equals_the_release_alternating_step():
    """The release steps G (Adam) then D (Adam), D's loss on the output G gave *before* its update, G's term
    through D *before* D's update: both gradients at the same point, so one Adam on our summed loss lands on
    the same weights (and the same BatchNorm statistics: the four D calls in the same order)."""
    ours = _model(disc_levels=3)
    release = _model(disc_levels=3)
    release.load_state_dict(ours.state_dict())
    batch = ours.example_inputs(2)
    opt = torch.optim.Adam(ours.parameters(), lr=1e-3)
    losses = ours.loss(ours(batch), batch)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()

    g, d = release.generator, release.discriminator
    opt_g, opt_d = torch.optim.Adam(g.parameters(), lr=1e-3), torch.optim.Adam(d.parameters(), lr=1e-3)
    hr, lr = batch["targets"], batch["inputs"]
    bce = F.binary_cross_entropy_with_logits
    d.requires_grad_(False)  # Lightning's toggle_optimizer: only G's parameters take gradients
    fake = g(lr)
    pred_real, pred_fake = d(hr).detach(), d(fake)
    g_loss = F.l1_loss(fake, hr) + 5e-3 * bce(pred_fake - pred_real.mean(0, keepdim=True), torch.ones_like(pred_fake))
    g_loss.backward()
    opt_g.step()
    d.requires_grad_(True)
    g.requires_grad_(False)
    pred_real, pred_fake = d(hr), d(fake.detach())
    d_loss = (bce(pred_real - pred_fake.mean(0, keepdim=True), torch.ones_like(pred_real))
              + bce(pred_fake - pred_real.mean(0, keepdim=True), torch.zeros_like(pred_fake))) / 2
    d_loss.backward()
    opt_d.step()
    g.requires_grad_(True)

    torch.testing.assert_close(losses["loss_pixel"] + losses["loss_adv"], g_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(losses["loss_disc"], d_loss, rtol=1e-6, atol=1e-7)
    theirs = release.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[name], rtol=1e-5, atol=1e-6, msg=name)
