"""HRVMamba: parameter counts vs the paper's table, the deformable scan's defining identities, branch fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.models.hrvmamba import (
    DSS2D,
    DeformableAggregation,
    DVSSBlock,
    FuseUp,
    HRSegHead,
    HRVMamba,
    channel_shuffle,
    split_channels,
)
from panconv_vision.models.vmamba_blocks import SS2D

SIZES = {"tiny": ((16, 32, 64, 128), 32), "small": ((32, 64, 128, 256), 64), "base": ((80, 160, 320, 640), 64)}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pose_count(size: str, **kw) -> int:
    """The paper's counted model: the backbone with stage 4 fused into branch 0, + the 1x1 17-keypoint head."""
    channels, stage1 = SIZES[size]
    backbone = HRVMamba(channels=channels, stage1_channels=stage1, multiscale_output=False, **kw)
    return n_params(backbone) + channels[0] * 17 + 17


@pytest.mark.parametrize("size,exact,paper", [("tiny", 2_151_297, 2e6), ("small", 8_034_401, 8e6),
                                              ("base", 47_100_993, 47e6)])
def test_parameter_counts_match_the_paper_table(size, exact, paper, single_thread):
    count = pose_count(size)
    assert count == exact
    assert round(count / 1e6) == paper / 1e6                  # the table gives whole millions
    if size != "base":                                         # the registered variant is the same network
        registered = panconv.get_component("backbone", f"vision.hrvmamba_{size}")(multiscale_output=False)
        assert n_params(registered) == exact - (SIZES[size][0][0] * 17 + 17)


def test_released_code_layout_adds_dcnv4_pointwise_projections(single_thread):
    # DCNv4's default value/output projections (as the released code builds them): 12.29M for Small, not 8M
    assert pose_count("small", dcn_pointwise=True) == 12_285_665


def _random_aggregation(channels=64, group=2, dw=None, seed=0):
    torch.manual_seed(seed)
    agg = DeformableAggregation(channels, group, dw_kernel_size=dw, pointwise=True)
    torch.nn.init.normal_(agg.offset_mask.weight, std=0.5)
    torch.nn.init.normal_(agg.offset_mask.bias, std=1.5)       # offsets past the border too
    return agg


@pytest.mark.parametrize("dw", [None, 3])
def test_grid_sample_aggregation_equals_torchvision_deform_conv2d(dw, single_thread):
    agg = _random_aggregation(dw=dw)
    x = torch.randn(2, 64, 7, 9, requires_grad=True)
    value = agg.value_proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    offset, mask = agg.offsets_and_masks(x)
    ours = agg.aggregate(value, offset, mask)
    ref = agg.aggregate(value, offset, mask, backend="torchvision")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=2e-6 * ref.abs().max().item())
    g1 = torch.autograd.grad(ours.square().sum(), agg.offset_mask.weight, retain_graph=True)[0]
    g2 = torch.autograd.grad(ref.square().sum(), agg.offset_mask.weight)[0]
    torch.testing.assert_close(g1, g2, rtol=2e-3, atol=1e-4 * g2.abs().max().item())  # float32 sums of ~1e4 terms
    assert g1.abs().sum() > 0


def _set_offsets_and_masks(agg: DeformableAggregation, offsets_yx: tuple[float, float], masks: torch.Tensor):
    """Constant per-pixel prediction: every point offset by ``offsets_yx``, modulations ``masks`` (G, K)."""
    k = agg.points
    with torch.no_grad():
        agg.offset_mask.weight.zero_()
        bias = torch.zeros_like(agg.offset_mask.bias)
        for g in range(agg.group):
            base = g * 3 * k
            bias[base:base + 2 * k] = torch.tensor(offsets_yx).repeat(k)
            bias[base + 2 * k:base + 3 * k] = masks[g]
        agg.offset_mask.bias.copy_(bias)


def test_integer_offsets_shift_the_sampled_map(single_thread):
    agg = DeformableAggregation(8, 1, pointwise=False)
    centre = torch.zeros(1, 9)
    centre[0, 4] = 1.0
    x = torch.randn(2, 8, 5, 6)
    _set_offsets_and_masks(agg, (0.0, 1.0), centre)            # sample one pixel to the right
    out = agg(x)
    torch.testing.assert_close(out[..., :-1], x[..., 1:])
    assert out[..., -1].abs().max() == 0                       # past the border: zero
    _set_offsets_and_masks(agg, (-1.0, 0.0), centre)           # one pixel up
    torch.testing.assert_close(agg(x)[..., 1:, :], x[..., :-1, :])
    _set_offsets_and_masks(agg, (0.0, 0.5), centre)            # half a pixel: bilinear
    torch.testing.assert_close(agg(x)[..., :-1], (x[..., :-1] + x[..., 1:]) / 2)


def test_dcnv4_init_outputs_zero_but_learns_modulation(single_thread):
    agg = DeformableAggregation(32, 1, pointwise=True)
    x = torch.randn(2, 32, 4, 4)
    out = agg(x)
    assert out.abs().max() == 0                                # zero modulation at init (DCNv4's reset)
    out.sum().backward()
    assert agg.offset_mask.bias.grad.abs().sum() > 0


def _copy_scan_weights(dss: DSS2D, ss: SS2D) -> None:
    with torch.no_grad():
        for name in ("in_proj", "out_norm", "out_proj"):
            getattr(dss, name).load_state_dict(getattr(ss, name).state_dict())
        for name in ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"):
            getattr(dss, name).copy_(getattr(ss, name))


def test_zero_offsets_give_the_plain_ss2d_scan(single_thread):
    """The defining identity: with zero offsets and the modulations set to a depthwise kernel (group = channels),
    the deformable 2-D selective scan is VMamba's SS2D (models/vmamba_blocks.SS2D) with that depthwise conv."""
    torch.manual_seed(0)
    dim, d_state = 8, 4
    ss = SS2D(dim, d_state=d_state, ssm_ratio=2.0, d_conv=3)
    inner = ss.inner
    with torch.no_grad():
        ss.conv.bias.zero_()
    dss = DSS2D(dim, d_state=d_state, ssm_ratio=2.0, group=inner, gate=True, deformable=True)
    _copy_scan_weights(dss, ss)
    _set_offsets_and_masks(dss.conv, (0.0, 0.0), ss.conv.weight.detach().view(inner, 9))
    x = torch.randn(2, dim, 5, 6)
    expected = ss(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(dss(x), expected, rtol=1e-5, atol=1e-5)
    # a non-zero offset changes the scan's input, hence its output
    _set_offsets_and_masks(dss.conv, (0.0, 0.7), ss.conv.weight.detach().view(inner, 9))
    assert (dss(x) - expected).abs().max() > 1e-3
    # deformable=False is SS2D itself (its depthwise conv, bias included)
    plain = DSS2D(dim, d_state=d_state, ssm_ratio=2.0, gate=True, deformable=False)
    _copy_scan_weights(plain, ss)
    with torch.no_grad():
        ss.conv.bias.normal_()
    plain.conv.load_state_dict(ss.conv.state_dict())
    torch.testing.assert_close(plain(x), ss(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_esinb_split_and_shuffle():
    assert split_channels(30, 4) == [9, 7, 7, 7]
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    block = DVSSBlock(30)
    assert [c.kernel_size[0] for c in block.convs] == [3, 5, 7, 9]
    assert block.op.conv.offset_mask_dw is None and DVSSBlock(80).op.conv.offset_mask_dw is not None  # as official
    assert block.op.conv.group == block.op.dt_rank == 2


@pytest.mark.parametrize("side", [32, 28])
def test_branches_and_fusion_shapes(side, single_thread):
    torch.manual_seed(0)
    model = HRVMamba(**HRVMamba.example_config(), in_channels=1).eval()
    outs = model(torch.randn(2, 1, side, side))
    assert [o.shape[1] for o in outs] == [f.channels for f in model.feature_info] == [8, 16, 24, 32]
    expected = [side // 4]
    for _ in range(3):
        expected.append((expected[-1] + 1) // 2)               # stride-2 3x3 convs, padding 1
    assert [tuple(o.shape[-2:]) for o in outs] == [(s, s) for s in expected]
    assert [f.reduction for f in model.feature_info] == [4, 8, 16, 32]
    single = HRVMamba(**HRVMamba.example_config(), multiscale_output=False).eval()
    assert len(single.stages[-1][-1].fuse) == 1 and len(single(torch.randn(1, 3, 32, 32))) == 1
    plain = HRVMamba(**HRVMamba.example_config(), block="basic", in_channels=1).eval()
    x = torch.randn(1, 1, 32, 32)
    assert [o.shape for o in plain(x)] == [o.shape for o in model(x)]
    assert not any(isinstance(m, DVSSBlock) for m in plain.modules())


def test_fusion_upsampling_equals_scale_factor_when_sizes_divide():
    up = FuseUp(4, 2).eval()
    x = torch.randn(1, 4, 3, 5)
    ref = F.interpolate(up.proj(x), scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x, (12, 20)), ref)


def test_fusion_mixes_branches(single_thread):
    """A change in the lowest-resolution input reaches the highest-resolution output through the fusion."""
    torch.manual_seed(0)
    model = HRVMamba(**HRVMamba.example_config()).eval()
    module = model.stages[-1][-1]
    xs = [torch.randn(1, c, 8 // 2 ** i, 8 // 2 ** i) for i, c in enumerate((8, 16, 24, 32))]
    base = module(xs)
    xs[3] = xs[3] + 1.0
    assert (module(xs)[0] - base[0]).abs().max() > 0


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="channels"):
        HRVMamba(channels=(8, 16, 24))
    with pytest.raises(ValueError, match="block"):
        HRVMamba(**HRVMamba.example_config(), block="transformer")
    with pytest.raises(ValueError, match="out_indices"):
        HRVMamba(**HRVMamba.example_config(), multiscale_output=False, out_indices=(1,))
    with pytest.raises(ValueError, match="divisible"):
        DeformableAggregation(30, 4)
    with pytest.raises(ValueError, match="expected"):
        DSS2D(8)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="images"):
        HRVMamba(**HRVMamba.example_config())(torch.randn(3, 32, 32))


def test_seg_head_gives_input_resolution_masks_and_learns(single_thread):
    torch.manual_seed(0)
    backbone = HRVMamba(**HRVMamba.example_config(), in_channels=1, block="basic")   # the head is under test
    head = HRSegHead(backbone.feature_info, num_classes=2)
    masks = (torch.rand(4, 8, 8) > 0.5).long().repeat_interleave(4, 1).repeat_interleave(4, 2)   # 4x4 cells
    x = masks[:, None].float() + 0.1 * torch.randn(4, 1, 32, 32)
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=1e-2)
    first = None
    for _ in range(20):
        logits = head(backbone(x))
        loss = head.loss(logits, {"masks": masks})["loss_ce"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logits.shape == (4, 2, 32, 32)
    assert head.predict(logits)["masks"].shape == masks.shape
    assert loss.item() < 0.75 * first
    assert (head.predict(logits)["masks"] == masks).float().mean() > 0.7     # pixel accuracy (chance: ~0.5)
    with pytest.raises(ValueError, match="differ in size"):
        head.loss(logits[..., :16, :16], {"masks": masks})


def test_seg_head_dice_term():
    head = HRSegHead(HRSegHead.example_in_features(), num_classes=3, dice_weight=0.5)
    features, batch = head.example_inputs(2)
    logits = head(features)
    losses = head.loss(logits, batch)
    assert set(losses) == {"loss_ce", "loss_dice"} and 0 < losses["loss_dice"] <= 0.5
    perfect = F.one_hot(batch["masks"], 3).permute(0, 3, 1, 2).float() * 100
    assert head.loss(perfect, batch)["loss_dice"] < 1e-3        # soft Dice of the right masks: ~0
    with pytest.raises(ValueError, match="dice_weight"):
        HRSegHead(HRSegHead.example_in_features(), num_classes=3, dice_weight=-1.0)
