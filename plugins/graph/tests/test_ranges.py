"""Bad values in the graph example configs stop at validation (``--dry-run``): exit code 2 and one
``error:`` line that names the config file and the key. The ranges come from the components'
signatures (``typing.Annotated`` with ``annotated_types`` constraints), so every registered
component is also checked for numeric parameters left without one.

``examples/lightgcn.yaml`` sets ``data.root`` relative to the repository root, so the runs start
there; a dry run reads no data.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

import panconv
from panconv.testing import assert_rejected_at_validation, dry_run

REPO = Path(__file__).resolve().parents[3]
LIGHTGCN, NGCF, MF = "examples/lightgcn.yaml", "examples/ngcf.yaml", "examples/mf.yaml"
EXAMPLES = (LIGHTGCN, NGCF, MF)
RANKING = "eval.evaluators=[{type: graph.FullRanking, ks: %s}]"

# (example config, --set override, the key path the error names)
BAD_VALUES = [
    # models
    (LIGHTGCN, "model.embed_dim=0", "model.embed_dim"),
    (LIGHTGCN, "model.embed_dim=-64", "model.embed_dim"),
    (LIGHTGCN, "model.embed_dim=null", "model.embed_dim"),
    (LIGHTGCN, "model.embed_dim=64.5", "model.embed_dim"),
    (LIGHTGCN, "model.embed_dim=.nan", "model.embed_dim"),
    (LIGHTGCN, "model.n_layers=-1", "model.n_layers"),
    (LIGHTGCN, "model.n_layers=null", "model.n_layers"),
    (LIGHTGCN, "model.reg=-1e-4", "model.reg"),
    (LIGHTGCN, "model.reg=.nan", "model.reg"),
    (LIGHTGCN, "model.init_std=0", "model.init_std"),
    (LIGHTGCN, "model.backend=dense", "model.backend"),
    (LIGHTGCN, "model.n_users=-1", "model.n_users"),
    (LIGHTGCN, "model.n_items=0", "model.n_items"),
    (NGCF, "model.layer_dims=[64,-64]", "model.layer_dims"),
    (NGCF, "model.layer_dims=[64,.nan]", "model.layer_dims"),
    (NGCF, "model.layer_dims=[64,'a']", "model.layer_dims"),
    (NGCF, "model.layer_dims=[]", "model.layer_dims"),
    (NGCF, "model.layer_dims=64,64", "model.layer_dims"),
    (NGCF, "model.layer_dims=null", "model.layer_dims"),
    (NGCF, "model.mess_dropout=-1", "model.mess_dropout"),
    (NGCF, "model.mess_dropout=1", "model.mess_dropout"),
    (NGCF, "model.node_dropout=1.5", "model.node_dropout"),
    (NGCF, "model.node_dropout=null", "model.node_dropout"),
    (NGCF, "model.leaky_slope=-0.2", "model.leaky_slope"),
    (NGCF, "model.embed_dim=0", "model.embed_dim"),
    (MF, "model.embed_dim=-1", "model.embed_dim"),
    (MF, "model.reg=-1", "model.reg"),
    (MF, "model.init_std=-0.1", "model.init_std"),
    # data set
    (LIGHTGCN, "data.seed=-1", "data.seed"),
    (LIGHTGCN, "data.seed=4294967296", "data.seed"),
    (LIGHTGCN, "data.seed=null", "data.seed"),
    (LIGHTGCN, "data.sampling=items", "data.sampling"),
    (MF, "data.seed=-2020", "data.seed"),
    # evaluator
    (LIGHTGCN, RANKING % "[0]", "eval.evaluators.0.ks"),
    (LIGHTGCN, RANKING % "[20, -5]", "eval.evaluators.0.ks"),
    (LIGHTGCN, RANKING % "[20, .nan]", "eval.evaluators.0.ks"),
    (LIGHTGCN, RANKING % "[]", "eval.evaluators.0.ks"),
    (LIGHTGCN, RANKING % "0", "eval.evaluators.0.ks"),
    (LIGHTGCN, RANKING % "null", "eval.evaluators.0.ks"),
    (LIGHTGCN, RANKING % "'20'", "eval.evaluators.0.ks"),
    (NGCF, RANKING % "[-1]", "eval.evaluators.0.ks"),
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_are_valid(example):
    """The unchanged examples pass, so each failure below is the bad value's."""
    code, out, err = dry_run(example, cwd=REPO)
    assert (code, err) == (0, ""), err
    assert "config is valid" in out


@pytest.mark.parametrize(("example", "override", "key"), BAD_VALUES,
                         ids=[f"{Path(e).stem}:{o}" for e, o, _ in BAD_VALUES])
def test_a_bad_value_stops_at_validation_with_one_line_naming_its_key(example, override, key):
    assert_rejected_at_validation(example, override, key, cwd=REPO)


# ---- every numeric constructor parameter of every registered component declares a range

def unconstrained(hint) -> bool:
    """Whether a bare ``int``/``float`` (one outside ``Annotated[...]``) occurs in ``hint``."""
    if hint in (int, float):
        return True
    if typing.get_origin(hint) in (typing.Annotated, typing.Literal):
        return False
    return any(unconstrained(arg) for arg in typing.get_args(hint) if arg is not Ellipsis)


def registered() -> list[tuple[str, str]]:
    return [(kind, name) for kind in ("model", "dataset", "evaluator")
            for name in panconv.list_components(kind, "graph.*") if name.startswith("graph.")]


def test_every_configurable_kind_is_covered():
    assert {kind for kind, _ in registered()} == {"model", "dataset", "evaluator"}


@pytest.mark.parametrize(("kind", "name"), registered())
def test_every_numeric_parameter_declares_its_range(kind, name):
    factory = panconv.get_component(kind, name)
    target = getattr(factory, "factory", factory)  # a size variant: check the class it builds
    hints = typing.get_type_hints(target.__init__, include_extras=True)
    params = inspect.signature(factory).parameters
    assert set(params) - {"root", "split"} <= set(hints), f"{name}: unannotated parameters"
    loose = [p for p in params if p in hints and unconstrained(hints[p])]
    assert not loose, f"{name}: numeric parameters without a declared range: {loose}"
