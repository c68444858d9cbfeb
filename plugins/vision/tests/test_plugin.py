"""What panconv-vision registers, checked through the core's public registry API.

Every test iterates the registry: a registration whose module or attribute is missing fails
here (no skipping), and a new backbone is covered without editing a list.
"""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv.api import Backbone, feature_info_of

KINDS = ("backbone", "neck", "dataset", "transform")
MODELS_DIR = Path(__file__).resolve().parents[1] / "src" / "panconv_vision" / "models"


def vision(kind: str) -> list[str]:
    return sorted(n for n in panconv.list_components(kind, "vision.*") if n.startswith("vision."))


def backbone_classes() -> list[str]:
    """The registered backbone *classes* (not their size variants)."""
    return [n for n in vision("backbone") if inspect.isclass(panconv.get_component("backbone", n))]


def base_class(factory):
    """The class a registered factory builds: the class itself, or a size variant's class."""
    return factory if inspect.isclass(factory) else factory.factory


#: model files that hold blocks other families share, not a family of their own
SHARED_MODULES = ("__init__", "layers", "reparam", "attention", "vmamba_blocks", "ssl")


def test_registers_every_kind_it_provides():
    assert {k: len(vision(k)) > 0 for k in KINDS} == dict.fromkeys(KINDS, True)
    assert {"vision.ConvNeXt", "vision.HorNet", "vision.UniRepLKNet", "vision.RepLKNet"} <= set(vision("backbone"))
    assert {"vision.PoolNorm", "vision.FPN"} <= set(vision("neck"))
    assert {"vision.MNIST", "vision.OpenCVDigits"} <= set(vision("dataset"))
    assert "vision.Mixup" in vision("transform")


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_target_imports(kind):
    """Loading an entry imports its module: a missing module or attribute raises here."""
    for name in vision(kind):
        factory = panconv.get_component(kind, name)
        assert callable(factory), name


def test_every_model_family_file_is_registered():
    """Each models/<family>.py (but the shared blocks) provides at least one registered component."""
    registered = {base_class(panconv.get_component(kind, name)).__module__
                  for kind in ("model", "backbone", "neck", "head") for name in vision(kind)}
    families = {f"panconv_vision.models.{p.stem}" for p in MODELS_DIR.glob("*.py")
                if p.stem not in SHARED_MODULES}
    assert families <= registered


def test_size_variants_build_their_registered_class():
    """A size variant is a registered class with constructor arguments fixed as data, and shows its signature."""
    classes = {base_class(panconv.get_component("backbone", n)) for n in backbone_classes()}
    variants = [n for n in vision("backbone") if n not in backbone_classes()]
    assert len(variants) >= 25
    for name in variants:
        factory = panconv.get_component("backbone", name)
        assert base_class(factory) in classes, name
        with torch.device("meta"):
            model = factory()
        assert type(model) is base_class(factory), name
        params = inspect.signature(factory).parameters
        # the real signature, so configs are checked
        assert list(params) == list(inspect.signature(base_class(factory)).parameters), name


def test_importing_the_plugin_imports_no_torch():
    code = "import sys, panconv_vision.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", backbone_classes())
def test_backbone_contract(name):
    """example_config/example_inputs, one output per feature_info entry, gradients reach every parameter."""
    cls = panconv.get_component("backbone", name)
    assert issubclass(cls, Backbone)
    model = cls(**cls.example_config())
    x = model.example_inputs(2)
    outs = model(x)
    info = feature_info_of(model)
    assert len(outs) == len(info)
    for out, f in zip(outs, info):
        assert out.shape[1] == f.channels, (name, f)
        if out.dim() > 2:  # a map (token outputs such as a class token are (N, C)): the stride is its reduction
            assert out.shape[-1] in (x.shape[-1] // f.reduction, -(-x.shape[-1] // f.reduction)), (name, f)
    sum(o.float().mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())
    gray = cls(**cls.example_config(), in_channels=1)
    assert len(gray(gray.example_inputs(1))) == len(info)


@pytest.mark.parametrize("name", backbone_classes())
def test_paper_head_protocol(name):
    """Each backbone class says which classifier its paper counts: config sections for a 1000-class
    head (and a neck, where the paper pools or normalises between), which compose with it."""
    cls = panconv.get_component("backbone", name)
    head = cls.paper_head
    assert "head" in head and set(head) <= {"neck", "head"}
    assert head["head"]["num_classes"] == 1000
    model = panconv.create_model({"backbone": {"type": name, **cls.example_config()}, **head})
    model.eval()
    with torch.no_grad():
        logits = model({"inputs": model.backbone.example_inputs(2)})
    assert logits.shape == (2, 1000)


@pytest.mark.parametrize("name", backbone_classes())
def test_in_channels_and_num_classes_come_from_declared_metadata(name):
    cls = panconv.get_component("backbone", name)
    assert cls.metadata_inputs == ("in_channels",)
    cfg = {"backbone": {"type": name, **cls.example_config()}, "neck": {"type": "vision.PoolNorm"},
           "head": {"type": "core.LinearClsHead"}}
    with torch.device("meta"):
        model = panconv.create_model(cfg, metadata={"num_classes": 7, "in_channels": 1})
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1 and model.head.fc.out_features == 7


def test_mixup_declares_batch_level_and_num_classes_from_metadata():
    mixup = panconv.get_component("transform", "vision.Mixup")
    assert mixup.level == "batch" and mixup.metadata_inputs == ("num_classes",)
