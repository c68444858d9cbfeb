"""Slot Attention against the official TensorFlow 2 code (google-research/google-research,
``slot_attention/model.py``) on shared weights, through a recorded fixture (CI has no TensorFlow).

``fixtures/slot_attention_parity.npz`` holds the official outputs for weights, inputs and initial-slot noise drawn
from a seed (no weights are stored: both sides regenerate them with ``numpy.random.RandomState``). Regenerate it
with ``fixtures/slot_attention_record.py`` (its docstring: a TensorFlow venv, ``PANCONV_RECORD_SLOT_ATTENTION``).
Two cases: the ``SlotAttention`` module alone at sizes the official autoencoder cannot take, and the full
autoencoder at the paper's object-discovery size (``vision.slot_attention_clevr6``: 128x128, 7 slots, 3 iterations).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import panconv
from panconv_vision.models.slot_attention import SameConvTranspose2d, SlotAttention
from panconv_vision.testing import num_parameters

FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("slot_attention_record", FIXTURES / "slot_attention_record.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)  # the recorder's weight specs and draw order (it imports numpy only)
# fp32: max |ours - official| <= 1e-5 * max(1, max |official|). The autoencoder's outputs reach ~7.5 after 14
# convolutions (5x5x64 sums) and 3 GRU iterations; TensorFlow's and torch's kernels sum in different orders, which
# leaves ~1.5e-6 of the tensor's scale (measured), so the bound is relative for tensors larger than 1.
TOL = 1e-5


def _close(value: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((value - expected).abs().max() <= TOL * max(1.0, float(expected.abs().max())))


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(FIXTURES / "slot_attention_parity.npz"))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _dense(w: dict, key: str) -> torch.Tensor:
    return _t(w[key].T)


def _conv(w: dict, key: str) -> torch.Tensor:
    """Keras ``Conv2D`` ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``; ``Conv2DTranspose`` ``(kh, kw, out, in)``
    -> torch's ``ConvTranspose2d`` ``(in, out, kh, kw)``: the same permutation."""
    return _t(w[key].transpose(3, 2, 0, 1))


def _gru(a: np.ndarray, d: int) -> np.ndarray:
    """Keras gate blocks (z, r, h) -> torch's (r, z, n) along the last axis."""
    return np.concatenate([a[..., d:2 * d], a[..., :d], a[..., 2 * d:]], -1)


def map_module(w: dict, prefix: str, d: int) -> dict[str, torch.Tensor]:
    """Official ``SlotAttention`` variables -> our ``SlotAttention`` state dict."""
    sd = {"slots_mu": _t(w[f"{prefix}slots_mu"]), "slots_log_sigma": _t(w[f"{prefix}slots_log_sigma"])}
    for n in ("norm_inputs", "norm_slots", "norm_mlp"):
        sd[f"{n}.weight"], sd[f"{n}.bias"] = _t(w[f"{prefix}{n}.gamma"]), _t(w[f"{prefix}{n}.beta"])
    for n in ("q", "k", "v"):
        sd[f"to_{n}.weight"] = _dense(w, f"{prefix}{n}")
    sd["gru.weight_ih"] = _t(_gru(w[f"{prefix}gru.kernel"], d).T)
    sd["gru.weight_hh"] = _t(_gru(w[f"{prefix}gru.recurrent_kernel"], d).T)
    sd["gru.bias_ih"], sd["gru.bias_hh"] = (_t(b) for b in _gru(w[f"{prefix}gru.bias"], d))
    for i, j in ((0, 0), (1, 2)):
        sd[f"mlp.{j}.weight"] = _dense(w, f"{prefix}mlp.{i}.kernel")
        sd[f"mlp.{j}.bias"] = _t(w[f"{prefix}mlp.{i}.bias"])
    return sd


def map_autoencoder(w: dict) -> dict[str, torch.Tensor]:
    """Official ``SlotAttentionAutoEncoder`` variables -> our ``SlotAttentionAE`` state dict."""
    sd = {f"slot_attention.{k}": v for k, v in map_module(w, "slot_attention.", 64).items()}
    for i in range(4):
        sd[f"encoder.{2 * i}.weight"], sd[f"encoder.{2 * i}.bias"] = (
            _conv(w, f"encoder_cnn.{i}.kernel"), _t(w[f"encoder_cnn.{i}.bias"]))
    for i in range(6):
        sd[f"decoder.{2 * i}.weight"], sd[f"decoder.{2 * i}.bias"] = (
            _conv(w, f"decoder_cnn.{i}.kernel"), _t(w[f"decoder_cnn.{i}.bias"]))
    for pos in ("encoder_pos", "decoder_pos"):
        sd[f"{pos}.proj.weight"], sd[f"{pos}.proj.bias"] = _dense(w, f"{pos}.kernel"), _t(w[f"{pos}.bias"])
    sd["encoder_norm.weight"], sd["encoder_norm.bias"] = _t(w["layer_norm.gamma"]), _t(w["layer_norm.beta"])
    for i, j in ((0, 0), (1, 2)):
        sd[f"encoder_mlp.{j}.weight"] = _dense(w, f"mlp.{i}.kernel")
        sd[f"encoder_mlp.{j}.bias"] = _t(w[f"mlp.{i}.bias"])
    return sd


def _regenerate(recorded):
    """The recorder's draws, in its order: module inputs, noise, weights; then image, noise, weights."""
    rng = np.random.RandomState(int(recorded["seed"]))
    m, a = record.MODULE, record.AE
    module = (rng.standard_normal((m["batch"], m["inputs"], m["d_in"])).astype(np.float32),
              rng.standard_normal((m["batch"], m["slots"], m["dim"])).astype(np.float32),
              record.draw(rng, record.module_specs("", m["d_in"], m["dim"], m["hidden"])))
    ae = (rng.uniform(size=(a["batch"], a["resolution"], a["resolution"], 3)).astype(np.float32),
          rng.standard_normal((a["batch"], a["slots"], 64)).astype(np.float32),
          record.draw(rng, record.autoencoder_specs()))
    assert np.array_equal(rng.randint(0, a["resolution"], size=(record.PIXELS, 2)), recorded["ae_pixels"])
    return module, ae


def test_slot_attention_module_matches_the_official_code(recorded):
    (inputs, noise, w), _ = _regenerate(recorded)
    m = record.MODULE
    ours = SlotAttention(m["slots"], m["dim"], m["d_in"], m["iters"], m["hidden"]).eval()
    ours.load_state_dict(map_module(w, "", m["dim"]), strict=True)
    slots0 = ours.slots_mu + ours.slots_log_sigma.exp() * _t(noise)
    with torch.no_grad():
        slots, _ = ours(_t(inputs), slots0)
    expected = _t(recorded["module_slots"])
    assert expected.abs().max() > 0.1  # the comparison is not between near-zero tensors
    assert _close(slots, expected)


def test_slot_attention_autoencoder_matches_the_official_code(recorded):
    _, (image, noise, w) = _regenerate(recorded)
    model = panconv.create_model("vision.slot_attention_clevr6").eval()
    assert num_parameters(model) == int(recorded["ae_num_params"]) == 890_308  # = the official model's count
    model.load_state_dict(map_autoencoder(w), strict=True)
    sa = model.slot_attention
    with torch.no_grad():
        out = model.forward_slots(_t(image).permute(0, 3, 1, 2), sa.slots_mu + sa.slots_log_sigma.exp() * _t(noise))
    ys, xs = (torch.from_numpy(p) for p in recorded["ae_pixels"].T)
    got = {"ae_slots": out["slots"],
           "ae_recon": out["recon"][:, :, ys, xs].transpose(1, 2),
           "ae_rgb": out["rgb"][:, :, :, ys, xs].transpose(2, 3),
           "ae_alpha": out["alpha"][:, :, 0, ys, xs],
           "ae_recon_mean": out["recon"].double().mean((2, 3))}
    for key, value in got.items():
        expected = _t(recorded[key]).to(value.dtype)
        assert value.shape == expected.shape, key
        assert expected.abs().max() > 0.05, key
        assert _close(value, expected), (key, float((value - expected).abs().max()))
    # the slots really competed: the alpha masks are not uniform over the slots
    assert out["alpha"].amax(1).mean() > 1.5 / model.slot_attention.num_slots


@pytest.mark.parametrize("kernel,stride", [(5, 2), (5, 1), (3, 1), (4, 2), (2, 2), (1, 2), (3, 3)])
def test_same_conv_transpose_is_tensorflows_definition(kernel, stride):
    """TensorFlow's ``conv2d_transpose(padding="SAME")``: output ``stride * n``; input ``i``'s tap ``k`` lands at
    ``stride * i + k - before`` with ``before = max(k - stride, 0) // 2`` (brute-force scatter)."""
    torch.manual_seed(0)
    layer = SameConvTranspose2d(2, 3, kernel, stride)
    x = torch.randn(1, 2, 5, 4)
    n_out = (5 * stride, 4 * stride)
    before = max(kernel - stride, 0) // 2
    expected = layer.bias.detach().view(3, 1, 1).repeat(1, *n_out).clone()
    w = layer.weight.detach()  # (in, out, kh, kw)
    for i in range(5):
        for j in range(4):
            for ky in range(kernel):
                for kx in range(kernel):
                    oy, ox = stride * i + ky - before, stride * j + kx - before
                    if 0 <= oy < n_out[0] and 0 <= ox < n_out[1]:
                        expected[:, oy, ox] += (x[0, :, i, j, None] * w[:, :, ky, kx]).sum(0)
    with torch.no_grad():
        assert torch.allclose(layer(x)[0], expected, atol=1e-5)
