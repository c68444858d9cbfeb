"""Structural re-parameterisation helpers shared by RepLKNet and UniRepLKNet.

A training-time block adds several linear branches (conv + BatchNorm) that see the same input.
At inference BatchNorm is an affine map, so every branch is one conv with a bias, and convs
that share stride and groups add up into a single kernel once the smaller ones are zero-padded
to the largest size (RepLKNet, Ding et al. CVPR 2022, Sec. 3). A dilated ``k x k``
depthwise kernel with rate ``r`` equals a dense ``(r(k-1)+1)``-sized kernel with zeros between
the taps (UniRepLKNet, Ding et al. CVPR 2024, Eq. 1), so dilated branches merge too.

Everything here works in eval mode only: the running statistics are what gets folded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``bn(conv(x))`` into one conv: ``W' = W * g/s``, ``b' = beta + (b - mu) * g/s``.

    ``s = sqrt(running_var + eps)``, ``g`` the BN weight (gamma).
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (bias - bn.running_mean) * scale


def dilate_kernel(kernel: torch.Tensor, rate: int) -> torch.Tensor:
    """A ``(O, I, k, k)`` kernel dilated by ``rate`` as a dense ``r(k-1)+1`` kernel (zeros between taps)."""
    if rate == 1:
        return kernel
    out, inp, kh, kw = kernel.shape
    dense = kernel.new_zeros(out, inp, rate * (kh - 1) + 1, rate * (kw - 1) + 1)
    dense[:, :, ::rate, ::rate] = kernel
    return dense


def pad_kernel_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a centred square kernel to ``size x size`` (both odd)."""
    pad = (size - kernel.shape[-1]) // 2
    if pad < 0:
        raise ValueError(f"kernel of size {kernel.shape[-1]} does not fit into {size}")
    return F.pad(kernel, [pad] * 4)


def conv_from(
    template: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, keep_geometry: bool = False
) -> nn.Conv2d:
    """A biased ``nn.Conv2d`` with ``template``'s stride/groups holding ``weight``/``bias``.

    By default the kernel is dense (dilation 1) with "same" padding ``k // 2`` (merged
    kernels); ``keep_geometry=True`` keeps the template's padding and dilation (plain BN folding).
    """
    k = weight.shape[-1]
    padding, dilation = (template.padding, template.dilation) if keep_geometry else (k // 2, 1)
    conv = nn.Conv2d(
        template.in_channels, template.out_channels, k, stride=template.stride,
        padding=padding, dilation=dilation, groups=template.groups, bias=True,
        device=weight.device, dtype=weight.dtype,
    )
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


class ConvBN(nn.Module):
    """``Conv2d(bias=False) -> BatchNorm2d [-> activation]``, foldable into one biased conv.

    ``padding`` defaults to "same" for odd kernels (``dilation * (k - 1) // 2``).
    After :meth:`fuse` (or when built with ``fused=True``) the module holds a biased ``conv``
    and ``bn = Identity``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
        groups: int = 1, dilation: int = 1, padding: int | None = None,
        act: nn.Module | None = None, fused: bool = False,
    ):
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=fused,
        )
        self.bn: nn.Module = nn.Identity() if fused else nn.BatchNorm2d(out_channels)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent (kernel, bias) of ``bn(conv(x))`` in eval mode."""
        if isinstance(self.bn, nn.BatchNorm2d):
            return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn)
        return self.conv.weight, self.conv.bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm into the conv in place (deploy form)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            w, b = self.fused_kernel_bias()
            self.conv = conv_from(self.conv, w, b, keep_geometry=True)
            self.bn = nn.Identity()


def fuse_convbn_modules(module: nn.Module) -> None:
    """Fold every :class:`ConvBN` inside ``module`` (eval-mode equivalence)."""
    for m in module.modules():
        if isinstance(m, ConvBN):
            m.fuse()


def randomize_bn_stats(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics (for tests)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.5)
