"""Re-parameterisation helpers: each fusion identity holds numerically."""

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.models.reparam import (
    ConvBN,
    conv_from,
    dilate_kernel,
    fuse_convbn_modules,
    pad_kernel_to,
    randomize_bn_stats,
)


@pytest.mark.parametrize("groups,stride,act", [(1, 1, False), (4, 2, True), (8, 1, True)])
def test_convbn_fuse_matches_conv_then_bn(groups, stride, act):
    torch.manual_seed(0)
    m = ConvBN(8, 8, 3, stride=stride, groups=groups, act=torch.nn.ReLU() if act else None)
    randomize_bn_stats(m)
    m.eval()
    x = torch.randn(2, 8, 11, 11)
    ref = m(x)
    m.fuse()
    assert isinstance(m.bn, torch.nn.Identity) and m.conv.bias is not None
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k,rate", [(3, 2), (5, 3), (3, 1), (7, 2)])
def test_dilated_kernel_equals_dense_zero_inserted_kernel(k, rate):
    torch.manual_seed(0)
    w = torch.randn(6, 1, k, k)
    x = torch.randn(1, 6, 25, 25)
    dilated = F.conv2d(x, w, padding=rate * (k - 1) // 2, dilation=rate, groups=6)
    dense = dilate_kernel(w, rate)
    assert dense.shape[-1] == rate * (k - 1) + 1
    torch.testing.assert_close(F.conv2d(x, dense, padding=dense.shape[-1] // 2, groups=6), dilated)


def test_padded_small_kernel_adds_to_large_kernel():
    torch.manual_seed(0)
    large, small = torch.randn(4, 1, 9, 9), torch.randn(4, 1, 3, 3)
    x = torch.randn(2, 4, 16, 16)
    y = F.conv2d(x, large, padding=4, groups=4) + F.conv2d(x, small, padding=1, groups=4)
    torch.testing.assert_close(F.conv2d(x, large + pad_kernel_to(small, 9), padding=4, groups=4), y)
    with pytest.raises(ValueError):
        pad_kernel_to(large, 3)


def test_conv_from_and_fuse_all():
    torch.manual_seed(0)
    net = torch.nn.Sequential(ConvBN(3, 8, 3, stride=2), ConvBN(8, 8, 5, groups=8, dilation=2))
    randomize_bn_stats(net)
    net.eval()
    x = torch.randn(1, 3, 20, 20)
    ref = net(x)
    fuse_convbn_modules(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net[1].conv.dilation == (2, 2)  # geometry of a folded (not merged) conv is kept
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
    conv = conv_from(net[1].conv, torch.zeros(8, 1, 7, 7), torch.zeros(8))
    assert conv.padding == (3, 3) and conv.dilation == (1, 1) and conv.groups == 8
