"""Bad values in the vision example configs stop at validation (``--dry-run``): exit code 2 and one
``error:`` line that names the config file and the key. The ranges come from the components'
signatures (``typing.Annotated`` with ``annotated_types`` constraints), so every registered
component is also checked for numeric parameters left without one.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

import panconv
from panconv.testing import assert_rejected_at_validation, dry_run

REPO = Path(__file__).resolve().parents[3]
CONVNEXT, HORNET = "examples/vision_convnext_mnist.yaml", "examples/vision_hornet_mnist.yaml"
UNIREPLKNET, REPLKNET = "examples/vision_unireplknet_mnist.yaml", "examples/vision_replknet_mnist.yaml"
EXAMPLES = (CONVNEXT, HORNET, UNIREPLKNET, REPLKNET)
MIXUP = "data.transforms=[{type: vision.Mixup, splits: [train], %s}]"

# (example config, --set override, the key path the error names)
BAD_VALUES = [
    # backbones: sizes, lists of sizes, rates
    (CONVNEXT, "model.backbone.depths=[1,-1,2]", "model.backbone.depths"),
    (CONVNEXT, "model.backbone.depths=[1,.nan,2]", "model.backbone.depths"),
    (CONVNEXT, "model.backbone.depths=[]", "model.backbone.depths"),
    (CONVNEXT, "model.backbone.depths=null", "model.backbone.depths"),
    (CONVNEXT, "model.backbone.depths=1,1,2", "model.backbone.depths"),
    (CONVNEXT, "model.backbone.dims=[24,0,96]", "model.backbone.dims"),
    (CONVNEXT, "model.backbone.dims=[24,'a',96]", "model.backbone.dims"),
    (CONVNEXT, "model.backbone.dims=[24,.inf,96]", "model.backbone.dims"),
    (CONVNEXT, "model.backbone.in_channels=0", "model.backbone.in_channels"),
    (CONVNEXT, "model.backbone.patch_size=0", "model.backbone.patch_size"),
    (CONVNEXT, "model.backbone.kernel_size=-7", "model.backbone.kernel_size"),
    (CONVNEXT, "model.backbone.kernel_size=null", "model.backbone.kernel_size"),
    (CONVNEXT, "model.backbone.drop_path_rate=-0.1", "model.backbone.drop_path_rate"),
    (CONVNEXT, "model.backbone.drop_path_rate=1.0", "model.backbone.drop_path_rate"),
    (CONVNEXT, "model.backbone.drop_path_rate=.nan", "model.backbone.drop_path_rate"),
    (CONVNEXT, "model.backbone.layer_scale_init_value=-1e-6", "model.backbone.layer_scale_init_value"),
    (CONVNEXT, "model.backbone.kernel_size=6", "model.backbone"),  # even: the constructor's own check
    (HORNET, "model.backbone.orders=[0,3,4]", "model.backbone.orders"),
    (HORNET, "model.backbone.orders=234", "model.backbone.orders"),
    (HORNET, "model.backbone.scale=0", "model.backbone.scale"),
    (HORNET, "model.backbone.global_filters=[null,null,[4,3,2]]", "model.backbone.global_filters"),
    (HORNET, "model.backbone.global_filters=[null,null,[0,2]]", "model.backbone.global_filters"),
    (UNIREPLKNET, "model.backbone.dims=[2,48,96,192]", "model.backbone.dims"),
    (UNIREPLKNET, "model.backbone.depths=[1,1,-2,1]", "model.backbone.depths"),
    (UNIREPLKNET, "model.backbone.kernel_sizes=[[5],[7],[13,4],[3]]", "model.backbone.kernel_sizes"),
    (UNIREPLKNET, "model.backbone.layer_scale_init_value=-1", "model.backbone.layer_scale_init_value"),
    (REPLKNET, "model.backbone.kernel_sizes=[13,0,13,7]", "model.backbone.kernel_sizes"),
    (REPLKNET, "model.backbone.small_kernel=0", "model.backbone.small_kernel"),
    (REPLKNET, "model.backbone.dw_ratio=0", "model.backbone.dw_ratio"),
    (REPLKNET, "model.backbone.ffn_ratio=-4", "model.backbone.ffn_ratio"),
    (REPLKNET, "model.backbone.small_kernel=4", "model.backbone"),  # even: the constructor's own check
    (REPLKNET, "model.backbone.dw_ratio=0.01", "model.backbone"),   # no channels left: idem
    # neck and head
    (CONVNEXT, "model.neck.eps=0", "model.neck.eps"),
    (CONVNEXT, "model.neck.norm=group", "model.neck.norm"),
    (CONVNEXT, "model.head.num_classes=-1", "model.head.num_classes"),
    (CONVNEXT, "model.head.dropout=-1", "model.head.dropout"),
    (CONVNEXT, "model.head.label_smoothing=2", "model.head.label_smoothing"),
    # data set
    (CONVNEXT, "data.size=0", "data.size"),
    (CONVNEXT, "data.size=-28", "data.size"),
    (CONVNEXT, "data.size=null", "data.size"),
    (CONVNEXT, "data.size=28.5", "data.size"),
    (CONVNEXT, "data.channels=2", "data.channels"),
    (CONVNEXT, "data.limit=0", "data.limit"),
    (CONVNEXT, "data.shift=-1", "data.shift"),
    (CONVNEXT, "data.seed=-1", "data.seed"),
    (CONVNEXT, "data.seed=4294967296", "data.seed"),
    # transform
    (CONVNEXT, MIXUP % "alpha: 0", "data.transforms.0.alpha"),
    (CONVNEXT, MIXUP % "alpha: -1", "data.transforms.0.alpha"),
    (CONVNEXT, MIXUP % "prob: 1.5", "data.transforms.0.prob"),
    (CONVNEXT, MIXUP % "label_smoothing: 1", "data.transforms.0.label_smoothing"),
    (CONVNEXT, MIXUP % "num_classes: 1", "data.transforms.0.num_classes"),
    (CONVNEXT, MIXUP % "seed: -3", "data.transforms.0.seed"),
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_are_valid(example):
    """The unchanged examples pass, so each failure below is the bad value's."""
    code, out, err = dry_run(example, cwd=REPO)
    assert (code, err) == (0, ""), err
    assert "config is valid" in out


@pytest.mark.parametrize(("example", "override", "key"), BAD_VALUES,
                         ids=[f"{e.split('_')[1]}:{o}" for e, o, _ in BAD_VALUES])
def test_a_bad_value_stops_at_validation_with_one_line_naming_its_key(example, override, key):
    assert_rejected_at_validation(example, override, key, cwd=REPO)


# ---- every numeric constructor parameter of every registered component declares a range

#: parameters whose range depends on another argument and is checked by the constructor
#: (stage indices count from the end when negative, up to the number of stages)
FREE = {"out_indices"}


def unconstrained(hint) -> bool:
    """Whether a bare ``int``/``float`` (one outside ``Annotated[...]``) occurs in ``hint``."""
    if hint in (int, float):
        return True
    if typing.get_origin(hint) is typing.Annotated or typing.get_origin(hint) is typing.Literal:
        return False
    return any(unconstrained(arg) for arg in typing.get_args(hint) if arg is not Ellipsis)


def registered() -> list[tuple[str, str]]:
    return [(kind, name) for kind in ("backbone", "neck", "head", "model", "dataset", "evaluator", "transform")
            for name in panconv.list_components(kind, "vision.*") if name.startswith("vision.")]


@pytest.mark.parametrize(("kind", "name"), registered())
def test_every_numeric_parameter_declares_its_range(kind, name):
    factory = panconv.get_component(kind, name)
    base = getattr(factory, "factory", factory)  # a size variant's class
    hints = typing.get_type_hints(base.__init__ if inspect.isclass(base) else base, include_extras=True)
    params = inspect.signature(factory).parameters
    assert set(params) - {"root", "split", "in_features"} <= set(hints), f"{name}: unannotated parameters"
    loose = [p for p in params if p not in FREE and p in hints and unconstrained(hints[p])]
    assert not loose, f"{name}: numeric parameters without a declared range: {loose}"


def test_unireplknet_block_kernels_are_the_sizes_its_blocks_build():
    from panconv_vision.models.unireplknet import DILATED_BRANCHES, BlockKernel, UniRepLKNetBlock

    declared = set(typing.get_args(BlockKernel))
    assert declared == {0, 3, 5} | {k for k in DILATED_BRANCHES if k >= 7}
    for k in declared:  # each builds (the constructor accepts exactly these)
        UniRepLKNetBlock(8, k)
    for k in (1, 2, 4, 6, 19):
        with pytest.raises(ValueError):
            UniRepLKNetBlock(8, k)
