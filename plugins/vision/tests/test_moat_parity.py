"""MOAT against the official TensorFlow 2 code (google-research/deeplab2 ``model/pixel_encoder/moat.py``) on
shared weights, through a recorded fixture (CI has no TensorFlow).

``fixtures/moat_parity.npz`` holds the official stem / stage outputs and logits of a small MOAT (every layer kind
of the registered sizes) for weights and images drawn from a seed (no weights are stored: both sides regenerate
them), in three settings: global attention at 64x64 (shortcut pool 2) and 72x72 (odd maps; pool 3, the model
zoo's setting), and unshifted 2x2 window attention (dense tasks); and the official parameter count of every
MOAT / tiny-MOAT size with its 1000-class head. Regenerate with ``fixtures/moat_record.py`` (its docstring).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import panconv
from panconv_vision.models import moat
from panconv_vision.testing import num_parameters, paper_classifier

FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("moat_record", FIXTURES / "moat_record.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)  # the recorder's config, cases and seeded draws (it imports numpy only)

# fp32: max |ours - official| <= 1e-5 (measured: <= 2.9e-6 on stage outputs that reach ~10, <= 1e-6 on logits)
TOL = 1e-5


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(FIXTURES / "moat_parity.npz"))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _close(value: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((value - expected).abs().max() <= TOL)


_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_MBCONV = {"pre_norm": "norm", "expand_conv": "expand", "expand_norm": "expand_norm", "depthwise_conv": "dwconv",
           "depthwise_norm": "dw_norm", "se/reduce_conv2d": "se.fc1", "se/expand_conv2d": "se.fc2",
           "shrink_conv": "project", "shortcut_conv": "shortcut"}


def map_official(weights: dict[str, np.ndarray], block_types) -> dict[str, torch.Tensor]:
    """Official MOAT variables (TensorFlow names) -> the state dict of ``MOAT -> PoolNorm -> LinearClsHead``."""
    sd: dict[str, torch.Tensor] = {}
    for name, value in weights.items():
        path = name.split(":")[0].removeprefix("moat/")
        scope, leaf = path.rsplit("/", 1)
        if leaf == "kernel" and scope == "logits_head":
            sd["head.fc.weight"] = _t(value[0, 0].T)
            continue
        if leaf == "kernel":
            tensor = _t(value.transpose(3, 2, 0, 1))
        elif leaf == "depthwise_kernel":
            tensor = _t(value.transpose(2, 3, 0, 1))
        elif leaf == "weight":  # TrailDense: (C, heads, head) -> Linear (C_out, C_in); o: (heads, head, C)
            tensor = _t(value.reshape(-1, value.shape[-1]).T if scope.endswith("/o") else
                        value.reshape(value.shape[0], -1).T)
        elif leaf == "bias":
            tensor = _t(value.reshape(-1))  # q/k/v biases are (heads, head)
        else:
            tensor = _t(value)
        if scope == "logits_head":
            sd["head.fc.bias"] = tensor
            continue
        if scope == "final_layer_norm":
            sd[f"neck.norm.{ {'gamma': 'weight', 'beta': 'bias'}[leaf]}"] = tensor
            continue
        if scope.startswith(("conv_", "norm_")):  # the stem: conv_0, norm_0 (BN), conv_1
            index = {"conv_0": 0, "norm_0": 1, "conv_1": 3}[scope]
            key = _BN[leaf] if scope.startswith("norm") else ("weight" if leaf == "kernel" else "bias")
            sd[f"backbone.stem.{index}.{key}"] = tensor
            continue
        block, layer = scope.split("/", 1)
        stage, index = (int(i) for i in block.removeprefix("block_").split("_"))
        prefix = f"backbone.stages.{stage}.{index}."
        if layer == "attention_norm":
            sd[f"{prefix}norm.{ {'gamma': 'weight', 'beta': 'bias'}[leaf]}"] = tensor
        elif layer.startswith("attention"):
            proj = layer.split("/")[1] if "/" in layer else ""
            sd[f"{prefix}attn.{proj + '.' if proj else ''}{leaf}"] = tensor
        else:
            prefix += "mbconv." if block_types[stage] == "moat" else ""
            key = _BN[leaf] if layer.endswith("norm") else "weight" if leaf.endswith("kernel") else "bias"
            sd[f"{prefix}{_MBCONV[layer]}.{key}"] = tensor
    return sd


def build_ours(pool_size: int, window: int | None) -> torch.nn.Module:
    c = record.CONFIG
    return panconv.create_model({
        "backbone": {"type": "vision.MOAT", "stem_dim": c["stem_size"][0], "dims": c["hidden_size"],
                     "depths": c["num_blocks"], "block_types": c["block_type"], "head_dim": c["head_size"],
                     "pool_size": pool_size, "window_size": window},
        "neck": {"type": "vision.PoolNorm", "eps": 1e-5},
        "head": {"type": "core.LinearClsHead", "num_classes": c["build_classification_head_with_class_num"]},
    }).eval()


@pytest.mark.parametrize("case_index", range(len(record.CASES)), ids=[c[0] for c in record.CASES])
def test_moat_matches_the_official_code(recorded, case_index):
    case, side, pool, windows = record.CASES[case_index]
    rng = np.random.RandomState(int(recorded["seed"]))
    weights = record.draw(rng, recorded["names"], [tuple(int(n) for n in s.split(",")) for s in recorded["shapes"]])
    model = build_ours(pool, None if windows[-1] is None else windows[-1][0])
    state = map_official(weights, record.CONFIG["block_type"])
    assert set(state) == set(model.state_dict()) - {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    model.load_state_dict(state, strict=False)
    image = _t(record.case_image(case_index)).permute(0, 3, 1, 2)
    with torch.no_grad():
        stem = model.backbone.stem(image)
        stages = model.backbone(image)
        logits = model.head(model.neck(stages))
    for stage, value in enumerate([stem, *stages], start=1):
        value = value.permute(0, 2, 3, 1)  # NHWC, as TensorFlow
        assert tuple(value.shape) == tuple(recorded[f"{case}/shape{stage}"]), (case, stage)
        if f"{case}/index{stage}" in recorded:
            value = value[tuple(_t(recorded[f"{case}/index{stage}"].astype(np.int64)).T)]
        expected = _t(recorded[f"{case}/stage{stage}"])
        assert expected.abs().max() > 0.1
        assert _close(value, expected), (case, stage, float((value - expected).abs().max()))
    assert _close(logits, _t(recorded[f"{case}/logits"])), (case, float((logits - _t(recorded[f"{case}/logits"]))
                                                                        .abs().max()))


def test_parameter_counts_equal_the_official_models(recorded):
    """Every registered size against the official ``get_model`` (1000-class head), not only the paper's table."""
    for name in record.ZOO:
        with torch.device("meta"):
            ours = num_parameters(paper_classifier(f"vision.{name}"))
        assert ours == int(recorded[f"params/{name}"]), name


@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("kernel", [2, 3])
def test_same_padding_layers_are_tensorflows_definition(size, kernel):
    """``"SAME"``: output ``ceil(n / 2)``, window ``o`` covers inputs ``2o - before ... 2o - before + k - 1``,
    ``before = total // 2``; the average pool divides by the inputs inside the map only."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, size, size)
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
    assert moat.same_padding(size, kernel, 2) == (total // 2, total - total // 2)
    out = -(-size // 2)
    pooled = moat.SameAvgPool2d(kernel, 2)(x)
    conv = moat.SameConv2d(2, 2, kernel, stride=2, groups=2, bias=False)
    with torch.no_grad():
        convolved = conv(x)
    for oy in range(out):
        for ox in range(out):
            y0, x0 = 2 * oy - total // 2, 2 * ox - total // 2
            window = x[0, :, max(y0, 0):y0 + kernel, max(x0, 0):x0 + kernel]
            assert torch.allclose(pooled[0, :, oy, ox], window.mean((1, 2)), atol=1e-6)
            padded = torch.zeros(2, kernel, kernel)
            padded[:, max(-y0, 0):max(-y0, 0) + window.shape[1], max(-x0, 0):max(-x0, 0) + window.shape[2]] = window
            assert torch.allclose(convolved[0, :, oy, ox], (padded * conv.weight[:, 0]).sum((1, 2)), atol=1e-5)
