"""vision.ImageQuality: PSNR and SSIM equal scikit-image's on real photos, 2-D and 3-D; baseline metrics; merging."""

import math
import statistics

import numpy as np
import pytest
import torch

from panconv_vision.evaluators.image_quality import (
    ImageQuality,
    gaussian_window,
    psnr,
    rgb_to_y,
    ssim,
    ssim_components,
)

skm = pytest.importorskip("skimage.metrics")
skdata = pytest.importorskip("skimage.data")


def _pair(seed=0):
    clean = torch.from_numpy(skdata.astronaut()[100:164, 180:260].copy()).permute(2, 0, 1).float() / 255
    g = torch.Generator().manual_seed(seed)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return clean, noisy


def test_psnr_matches_scikit_image():
    clean, noisy = _pair()
    ours = psnr(noisy[None], clean[None]).item()
    theirs = skm.peak_signal_noise_ratio(clean.numpy(), noisy.numpy(), data_range=1.0)
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_ssim_matches_scikit_image_on_a_colour_photo():
    clean, noisy = _pair()
    ours = ssim(noisy[None], clean[None]).item()
    theirs = skm.structural_similarity(clean.numpy(), noisy.numpy(), channel_axis=0, data_range=1.0,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert 0.3 < ours < 0.99


def test_ssim_matches_scikit_image_on_a_volume():
    g = torch.Generator().manual_seed(1)
    vol = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 24, 26, 22, generator=g), 3, 1, 1)[0]
    noisy = vol + 0.02 * torch.randn(vol.shape, generator=g)
    ours = ssim(noisy[None], vol[None]).item()
    theirs = skm.structural_similarity(vol[0].numpy(), noisy[0].numpy(), data_range=1.0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_identical_images_score_perfectly_and_window_is_scipys():
    clean, _ = _pair()
    assert ssim(clean[None], clean[None]).item() == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(psnr(clean[None], clean[None]).item())
    w = gaussian_window()
    assert w.numel() == 11 and w.sum().item() == pytest.approx(1.0)


def test_y_channel_is_bt601():
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235 / 255, abs=1e-4)
    assert rgb_to_y(black).item() == pytest.approx(16 / 255, abs=1e-6)


def test_evaluator_reports_model_and_baseline_and_merges():
    clean, noisy = _pair()
    _, noisier = _pair(1)
    worse = (clean + 2 * (noisier - clean)).clamp(0, 1)
    batch = {"targets": torch.stack([clean, clean]), "baseline": torch.stack([worse, worse])}
    ev = ImageQuality(crop_border=2)
    ev.process(batch, torch.stack([noisy, noisy]))
    m = ev.compute()
    assert set(m) == {"psnr", "ssim", "psnr_baseline", "ssim_baseline"}
    assert m["psnr"] > m["psnr_baseline"] and m["ssim"] > m["ssim_baseline"]
    want = skm.peak_signal_noise_ratio(clean[:, 2:-2, 2:-2].numpy(), noisy[:, 2:-2, 2:-2].numpy(), data_range=1.0)
    assert m["psnr"] == pytest.approx(want, abs=1e-4)
    assert ev.greater_is_better("psnr") and ev.greater_is_better("ssim")
    parts = [ImageQuality(crop_border=2), ImageQuality(crop_border=2)]
    for i, p in enumerate(parts):
        p.process({"targets": clean[None], "baseline": worse[None]}, (noisy if i else noisier)[None])
    whole = ImageQuality(crop_border=2)
    whole.process({"targets": torch.stack([clean, clean]), "baseline": torch.stack([worse, worse])},
                  torch.stack([noisier, noisy]))
    merged = whole.compute_metrics(parts[1].results + parts[0].results)
    for k, v in whole.compute().items():
        assert merged[k] == pytest.approx(v, rel=1e-12)


def test_evaluator_scores_the_input_when_it_has_the_target_shape():
    clean, noisy = _pair()
    _, noisier = _pair(1)
    degraded = (clean + 2 * (noisier - clean)).clamp(0, 1)
    ev = ImageQuality(crop_border=2)
    ev.process({"targets": clean[None], "inputs": degraded[None]}, noisy[None])
    m = ev.compute()
    assert set(m) == {"psnr", "ssim", "psnr_input", "ssim_input"}
    want = skm.peak_signal_noise_ratio(clean[:, 2:-2, 2:-2].numpy(), degraded[:, 2:-2, 2:-2].numpy(), data_range=1.0)
    assert m["psnr_input"] == pytest.approx(want, abs=1e-4)
    assert m["psnr_input"] < m["psnr"]
    # a low-resolution input (super-resolution) is not comparable: no input score
    sr = ImageQuality()
    sr.process({"targets": clean[None], "inputs": clean[None, :, ::2, ::2]}, noisy[None])
    assert set(sr.compute()) == {"psnr", "ssim"}


def test_ssim_components_say_how_an_image_differs():
    clean, noisy = _pair()
    x = clean[None]
    # the factors' product is the SSIM map: on one window-sized image (one window) it is SSIM itself
    small_t, small_p = clean[None, :1, :11, :11], noisy[None, :1, :11, :11]  # one channel too
    lum, con, struct = ssim_components(small_p, small_t)
    assert (lum * con * struct).item() == pytest.approx(ssim(small_p, small_t).item(), rel=1e-12)

    def factors(pred):
        return [f.item() for f in ssim_components(pred, x)]

    lum, con, struct = factors(x + 0.1)  # a brightness offset: luminance only
    assert lum < 0.99 and con == pytest.approx(1, abs=1e-9) and struct == pytest.approx(1, abs=1e-9)
    t = torch.linspace(0.4, 0.9, x.shape[-2]).view(1, 1, -1, 1).expand_as(x)
    lum, con, struct = factors(x * t + 0.8 * (1 - t))  # haze with a smooth transmission: contrast, not structure
    assert con < 0.97 and struct > 0.995
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    lum, con, struct = factors(blurred)  # blur: structure (and contrast)
    assert struct < 0.95 and lum > 0.99
    lum, con, struct = factors(noisy[None])  # invented detail: structure
    assert struct < 0.9 and lum > 0.99


def test_evaluator_reports_the_components_of_model_baseline_and_input():
    clean, noisy = _pair()
    hazy = clean * 0.5 + 0.4
    ev = ImageQuality(components=True)
    ev.process({"targets": clean[None], "inputs": hazy[None], "baseline": (clean + 0.05)[None]}, noisy[None])
    m = ev.compute()
    assert set(m) == {f"{k}{suffix}" for k in ("psnr", "ssim", "ssim_l", "ssim_c", "ssim_s")
                      for suffix in ("", "_baseline", "_input")}
    want = [f.item() for f in ssim_components(noisy[None], clean[None])]
    assert [m["ssim_l"], m["ssim_c"], m["ssim_s"]] == pytest.approx(want, rel=1e-12)
    assert m["ssim_s_input"] == pytest.approx(1, abs=1e-9) and m["ssim_c_input"] < 0.95  # a global gain
    assert m["ssim_c_baseline"] == pytest.approx(1, abs=1e-9) and m["ssim_l_baseline"] < 1  # an offset
    assert ev.compute_metrics(ev.results[:1]) == m  # merged results carry the factors
    with pytest.raises(ValueError, match="components=True needs compute_ssim=True"):
        ImageQuality(components=True, compute_ssim=False)


def test_paired_reports_wins_and_the_standard_error_of_the_gain():
    # constant errors e on [0, 1] images: PSNR = -20 log10(e), so each image's gain over the baseline is known
    target = torch.full((3, 1, 12, 12), 0.5)
    model_err, base_err = torch.tensor([0.1, 0.01, 0.05]), torch.tensor([0.02, 0.02, 0.02])
    ev = ImageQuality(compute_ssim=False, paired=True)
    for i in range(3):  # one image per batch: the pairing survives batching
        ev.process({"targets": target[i:i + 1], "baseline": target[i:i + 1] + base_err[i]},
                   target[i:i + 1] + model_err[i])
    m = ev.compute()
    gains = (20 * torch.log10(base_err / model_err)).tolist()  # -13.98, +6.02, -7.96 dB
    assert m["psnr_wins"] == pytest.approx(1 / 3)
    assert m["psnr_gain_se"] == pytest.approx(statistics.stdev(gains) / math.sqrt(3), rel=1e-5)  # float32 images
    assert m["psnr"] - m["psnr_baseline"] == pytest.approx(statistics.mean(gains), rel=1e-5)
    assert "ssim_wins" not in m
    # with SSIM: a lightly noisy model beats a heavily noisy baseline on every image
    clean = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ev = ImageQuality(paired=True)
    ev.process({"targets": clean, "baseline": clean + 0.2 * noise}, clean + 0.02 * noise)
    m = ev.compute()
    assert m["ssim_wins"] == m["psnr_wins"] == 1.0 and m["ssim_gain_se"] > 0
    one = ImageQuality(paired=True)  # one image: wins but no standard error; no baseline: no paired keys
    one.process({"targets": clean[:1], "baseline": clean[:1] + 0.2 * noise[:1]}, clean[:1])
    assert one.compute()["psnr_wins"] == 1.0 and "psnr_gain_se" not in one.compute()
    none = ImageQuality(paired=True)
    none.process({"targets": clean}, clean + 0.02 * noise)
    assert not {k for k in none.compute() if "wins" in k or "_se" in k}


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        ImageQuality().process({"targets": torch.zeros(1, 3, 16, 16)}, torch.zeros(1, 3, 16, 12))
    with pytest.raises(ValueError, match="data_range"):
        ImageQuality(data_range=0)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    assert np.isfinite(ImageQuality(compute_ssim=False).example()[2]["psnr"])
