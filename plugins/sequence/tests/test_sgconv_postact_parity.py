"""SGConv with the official LRA configs' output map (``postact: glu``): forward parity with ``GConv``.

``fixtures/parity_sgconv_glu.pt.gz`` holds official ``GConv`` (``gconv_standalone.py`` of ctlllll/SGConv at
97862df, ``mode="cat_randn"``, ``postact="glu"``) weights, an input and its output; the test loads the
weights into :class:`~panconv_sequence.models.sgconv.SGConvMixer` (``postact="glu"``) and compares.
Regenerate with the official file and its dependencies importable (``omegaconf`` and ``IPython`` are
imported but not used by ``GConv``: empty stand-ins will do)::

    SGCONV_OFFICIAL=/tmp/sgconv:/tmp/sgconv_deps python plugins/sequence/tests/test_sgconv_postact_parity.py
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
import torch

from panconv.testing import import_official
from panconv_sequence.models.sgconv import SGConvMixer

FIXTURE = Path(__file__).parent / "fixtures" / "parity_sgconv_glu.pt.gz"
SOURCE = {"repo": "ctlllll/SGConv", "commit": "97862df", "file": "gconv_standalone.py"}
D, L, KERNEL_DIM = 4, 24, 4
# name: (our SGConvMixer kwargs besides postact="glu", the official GConv mode and kernel args)
CASES = {
    "glu_bidirectional": (dict(bidirectional=True), "cat_randn", {}),
    "glu_causal": (dict(bidirectional=False), "cat_randn", {}),
    "glu_two_channels": (dict(bidirectional=True, channels=2), "cat_randn", {}),
    # the LRA-Image config's mode: (t+1)**-decay with a frozen per-feature decay (drawn in [0.5, 1.5] here)
    "power_decay_fixed": (dict(bidirectional=True, power_decay="fixed", decay_min=0.5, decay_max=1.5),
                          "cat_randn_learnable_fixed", dict(decay_min=0.5, decay_max=1.5)),
    "power_decay_learnable": (dict(bidirectional=True, power_decay="learnable", decay_min=0.5, decay_max=1.5),
                              "cat_randn_learnable", dict(decay_min=0.5, decay_max=1.5)),
    # the Path-X config's mode: cosine init, init_scale 1 (one scale fewer, each upsampled twice as much)
    "cos_init_scale": (dict(bidirectional=True, kernel_init="cos", init_scale=1, decay_min=1.0, decay_max=3.0),
                       "cat_cos", dict(init_scale=1, decay_min=1, decay_max=3)),
}


def official_module():
    return import_official("SGCONV_OFFICIAL", "gconv_standalone")


def to_ours(state: dict) -> dict:
    """Official ``GConv`` (``postact='glu'``: ``output_linear`` is ``Sequential(Linear, GLU)``) -> our names."""
    out = {k: v for k, v in state.items() if k != "kernel_norm_initialized" and not k.startswith("output_linear")}
    out["output_linear.weight"] = state["output_linear.0.weight"]
    out["output_linear.bias"] = state["output_linear.0.bias"]
    return out


def ours_from(state: dict, kwargs: dict, dtype=torch.float64) -> SGConvMixer:
    mixer = SGConvMixer(D, l_max=L, kernel_dim=KERNEL_DIM, postact="glu", **kwargs[0]).to(dtype).eval()
    mixer.load_state_dict({k: v.to(dtype) for k, v in to_ours(state).items()})
    return mixer


def _load() -> dict:
    with gzip.open(FIXTURE, "rb") as f:
        return torch.load(io.BytesIO(f.read()), weights_only=True)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_glu_output_map_matches_official_fixture(name, dtype):
    case = _load()["cases"][name]
    mixer = ours_from(case["state"], CASES[name], dtype)
    with torch.no_grad():
        y = mixer(case["input"].to(dtype))
    assert case["output"].abs().max() > 1e-2
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(y, case["output"].to(dtype), atol=tol, rtol=tol)


def test_glu_doubles_the_output_map_and_gates():
    plain = SGConvMixer(D, l_max=L, kernel_dim=KERNEL_DIM)
    glu = SGConvMixer(D, l_max=L, kernel_dim=KERNEL_DIM, postact="glu")
    assert glu.output_linear.out_features == 2 * plain.output_linear.out_features
    with pytest.raises(ValueError, match="postact"):
        SGConvMixer(D, postact="relu")


def test_power_decay_and_init_scale_shape_the_kernel():
    """``(t+1)**-decay`` divides tap t of the concatenated kernel; init_scale drops a scale and doubles each span."""
    torch.manual_seed(0)
    plain = SGConvMixer(D, l_max=64, kernel_dim=KERNEL_DIM, power_decay="fixed", decay_min=0.0, decay_max=0.0)
    decayed = SGConvMixer(D, l_max=64, kernel_dim=KERNEL_DIM, power_decay="fixed", decay_min=1.0, decay_max=1.0)
    decayed.load_state_dict({**plain.state_dict(), "decay": torch.ones(D)}, strict=False)
    t = torch.arange(plain.kernel_length, dtype=torch.float32) + 1
    torch.testing.assert_close(decayed.raw_kernel(), plain.raw_kernel() / t)
    assert not decayed.decay.requires_grad
    wide = SGConvMixer(D, l_max=64, kernel_dim=KERNEL_DIM, init_scale=1)
    base = SGConvMixer(D, l_max=64, kernel_dim=KERNEL_DIM)
    assert wide.n_scales == base.n_scales - 1 and wide.kernel_length == base.kernel_length == 64


@pytest.mark.skipif(official_module() is None, reason="SGCONV_OFFICIAL (gconv_standalone.py and its deps) not set")
@pytest.mark.parametrize("name", list(CASES))
def test_glu_parity_live(name):
    official = _official_forward(official_module(), CASES[name], seed=5)
    mixer = ours_from(official["state"], CASES[name])
    with torch.no_grad():
        torch.testing.assert_close(mixer(official["input"]), official["output"], atol=1e-10, rtol=1e-10)


def _official_forward(g, case: tuple, seed: int) -> dict:
    ours, mode, kernel_args = case
    torch.manual_seed(seed)
    kernel_args = {"decay_min": 2, "decay_max": 2, **kernel_args}
    layer = g.GConv(D, l_max=L, mode=mode, kernel_dim=KERNEL_DIM, n_scales=None, postact="glu", transposed=False,
                    bidirectional=ours["bidirectional"], channels=ours.get("channels", 1), **kernel_args)
    layer = layer.double().eval()
    x = torch.randn(2, L, D, generator=torch.Generator().manual_seed(seed + 1)).double()
    with torch.no_grad():
        y, _ = layer(x)  # the first forward fixes kernel_norm (the official layer's rule)
        for t in layer.state_dict().values():  # float32-representable weights and kernel norm (the fixture's)
            if t.is_floating_point():
                t.copy_(t.float())
        y, _ = layer(x)
    return {"state": {k: v.clone() for k, v in layer.state_dict().items()}, "input": x, "output": y}


def record() -> None:
    g = official_module()
    if g is None:
        raise SystemExit("set SGCONV_OFFICIAL to the directories holding gconv_standalone.py and its dependencies")
    out = {"source": SOURCE, "cases": {}}
    for i, (name, spec) in enumerate(CASES.items()):
        case = _official_forward(g, spec, seed=i)
        case["state"] = {k: (v.float() if v.is_floating_point() else v) for k, v in case["state"].items()}
        case["input"] = case["input"].float()
        out["cases"][name] = case
    buffer = io.BytesIO()
    torch.save(out, buffer)
    FIXTURE.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    record()
