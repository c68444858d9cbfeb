"""Orchid, the paper-form block (``block: paper``): the conditioning networks' shift invariance (the paper's
defining property), both designs. Parity of the official-form block (the default) with the official standalone
code is in test_orchid_parity.py.
"""

from __future__ import annotations

import pytest
import torch

from panconv_sequence.models.orchid import ConditioningNetwork, Orchid, OrchidMixer, circular_conv, fft_long_conv

DESIGNS = [("abs", "identity"), ("xcorr", "identity"), ("xcorr", "tanh"), ("xcorr", "softshrink")]


@pytest.mark.parametrize(("design", "sigma"), DESIGNS)
@pytest.mark.parametrize("shift", [1, 7, 23])
def test_conditioning_network_is_shift_invariant(design, sigma, shift):
    torch.manual_seed(0)
    net = ConditioningNetwork(6, design, kernel_size=3, sigma=sigma).double()
    x = torch.randn(2, 6, 50, dtype=torch.float64)
    h = net(x)
    torch.testing.assert_close(net(torch.roll(x, shift, dims=-1)), h, atol=1e-10, rtol=0)
    # not a constant map: a non-shift rearrangement of the same values changes the kernel
    permuted = x[..., torch.randperm(50, generator=torch.Generator().manual_seed(1))]
    assert (net(permuted) - h).abs().max() > 1e-3


@pytest.mark.parametrize(("design", "sigma"), DESIGNS)
def test_data_dependent_convolution_is_shift_equivariant(design, sigma):
    """``y = h_theta(x) (*) x`` (circular) commutes with shifts because ``h_theta`` is shift-invariant."""
    torch.manual_seed(0)
    net = ConditioningNetwork(4, design, sigma=sigma).double()
    x = torch.randn(3, 4, 40, dtype=torch.float64)
    y = circular_conv(x, net(x))
    for shift in (3, 17):
        shifted = torch.roll(x, shift, dims=-1)
        torch.testing.assert_close(circular_conv(shifted, net(shifted)), torch.roll(y, shift, dims=-1))


def test_time_convolution_alone_is_not_invariant():
    """Invariance comes from the spectral step: the time convolution is equivariant, not invariant."""
    torch.manual_seed(0)
    net = ConditioningNetwork(4, "abs").double()
    x = torch.randn(1, 4, 32, dtype=torch.float64)
    t = net.time_conv(x)
    assert (net.time_conv(torch.roll(x, 5, -1)) - t).abs().max() > 1e-3
    torch.testing.assert_close(net.time_conv(torch.roll(x, 5, -1)), torch.roll(t, 5, -1))


def test_kernel_is_static_filter_plus_data_dependent_part():
    torch.manual_seed(0)
    mixer = OrchidMixer(8, l_max=64, design="xcorr", filter_order=16)
    a, b = torch.randn(2, 8, 40), torch.randn(2, 8, 40)
    ka, kb = mixer.kernel(a), mixer.kernel(b)
    static = mixer.static.filter(40).t()
    torch.testing.assert_close(ka - mixer.conditioning(a), static.expand_as(ka))
    assert (ka - kb).abs().max() > 1e-3  # data-dependent
    plain = OrchidMixer(8, l_max=64, static_filter=False)
    torch.testing.assert_close(plain.kernel(a), plain.conditioning(a))


def test_fft_long_conv_is_the_causal_convolution_with_a_per_sample_kernel():
    torch.manual_seed(0)
    u, k = torch.randn(2, 3, 12, dtype=torch.float64), torch.randn(2, 3, 12, dtype=torch.float64)
    direct = torch.stack([(k[..., :t + 1].flip(-1) * u[..., :t + 1]).sum(-1) for t in range(12)], -1)
    torch.testing.assert_close(fft_long_conv(u, k), direct)


@pytest.mark.parametrize("design", ["abs", "xcorr"])
def test_backbone_trains_end_to_end(design):
    torch.manual_seed(0)
    model = Orchid(d_model=16, n_layers=2, vocab_size=10, l_max=64, design=design, filter_order=16)
    out = model(torch.randint(10, (2, 40)))[0]
    assert out.shape == (2, 16, 40)
    out.square().mean().backward()
    mixer = model.blocks[0].mixer
    assert mixer.conditioning.freq_conv.weight.grad.abs().sum() > 0
    assert mixer.static.implicit_filter[0].weight.grad.abs().sum() > 0


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="design"):
        ConditioningNetwork(4, "dct")
    with pytest.raises(ValueError, match="odd"):
        ConditioningNetwork(4, kernel_size=4)
    with pytest.raises(ValueError, match="l_max"):
        OrchidMixer(4, l_max=16)(torch.randn(1, 20, 4))
