"""MossFormer: paper size, shapes, the joint attention, parity with the reference, learning.

``map_official_state_dict``: CI checks it on the official key names and shapes of the tiny configuration (a
literal below) against output values recorded from the official code. With the official code fetched (not
committed) the official model's own weights are also loaded through the map and compared with its output::

    git -C <modelscope checkout> archive HEAD modelscope/models/audio/separation | tar -x -C /tmp/msc
    PANCONV_OFFICIAL_MOSSFORMER=/tmp/msc PYTHONPATH=<dir with einops, rotary-embedding-torch, speechbrain> \\
        pytest plugins/audio/tests/test_mossformer.py
"""

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_audio.losses import SISNRPIT
from panconv_audio.models.mossformer import MossFormer, MossFormerBlock, RotaryEmbedding, map_official_state_dict


def mossformer_2spk(**kwargs):
    return panconv.build("model", "audio.mossformer_2spk", **kwargs)


def mossformer_3spk(**kwargs):
    return panconv.build("model", "audio.mossformer_3spk", **kwargs)


def mossformer_small(**kwargs):
    return panconv.build("model", "audio.mossformer_small", **kwargs)


# Tiny configuration of the recorded reference run (see fill() and test_parity_with_reference)
TINY = dict(num_speakers=2, encoder_dim=16, kernel_size=8, dim=16, depth=2, query_key_dim=8, group_size=16,
            dropout=0.0)


def fill(model: torch.nn.Module, seed: int = 0) -> None:
    """Deterministic weights, drawn in sorted parameter-name order (independent of torch's init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(r / (p[0].numel() ** 0.5))
            else:
                p.copy_(1 + 0.1 * r if name.endswith(("gain", "scale", "weight")) else 0.1 * r)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("factory", [mossformer_2spk, mossformer_3spk])
def test_paper_configuration_has_42_1M_parameters(factory):
    with torch.device("meta"):
        model = factory()
    # paper: 42.1M (WSJ0-2mix); the 3-speaker mask projection adds 0.26M
    assert abs(n_params(model) - 42.1e6) / 42.1e6 < 0.01, n_params(model)


def test_paper_configuration_counts_exactly():
    with torch.device("meta"):
        two, three = mossformer_2spk(), mossformer_3spk()
    # the released reference model has 42,101,850 parameters: ours + its 16 (frozen) rotary frequencies
    assert n_params(two) == 42_101_834
    assert n_params(three) - n_params(two) == 512 * 512 + 512        # one more speaker branch in mask_proj
    assert len(two.blocks) == 24 and two.blocks[0].group_size == 256


@pytest.mark.parametrize("num_speakers,length", [(2, 401), (3, 256)])
def test_forward_shapes(num_speakers, length):
    model = MossFormer(**{**MossFormer.example_config(), "num_speakers": num_speakers}).eval()
    out = model({"mixture": torch.randn(2, length)})
    assert out.shape == (2, num_speakers, length)
    assert model.predict(out, {}) is out


def test_token_shift_delays_first_half_of_channels():
    x = torch.arange(12.0).reshape(1, 3, 4)                      # (N, L, C)
    y = MossFormerBlock.token_shift(x)
    assert torch.equal(y[0, :, 2:], x[0, :, 2:])
    assert torch.equal(y[0, 1:, :2], x[0, :-1, :2]) and torch.equal(y[0, 0, :2], torch.zeros(2))


def test_rotary_rotates_pairs_and_keeps_norms():
    rot = RotaryEmbedding(4)
    x = torch.randn(2, 5, 6)
    y = rot(x)
    assert torch.equal(y[..., 4:], x[..., 4:])                                       # partial rotary
    pair_norms = lambda t: t[..., :4].unflatten(-1, (2, 2)).norm(dim=-1)
    torch.testing.assert_close(pair_norms(y), pair_norms(x))
    torch.testing.assert_close(y[:, 0], x[:, 0])                                     # position 0: no rotation
    # relative: <R_m q, R_n k> depends on m - n only
    q, k = torch.randn(1, 1, 4).expand(1, 5, 4), torch.randn(1, 1, 4).expand(1, 5, 4)
    rq, rk = rot(q), rot(k)
    torch.testing.assert_close((rq[0, 3] * rk[0, 1]).sum(), (rq[0, 4] * rk[0, 2]).sum())


def test_joint_attention_matches_dense_formula():
    """Local ReLU² attention within chunks + global linear attention, written out densely."""
    torch.manual_seed(0)
    block = MossFormerBlock(dim=8, group_size=4, query_key_dim=6, dropout=0.0)
    length, g = 10, 4                                              # 3 chunks, the last one padded
    qq, lq, qk, lk = (torch.randn(2, length, 6) for _ in range(4))
    v, u = torch.randn(2, length, 16), torch.randn(2, length, 16)
    att_v, att_u = block.joint_attention(qq, lq, qk, lk, v, u)
    chunk = torch.arange(length) // g
    local = (chunk[:, None] == chunk[None, :]).float()            # same-chunk mask
    a_quad = F.relu(qq @ qk.transpose(1, 2) / g) ** 2 * local
    a_lin = lq @ lk.transpose(1, 2) / length
    torch.testing.assert_close(att_v, (a_quad + a_lin) @ v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att_u, (a_quad + a_lin) @ u, atol=1e-5, rtol=1e-5)


def test_parity_with_reference():
    """Output recorded from modelscope's mossformer.py with these weights mapped into it.

    Recorded with the pinned torch 2.11 on CPU: modelscope ``MossFormer(kernel_size=8,
    out_channels=16, in_channels=16, stride=4, num_blocks=2, d_model=16, group_size=16,
    query_key_dim=8, expansion_factor=4, norm='ln', num_spks=2)``, weights of ``fill(ours)``
    copied by state-dict key mapping; our max abs difference was 1.1e-6 in float32
    (2.9e-15 in float64; 5.2e-13 on the 24-block paper configuration).
    """
    model = MossFormer(**TINY).eval()
    fill(model)
    x = torch.randn(2, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model({"mixture": x})
    ref_a = [-0.06609424948692322, 0.4733038544654846, 0.26175206899642944, -0.5219140648841858, -0.0974823385477066]
    ref_b = [-0.2616671323776245, -0.6274447441101074, 0.31777504086494446, -0.3303687274456024, -0.04576587677001953]
    # measured 2.1e-7 (values up to 0.63)
    torch.testing.assert_close(out[0, 0, 100:105], torch.tensor(ref_a), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, 1, 200:205], torch.tensor(ref_b), atol=1e-5, rtol=0)
    assert out.sum().item() == pytest.approx(-12.29397201538086, abs=1e-3)
    assert out.abs().sum().item() == pytest.approx(427.9297180175781, abs=1e-3)


def test_loss_is_permutation_invariant_and_differentiable():
    model = MossFormer(**MossFormer.example_config())
    batch = model.example_inputs()
    out = model(batch)
    loss = model.loss(out, batch)
    swapped = {**batch, "sources": batch["sources"].flip(1)}
    torch.testing.assert_close(model.loss(out, swapped)["loss"], loss["loss"])
    loss["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_small_model_learns_to_separate_two_tones():
    torch.manual_seed(0)
    t = torch.arange(1600) / 8000
    gen = torch.Generator().manual_seed(0)

    def batch(n=4):
        f = 200 + 600 * torch.rand(n, 2, 1, generator=gen)
        f[:, 1] += 400                                                # a low and a high voice
        sources = torch.sin(2 * torch.pi * f * t) * (0.5 + torch.rand(n, 2, 1, generator=gen))
        return {"mixture": sources.sum(1), "sources": sources}

    model = mossformer_small(encoder_dim=32, dim=32, depth=1, query_key_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        b = batch()
        loss = model.loss(model(b), b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    model.eval()
    with torch.no_grad():
        b = batch(8)
        final = model.loss(model(b), b)["loss"].item()
    assert final < first - 3.0, (first, final)                    # at least 3 dB better SI-SNR


def test_small_variant_is_cpu_sized():
    assert n_params(mossformer_small()) < 500_000
    assert mossformer_small(num_speakers=3).num_speakers == 3          # filled from dataset metadata by configs
    assert MossFormer.metadata_inputs == ("num_speakers",)


def test_loss_is_configurable_and_defaults_to_si_snr_pit():
    torch.manual_seed(0)
    default = MossFormer(**MossFormer.example_config())
    assert isinstance(default.criterion, SISNRPIT)
    batch = default.example_inputs()
    out = default(batch)
    # a {type: ...} section is built from the loss registry (the engine normally does it before the constructor)
    configured = MossFormer(**MossFormer.example_config(), loss={"type": "audio.SISNRPIT", "eps": 1e-3})
    assert isinstance(configured.criterion, SISNRPIT) and configured.criterion.eps == 1e-3
    torch.testing.assert_close(default.loss(out, batch)["loss"], SISNRPIT()(out, batch["sources"]))
    # any loss object: here a plain MSE, which is not permutation invariant
    mse = MossFormer(**MossFormer.example_config(), loss=torch.nn.MSELoss())
    torch.testing.assert_close(mse.loss(out, batch)["loss"], F.mse_loss(out, batch["sources"]))
    swapped = {**batch, "sources": batch["sources"].flip(1)}
    assert not torch.allclose(mse.loss(out, swapped)["loss"], mse.loss(out, batch)["loss"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss={"eps": 1e-3}), "needs a 'type'"),
    (dict(loss=3), "loss must be"),
    (dict(depth=0), ">= 1"),
    (dict(kernel_size=1), "kernel_size"),
    (dict(expansion_factor=1.0625), "even"),          # 16 * 1.0625 = 17 channels for V and U
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MossFormer(**{**MossFormer.example_config(), **kwargs})


# ---- official checkpoints: map_official_state_dict ------------------------------------------------------------
# The official (modelscope) MossFormer's state-dict names and shapes for the tiny configuration of
# test_parity_with_reference, in the official order. Generated with the official code (see the module docstring):
# ``[(k, tuple(v.shape)) for k, v in _official_class(root)("", **OFFICIAL_TINY_KWARGS).state_dict().items()]``.
OFFICIAL_TINY_KWARGS = dict(kernel_size=8, out_channels=16, in_channels=16, stride=4, bias=False, num_blocks=2,
                            d_model=16, attn_dropout=0.0, group_size=16, query_key_dim=8, expansion_factor=4,
                            causal=False, norm="ln", num_spks=2)
OFFICIAL_TINY = [
    ("encoder.conv1d.weight", (16, 1, 8)),
    ("decoder.weight", (16, 1, 8)),
    ("mask_net.norm.weight", (16,)),
    ("mask_net.norm.bias", (16,)),
    ("mask_net.conv1d_encoder.weight", (16, 16, 1)),
    ("mask_net.pos_enc.scale", (1,)),
    ("mask_net.pos_enc.inv_freq", (8,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.rotary_pos_emb.freqs", (4,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_hidden.mdl.0.g", (1,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_hidden.mdl.1.weight", (64, 16)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_hidden.mdl.1.bias", (64,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_hidden.mdl.3.sequential.1.conv.weight", (64, 1, 17)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_qk.mdl.0.g", (1,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_qk.mdl.1.weight", (8, 16)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_qk.mdl.1.bias", (8,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_qk.mdl.3.sequential.1.conv.weight", (8, 1, 17)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.qk_offset_scale.gamma", (4, 8)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.qk_offset_scale.beta", (4, 8)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_out.mdl.0.g", (1,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_out.mdl.1.weight", (16, 32)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_out.mdl.1.bias", (16,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.0.to_out.mdl.3.sequential.1.conv.weight", (16, 1, 17)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.rotary_pos_emb.freqs", (4,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_hidden.mdl.0.g", (1,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_hidden.mdl.1.weight", (64, 16)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_hidden.mdl.1.bias", (64,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_hidden.mdl.3.sequential.1.conv.weight", (64, 1, 17)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_qk.mdl.0.g", (1,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_qk.mdl.1.weight", (8, 16)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_qk.mdl.1.bias", (8,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_qk.mdl.3.sequential.1.conv.weight", (8, 1, 17)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.qk_offset_scale.gamma", (4, 8)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.qk_offset_scale.beta", (4, 8)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_out.mdl.0.g", (1,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_out.mdl.1.weight", (16, 32)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_out.mdl.1.bias", (16,)),
    ("mask_net.mdl.att_mdl.mossformerM.layers.1.to_out.mdl.3.sequential.1.conv.weight", (16, 1, 17)),
    ("mask_net.mdl.att_mdl.norm.norm.weight", (16,)),
    ("mask_net.mdl.att_mdl.norm.norm.bias", (16,)),
    ("mask_net.mdl.att_norm.weight", (16,)),
    ("mask_net.mdl.att_norm.bias", (16,)),
    ("mask_net.conv1d_out.weight", (32, 16, 1)),
    ("mask_net.conv1d_out.bias", (32,)),
    ("mask_net.conv1_decoder.weight", (16, 16, 1)),
    ("mask_net.prelu.weight", (1,)),
    ("mask_net.output.0.weight", (16, 16, 1)),
    ("mask_net.output.0.bias", (16,)),
    ("mask_net.output_gate.0.weight", (16, 16, 1)),
    ("mask_net.output_gate.0.bias", (16,)),
]


def _official_values(shapes, seed=7):
    """Seeded values under the official names (drawn in the official order, scaled as :func:`fill`); the fixed
    sinusoidal / rotary frequencies keep their (official and our) values ``1 / 10000^(2j / d)``."""
    g, out = torch.Generator().manual_seed(seed), {}
    for key, shape in shapes:
        if key.endswith(("freqs", "inv_freq")):
            out[key] = 1.0 / 10000 ** (torch.arange(0, 2 * shape[0], 2).float() / (2 * shape[0]))
            continue
        r = torch.randn(shape, generator=g)
        if len(shape) >= 2:
            out[key] = r / torch.Size(shape[1:]).numel() ** 0.5
        else:
            out[key] = 1 + 0.1 * r if key.endswith(("g", "scale", "weight")) else 0.1 * r
    return out


def test_official_state_dict_map_inverts_the_official_names():
    """``map_official_state_dict`` on the official names and shapes (literal above) with seeded values gives exactly
    our keys and shapes, loads strictly, and the model gives the output the official model gave with the same
    values (recorded with the official code, like test_parity_with_reference; measured 9.5e-7, values up to 2.9)."""
    official = _official_values(OFFICIAL_TINY)
    official = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(official.items())}  # DataParallel
    mapped = map_official_state_dict(official)
    model = MossFormer(**TINY).eval()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(mapped) == len(OFFICIAL_TINY) - 2                  # the two layers' copies of the rotary frequencies
    model.load_state_dict(mapped, strict=True)
    x = torch.randn(2, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model({"mixture": x})
    ref_a = [-0.008065318688750267, 0.011950578540563583, -0.034495703876018524, -0.014318430796265602,
             -0.2727079391479492]
    ref_b = [0.517503023147583, -1.8547613620758057, 0.2473890781402588, -0.7913759350776672, -0.12352155894041061]
    torch.testing.assert_close(out[0, 0, 100:105], torch.tensor(ref_a), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, 1, 200:205], torch.tensor(ref_b), atol=1e-5, rtol=0)
    assert out.sum().item() == pytest.approx(-214.6688995361328, abs=1e-3)
    assert out.abs().sum().item() == pytest.approx(419.8924560546875, abs=1e-3)
    bad = "mask_net.mdl.att_mdl.mossformerM.layers.0.to_qk.mdl.2.weight"
    with pytest.raises(KeyError, match=f"unexpected key in an official MossFormer state dict: {bad}"):
        map_official_state_dict({bad: torch.zeros(1)})
    with pytest.raises(KeyError, match="decoder.bias"):                           # an official bias=True decoder
        map_official_state_dict({"decoder.bias": torch.zeros(1)})


def _official_class(root, monkeypatch):
    """The official ``MossFormer`` from ``<root>/modelscope/models/audio/separation``, with only modelscope's
    framework imports (model registry, ``TorchModel`` base, constants) stubbed."""
    class TorchModel(torch.nn.Module):
        def __init__(self, model_dir, *args, **kwargs):
            super().__init__()

    class Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    class Names:
        def __getattr__(self, name):
            return name

    attrs = {"modelscope.metainfo": {"Models": Names()}, "modelscope.models": {"MODELS": Registry(),
             "TorchModel": TorchModel}, "modelscope.models.base": {"Tensor": torch.Tensor},
             "modelscope.utils.constant": {"Tasks": Names()}}
    for name in ("modelscope", "modelscope.metainfo", "modelscope.models", "modelscope.models.base",
                 "modelscope.utils", "modelscope.utils.constant", "modelscope.models.audio",
                 "modelscope.models.audio.separation"):
        module = types.ModuleType(name)
        for attr, value in attrs.get(name, {}).items():
            setattr(module, attr, value)
        monkeypatch.setitem(sys.modules, name, module)
    for name in ("mossformer_conv_module", "mossformer_block", "mossformer"):
        spec = importlib.util.spec_from_file_location(f"modelscope.models.audio.separation.{name}",
                                                      Path(root) / "modelscope/models/audio/separation" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
    return module.MossFormer


#: the released checkpoints' configuration (``damo/speech_mossformer_separation_temporal_8k`` configuration.json)
OFFICIAL_RELEASED_KWARGS = dict(kernel_size=16, out_channels=512, in_channels=512, stride=8, bias=False,
                                num_blocks=24, d_model=512, attn_dropout=0.1, group_size=256, query_key_dim=128,
                                expansion_factor=4, causal=False, norm="ln", num_spks=2)


@pytest.mark.skipif(not os.environ.get("PANCONV_OFFICIAL_MOSSFORMER"), reason="needs the official modelscope code")
@pytest.mark.parametrize("size", ["tiny, 3 speakers, 3 blocks", "released"])
def test_official_weights_through_the_map_give_the_official_output(size, monkeypatch):
    """The official model's own (initial) weights, joined from its three sub-modules as the released files are,
    loaded through ``map_official_state_dict`` give the official output; the released configuration into our
    default model."""
    official_class = _official_class(os.environ["PANCONV_OFFICIAL_MOSSFORMER"], monkeypatch)
    torch.manual_seed(3)
    if size == "released":
        kwargs, ours = OFFICIAL_RELEASED_KWARGS, MossFormer().eval()
    else:
        kwargs = {**OFFICIAL_TINY_KWARGS, "num_blocks": 3, "num_spks": 3}
        ours = MossFormer(**{**TINY, "depth": 3, "num_speakers": 3}).eval()
    theirs = official_class("", **kwargs).eval()
    # the released encoder.bin / decoder.bin / masknet.bin are these three state dicts
    state = {f"{prefix}.{k}": v for prefix, part in theirs.as_dict().items() for k, v in part.state_dict().items()}
    state = {k.replace("masknet.", "mask_net.", 1): v for k, v in state.items()}
    ours.load_state_dict(map_official_state_dict(state), strict=True)
    x = torch.randn(2, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expect, got = theirs(x).transpose(1, 2), ours({"mixture": x})
    rel = ((got - expect).abs().max() / expect.abs().max()).item()
    print(f"MossFormer ({size}) via map_official_state_dict: max abs diff {(got - expect).abs().max():.2e} "
          f"(outputs up to {expect.abs().max():.2f}, relative {rel:.1e})")
    assert rel <= 1e-5
