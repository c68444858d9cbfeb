"""MossFormer: paper size, shapes, the joint attention, parity with the reference, learning."""

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_audio.losses import SISNRPIT
from panconv_audio.models.mossformer import MossFormer, MossFormerBlock, RotaryEmbedding


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
