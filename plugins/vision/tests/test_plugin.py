import importlib
import subprocess
import sys

import pytest
import torch

from panconv.api import feature_info_of
from panconv.plugins import get_manager
from panconv_vision import plugin

MINE = ("panconv_vision.models.convnext", "panconv_vision.models.hornet", "panconv_vision.models.classifier",
        "panconv_vision.models.fpn", "panconv_vision.datasets.digits")


def vision_entries():
    return {(e.kind, e.name): e for e in get_manager().entries() if e.plugin == "vision"}


def test_registrations():
    entries = vision_entries()
    backbones = {name for kind, name in entries if kind == "backbone"}
    assert set(plugin.CONVNEXT) | set(plugin.HORNET) | set(plugin.UNIREPLKNET) | set(plugin.REPLKNET) <= backbones
    assert {"ConvNeXt", "HorNet", "UniRepLKNet", "RepLKNet"} <= backbones
    assert {("neck", "PoolNorm"), ("neck", "FPN"), ("dataset", "MNIST"), ("dataset", "OpenCVDigits"),
            ("transform", "Mixup")} <= set(entries)
    assert len(plugin.HORNET) == 8 and len(plugin.UNIREPLKNET) == 9


@pytest.mark.parametrize("module", MINE)
def test_every_entry_of_this_half_loads(module):
    targets = [e for e in vision_entries().values() if e.target.startswith(module + ":")]
    assert targets
    for entry in targets:
        assert callable(entry.load())


def test_entries_of_the_large_kernel_models_resolve_when_their_modules_exist():
    for module in ("panconv_vision.models.unireplknet", "panconv_vision.models.replknet"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # written by the other half of the plugin; not there yet
            raise
        for entry in vision_entries().values():
            if entry.target.startswith(module + ":"):
                assert callable(entry.load()), entry.target


def test_importing_the_plugin_imports_no_torch():
    code = "import sys, panconv_vision.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module,cls", [("panconv_vision.models.convnext", "ConvNeXt"),
                                        ("panconv_vision.models.hornet", "HorNet")])
def test_backbone_contract(module, cls):
    """example_config/example_inputs, one output per feature_info entry, gradients reach every parameter."""
    Backbone = getattr(importlib.import_module(module), cls)
    model = Backbone(**Backbone.example_config())
    x = model.example_inputs(2)
    outs = model(x)
    info = feature_info_of(model)
    assert len(outs) == len(info)
    for out, f in zip(outs, info):
        assert out.shape[1] == f.channels and out.shape[-1] == x.shape[-1] // f.reduction
    sum(o.float().mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())
    gray = Backbone(**Backbone.example_config(), in_channels=1)
    assert len(gray(gray.example_inputs(1))) == len(info)


def test_in_channels_and_num_classes_come_from_metadata():
    from panconv.builder import build_model

    for backbone in ("vision.convnext_tiny", "vision.hornet_tiny_gf"):
        cfg = {"backbone": {"type": backbone}, "neck": {"type": "vision.PoolNorm"},
               "head": {"type": "core.LinearClsHead"}}
        with torch.device("meta"):
            model = build_model(cfg, {"num_classes": 7, "in_channels": 1})
        assert model.backbone.stem.conv.in_channels == 1 and model.head.fc.out_features == 7
