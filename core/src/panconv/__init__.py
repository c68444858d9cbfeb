"""panconv: convolution-era models across domains behind one interface.

Importing ``panconv`` is cheap (no torch); the interfaces in :mod:`panconv.api` and the
helpers below import torch on first use.
"""

from __future__ import annotations

from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DuplicateComponentError,
    PanconvError,
    PluginError,
    UnknownComponentError,
)
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "DuplicateComponentError", "PanconvError", "PluginError",
    "UnknownComponentError", "__version__", "build", "create_model", "hookimpl", "list_components",
]


def build(kind: str, name: str, *args, **kwargs):
    """Build a registered component: ``panconv.build("backbone", "vision.ConvNeXt")``."""
    from .plugins import build as _build

    return _build(kind, name, *args, **kwargs)


def create_model(config: dict | str, **overrides):
    """Build a model from a registered name or a ``model:`` config section.

    ``create_model("graph.LightGCN", n_users=10, n_items=20)`` or
    ``create_model({"backbone": {"type": "core.MLP"}, "head": {"type": "core.LinearClsHead"}})``.
    """
    from .builder import build_model

    if isinstance(config, str):
        config = {"type": config}
    return build_model({**config, **overrides})


def list_components(kind: str | None = None, pattern: str | None = None) -> list[str]:
    """Qualified names of registered components, optionally of one kind / matching a glob."""
    import fnmatch

    from .plugins import get_manager
    from .registry import KINDS

    entries = get_manager().entries([kind] if kind else KINDS)
    names = [e.qualname for e in entries]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n.lower(), f"*{pattern.lower()}*")]
