"""VFIMamba: sizes vs the official model, the Mixed-SSM identities, warping, parity, learning.

Parity: ``fixtures/vfimamba_parity.pt`` holds the official model's output (MCG-NJU/VFIMamba, ``model/``,
built by its ``config.init_model_config`` at ``F=4``, depths ``(1, 1, 1, 1, 1)``) on our seeded weights,
mamba-ssm's ``selective_scan_fn`` replaced by our sequential reference scan (mamba-ssm is GPU-only;
everything else is the official code). Regenerate with the official repository fetched (not committed)::

    PANCONV_RECORD_VFIMAMBA=/path/to/VFIMamba pytest plugins/vision/tests/test_vfimamba.py -k parity

``PANCONV_VFIMAMBA_REF=/path/to/VFIMamba`` runs the live test of ``map_official_state_dict``: the official model's
own (freshly initialised) weights, mapped and loaded into ours, give its outputs (the fixture is left alone).
"""

import contextlib
import math
import os
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.kernels.selective_scan import scan_orders, selective_scan_reference
from panconv_vision.models.vfimamba import (
    ConvMixer,
    MixedSS2D,
    VFIMamba,
    _ss2d_params,
    backward_warp,
    laplacian_loss,
    map_official_state_dict,
    official_column_merge,
)
from panconv_vision.models.vmamba_blocks import SS2D

FIXTURE = Path(__file__).parent / "fixtures" / "vfimamba_parity.pt"
# the official model's parameter counts (config.py, F = 16 / 32, depths (2, 2, 2, 3, 3)), counted on CPU
OFFICIAL = {"vision.vfimamba_s": 16_792_786, "vision.vfimamba": 66_070_921}


def _count(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in panconv.create_model({"type": name}).parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_parameter_counts_equal_the_official_model(name):
    assert _count(name) == OFFICIAL[name]


def test_plain_conv_baseline_has_the_same_size():
    ours, conv = _count("vision.vfimamba_s"), _count("vision.vfimamba_s_conv")
    assert abs(conv - ours) / ours < 1e-3
    m = VFIMamba(embed_dim=4, depths=(1, 1, 1, 1, 1), block="conv")
    assert not any(isinstance(x, SS2D) for x in m.modules())
    for dim in (32, 128):
        ss2d = sum(p.numel() for p in MixedSS2D(dim).parameters())
        mixer = sum(p.numel() for p in ConvMixer(dim).parameters())
        assert _ss2d_params(dim, 16, 2.0) == ss2d and abs(mixer - ss2d) <= 2 * dim


# ---------------------------------------------------------------- the Mixed-SSM identities
def test_tokens_of_the_two_frames_are_interleaved():
    """Row-major direction: pixel (i, j) of frame 0, then of frame 1, then the next pixel; column-major idem."""
    height, width = 3, 4
    frames = torch.arange(2 * height * width).view(2, height, width)    # canonical index of each token
    orders, inverses = scan_orders(2, height, width)
    rows = [frames[t, i, j].item() for i in range(height) for j in range(width) for t in range(2)]
    cols = [frames[t, i, j].item() for j in range(width) for i in range(height) for t in range(2)]
    assert orders[0].tolist() == rows and orders[1].tolist() == cols
    assert orders[2].tolist() == rows[::-1] and orders[3].tolist() == cols[::-1]
    assert torch.equal(orders.gather(1, inverses), torch.arange(2 * height * width).expand(4, -1))


def _seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module


def _plain_scans(m: SS2D, x: torch.Tensor):
    """Each direction as a plain ``selective_scan_reference`` over the explicitly permuted token sequence."""
    n, t, h, w, _ = x.shape
    u, z = m.in_proj(x).chunk(2, dim=-1)
    u = torch.nn.functional.silu(m.conv(u.reshape(n * t, h, w, m.inner).permute(0, 3, 1, 2)))
    u = u.view(n, t, m.inner, h, w)
    rows = u.permute(0, 2, 3, 4, 1).reshape(n, m.inner, -1)           # (i, j, t): frames interleaved
    cols = u.permute(0, 2, 4, 3, 1).reshape(n, m.inner, -1)           # (j, i, t)
    outs = []
    for k, seq in enumerate((rows, cols, rows.flip(-1), cols.flip(-1))):
        proj = torch.einsum("ndl,cd->ncl", seq, m.x_proj_weight[k])
        dt, B, C = torch.split(proj, [m.dt_rank, m.d_state, m.d_state], dim=1)
        dt = torch.einsum("nrl,dr->ndl", dt, m.dt_projs_weight[k])
        sl = slice(k * m.inner, (k + 1) * m.inner)
        outs.append(selective_scan_reference(seq, dt, -torch.exp(m.A_logs[sl]), B, C, m.Ds[sl],
                                             delta_bias=m.dt_projs_bias[k], delta_softplus=True))
    return outs, z


def test_each_direction_is_a_plain_scan_of_the_permuted_sequence():
    """merge='inverse': every direction's output mapped back through the inverse of its own order."""
    torch.manual_seed(0)
    m = _seeded(MixedSS2D(8, d_state=4, merge="inverse")).eval()
    x = torch.randn(2, 2, 3, 5, 8)
    n, t, h, w, _ = x.shape
    with torch.no_grad():
        (row, col, row_rev, col_rev), z = _plain_scans(m, x)
        as_rows = row + row_rev.flip(-1)                                    # already in (i, j, t) order
        as_cols = (col + col_rev.flip(-1)).view(n, m.inner, w, h, t).transpose(2, 3).reshape(n, m.inner, -1)
        y = (as_rows + as_cols).view(n, m.inner, h, w, t).permute(0, 4, 2, 3, 1)
        expected = m.out_proj(m.out_norm(y) * torch.nn.functional.silu(z))
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


def test_official_merge_is_the_official_reshape():
    """merge='official': the column-major outputs placed by the official ``transpose(y.view(B, -1, W, H))``."""
    torch.manual_seed(1)
    m = _seeded(MixedSS2D(8, d_state=4, merge="official")).eval()
    x = torch.randn(1, 2, 3, 5, 8)
    n, t, h, w, _ = x.shape
    with torch.no_grad():
        (row, col, row_rev, col_rev), z = _plain_scans(m, x)
        length = 2 * h * w

        def official(y):   # forward_core's literal reshaping of a column-major output
            return y.reshape(n, -1, w, h).transpose(2, 3).reshape(n, -1, length)

        y = row + row_rev.flip(-1) + official(col) + official(col_rev.flip(-1))   # (i, j, t) layout
        y = y.view(n, m.inner, h, w, t).permute(0, 4, 2, 3, 1)
        expected = m.out_proj(m.out_norm(y) * torch.nn.functional.silu(z))
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)
    source, target = official_column_merge(h, w)
    assert sorted(target.tolist()) == list(range(length))                   # a permutation
    assert not torch.equal(source, target)                                   # not the inverse of the scan


# ---------------------------------------------------------------- warping
def test_zero_flow_warping_is_the_identity():
    x = torch.rand(2, 3, 7, 9)
    torch.testing.assert_close(backward_warp(x, torch.zeros(2, 2, 7, 9)), x, atol=1e-6, rtol=0)


def test_integer_flow_is_a_translation():
    x = torch.rand(1, 3, 8, 10)
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0], flow[:, 1] = 2.0, -1.0                                      # sample at (x + 2, y - 1)
    out = backward_warp(x, flow)
    torch.testing.assert_close(out[..., 1:, :-2], x[..., :-1, 2:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flow must be"):
        backward_warp(x, torch.zeros(1, 2, 4, 5))


def test_laplacian_loss_is_zero_only_for_equal_images():
    x = torch.rand(2, 3, 32, 32)
    assert laplacian_loss(x, x).abs().max() == 0
    assert (laplacian_loss(x, x + 0.1) > 0).all()


# ---------------------------------------------------------------- the model
def _tiny(**kw) -> VFIMamba:
    return VFIMamba(**{**VFIMamba.example_config(), **kw})


def test_forward_shapes_and_bad_inputs():
    m = _tiny()
    batch = m.example_inputs(batch_size=2)
    out = m(batch)
    assert out["pred"].shape == (2, 3, 32, 32) and out["flow"].shape == (2, 4, 32, 32)
    assert len(out["merged"]) == 2 + 1                                      # two flow heads + one local block
    assert 0 <= out["pred"].min() and out["pred"].max() <= 1
    losses = m.loss(out, batch)
    assert set(losses) == {"loss_pred", "loss_warp"} and all(v > 0 for v in losses.values())
    with pytest.raises(ValueError, match="multiples of 32"):
        m({"inputs": torch.rand(1, 2, 3, 30, 32)})
    with pytest.raises(ValueError, match=r"\(N, 2, 3, H, W\)"):
        m({"inputs": torch.rand(1, 3, 3, 32, 32)})
    with pytest.raises(ValueError):
        VFIMamba(embed_dim=4, conv_stages=5)


def test_curriculum_weights_ramp_in_large_motions():
    m = _tiny(curriculum_steps=4).train()
    batch = {"targets": torch.rand(4, 3, 32, 32), "magnitude": torch.tensor([0.1, 0.4, 0.2, 0.3])}
    assert m.curriculum_weights(batch).tolist() == [1.0, 0.25, 1.0, 0.25]
    m.step = 3
    assert m.curriculum_weights(batch).tolist() == [1.0] * 4
    m.step = 0
    batch["inputs"] = torch.rand(4, 2, 3, 32, 32)
    m.loss(m(batch), batch)                                                   # a training step advances it
    assert m.step == 1 and m.curriculum_weights(batch).tolist() == [1.0, 0.5, 1.0, 0.5]
    assert _tiny().train().curriculum_weights(batch).tolist() == [1.0] * 4


def test_the_curriculum_position_is_saved_so_a_resumed_run_continues_the_ramp():
    m = _tiny(curriculum_steps=4).train()
    batch = {"inputs": torch.rand(4, 2, 3, 32, 32), "targets": torch.rand(4, 3, 32, 32),
             "magnitude": torch.tensor([0.1, 0.4, 0.2, 0.3])}
    m.loss(m(batch), batch)
    m.loss(m(batch), batch)
    resumed = _tiny(curriculum_steps=4).train()
    resumed.load_state_dict(m.state_dict())
    assert resumed.step == 2 and resumed.curriculum_weights(batch).tolist() == [1.0, 0.75, 1.0, 0.75]
    assert "steps" not in _tiny().state_dict()  # without a curriculum the state dict is the official one


def test_learns_to_interpolate_a_moving_square():
    """A square moving 4 px per frame: 15 Adam steps on the triplet take the error from 1.4x frame averaging's
    (at initialisation) to well under half of it."""
    torch.manual_seed(0)
    frames = torch.zeros(3, 1, 32, 32)
    for k in range(3):
        frames[k, :, 10:18, 6 + 4 * k:14 + 4 * k] = 1.0
    batch = {"inputs": frames[[0, 2]][None], "targets": frames[1][None]}
    m = VFIMamba(embed_dim=4, depths=(1, 1, 1, 1, 1), d_state=4, local_refine=1, in_channels=1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    average = (frames[0] + frames[2]) / 2
    with torch.no_grad():
        assert (m.eval()(batch)["pred"][0] - frames[1]).abs().mean() > (average - frames[1]).abs().mean()
    m.train()
    for _ in range(15):
        out = m(batch)
        loss = sum(m.loss(out, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = m.eval()(batch)["pred"][0]
    assert (pred - frames[1]).abs().mean() < 0.5 * (average - frames[1]).abs().mean()


# ---------------------------------------------------------------- parity with the official code
PARITY_CONFIG = dict(embed_dim=4, depths=(1, 1, 1, 1, 1))


def _fill(model: torch.nn.Module) -> torch.nn.Module:
    """Seeded weights, a pure function of the parameter names and shapes (fan-in scaled; norms, skip scales and
    D near 1, A_log near log(1..N), PReLU near 0.25)."""
    g = torch.Generator().manual_seed(0)
    state = model.state_dict()
    with torch.no_grad():
        for key in sorted(state):
            p = state[key]
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if key.endswith("A_logs"):
                value = torch.log(torch.arange(1, p.shape[1] + 1, dtype=torch.float32)) + 0.1 * noise
            elif key.endswith(("skip_scale", "skip_scale2", "Ds")) or ("norm" in key and key.endswith("weight")):
                value = 1.0 + 0.1 * noise
            elif isinstance(_owner(model, key), torch.nn.PReLU):
                value = 0.25 + 0.05 * noise
            elif p.dim() >= 2:
                value = noise / math.sqrt(p[0].numel())
            else:
                value = 0.05 * noise
            p.copy_(value)
    return model


def _owner(model: torch.nn.Module, key: str) -> torch.nn.Module:
    return model.get_submodule(key.rsplit(".", 1)[0]) if "." in key else model


def _ours() -> VFIMamba:
    return _fill(VFIMamba(**PARITY_CONFIG)).eval()


def _official_key(key: str) -> str:
    """Our state-dict key -> the official model's."""
    import re

    rules = [
        (r"^features\.embeds\.(\d)\.(norm|proj)\.", r"feature_bone.patch_embed\1.\2."),
        (r"^features\.embeds\.(\d)\.", r"feature_bone.patch_embed\1."),
        (r"^features\.stages\.(\d)\.(\d+)\.mixer\.conv\.", r"feature_bone.block\1.blocks.\2.self_attention.conv2d."),
        (r"^features\.stages\.(\d)\.(\d+)\.mixer\.", r"feature_bone.block\1.blocks.\2.self_attention."),
        (r"^features\.stages\.(\d)\.(\d+)\.norm1\.", r"feature_bone.block\1.blocks.\2.ln_1."),
        (r"^features\.stages\.(\d)\.(\d+)\.norm2\.", r"feature_bone.block\1.blocks.\2.ln_2."),
        (r"^features\.stages\.(\d)\.(\d+)\.(skip_scale2?)$", r"feature_bone.block\1.blocks.\2.\3"),
        (r"^features\.stages\.(\d)\.(\d+)\.cab\.body\.", r"feature_bone.block\1.blocks.\2.conv_blk.cab."),
        (r"^features\.stages\.(\d)\.(\d+)\.cab\.attention\.", r"feature_bone.block\1.blocks.\2.conv_blk.cab.3."
                                                              r"attention."),
        (r"^flow_heads\.(\d)\.convs\.", r"block.\1.conv."),
        (r"^local_blocks\.(\d)\.down\.", r"local_block.\1.conv0."),
        (r"^local_blocks\.(\d)\.body\.", r"local_block.\1.convblock."),
        (r"^local_blocks\.(\d)\.last\.", r"local_block.\1.lastconv."),
        (r"^refine\.down\.(\d)\.0\.", r"unet.down\1.conv1."),
        (r"^refine\.down\.(\d)\.1\.", r"unet.down\1.conv2."),
        (r"^refine\.up\.(\d)\.", r"unet.up\1."),
        (r"^refine\.out\.", r"unet.conv."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    match = re.match(r"^features\.stages\.(\d)\.(\d+)\.(\d)\.(weight|bias)$", key)   # conv stages: conv, PReLU
    if match:
        stage, layer, sub, kind = match.groups()
        return f"feature_bone.block{stage}.conv.{2 * int(layer) + int(sub)}.{kind}"
    raise KeyError(key)


@contextlib.contextmanager
def _official_code(repo: str):
    """The official repository's ``config`` and ``model`` modules, imported with mamba-ssm's scan replaced by our
    reference scan and the einops patterns stubbed; ``sys.path`` and ``sys.modules`` are restored afterwards."""
    stub = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    stub.selective_scan_fn = stub.selective_scan_ref = selective_scan_reference
    einops = types.ModuleType("einops")

    def repeat(x, pattern, **sizes):   # the three patterns the official feature extractor uses
        count = sizes.get("d") or sizes.get("r")
        return x[None].expand(count, *x.shape)

    einops.repeat, einops.rearrange = repeat, None
    mods = {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
            "mamba_ssm.ops.selective_scan_interface": stub, "einops": einops}
    saved_path, saved_mods = list(sys.path), dict(sys.modules)
    sys.modules.update(mods)
    sys.path.insert(0, repo)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import config as official_config
            import model as official_model
            yield official_config, official_model
    finally:
        sys.path[:] = saved_path
        for name in list(sys.modules):
            if name not in saved_mods:
                del sys.modules[name]


def _official_model(official_config, official_model) -> torch.nn.Module:
    """The official network at ``PARITY_CONFIG`` (``config.init_model_config(F=4, depth=[1] * 5)``), eval mode."""
    a, b = official_config.init_model_config(F=PARITY_CONFIG["embed_dim"], depth=list(PARITY_CONFIG["depths"]))
    return official_model.mamba_estimation(official_model.mamba_extractor(**a), **b).eval()


def _record(repo: str) -> None:
    with _official_code(repo) as modules:
        official = _official_model(*modules)
        ours = _ours()
        mapped = {_official_key(k): v for k, v in ours.state_dict().items()}
        missing, unexpected = official.load_state_dict(mapped, strict=True)
        assert not missing and not unexpected
        x = _parity_input()
        with torch.no_grad():
            flows, masks, merged, pred = official(x, local=True, timestep=0.5)
    record = {"source": "MCG-NJU/VFIMamba model/ (config.init_model_config(F=4, depth=[1]*5)), local=True",
              "pred_corner": pred[..., :8, :8].clone()}
    record.update(_projections(pred, flows[-1], masks[-1]))
    torch.save(record, FIXTURE)


def _parity_input() -> torch.Tensor:
    """The official layout ``(1, 6, H, W)``: both frames' RGB stacked (H != W: exercises the column merge)."""
    return torch.rand(1, 6, 32, 64, generator=torch.Generator().manual_seed(1))


def _projections(pred: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """64 seeded random unit-norm projections of each output (a few hundred bytes that no wrong output matches)."""
    out, g = {}, torch.Generator().manual_seed(2)
    for name, x in (("pred", pred), ("flow", flow), ("mask", mask)):
        flat = x.flatten().double()
        proj = torch.randn(64, flat.numel(), generator=g, dtype=torch.float64)
        out[f"{name}_proj"] = (proj / proj.norm(dim=1, keepdim=True)) @ flat
    return out


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_VFIMAMBA"):
        _record(os.environ["PANCONV_RECORD_VFIMAMBA"])
    rec = torch.load(FIXTURE)
    x = _parity_input()
    with torch.no_grad():
        out = _ours()({"inputs": x.view(1, 2, 3, *x.shape[2:])})
    ours = _projections(out["pred"], out["flow"], torch.sigmoid(out["mask"]))
    torch.testing.assert_close(out["pred"][..., :8, :8], rec["pred_corner"], atol=1e-5, rtol=1e-5)
    for name in ("pred", "flow", "mask"):
        torch.testing.assert_close(ours[f"{name}_proj"], rec[f"{name}_proj"], atol=1e-5, rtol=1e-5)
    assert rec["pred_corner"].std() > 0.01                                   # a non-trivial output


# ---------------------------------------------------------------- the official weights
@pytest.mark.skipif(not os.environ.get("PANCONV_VFIMAMBA_REF"),
                    reason="set PANCONV_VFIMAMBA_REF to the official VFIMamba repository (needs timm)")
def test_official_weights_give_the_official_outputs():
    """The official network's own state dict (its initialisation, seeded), through ``map_official_state_dict`` and
    a strict load, makes our model produce the official prediction, flow and mask."""
    with _official_code(os.environ["PANCONV_VFIMAMBA_REF"]) as modules:
        torch.manual_seed(0)
        official = _official_model(*modules)
        with torch.no_grad():
            for name, p in official.named_parameters():   # off the official init's constants (zero biases, ...)
                p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
        ours = VFIMamba(**PARITY_CONFIG).eval()
        ours.load_state_dict(map_official_state_dict(official.state_dict()))   # strict
        x = _parity_input()
        with torch.no_grad():
            flows, masks, _, pred = official(x, local=True, timestep=0.5)
    with torch.no_grad():
        out = ours({"inputs": x.view(1, 2, 3, *x.shape[2:])})
    diffs = {name: (a - b).abs().max().item() for name, a, b in
             (("pred", out["pred"], pred), ("flow", out["flow"], flows[-1]), ("mask", torch.sigmoid(out["mask"]),
                                                                             masks[-1]))}
    print("VFIMamba via map_official_state_dict, max abs diff: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
          + f" (|flow| max {flows[-1].abs().max().item():.2f}, pred std {pred.std().item():.3f})")
    assert all(v < 1e-4 for v in diffs.values()) and pred.std() > 0.01


def test_official_state_dict_map_inverts_the_official_names():
    """``map_official_state_dict`` on official names (``_official_key``, checked against the official model by the
    strict load of ``_record`` and the live test above) gives back our keys and values exactly, for the
    checkpoint as saved (``module.`` prefix, the official loader's dropped buffers) and for the bare network's."""
    ours = _fill(VFIMamba(**PARITY_CONFIG))
    state = ours.state_dict()
    official = {_official_key(k): v for k, v in state.items()}
    for saved in (official, {"module." + k: v for k, v in official.items()}):
        mapped = map_official_state_dict(saved)
        assert list(mapped) == list(state)
        assert all(mapped[k] is v for k, v in state.items())
    mapped = map_official_state_dict({**official, "module.feature_bone.block3.blocks.0.attn_mask": torch.zeros(1)})
    assert list(mapped) == list(state)
    # every kind of layer is covered: conv stages, both embeds, Mixed-SSM blocks, two flow heads, both local blocks
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in state} >= {
        "features.embeds", "features.stages", "flow_heads.0", "flow_heads.1", "local_blocks.0", "local_blocks.1",
        "refine.down", "refine.up", "refine.out"}

    with pytest.raises(KeyError, match="unexpected key in an official VFIMamba state dict: module.pos_embed"):
        map_official_state_dict({"module.pos_embed": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"unexpected key in an official VFIMamba state dict: unet\.down4\.conv3"):
        map_official_state_dict({"unet.down4.conv3.weight": torch.zeros(1)})
