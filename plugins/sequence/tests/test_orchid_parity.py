"""Orchid: forward parity with the official standalone block on shared weights.

The official code is ``orchid_standalone/`` of github.com/Karami-m/orchid at commit 061f6df
(``orchid_standalone.py``, ``orchid_utils.py``, ``utils/nn.py``; needs ``einops``, ``easydict``,
``opt_einsum``). It is fetched, never committed. ``fixtures/parity_orchid.pt.gz`` (gzip, ~15 KB) holds, per case, our
weights (float64), an input and the official ``OrchidOperator``'s output on those weights; the test
rebuilds :class:`~panconv_sequence.models.orchid.OrchidOperator` from the stored weights and compares
(float64 and float32). Regenerate it with the official package importable::

    ORCHID_OFFICIAL=/tmp/orchid:/tmp/orchid_deps python plugins/sequence/tests/test_orchid_parity.py

(``ORCHID_OFFICIAL``: ``:``-separated directories, the one holding the ``orchid_standalone`` package
and the one holding its dependencies.) With ``ORCHID_OFFICIAL`` set, ``test_parity_live`` also
compares on fresh random weights.

Two things in the official code shape what is compared:

* its default, ``causal=True`` (a time-domain data-dependent kernel from a ``2L``-point spectrum),
  returns ``(B, B, L, d)`` for a batch of ``B > 1``: the kernel keeps a head axis that broadcasts
  against the batch axis, mixing samples. The intended per-sample operator is what the official code
  computes for ``B = 1``, so for that mode it is run one sample at a time;
* its Type II conditioning (``type: corrTime``) only runs with ``causal=False`` (a frequency-domain
  kernel): with ``causal=True`` the ``L+1``-bin kernel spectrum meets an ``L//2+1``-bin one and it raises.
"""

from __future__ import annotations

import copy
import gzip
import io
import math
from pathlib import Path

import pytest
import torch

from panconv.testing import import_official
from panconv_sequence.models.orchid import Orchid, OrchidOperator

FIXTURE = Path(__file__).parent / "fixtures" / "parity_orchid.pt.gz"
SOURCE = {"repo": "Karami-m/orchid", "commit": "061f6df4d875c67e932ac0a964f4f169cba4774b"}
D, L, BATCH = 4, 16, 2

# name: (our OrchidOperator kwargs, the official block's kwargs and conv_kernel overrides)
CASES = {
    "abs_time": (dict(design="abs", filter_order=8), dict(causal=True), {}),
    "abs_freq": (dict(design="abs", filter_order=8, kernel_domain="freq"), dict(causal=False), {}),
    "abs_time_imagenet_filter": (  # the official test script's filter settings (emb_dim 33, 1 inner MLP, w 10)
        dict(design="abs", filter_order=8, short_filter_order=5, emb_dim=33, num_inner_mlps=1, w=10.0),
        dict(causal=True, short_filter_order=5, emb_dim=33, num_inner_mlps=1, w=10), {}),
    "abs_freq_nonorm_nores": (dict(design="abs", filter_order=8, kernel_domain="freq", cond_norm=False,
                                   residual_long_conv=False, cond_kernel=5),
                              dict(causal=False, residual_long_conv=None), dict(norm="none", conv_filter_size=5)),
    "xcorr_freq": (dict(design="xcorr", filter_order=8), dict(causal=False), dict(type="corrTime")),
    "xcorr_freq_tanh": (dict(design="xcorr", filter_order=8, sigma="tanh"), dict(causal=False),
                        dict(type="corrTime", actq="tanh")),
}


def build_ours(kwargs: dict, dtype=torch.float64, seed: int = 0) -> OrchidOperator:
    torch.manual_seed(seed)
    module = OrchidOperator(D, l_max=L, **kwargs).to(dtype).eval()
    with torch.no_grad():  # move every weight off its initial value (LayerNorm 1/0 included): catches mapping slips
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
            p.copy_(p.float())  # float32-representable: the fixture stores the weights in float32
    return module


def to_official(ours: OrchidOperator) -> dict:
    """Our weights under the official module's names (``orchid_standalone.OrchidOperator``)."""
    sd = ours.state_dict()
    out = {"in_linear.weight": sd["in_proj.weight"], "in_linear.bias": sd["in_proj.bias"],
           "out_linear.weight": sd["out_proj.weight"], "out_linear.bias": sd["out_proj.bias"],
           "conv1d_short.weight": sd["short_filter.weight"], "conv1d_short.bias": sd["short_filter.bias"]}
    for ours_name, theirs in (("static", "fixed_conv"), ("static_res", "fixed_conv_res")):
        f = getattr(ours, ours_name)
        if f is None:
            continue
        n = len(f.implicit_filter)
        out[f"{theirs}.bias"] = f.bias
        out[f"{theirs}.pos_emb.z"] = f.z
        out[f"{theirs}.pos_emb.t"] = f.t
        out[f"{theirs}.modulation.deltas"] = f.deltas
        for i, linear in enumerate(f.implicit_filter):
            out[f"{theirs}.implicit_filter.{2 * i}.weight"] = linear.weight
            out[f"{theirs}.implicit_filter.{2 * i}.bias"] = linear.bias
            out[f"{theirs}.implicit_filter.{2 * i + 1}.freq"] = f.act.freq  # one Sin module, shared
        out[f"{theirs}.implicit_filter.{2 * n}.weight"] = f.head.weight
    cond = ours.conditioning
    convs = {"time_conv": "nn_model", "freq_conv": "nn_model2"} if cond.design == "abs" else \
        {"k_conv": "nn_model_k", "q_conv": "nn_model_q", "freq_conv": "nn_model_frq"}
    for ours_name, theirs in convs.items():
        conv = getattr(cond, ours_name)
        out[f"conv_kernel_nn.{theirs}.conv1d_ls.0.weight"] = conv.weight
        out[f"conv_kernel_nn.{theirs}.conv1d_ls.0.bias"] = conv.bias
        if isinstance(conv.norm, torch.nn.LayerNorm):
            out[f"conv_kernel_nn.{theirs}.norm_ls.0.norm_conv_kernel.weight"] = conv.norm.weight
            out[f"conv_kernel_nn.{theirs}.norm_ls.0.norm_conv_kernel.bias"] = conv.norm.bias
    return {k: v.detach().clone() for k, v in out.items()}


def official_package():
    return import_official("ORCHID_OFFICIAL", "orchid_standalone.orchid_standalone")


def build_official(pkg, theirs: dict, conv_overrides: dict):
    cfg = copy.deepcopy(pkg.conv_kernel_cfg)
    cfg.update(conv_overrides)
    kwargs = dict(l_max=L, filter_order=8, dxt="fft", conv_kernel=cfg)
    kwargs.update(theirs)
    return pkg.OrchidOperator(D, **kwargs).eval()


def official_forward(pkg, ours: OrchidOperator, theirs: dict, conv_overrides: dict, x: torch.Tensor):
    official = build_official(pkg, theirs, conv_overrides).to(x.dtype)
    state = to_official(ours)
    missing, unexpected = official.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssertionError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        if theirs.get("causal", True):  # the official time-domain mode broadcasts across the batch: one at a time
            return torch.cat([official(x[i:i + 1]).reshape(1, L, D) for i in range(x.shape[0])])
        return official(x)


def official_param_count(pkg, theirs: dict, conv_overrides: dict) -> int:
    return sum(p.numel() for p in build_official(pkg, theirs, conv_overrides).parameters())


def _flatten(state: dict) -> dict:
    """A state dict as one flat tensor + its keys and shapes (a small fixture: one record, not one per tensor)."""
    return {"keys": list(state), "shapes": [list(v.shape) for v in state.values()],
            "values": torch.cat([v.reshape(-1) for v in state.values()]).float()}


def _unflatten(flat: dict) -> dict:
    sizes = [math.prod(s) for s in flat["shapes"]]
    values = flat["values"].double().split(sizes)
    return {k: v.reshape(s) for k, v, s in zip(flat["keys"], values, flat["shapes"], strict=True)}


def _load_fixture() -> dict:
    with gzip.open(FIXTURE, "rb") as f:
        record = torch.load(io.BytesIO(f.read()), weights_only=True)
    for case in record["cases"].values():
        case["state"] = _unflatten(case["state"])
    return record


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_with_official_fixture(name, dtype):
    record = _load_fixture()["cases"][name]
    ours = OrchidOperator(D, l_max=L, **CASES[name][0]).to(torch.float64).eval()
    ours.load_state_dict(record["state"])
    ours = ours.to(dtype)
    with torch.no_grad():
        y = ours(record["input"].to(dtype))  # stored in float32 (exact in float64); the output in float64
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    expected = record["output"].to(dtype)
    assert expected.abs().max() > 1e-2  # a real signal, not zeros
    torch.testing.assert_close(y, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_count_equals_official(name):
    """Ours + the positional features (the official code registers them as parameters) == the official count."""
    record = _load_fixture()["cases"][name]
    ours = OrchidOperator(D, l_max=L, **CASES[name][0])
    pos = sum(f.z.numel() for f in (ours.static, ours.static_res) if f is not None)
    assert sum(p.numel() for p in ours.parameters()) + pos == record["official_params"]
    trainable = OrchidOperator(D, l_max=L, trainable_positional=True, **CASES[name][0])
    assert sum(p.numel() for p in trainable.parameters()) == record["official_params"]


def test_fixture_is_sensitive_to_the_weights():
    """The comparison can fail: one changed weight (the data-dependent kernel's) moves the output past tolerance."""
    record = _load_fixture()["cases"]["abs_time"]
    ours = OrchidOperator(D, l_max=L, **CASES["abs_time"][0]).to(torch.float64).eval()
    ours.load_state_dict(record["state"])
    with torch.no_grad():
        ours.conditioning.freq_conv.weight[0, 0, 0] += 0.1
        y = ours(record["input"].double())
    assert (y - record["output"]).abs().max() > 1e-6


@pytest.mark.parametrize("design", ["abs", "xcorr"])
def test_official_conditioning_is_shift_invariant_where_it_can_be(design):
    """With a pointwise time convolution and an L-point spectrum (frequency-domain kernel) the official
    conditioning network is exactly invariant to circular shifts; its zero-padded 3-tap time convolution
    breaks that at the edges (the official design, kept)."""
    from panconv_sequence.models.orchid import OrchidConditioning

    torch.manual_seed(0)
    x = torch.randn(2, 6, 40, dtype=torch.float64)
    exact = OrchidConditioning(6, design, kernel_size=1, domain="freq").double()
    for shift in (1, 9):
        torch.testing.assert_close(exact(torch.roll(x, shift, -1)), exact(x), atol=1e-12, rtol=0)
    padded = OrchidConditioning(6, design, kernel_size=3, domain="freq").double()
    assert (padded(torch.roll(x, 9, -1)) - padded(x)).abs().max() > 1e-6


@pytest.mark.parametrize("design", ["abs", "xcorr"])
def test_half_precision_runs_the_spectra_in_float32(design):
    """bfloat16 weights and inputs (and CPU autocast): FFTs in float32, output close to the float32 forward."""
    torch.manual_seed(0)
    op = OrchidOperator(8, l_max=32, design=design, filter_order=8).eval()
    x = torch.randn(2, 32, 8)
    with torch.no_grad():
        ref = op(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = op(x)
        half = op.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    for y in (auto, half):
        assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_param_groups_name_the_static_filters():
    """Every group key matches parameters (the engine's substring rule), and only the static filters' MLPs."""
    model = Orchid(d_model=8, n_layers=2, vocab_size=5, l_max=16, filter_order=8, trainable_positional=True,
                   filter_lr_mult=0.5)
    groups = model.param_groups()
    names = [n for n, _ in model.named_parameters()]
    for key, rule in groups.items():
        matched = [n for n in names if key in n]
        assert matched, key
        assert all(".static" in n for n in matched) and rule["decay_mult"] == 0.0
    assert groups["mixer.static.head"]["lr_mult"] == 0.5 and groups["mixer.static.z"]["lr_mult"] == 0.005
    grouped = {n for n in names for key in groups if key in n}
    assert not any("conditioning" in n or "in_proj" in n or n.endswith("static.bias") for n in grouped)


def test_backbone_uses_the_official_block_by_default():
    model = Orchid(d_model=8, n_layers=1, vocab_size=5, l_max=16, filter_order=8)
    assert isinstance(model.blocks[0].mixer, OrchidOperator)
    assert model.blocks[0].mixer.kernel_domain == "time"
    xcorr = Orchid(d_model=8, n_layers=1, vocab_size=5, l_max=16, filter_order=8, design="xcorr")
    assert xcorr.blocks[0].mixer.kernel_domain == "freq"
    with pytest.raises(ValueError, match="frequency-domain"):
        Orchid(d_model=8, n_layers=1, vocab_size=5, design="xcorr", kernel_domain="time")


@pytest.mark.skipif(official_package() is None, reason="ORCHID_OFFICIAL (orchid_standalone and its deps) not set")
@pytest.mark.parametrize("name", list(CASES))
def test_parity_live(name):
    pkg = official_package()
    ours_kwargs, theirs, conv = CASES[name]
    ours = build_ours(ours_kwargs, seed=7)
    x = torch.randn(3, L, D, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official_forward(pkg, ours, theirs, conv, x), atol=1e-10, rtol=1e-10)


def record() -> None:
    pkg = official_package()
    if pkg is None:
        raise SystemExit("set ORCHID_OFFICIAL to the directories holding orchid_standalone and its dependencies")
    out = {"source": SOURCE, "cases": {}}
    for name, (ours_kwargs, theirs, conv) in CASES.items():
        ours = build_ours(ours_kwargs)
        x = torch.randn(BATCH, L, D, generator=torch.Generator().manual_seed(1)).double()  # float32 values
        y = official_forward(pkg, ours, theirs, conv, x)
        out["cases"][name] = {"state": _flatten(ours.state_dict()), "input": x.float(),
                              "output": y, "official_params": official_param_count(pkg, theirs, conv)}
        print(f"{name}: |y| max {y.abs().max():.3g}, official params {out['cases'][name]['official_params']}")
    buffer = io.BytesIO()
    torch.save(out, buffer)
    FIXTURE.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    record()
