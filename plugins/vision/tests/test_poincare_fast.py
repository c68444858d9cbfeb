"""Poincaré ResNet: the fused layers equal the step-by-step definitions they replace.

Every Poincaré layer has ``fast = True`` (the fused formula, default) and ``fast = False`` (the definition composed
of :func:`expmap0`, :func:`fully_connected`, :func:`midpoint`, :func:`transport`, ... as before the speed-up). The
two must give the same outputs, parameter/input gradients and running statistics: tightly in float64 (where the
rounding of the two orders is ~1e-12), and to float32 rounding in float32, also near the ball's boundary.
"""

import copy

import pytest
import torch

from panconv_vision.models.poincare import (
    PoincareBasicBlock,
    PoincareBatchNorm2d,
    PoincareConv2d,
    PoincareLinear,
    PoincareResNet,
    _SinhScaledAsinh,
    expmap0,
    logmap0,
    mobius_add,
    mobius_residual,
)

C = 0.1


def _perturb(module, scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def _run(module, x, fast, train=True):
    m = copy.deepcopy(module).train(train)
    for sub in m.modules():
        if hasattr(sub, "fast"):
            sub.fast = fast
    xx = x.clone().requires_grad_(True)
    y = m(xx)
    weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)  # a loss that mixes every output
    (y * weight).sum().backward()
    return [y.detach(), xx.grad] + [p.grad for p in m.parameters()] + list(m.buffers())


def _assert_same(module, x, train=True, atol=1e-10, rtol=1e-8):
    fast, ref = _run(module, x, True, train), _run(module, x, False, train)
    assert len(fast) == len(ref)
    # rounding is relative to the problem's scale (a near-zero gradient is a cancelling sum of large terms)
    scale = max(float(b.abs().max()) for b in ref if b is not None and b.numel()) + 1.0
    for a, b in zip(fast, ref):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, atol=atol * scale, rtol=rtol)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("ci,co,k,s,p,h,bias", [
    (3, 8, 3, 1, 1, 12, True), (4, 6, 3, 2, 1, 12, True), (4, 6, 1, 2, 0, 12, True), (5, 4, 3, 1, 1, 7, False),
    (4, 4, 3, 2, 1, 7, True),  # odd size at stride 2 (the definition reshapes to the convolution's size too)
    (2, 3, 5, 1, 2, 9, True), (2, 3, 3, 1, 2, 6, True),  # padding beyond k // 2 (the box sum's conv fallback)
])
@pytest.mark.parametrize("scale", [0.05, 1.0, 20.0])  # 20: the patches' exp_0 lands on the projection radius
def test_fused_convolution_equals_the_unfolded_definition(ci, co, k, s, p, h, bias, scale, dtype, atol):
    torch.manual_seed(0)
    conv = _perturb(PoincareConv2d(ci, co, k, s, p, C, bias=bias)).to(dtype)
    x = (torch.randn(3, ci, h, h, dtype=dtype) * scale).relu()  # ReLU: some all-zero receptive fields
    _assert_same(conv, x, atol=atol, rtol=1e-5 if dtype == torch.float32 else 1e-8)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("scale", [0.05, 1.0, 50.0])
def test_fused_linear_equals_the_definition(bias, scale, dtype, atol):
    torch.manual_seed(1)
    lin = _perturb(PoincareLinear(6, 4, C, bias=bias), 0.3).to(dtype)
    _assert_same(lin, torch.randn(5, 6, dtype=dtype) * scale, atol=atol, rtol=1e-5 if dtype == torch.float32 else 1e-8)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("channels", [3, 16])
@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0])
def test_fused_midpoint_batch_norm_equals_the_definition(channels, train, scale, dtype, atol):
    torch.manual_seed(2)
    bn = PoincareBatchNorm2d(channels, C)
    with torch.no_grad():  # a learned mean/variance and running statistics away from their initial values
        bn.mean.copy_(torch.randn(channels) * 0.5)
        bn.var.fill_(1.7)
        bn.running_mean.copy_(torch.randn(channels) * 0.3)
        bn.running_var.fill_(0.6)
    bn = bn.to(dtype)
    x = torch.randn(4, channels, 5, 5, dtype=dtype) * scale + 0.3 * scale  # off-centre batch
    _assert_same(bn, x, train=train, atol=atol, rtol=1e-4 if dtype == torch.float32 else 1e-8)


def test_fused_batch_norm_tracks_the_same_running_statistics():
    torch.manual_seed(3)
    fast, ref = PoincareBatchNorm2d(5, C).double(), PoincareBatchNorm2d(5, C).double()
    ref.fast = False
    for _ in range(3):
        x = torch.randn(4, 5, 3, 3, dtype=torch.float64) + 1.0
        fast(x), ref(x)
    assert fast.running_mean.abs().max() > 0.1  # it moved
    torch.testing.assert_close(fast.running_mean, ref.running_mean, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(fast.running_var, ref.running_var, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_mobius_residual_equals_the_definition(dim, scale):
    g = torch.Generator().manual_seed(4)
    y, r = (torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) * scale for _ in range(2))
    ref = logmap0(mobius_add(expmap0(y, C, dim), expmap0(r, C, dim), C, dim), C, dim)
    torch.testing.assert_close(mobius_residual(y, r, C, dim), ref, atol=1e-10, rtol=1e-9)
    # y = -r: exp_0(y) ⊕ exp_0(-y) = 0, the sum's norm cancels exactly
    torch.testing.assert_close(mobius_residual(y, -y, C, dim), torch.zeros_like(y), atol=1e-12, rtol=0)


def test_sinh_scaled_asinh_equals_torch_and_its_gradient_is_exact():
    q = torch.cat([torch.randn(100, dtype=torch.float64) * s for s in (1e-8, 1e-3, 1.0, 30.0, 1e6)] +
                  [torch.zeros(2, dtype=torch.float64)])
    k = torch.rand(q.numel(), dtype=torch.float64) * 3
    ref = torch.sinh(k * torch.asinh(q))
    torch.testing.assert_close(_SinhScaledAsinh.apply(q, k), ref, atol=0, rtol=1e-12)
    q32, k32 = q[:-102].float(), k[:-102].float()  # float32: as accurate as torch's own sinh(k asinh q)
    err = (_SinhScaledAsinh.apply(q32, k32).double() - ref[:-102]).abs() / ref[:-102].abs()
    err_torch = (torch.sinh(k32 * torch.asinh(q32)).double() - ref[:-102]).abs() / ref[:-102].abs()
    assert err.max() <= 2 * err_torch.max() + 1e-6
    qg = (torch.randn(3, 4, dtype=torch.float64) * 3).requires_grad_(True)
    kg = (torch.rand(1, 4, dtype=torch.float64) + 0.2).requires_grad_(True)  # broadcast k: its gradient is summed
    assert torch.autograd.gradcheck(_SinhScaledAsinh.apply, (qg, kg))


@pytest.mark.parametrize("skip_axis", ["channel", "width"])
def test_fused_block_and_network_equal_the_definition(skip_axis):
    torch.manual_seed(5)
    block = _perturb(PoincareBasicBlock(4, 8, 2, C, skip_axis), 0.05).double()
    _assert_same(block, torch.randn(3, 4, 8, 8, dtype=torch.float64))
    net = _perturb(PoincareResNet((4, 8), (1, 1), num_classes=3, in_channels=1, skip_axis=skip_axis), 0.05).double()
    x = torch.randn(4, 1, 9, 9, dtype=torch.float64)  # odd size through a stride-2 stage
    _assert_same(net, x)
    _assert_same(net, x, train=False)


def test_fused_layers_stay_finite_at_the_boundary():
    torch.manual_seed(6)
    net = PoincareResNet((4, 8), (1, 1), num_classes=3, in_channels=1)
    x = (torch.randn(2, 1, 8, 8) * 1e4).requires_grad_(True)  # every exp_0 saturates on the projection radius
    out = net(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("fast", [True, False])
def test_batch_statistics_in_eval_mode_as_the_official_code(fast):
    torch.manual_seed(7)
    bn = PoincareBatchNorm2d(4, C, eval_stats="batch")
    bn.fast = fast
    with torch.no_grad():
        bn.running_mean.fill_(0.7)  # running statistics that would give a different output
        bn.running_var.fill_(3.0)
    x = torch.randn(6, 4, 3, 3) + 0.5
    out_eval = bn.eval()(x)
    torch.testing.assert_close(bn.running_mean, torch.full((4,), 0.7))  # eval mode does not update them
    out_train = copy.deepcopy(bn).train()(x)
    torch.testing.assert_close(out_eval, out_train)
    running = PoincareBatchNorm2d(4, C)
    running.load_state_dict(bn.state_dict())
    assert (running.eval()(x) - out_eval).abs().max() > 1e-2
    net = PoincareResNet((4, 8), (1, 1), num_classes=3, in_channels=1, bn_eval_stats="batch")
    assert {m.eval_stats for m in net.modules() if isinstance(m, PoincareBatchNorm2d)} == {"batch"}
    with pytest.raises(ValueError, match="bn_eval_stats"):
        PoincareResNet((4,), (1,), bn_eval_stats="moving")
