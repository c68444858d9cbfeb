"""PixelCNN: the masks make it autoregressive (gradient check), its likelihood is exact (it sums to one
over every image), bits/dim = NLL / (D ln 2), and it learns binarised MNIST better than the factorised model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import panconv
from panconv_vision.evaluators.likelihood import BitsPerDim, bits_per_dim
from panconv_vision.models.pixelcnn import (
    GatedPixelCNN,
    MaskedConv2d,
    PixelCNN,
    PixelFactorized,
    quantise,
    spatial_mask,
)


def test_masks_match_the_paper_figure():
    a, b = spatial_mask(3, "A"), spatial_mask(3, "B")
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert spatial_mask(7, "A").sum() == 24 and spatial_mask(7, "B").sum() == 25
    with pytest.raises(ValueError, match="mask_type"):
        spatial_mask(3, "C")
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 1, 4, "A")


@pytest.mark.parametrize("layers", [0, 3])
@pytest.mark.parametrize("family", [PixelCNN, GatedPixelCNN])
def test_output_at_a_pixel_depends_only_on_earlier_pixels(family, layers):
    """The causality identity: d logits[i] / d x[j] == 0 for every j >= i in raster order (including i itself),
    and the dependence on earlier pixels is real (some gradient is non-zero)."""
    torch.manual_seed(0)
    h = w = 7
    model = family(levels=4, hidden=8, layers=layers, out_hidden=8).eval()
    x = torch.randn(1, 1, h, w, requires_grad=True)
    logits = model.logits_of(x)
    for r, c in ((0, 0), (3, 3), (6, 6), (2, 5), (5, 0)):
        (grad,) = torch.autograd.grad(logits[0, :, r, c].sum(), x, retain_graph=True)
        order = torch.arange(h * w).view(h, w)
        future = order >= r * w + c
        assert grad[0, 0][future].abs().max() == 0, f"pixel {(r, c)} sees a pixel at or after itself"
        if (r, c) != (0, 0):
            assert grad[0, 0][~future].abs().max() > 0, f"pixel {(r, c)} sees nothing before it"


def test_the_gated_stacks_remove_the_blind_spot():
    """Same kernels and depth: PixelCNN's output at the centre misses pixels up and to the right (its blind
    spot); the gated PixelCNN's depends on every earlier pixel."""
    torch.manual_seed(0)
    seen = {}
    for family in (PixelCNN, GatedPixelCNN):
        model = family(levels=4, hidden=8, layers=4, first_kernel=3, kernel_size=3, out_hidden=8)
        x = torch.randn(1, 1, 9, 9, requires_grad=True)
        (grad,) = torch.autograd.grad(model.logits_of(x)[0, :, 4, 4].sum(), x)
        earlier = torch.arange(81).view(9, 9) < 4 * 9 + 4
        seen[family.__name__] = (grad[0, 0] != 0)[earlier]
    assert seen["GatedPixelCNN"].all()
    assert not seen["PixelCNN"].all()
    blind = torch.zeros(9, 9, dtype=torch.bool)
    blind[1, 8] = blind[2, 7:] = blind[3, 6:] = True                # the upper-right triangle
    earlier = torch.arange(81).view(9, 9) < 40
    assert torch.equal(~seen["PixelCNN"], blind[earlier])


@pytest.mark.parametrize("family", [PixelCNN, GatedPixelCNN])
def test_likelihood_is_exact_it_sums_to_one_over_all_images(family):
    """Every binary 3x3 image enumerated: sum_x p(x) == 1 (a normalised autoregressive model)."""
    torch.manual_seed(0)
    model = family(levels=2, hidden=4, layers=2, out_hidden=8).eval()
    images = torch.tensor(list(itertools.product((0, 1), repeat=9))).view(-1, 3, 3)
    total = model.log_prob(images).double().exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-5)
    if family is PixelCNN:
        # a model that sees the future is not normalised: the masks are what makes the sum one
        for module in model.modules():
            if isinstance(module, MaskedConv2d):
                module.mask.fill_(1.0)
        assert abs(model.log_prob(images).double().exp().sum().item() - 1.0) > 1e-3


def test_bits_per_dim_is_nll_over_d_ln2():
    torch.manual_seed(0)
    model = PixelCNN(levels=256, hidden=4, layers=1, out_hidden=8).eval()
    batch = {"inputs": torch.rand(3, 1, 6, 6)}
    pred = model.predict(model(batch), batch)
    d = 36
    assert pred["dims"].tolist() == [d] * 3
    # the NLL is the exact -log p(x) of the quantised images
    assert torch.allclose(pred["nll"], -model.log_prob(quantise(batch["inputs"], 256)), atol=1e-4)
    evaluator = BitsPerDim()
    evaluator.process(batch, pred)
    metrics = evaluator.compute()
    assert metrics["bits_per_dim"] == pytest.approx(pred["nll"].sum().item() / (3 * d * math.log(2)), rel=1e-6)
    assert metrics["nll_nats"] == pytest.approx(pred["nll"].mean().item(), rel=1e-6)
    assert torch.allclose(bits_per_dim(pred["nll"], d), pred["nll"] / (d * math.log(2)))
    # the training loss (mean nats per pixel) reports the same bits/dim
    losses = model.loss(model(batch), batch)
    assert losses["bits_per_dim"].item() == pytest.approx(metrics["bits_per_dim"], rel=1e-5)


@pytest.mark.parametrize("levels", [2, 256])
def test_a_uniform_model_costs_log2_levels_bits_per_dim(levels):
    model = PixelCNN(levels=levels, hidden=4, layers=1, out_hidden=8)
    torch.nn.init.zeros_(model.out2.weight)
    torch.nn.init.zeros_(model.out2.bias)
    batch = {"inputs": torch.rand(2, 1, 5, 5)}
    evaluator = BitsPerDim()
    evaluator.process(batch, model.predict(model(batch), batch))
    assert evaluator.compute()["bits_per_dim"] == pytest.approx(math.log2(levels), rel=1e-6)


def test_quantisation_matches_mnist_grey_levels_and_rejects_normalised_inputs():
    k = torch.arange(256)
    x = (k.float() / 256).view(1, 1, 16, 16)
    assert torch.equal(quantise(x, 256).flatten(), k)
    assert torch.equal(quantise(x, 2).flatten(), (k >= 128).long())
    with pytest.raises(ValueError, match="normalize: false"):
        quantise(x - 0.5, 2)
    with pytest.raises(ValueError, match="one-channel"):
        quantise(torch.rand(1, 3, 4, 4), 2)


def test_stochastic_binarisation_is_fixed_per_image_and_follows_the_intensities():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 28, 28)
    a = quantise(images, 2, "sample")
    b = quantise(images[[2, 0, 3, 1]], 2, "sample")               # another batch composition, same images
    assert torch.equal(a[[2, 0, 3, 1]], b)
    assert not torch.equal(a, quantise(images, 2))                 # not the threshold
    grey = torch.full((1, 1, 100, 100), 0.3)
    assert quantise(grey, 2, "sample").float().mean().item() == pytest.approx(0.3, abs=0.02)
    with pytest.raises(ValueError, match="binarize"):
        PixelCNN(binarize="random")


def test_sampling_draws_from_the_model_distribution():
    """A factorised model with fixed per-pixel probabilities: sample frequencies match them."""
    model = PixelFactorized(levels=2, image_size=3)
    probs = torch.linspace(0.1, 0.9, 9).view(3, 3)
    with torch.no_grad():
        model.logits[1] = torch.log(probs)
        model.logits[0] = torch.log1p(-probs)
    samples = model.sample(4000, 3, 3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4000, 3, 3)
    assert torch.allclose(samples.float().mean(0), probs, atol=0.03)
    pixel = PixelCNN(levels=4, hidden=4, layers=1, out_hidden=8)
    out = pixel.sample(2, 4, 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 5) and out.min() >= 0 and out.max() <= 3


def test_registered_sizes_and_bad_values():
    model = panconv.create_model("vision.pixelcnn_mnist")
    assert sum(p.numel() for p in model.parameters()) == 88_130
    gated = panconv.create_model("vision.gated_pixelcnn_mnist")
    assert sum(p.numel() for p in gated.parameters()) == 86_494
    assert model.binarize == gated.binarize == "sample"
    with pytest.raises(ValueError, match="odd"):
        PixelCNN(first_kernel=6)
    with pytest.raises(ValueError, match="levels"):
        PixelCNN(levels=1)
    with pytest.raises(ValueError, match="must be 4x4"):
        PixelFactorized(image_size=4)({"inputs": torch.rand(1, 1, 5, 5)})


def test_pixelcnn_learns_binarised_digits_better_than_the_factorised_model():
    """80 steps on the same binarised MNIST images: the context model beats the best factorised one."""
    from panconv_vision.datasets.digits import MNIST

    data = MNIST(split="train", normalize=False, limit=512).inputs[:, :, 4:24, 4:24]   # the central 20x20
    held = MNIST(split="val", normalize=False, limit=256).inputs[:, :, 4:24, 4:24]
    results = {}
    for name, model in (("pixelcnn", PixelCNN(levels=2, hidden=8, layers=2, out_hidden=16)),
                        ("factorized", PixelFactorized(levels=2, image_size=20))):
        torch.manual_seed(0)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for step in range(80):
            batch = {"inputs": data[(step * 64) % 512:(step * 64) % 512 + 64]}
            loss = model.loss(model(batch), batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            batch = {"inputs": held}
            evaluator = BitsPerDim()
            evaluator.process(batch, model.predict(model(batch), batch))
        results[name] = evaluator.compute()["bits_per_dim"]
    assert results["factorized"] < 0.9, results   # it learnt (the uniform model costs 1 bit/dim)
    # the best any factorised model can do: the per-pixel frequencies of the training images (add-one smoothed)
    ones = quantise(data, 2).float()
    p = (ones.sum(0) + 1) / (len(ones) + 2)
    target = quantise(held, 2).float()
    mle = -(target * p.log() + (1 - target) * (1 - p).log()).mean().item() / math.log(2)
    assert results["pixelcnn"] < 0.8 * mle < 0.8 * results["factorized"], (results, mle)
