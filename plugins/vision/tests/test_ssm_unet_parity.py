"""VM-UNet parity with the official release (JCruan519/VM-UNet, ``models/vmunet``) at the paper's size.

The release needs mamba-ssm's CUDA ``selective_scan_fn``; here a pure-PyTorch stand-in following mamba-ssm's
documented reference semantics (``selective_scan_ref``: grouped ``B``/``C`` ``(batch, groups, N, L)`` shared by
``dim / groups`` consecutive channels, ``delta + delta_bias`` through softplus, ``x_t = exp(delta A) x_{t-1} +
delta B u``, ``y = C x + D u``) is put on ``sys.modules`` before importing it.

Two checks:

* ``test_vmunet_matches_the_recorded_official_outputs`` (always runs): our ``vision.vmunet`` with weights drawn
  from a seed (:func:`seeded_state`) against the official forward recorded in
  ``tests/fixtures/vmunet_official_logits.pt`` (same seeded weights mapped onto the official names, seeded
  1 x 3 x 32 x 64 input: non-square, so a height/width mix-up in the scans would show).
* ``test_vmunet_matches_the_official_code`` (needs the checkout): the live comparison at 64 x 64 with 9 classes
  (Synapse) and with 1 class through the release's wrapper (sigmoid, 1-channel input repeated to 3 channels).
  The checkout is read from ``$PANCONV_VMUNET_SRC`` (default ``/tmp/VM-UNet``); it also needs ``einops``
  (``PANCONV_VMUNET_SITE`` may name a directory holding it); skipped with the reason when either is absent.

Re-record the fixture (official checkout + einops needed)::

    PANCONV_RECORD_VMUNET=1 PANCONV_VMUNET_SRC=/tmp/VM-UNet PANCONV_VMUNET_SITE=<dir with einops> \
        .venv/bin/python plugins/vision/tests/test_ssm_unet_parity.py
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.models.ssm_unet import Block, VMUNet

FIXTURE = Path(__file__).parent / "fixtures" / "vmunet_official_logits.pt"
WEIGHT_SEED, INPUT_SEED = 20240204, 7
OFFICIAL_PARAMS = {1: 27_427_561, 9: 27_427_761}   # the official VMUNet(depths 2-2-2-2, decoder 2-2-2-1), counted


def reference_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """mamba-ssm's ``selective_scan_fn`` semantics, sequentially in float32 (the stand-in for the CUDA op)."""
    dtype = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    if B.dim() == 4:      # (batch, groups, N, L): channel c uses group c // (dim / groups)
        B = B.float().repeat_interleave(dim // B.shape[1], dim=1)
    if C.dim() == 4:
        C = C.float().repeat_interleave(dim // C.shape[1], dim=1)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A.float()))
    deltaBu = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        x = deltaA[:, :, t] * x + deltaBu[:, :, t]
        ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, t]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype)
    return (out, x) if return_last_state else out


def seeded_state(model: torch.nn.Module, seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Every tensor of ``model``'s state drawn from one seed (in name order), at scales that keep the forward
    well-conditioned: weights uniform ±fan_in^-1/2, norm scales 1 ± 0.1, biases ±0.1, S4D-real ``A_log`` ± 0.1,
    ``D`` 1 ± 0.1, ``dt`` biases = softplus^-1 of a log-uniform step in [1e-3, 1e-1]."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in sorted(model.state_dict().items()):
        u = torch.rand(t.shape, generator=g, dtype=torch.float64).float() * 2 - 1
        if name.endswith("A_logs"):
            v = torch.log(torch.arange(1, t.shape[1] + 1, dtype=torch.float32)).expand_as(t) + 0.1 * u
        elif name.endswith(".Ds"):
            v = 1 + 0.1 * u
        elif name.endswith("dt_projs_bias"):
            dt = torch.exp(math.log(1e-3) + (u + 1) / 2 * math.log(100.0))
            v = dt + torch.log(-torch.expm1(-dt))
        elif t.dim() == 1:
            v = 1 + 0.1 * u if "norm" in name and name.endswith("weight") else 0.1 * u
        else:
            fan_in = t.shape[-1] if t.dim() == 3 else t[0].numel()
            v = u / math.sqrt(fan_in)
        out[name] = v.contiguous()
    return out


def to_official(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our ``VMUNet`` state-dict names -> the release's ``VSSM`` names (``prefix="vmunet."`` for its wrapper)."""
    rules = [
        (r"^stem\.", "patch_embed.proj."), (r"^stem_norm\.", "patch_embed.norm."),
        (r"^encoder\.(\d+)\.(\d+)\.", r"layers.\1.blocks.\2."), (r"^down\.(\d+)\.", r"layers.\1.downsample."),
        (r"^decoder\.(\d+)\.(\d+)\.", r"layers_up.\1.blocks.\2."),
        (r"^up\.(\d+)\.", lambda m: f"layers_up.{int(m.group(1)) + 1}.upsample."),
        (r"^head_up\.", "final_up."), (r"^head\.", "final_conv."),
        (r"(blocks\.\d+)\.norm\.", r"\1.ln_1."), (r"\.mixer\.conv\.", ".self_attention.conv2d."),
        (r"\.mixer\.", ".self_attention."),
    ]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[prefix + key] = value
    return out


def official_module(src: str | None = None):
    """The release's ``models.vmunet.vmunet`` imported with the stand-in scan, or a skip reason."""
    src = src or os.environ.get("PANCONV_VMUNET_SRC", "/tmp/VM-UNet")
    if not (Path(src) / "models" / "vmunet" / "vmamba.py").is_file():
        pytest.skip(f"official VM-UNet checkout not found at {src} (set PANCONV_VMUNET_SRC; "
                    f"fetch github:JCruan519/VM-UNet)")
    site = os.environ.get("PANCONV_VMUNET_SITE")
    for path in (site, src):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    pytest.importorskip("einops", reason="the official VM-UNet code imports einops (set PANCONV_VMUNET_SITE)")
    pytest.importorskip("timm")
    iface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    iface.selective_scan_fn = iface.selective_scan_ref = reference_selective_scan
    stubs = {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
             "mamba_ssm.ops.selective_scan_interface": iface}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        return importlib.import_module("models.vmunet.vmunet")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def official_logits(module, num_classes: int, images: torch.Tensor) -> torch.Tensor:
    ours = VMUNet(num_classes=num_classes, in_channels=3)
    net = module.VMUNet(input_channels=3, num_classes=num_classes, depths=[2, 2, 2, 2],
                        depths_decoder=[2, 2, 2, 1], drop_path_rate=0.2).eval()
    net.load_state_dict(to_official(seeded_state(ours), prefix="vmunet."), strict=True)
    with torch.no_grad():   # the bare network's logits (3-channel input only) and the wrapper's output
        return (net.vmunet(images) if images.shape[1] == 3 else None), net(images)


def seeded_images(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(INPUT_SEED))


def ours_with_seeded_weights(num_classes: int, in_channels: int = 3) -> VMUNet:
    model = VMUNet(num_classes=num_classes, in_channels=in_channels).eval()   # the defaults: vision.vmunet
    model.load_state_dict(seeded_state(model), strict=True)
    return model


@pytest.mark.parametrize("num_classes", [1, 9])
def test_registered_size_equals_the_official_parameter_count(num_classes):
    model = VMUNet(num_classes=num_classes, in_channels=3)       # the defaults are the paper's size
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[num_classes]
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 8 + 7 and all(b.mlp is None for b in blocks)   # VM-UNet's VSS block has no MLP
    names = set(to_official(model.state_dict()))
    assert "layers.0.downsample.reduction.weight" in names and "layers_up.3.upsample.expand.weight" in names
    assert "layers_up.0.blocks.1.self_attention.A_logs" in names and "final_up.norm.weight" in names


def test_stand_in_scan_is_the_recurrence():
    """The stand-in against the recurrence written out for one channel (two groups, D and z on)."""
    torch.manual_seed(0)
    b, d, n, length = 1, 4, 3, 5
    u, delta, z = torch.randn(b, d, length), torch.randn(b, d, length), torch.randn(b, d, length)
    A, D, bias = -torch.rand(d, n) - 0.5, torch.randn(d), torch.randn(d)
    B, C = torch.randn(b, 2, n, length), torch.randn(b, 2, n, length)
    out = reference_selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    c = 3          # group 1 (channels 2, 3)
    dt = F.softplus(delta[0, c] + bias[c])
    x, ys = torch.zeros(n), []
    for t in range(length):
        x = torch.exp(dt[t] * A[c]) * x + dt[t] * B[0, 1, :, t] * u[0, c, t]
        ys.append(((C[0, 1, :, t] * x).sum() + D[c] * u[0, c, t]) * F.silu(z[0, c, t]))
    torch.testing.assert_close(out[0, c], torch.stack(ys), rtol=1e-6, atol=1e-6)


def test_vmunet_matches_the_recorded_official_outputs():
    recorded = torch.load(FIXTURE, weights_only=True)
    images = seeded_images(tuple(recorded["input_shape"]))
    with torch.no_grad():
        logits = ours_with_seeded_weights(1)(images)
    assert logits.shape == recorded["logits"].shape == (1, 1, 32, 64)
    assert recorded["logits"].std() > 0.1     # a live output, not a constant
    assert (logits - recorded["logits"]).abs().max().item() <= 1e-5


def test_vmunet_matches_the_official_code():
    module = official_module()
    images = seeded_images((2, 3, 64, 64))
    for num_classes in (9, 1):
        logits, wrapped = official_logits(module, num_classes, images)
        ours = ours_with_seeded_weights(num_classes)
        with torch.no_grad():
            mine = ours(images)
            assert (mine - logits).abs().max().item() <= 1e-5
            if num_classes == 1:   # the wrapper: sigmoid; a 1-channel image repeated to 3 channels on both sides
                assert (mine.sigmoid() - wrapped).abs().max().item() <= 1e-5
                gray = images[:, :1]
                _, wrapped_gray = official_logits(module, 1, gray)
                assert (ours(gray).sigmoid() - wrapped_gray).abs().max().item() <= 1e-5


def record() -> None:
    """Write the fixture from the official code (``PANCONV_RECORD_VMUNET=1``)."""
    module = official_module()
    shape = (1, 3, 32, 64)
    logits, _ = official_logits(module, 1, seeded_images(shape))
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save({"input_shape": list(shape), "logits": logits.contiguous().clone(),
                "source": "JCruan519/VM-UNet 43c495b models/vmunet, VMUNet(num_classes=1), seeded_state(seed "
                          f"{WEIGHT_SEED}), randn input seed {INPUT_SEED}"}, FIXTURE)
    print(f"wrote {FIXTURE}: logits std {logits.std().item():.4f}")


if __name__ == "__main__":
    if os.environ.get("PANCONV_RECORD_VMUNET") != "1":
        sys.exit("set PANCONV_RECORD_VMUNET=1 to re-record the fixture")
    record()
