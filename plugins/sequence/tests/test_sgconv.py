"""SGConv: kernel construction, sub-linear parameters, FFT evaluation and parity with the official layer.

Parity: ``fixtures/parity_sgconv.pt`` holds the official ``GConv`` (``gconv_standalone.py`` of
github.com/ctlllll/SGConv, run locally, never committed) on small shared weights: its state
dict, an input and its output. Regenerate it with::

    git -C <mirror of ctlllll/SGConv> show HEAD:gconv_standalone.py > /tmp/sgconv/gconv_standalone.py
    pip install --target /tmp/sgconv_deps einops opt_einsum omegaconf   # + an empty IPython.embed stub
    SGCONV_OFFICIAL=/tmp/sgconv:/tmp/sgconv_deps python plugins/sequence/tests/test_sgconv.py

With ``SGCONV_OFFICIAL`` set, ``test_parity_with_official_live`` also compares on fresh weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv.testing import import_official
from panconv_sequence.models.sgconv import SGConv, SGConvMixer, centred_kernel

FIXTURE = Path(__file__).parent / "fixtures" / "parity_sgconv.pt"
COMMON = dict(l_max=64, kernel_dim=8, decay_min=1.5, decay_max=3.0)
CASES = [dict(d_model=4, channels=1, bidirectional=False, length=100),  # longer than the kernel: zero-padded
         dict(d_model=4, channels=2, bidirectional=True, length=40)]    # shorter: cut


def _official_module():
    return import_official("SGCONV_OFFICIAL", "gconv_standalone")


def _official_case(module, case: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    layer = module.GConv(case["d_model"], channels=case["channels"], bidirectional=case["bidirectional"],
                         transposed=False, **COMMON)
    x = torch.randn(2, case["length"], case["d_model"])
    with torch.no_grad():
        y, _ = layer(x)  # the first forward fixes the official kernel_norm (from the initial weights)
    return {"state": {k: v.clone() for k, v in layer.state_dict().items()}, "x": x, "y": y}


def _ours(case: dict, state: dict) -> SGConvMixer:
    mixer = SGConvMixer(case["d_model"], channels=case["channels"], bidirectional=case["bidirectional"], **COMMON)
    mixer.load_official_state_dict(state)
    return mixer


@pytest.mark.parametrize("index", range(len(CASES)))
def test_parity_with_official_fixture(index):
    record = torch.load(FIXTURE, weights_only=True)[index]
    mixer = _ours(CASES[index], record["state"])
    with torch.no_grad():
        y = mixer(record["x"])
    assert (y - record["y"]).abs().max() <= 1e-5


@pytest.mark.skipif(_official_module() is None, reason="SGCONV_OFFICIAL (gconv_standalone.py and its deps) not set")
@pytest.mark.parametrize("index", range(len(CASES)))
def test_parity_with_official_live(index):
    record = _official_case(_official_module(), CASES[index], seed=100 + index)
    with torch.no_grad():
        y = _ours(CASES[index], record["state"])(record["x"])
    assert (y - record["y"]).abs().max() <= 1e-5


def test_kernel_is_the_concatenation_of_upsampled_decayed_subkernels():
    """The defining construction, written out independently (nearest upsampling = repeat each tap)."""
    torch.manual_seed(0)
    mixer = SGConvMixer(3, l_max=80, kernel_dim=5, decay_min=1.5, decay_max=4.0, interpolation="nearest")
    assert mixer.n_scales == 1 + math.ceil(math.log2(80 / 5)) == 5
    decay = torch.linspace(1.5, 4.0, 3)
    parts = [mixer.kernel_list[i].detach().repeat_interleave(2 ** max(0, i - 1), dim=-1)
             * decay.view(1, 3, 1) ** (mixer.n_scales - 1 - i) for i in range(mixer.n_scales)]
    expected = torch.cat(parts, dim=-1)
    assert [p.shape[-1] for p in parts] == [5, 5, 10, 20, 40]
    assert expected.shape[-1] == mixer.kernel_length == 80
    expected = expected / expected.norm(dim=-1, keepdim=True)  # normalised by the initial kernel's norm
    torch.testing.assert_close(mixer.kernel(80), expected)
    # shorter inputs cut the kernel, longer ones zero-pad it
    torch.testing.assert_close(mixer.kernel(30), expected[..., :30])
    assert (mixer.kernel(100)[..., 80:] == 0).all()


@pytest.mark.parametrize("l_max", [256, 1024, 4096, 16384, 65536])
def test_parameter_count_is_sublinear_in_length(l_max):
    d, kernel_dim = 8, 64
    mixer = SGConvMixer(d, l_max=l_max, kernel_dim=kernel_dim)
    kernel_params = sum(p.numel() for p in mixer.kernel_list)
    scales = 1 + math.ceil(math.log2(l_max / kernel_dim))
    assert kernel_params == d * kernel_dim * scales  # O(log L) per feature
    assert mixer.kernel_length >= l_max
    if l_max >= 1024:
        assert kernel_params < d * l_max / 2  # far below a dense length-L kernel per feature


def test_causal_layer_sees_no_future_and_bidirectional_does():
    torch.manual_seed(0)
    x = torch.randn(1, 64, 4)
    x2 = x.clone()
    x2[:, 40] += 1.0
    causal = SGConvMixer(4, l_max=64, kernel_dim=8)
    y, y2 = causal(x), causal(x2)
    assert (y[:, :40] - y2[:, :40]).abs().max() < 1e-5  # FFT round-off only
    assert (y[:, 40:] - y2[:, 40:]).abs().max() > 1e-3
    both = SGConvMixer(4, l_max=64, kernel_dim=8, bidirectional=True)
    assert (both(x)[:, :40] - both(x2)[:, :40]).abs().max() > 1e-3


def test_fft_evaluation_equals_direct_convolution():
    """The layer's long convolution equals a direct sum over lags (both directions)."""
    torch.manual_seed(0)
    mixer = SGConvMixer(2, l_max=32, kernel_dim=4, bidirectional=True, channels=1).double()
    u = torch.randn(1, 20, 2, dtype=torch.float64)
    k = mixer.kernel(20)  # (2, d, L): forward kernel, backward kernel
    direct = torch.zeros(1, 2, 20, dtype=torch.float64)
    ut = u.transpose(1, 2)
    for t in range(20):
        for s in range(20):
            if t - s >= 0:
                direct[..., t] += k[0, :, s] * ut[..., t - s]
            if t + 1 + s < 20:
                direct[..., t] += k[1, :, s] * ut[..., t + 1 + s]
    direct = direct + ut * mixer.D[0][:, None]
    expected = mixer.output_linear(F.gelu(direct).transpose(1, 2))
    torch.testing.assert_close(mixer(u), expected)
    assert centred_kernel(k[:1], k[1:]).shape[-1] == 39


def test_backbone_forward_and_param_groups():
    model = SGConv(d_model=16, n_layers=2, vocab_size=10, l_max=48, kernel_dim=8)
    out = model(torch.randint(10, (2, 48)))[0]
    assert out.shape == (2, 16, 48)
    out.sum().backward()
    assert model.blocks[0].mixer.kernel_list[0].grad.abs().sum() > 0
    names = [n for n, _ in model.named_parameters() if "kernel_list" in n]
    assert names and model.param_groups() == {"kernel_list": {"lr_mult": 0.1, "decay_mult": 1.0}}


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="interpolation"):
        SGConvMixer(4, interpolation="cubic")
    with pytest.raises(ValueError, match="n_scales"):
        SGConvMixer(4, n_scales=0)


if __name__ == "__main__":  # regenerate the fixture from the official code (see the module docstring)
    official = _official_module()
    if official is None:
        raise SystemExit("set SGCONV_OFFICIAL to the directories holding gconv_standalone.py and its dependencies")
    records = [_official_case(official, case, seed=i) for i, case in enumerate(CASES)]
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(records, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
