"""panconv: convolution-era models across domains behind one interface.

Importing ``panconv`` is cheap (no torch); the interfaces in :mod:`panconv.api` and the
helpers below import torch on first use.
"""

from __future__ import annotations

from .errors import (
    AmbiguousNameError,
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
    "AmbiguousNameError", "CheckpointError", "ConfigError", "DataError", "DuplicateComponentError", "PanconvError",
    "PluginError", "UnknownComponentError", "__version__", "build", "build_datasets", "create_model",
    "get_component", "hookimpl", "list_components", "list_models", "load_config", "load_model",
    "recompute_batchnorm",
]


def build(kind: str, name: str, *args, **kwargs):
    """Build a registered component: ``panconv.build("backbone", "vision.ConvNeXt")``."""
    from .plugins import build as _build

    return _build(kind, name, *args, **kwargs)


def create_model(name_or_config, *, metadata=None, **kwargs):
    """Build a model from a registered name or a ``model:`` config section (see :mod:`panconv.factory`)."""
    from .factory import create_model as _create

    return _create(name_or_config, metadata=metadata, **kwargs)


def list_models(pattern=None, kinds=("model", "backbone")):
    """Registered models and backbones matching a glob (``"convnext*"``) or substring."""
    from .factory import list_models as _list

    return _list(pattern, kinds)


def load_model(path, *, config=None, device="cpu", attach_data=None, data_root=None):
    """A ready ``eval()`` model from a work dir or checkpoint (see :func:`panconv.factory.load_model`)."""
    from .factory import load_model as _load

    return _load(path, config=config, device=device, attach_data=attach_data, data_root=data_root)


def recompute_batchnorm(model, batches) -> int:
    """Precise BN: the model's batch-norm running statistics become the average over ``batches`` under its
    current weights; no weight changes (see :mod:`panconv.precise_bn`; ``panconv precise-bn`` on a checkpoint)."""
    from .precise_bn import recompute_batchnorm as _recompute

    return _recompute(model, batches)


def get_component(kind: str, name: str):
    """The factory registered as ``name`` under ``kind`` (a class, function or size variant)."""
    from .factory import get_component as _get

    return _get(kind, name)


def load_config(path, overrides=(), *, validate: bool = True):
    """Load, merge and validate a YAML experiment config (see :mod:`panconv.config`)."""
    from .config import load_config as _load

    return _load(path, overrides, validate=validate)


def build_datasets(cfg, stages=("train", "val", "test"), data_root=None):
    """The datasets of a config's stages, with its ``data.transforms`` (see :mod:`panconv.builder`)."""
    from .builder import build_datasets as _build

    return _build(cfg, stages, data_root)


def list_components(kind: str | None = None, pattern: str | None = None) -> list[str]:
    """Qualified names of registered components, optionally of one kind / matching a glob."""
    from .factory import list_models as _list
    from .registry import KINDS

    return _list(pattern, (kind,) if kind else KINDS)
