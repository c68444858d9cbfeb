"""DISGAN: 3-D pixel shuffle and Haar DWT identities, the two players' losses, parity with the official code.

Parity: ``fixtures/disgan_parity.pt`` holds outputs of the official ``Generator`` and ``dwt_UNet``
(wqlevi/DISGAN ``mains/model/model_DISGAN.py``, with torch-dwt and PyWavelets importable) on our weights.
Regenerate with the repositories fetched (not committed)::

    PANCONV_RECORD_DISGAN=/path/to/DISGAN/mains PYTHONPATH=<torch-dwt checkout>:<dir with pywt, timm> \\
        pytest plugins/vision/tests/test_disgan.py
"""

import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.disgan import (
    DISGAN,
    RRDBGenerator3d,
    WaveletUNetDiscriminator,
    haar_dwt3,
    pixel_shuffle_3d,
)

FIXTURE = Path(__file__).parent / "fixtures" / "disgan_parity.pt"


def test_pixel_shuffle_3d_places_sub_voxels():
    x = torch.arange(8.0).view(1, 8, 1, 1, 1)
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (1, 1, 2, 2, 2)
    # channel (i, j, k) -> offset (i, j, k): channel 4i + 2j + k
    for i in range(2):
        for j in range(2):
            for k in range(2):
                assert y[0, 0, i, j, k] == 4 * i + 2 * j + k
    z = torch.randn(2, 16, 3, 4, 5)
    assert pixel_shuffle_3d(z, 2).shape == (2, 2, 6, 8, 10)
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle_3d(torch.randn(1, 6, 2, 2, 2), 2)


def test_haar_dwt3_is_orthonormal_with_the_low_band_first():
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64)
    bands = haar_dwt3(x)
    assert bands.shape == (2, 8, 3, 2, 3, 4)
    torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum())  # energy preserved
    blocks = x.reshape(2, 3, 2, 2, 3, 2, 4, 2).sum((3, 5, 7))
    torch.testing.assert_close(bands[:, 0], blocks / 8 ** 0.5)  # LLL = block sums / 2^(3/2)
    const = torch.ones(1, 1, 2, 2, 2)
    assert haar_dwt3(const)[0, 1:].abs().max() < 1e-6  # no detail in a constant
    ramp_w = torch.arange(2.0).view(1, 1, 1, 1, 2).expand(1, 1, 2, 2, 2)
    assert haar_dwt3(ramp_w)[0, 1].abs().item() > 0 and haar_dwt3(ramp_w)[0, 2:4].abs().max() < 1e-6


def test_losses_move_only_their_player():
    torch.manual_seed(0)
    m = DISGAN(**DISGAN.example_config()).train()
    batch = m.example_inputs(2)
    out = m(batch)
    losses = m.loss(out, batch)
    assert set(losses) == {"loss_pixel", "loss_adv", "loss_disc"}
    g_params = list(m.generator.parameters())
    d_params = list(m.discriminator.parameters())
    # the generator's adversarial term gives the discriminator no gradient
    grads = torch.autograd.grad(losses["loss_adv"], d_params, allow_unused=True, retain_graph=True)
    assert all(g is None or g.abs().max() == 0 for g in grads)
    assert any(g is not None and g.abs().max() > 0
               for g in torch.autograd.grad(losses["loss_adv"], g_params, allow_unused=True, retain_graph=True))
    # the discriminator's loss gives the generator no gradient
    grads = torch.autograd.grad(losses["loss_disc"], g_params, allow_unused=True, retain_graph=True)
    assert all(g is None or g.abs().max() == 0 for g in grads)
    m.eval()
    assert set(m.loss(m(batch), batch)) == {"loss"}


def test_shapes_and_errors():
    m = DISGAN(upscale=4, filters=4, num_blocks=1, disc_features=4, disc_levels=3)
    assert m({"inputs": torch.rand(1, 1, 4, 4, 4)}).shape == (1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="power of 2"):
        DISGAN(upscale=3)
    with pytest.raises(ValueError, match="divisible"):
        WaveletUNetDiscriminator(1, 4, 3)(torch.rand(2, 1, 12, 12, 12))
    with pytest.raises(ValueError, match="expected inputs"):
        m({"inputs": torch.rand(1, 1, 4, 4)})


def test_registered_official_configuration():
    with torch.device("meta"):
        m = panconv.create_model({"type": "vision.disgan"})
    assert sum(p.numel() for p in m.generator.parameters()) == GENERATOR_PARAMS
    assert sum(p.numel() for p in m.discriminator.parameters()) == DISCRIMINATOR_PARAMS


# the official Generator() and dwt_UNet() (channels 1, 64 filters, 3 RRDBs, x2; nf 16, 6 levels)
GENERATOR_PARAMS, DISCRIMINATOR_PARAMS = 16_042_881, 42_653_827


def _ours():
    torch.manual_seed(0)
    g = RRDBGenerator3d(1, 8, 1, 1)
    d = WaveletUNetDiscriminator(1, 16, 6).train()  # the official network as it trains (batch statistics)
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(0.5)
    return g.eval(), d


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, 6, 6, 6, generator=gen), torch.rand(2, 1, 64, 64, 64, generator=gen)


def _record(mains):
    sys.path.insert(0, mains)
    from model.model_DISGAN import Generator, dwt_UNet

    g, d = _ours()
    og, od = Generator(channels=1, filters=8, num_res_blocks=1).eval(), dwt_UNet().train()
    with torch.no_grad():
        for ours, theirs in ((g, og), (d, od)):
            for p, q in zip(theirs.parameters(), ours.parameters(), strict=True):
                p.copy_(q)
        xg, xd = _inputs()
        out_d = od(xd)
        torch.save({"generator": og(xg), "disc_sub": out_d[:, :, ::8, ::8, ::8].clone(), "disc_mean": out_d.mean(),
                    "source": "wqlevi/DISGAN mains/model/model_DISGAN.py (Generator, dwt_UNet)"}, FIXTURE)


@pytest.fixture(scope="module")
def record():
    if os.environ.get("PANCONV_RECORD_DISGAN"):
        _record(os.environ["PANCONV_RECORD_DISGAN"])
    return torch.load(FIXTURE)


def test_generator_parity_with_the_official_code(record):
    g, _ = _ours()
    with torch.no_grad():
        torch.testing.assert_close(g(_inputs()[0]), record["generator"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the official discriminator needs 64^3 inputs and has 42.7M parameters: ~1 min on one thread
def test_discriminator_parity_with_the_official_code(record):
    _, d = _ours()
    with torch.no_grad():
        out = d(_inputs()[1])
    # measured 1.4e-6 (values up to 0.51)
    torch.testing.assert_close(out[:, :, ::8, ::8, ::8], record["disc_sub"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mean(), record["disc_mean"], atol=1e-5, rtol=1e-5)
