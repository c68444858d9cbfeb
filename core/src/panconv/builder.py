"""Build components from config sections (``{type: name, **kwargs}``).

``model`` is either a whole model (``{type: graph.LightGCN, ...}``) or a composition
(``{backbone: {...}, neck: {...}, head: {...}}``); necks and heads receive the previous
stage's ``feature_info`` as ``in_features``. Constructor arguments left unset whose names
are dataset metadata keys (``num_classes``, ``n_users``) are filled from ``metadata``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .plugins import get

COMPOSED_KEYS = ("backbone", "neck", "head")
INJECTED = ("in_features",)


def call_with_metadata(factory: Callable, kwargs: dict, metadata: dict | None, *args) -> Any:
    """Call ``factory(*args, **kwargs)``, adding unset parameters that ``metadata`` provides."""
    if metadata:
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        for name in params:
            if name not in kwargs and name in metadata:
                kwargs = {**kwargs, name: metadata[name]}
    return factory(*args, **kwargs)


def build_component(kind: str, cfg: dict, *args, metadata: dict | None = None, where: str | None = None) -> Any:
    cfg = dict(cfg)
    name = cfg.pop("type")
    factory = get(kind, name, where=where).load()
    return call_with_metadata(factory, cfg, metadata, *args)


def build_model(cfg: dict, metadata: dict | None = None):
    """Build the ``model`` config section (whole or composed)."""
    from .api.modules import ComposedModel, feature_info_of

    if "type" in cfg:
        return build_component("model", cfg, metadata=metadata)
    backbone = build_component("backbone", cfg["backbone"], metadata=metadata)
    info = feature_info_of(backbone)
    neck = None
    if cfg.get("neck"):
        neck = build_component("neck", cfg["neck"], info, metadata=metadata)
        info = feature_info_of(neck)
    head = build_component("head", cfg["head"], info, metadata=metadata)
    return ComposedModel(backbone, head, neck)
