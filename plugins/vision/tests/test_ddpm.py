"""DDPM with the ADM U-Net: the forward process's closed form, the schedules, the sampler's defining identity,
the paper's U-Net size and block numbering, learning, and parity with the official U-Net on shared weights.

Parity: ``fixtures/ddpm_parity.pt`` holds guided-diffusion's ``UNetModel`` outputs (``forward`` and diffssl's
``get_multiple_features``) and its beta schedules / ``q_sample``, as vendored in soumik-kanad/diffssl
(``guided_diffusion/unet.py``, ``gaussian_diffusion.py``), on our seeded weights for two tiny configurations
(resblock up/down + scale-shift norm + head width; conv resampling + additive embedding + head count).
Regenerate with the repository fetched and unpacked (not committed; its logger imports tensorboard)::

    PANCONV_RECORD_DIFFSSL=/path/to/diffssl pytest plugins/vision/tests/test_ddpm.py
"""

import math
import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.ddpm import DDPM, GaussianDiffusion, UNet, cosine_betas, linear_betas
from panconv_vision.testing import fill_

FIXTURE = Path(__file__).parent / "fixtures" / "ddpm_parity.pt"
# the two tiny U-Nets of the parity fixture (GroupNorm has 32 groups in the official code: widths of 32)
CONFIGS = {
    "updown": dict(in_channels=1, model_channels=32, out_channels=2, num_res_blocks=1, attention_resolutions=(2,),
                   channel_mult=(1, 2), num_head_channels=16, scale_shift=True, resblock_updown=True),
    "conv": dict(in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1, attention_resolutions=(1, 2),
                 channel_mult=(1, 2), num_heads=2, scale_shift=False, resblock_updown=False),
}
BLOCKS = (3, 5, 7)


def _unet(name: str) -> UNet:
    return fill_(UNet(**CONFIGS[name]), seed=3).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 1, 4, 4, generator=g), torch.tensor([3, 700])


def _record(root: str) -> None:
    import types

    sys.path.insert(0, root)
    sys.modules.setdefault("torchinfo", types.ModuleType("torchinfo"))
    import guided_diffusion.gaussian_diffusion as gd
    import guided_diffusion.unet as gu

    rec = {"source": "soumik-kanad/diffssl guided_diffusion/unet.py, gaussian_diffusion.py"}
    x, t = _inputs()
    for name, cfg in CONFIGS.items():
        official = gu.UNetModel(image_size=4, in_channels=1, model_channels=32, out_channels=cfg["out_channels"],
                                num_res_blocks=1, attention_resolutions=cfg["attention_resolutions"],
                                channel_mult=(1, 2), num_heads=cfg.get("num_heads", 1),
                                num_head_channels=cfg.get("num_head_channels", -1),
                                use_scale_shift_norm=cfg["scale_shift"], resblock_updown=cfg["resblock_updown"]).eval()
        official.load_state_dict(_unet(name).state_dict())  # the same names, in the same order
        with torch.no_grad():
            rec[name] = {"eps": official(x, t), "blocks": official.get_multiple_features(x, t, block_num_lst=BLOCKS)}
    for schedule in ("linear", "cosine"):
        betas = gd.get_named_beta_schedule(schedule, 1000)
        diffusion = gd.GaussianDiffusion(betas=betas, model_mean_type=gd.ModelMeanType.EPSILON,
                                         model_var_type=gd.ModelVarType.FIXED_SMALL, loss_type=gd.LossType.MSE)
        noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
        rec[schedule] = {"betas": torch.from_numpy(betas[::37].copy()),
                         "posterior_variance": torch.from_numpy(diffusion.posterior_variance[::37].copy()),
                         "q_sample": diffusion.q_sample(x, torch.tensor([10, 990]), noise=noise)}
    torch.save(rec, FIXTURE)


@pytest.fixture(scope="module")
def recorded():
    if os.environ.get("PANCONV_RECORD_DIFFSSL"):
        _record(os.environ["PANCONV_RECORD_DIFFSSL"])
    return torch.load(FIXTURE)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unet_parity_with_the_official_code(recorded, name):
    x, t = _inputs()
    unet = _unet(name)
    with torch.no_grad():
        eps = unet(x, t)
        blocks = unet.block_features(x, t, BLOCKS)
    ref = recorded[name]
    scale = ref["eps"].abs().max()
    torch.testing.assert_close(eps / scale, ref["eps"] / scale, atol=1e-5, rtol=0)
    for ours, theirs in zip(blocks, ref["blocks"], strict=True):
        s = theirs.abs().max()
        torch.testing.assert_close(ours / s, theirs / s, atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_and_q_sample_match_the_official_code(recorded, schedule):
    d = GaussianDiffusion(1000, schedule)
    ref = recorded[schedule]
    torch.testing.assert_close(d.betas[::37], ref["betas"], atol=1e-12, rtol=0)
    torch.testing.assert_close(d.posterior_variance[::37], ref["posterior_variance"], atol=1e-12, rtol=0)
    x, _ = _inputs()
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(d.q_sample(x, torch.tensor([10, 990]), noise), ref["q_sample"].float(),
                               atol=1e-6, rtol=0)


def test_schedule_closed_forms():
    betas = linear_betas(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)  # Ho et al. Sec. 4
    assert linear_betas(250)[-1] == pytest.approx(0.08)  # guided-diffusion's 1000 / T scaling
    # cosine: alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2) (Nichol & Dhariwal Eq. 17)
    alpha_bar = torch.from_numpy(cosine_betas(1000)).neg().add(1).cumprod(0)
    f = torch.cos((torch.arange(1001, dtype=torch.float64) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(alpha_bar[:990], (f[1:] / f[0])[:990], atol=1e-12, rtol=1e-9)
    with pytest.raises(ValueError, match="timesteps"):
        GaussianDiffusion(20, "linear")
    GaussianDiffusion(20, "cosine")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_moments_equal_the_closed_form(schedule):
    """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I): the empirical mean and variance of many
    noised copies of the same images equal the closed form (Ho et al. Eq. 4), at early, middle and late t."""
    d = GaussianDiffusion(1000, schedule)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64) * 2
    n = 20000
    for step in (0, 100, 500, 999):
        t = torch.full((n * 3,), step)
        x = x0.repeat(n, 1, 1, 1)
        xt = d.q_sample(x, t, torch.randn(x.shape, generator=g, dtype=torch.float64)).view(n, 3, 1, 4, 4)
        mean, var = d.q_mean_variance(x0, torch.full((3,), step))
        tol = 4 * var.max().sqrt().item() / math.sqrt(n)  # 4 standard errors of the mean
        assert (xt.mean(0) - mean).abs().max() < tol
        assert (xt.var(0) / var - 1).abs().max() < 4 * math.sqrt(2 / n)  # relative s.e. of a variance
        ab = d.alphas_cumprod[step]
        torch.testing.assert_close(mean, ab.sqrt() * x0)
        torch.testing.assert_close(var, (1 - ab).expand_as(x0))


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ancestral_sampling_with_the_optimal_denoiser_recovers_a_point_mass(variance):
    """For data concentrated on one image c the ideal epsilon is (x_t - sqrt(alpha_bar_t) c) / sqrt(1 - alpha_bar_t);
    with it every ancestral step's mean is the posterior mean, and the last step (t = 0) returns c exactly."""
    d = GaussianDiffusion(50, "cosine", variance=variance)
    c = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))

    def ideal(x, t):
        ab = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (x - ab.sqrt() * c) / (1 - ab).sqrt()

    samples = d.sample(ideal, (5, 1, 4, 4), torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, c.expand(5, -1, -1, -1), atol=1e-4, rtol=0)
    # a wrong denoiser does not
    assert (d.sample(lambda x, t: torch.zeros_like(x), (5, 1, 4, 4)) - c).abs().max() > 0.1


def test_model_sampling_runs_and_is_seeded():
    torch.manual_seed(0)
    m = DDPM(model_channels=8, channel_mult=(1, 2), norm_groups=4, timesteps=25, feature_t=3).eval()
    a = m.sample(2, 8, torch.Generator().manual_seed(0))
    b = m.sample(2, 8, torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 8, 8) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_adm_256_size_and_block_numbering():
    """guided-diffusion's 256^2 unconditional ADM: 552,814,086 params (the official UNetModel's count), and the
    block channels / sides the classification code tabulates (diffssl ssl_diff/const.py: 37 blocks)."""
    with torch.device("meta"):
        m = panconv.create_model({"type": "vision.ddpm_adm_256_uncond"})
    assert sum(p.numel() for p in m.parameters()) == 552_814_086
    dims = [256] * 7 + [512] * 6 + [1024] * 12 + [512] * 6 + [256] * 6
    sides = [256] * 3 + [128] * 3 + [64] * 3 + [32] * 3 + [16] * 3 + [8] * 6 + [16] * 3 + [32] * 3 + [64] * 3 \
        + [128] * 3 + [256] * 4
    assert [c for c, _ in m.unet.block_info] == dims
    assert [256 // r for _, r in m.unet.block_info] == sides
    assert m.feature_block == 24 and m.unet.block_info[23] == (1024, 16)
    assert {mod.num_groups for mod in m.modules() if isinstance(mod, torch.nn.GroupNorm)} == {32}


def test_block_features_are_the_forward_pass_intermediates():
    torch.manual_seed(0)
    m = DDPM(model_channels=8, channel_mult=(1, 2), norm_groups=4, timesteps=50).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 40])
    every = m.unet.block_features(x, t, list(range(1, m.unet.num_blocks + 1)))
    assert [(f.shape[1], 8 // f.shape[-1]) for f in every] == m.unet.block_info
    # the last block's output, through the output layers, is the forward pass
    torch.testing.assert_close(m.unet.out(every[-1]), m.unet(x, t))
    with pytest.raises(ValueError, match="block numbers"):
        m.unet.block_features(x, t, [m.unet.num_blocks + 1])
    with pytest.raises(ValueError, match="divisible"):
        m.unet(torch.randn(1, 1, 7, 7), t[:1])


def test_constructor_errors():
    with pytest.raises(ValueError, match="norm_groups"):
        DDPM(model_channels=12, norm_groups=8)
    with pytest.raises(ValueError, match="feature_t"):
        DDPM(timesteps=100, feature_t=100)
    with pytest.raises(ValueError, match="feature_block"):
        DDPM(feature_block=99)
    with pytest.raises(ValueError, match="num_head_channels"):
        DDPM(num_head_channels=5, model_channels=16)
    with pytest.raises(ValueError, match="images"):
        DDPM()({"inputs": torch.randn(2, 3, 16, 16)})


def test_eval_is_seeded_and_training_reduces_the_denoising_loss(single_thread):
    """Eval mode: the same noise every time (comparable validation losses). A tiny DDPM fitted to a few
    structured images (bars) for 60 Adam steps predicts the noise better than at initialisation (loss 1:
    the last convolution is zero-initialised, eps_theta = 0)."""
    torch.manual_seed(0)
    m = DDPM(model_channels=8, channel_mult=(1, 2), norm_groups=4, timesteps=100)
    x = torch.zeros(16, 1, 8, 8)
    for i in range(16):
        x[i, 0, :, i % 8] = 1.5 if i < 8 else 0.0
        x[i, 0, i % 8, :] += 0.0 if i < 8 else 1.5
    batch = {"inputs": x}

    def eval_loss():
        m.eval()
        with torch.no_grad():
            out = m(batch)
        m.train()
        return m.loss(out, batch)["loss"].item(), out

    before, out = eval_loss()
    assert before == pytest.approx(1.0, abs=0.15)
    assert eval_loss()[0] == before and out["features"].shape == (16, m.unet.block_info[m.feature_block - 1][0])
    pred = m.predict(out)
    assert pred["eps_mse"].shape == (16,) and pred["eps_mse"].mean().item() == pytest.approx(before, rel=1e-5)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        loss = m.loss(m(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss()[0] < 0.7 * before
