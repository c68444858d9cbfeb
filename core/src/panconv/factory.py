"""The Python API (timm's habits): list, create and load models from a notebook.

    import panconv
    panconv.list_models("convnext*")                       # globs match short names too
    model = panconv.create_model("vision.convnext_tiny", num_classes=10)
    model = panconv.load_model("work_dirs/lightgcn")       # a ready eval() model with its weights
    model.recommend([0, 1], k=20)                          # domain verbs on the model

Everything here goes through :mod:`panconv.builder`, the same path the engine uses.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from pathlib import Path
from typing import Any

from . import builder
from .errors import CheckpointError, ConfigError, UnknownComponentError

#: the kinds ``create_model`` builds from a name
MODEL_KINDS = ("model", "backbone")
#: neck and head of a classifier built from a backbone that declares no ``paper_head``
DEFAULT_CLASSIFIER = {"neck": {"type": "core.GlobalAvgPool"}, "head": {"type": "core.LinearClsHead"}}
#: arguments of ``create_model(backbone_name, ...)`` that go to the head, not the backbone
HEAD_ARGUMENTS = ("num_classes",)


def list_models(pattern: str | None = None, kinds: tuple[str, ...] = MODEL_KINDS) -> list[str]:
    """Qualified names of registered models and backbones (``kinds``) matching ``pattern``.

    ``pattern`` is a glob (``"convnext*"``, ``"vision.*"``) or a substring; it matches the
    qualified name or the short name, case-insensitively.
    """
    from .plugins import get_manager

    return sorted(e.qualname for e in get_manager().entries(kinds) if pattern is None or name_matches(e, pattern))


def name_matches(entry, pattern: str) -> bool:
    """Whether a registry entry matches a glob (``convnext*``, ``vision.*``) or substring, on its
    qualified or short name, case-insensitively (``panconv list`` and :func:`list_models`)."""
    pattern = pattern.lower()
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return fnmatch.fnmatch(entry.qualname.lower(), glob) or fnmatch.fnmatch(entry.name.lower(), glob)


def get_component(kind: str, name: str) -> Any:
    """The factory (class, function or size variant) registered as ``name`` under ``kind``."""
    from .plugins import get

    return get(kind, name).load()


def classifier_config(backbone: str, **kwargs) -> dict:
    """The ``model`` section of a classifier on a registered backbone: the backbone's
    ``paper_head`` neck and head (the head the paper counts), else global pooling + linear."""
    factory = get_component("backbone", backbone)
    sections = getattr(factory, "paper_head", None) or DEFAULT_CLASSIFIER
    head_kwargs = {k: kwargs.pop(k) for k in HEAD_ARGUMENTS if k in kwargs}
    model = {"backbone": {"type": backbone, **kwargs}}
    for key in ("neck", "head"):
        if sections.get(key):
            model[key] = dict(sections[key])
    model["head"] = {**model["head"], **head_kwargs}
    return model


def create_model(name_or_config: str | dict, *, metadata: dict | None = None, **kwargs) -> Any:
    """Build a model.

    * ``create_model("graph.LightGCN", n_users=10, n_items=20)``: a registered whole model.
    * ``create_model("vision.convnext_tiny", num_classes=10)``: a classifier on a registered
      backbone, with the neck and head its plugin declares (``paper_head``), else global average
      pooling and a linear head; ``num_classes`` goes to the head, the rest to the backbone.
    * ``create_model({"backbone": {...}, "head": {...}})`` or ``{"type": ..., ...}``: a config's
      ``model`` section; ``kwargs`` are added to a whole model's arguments.

    ``metadata`` fills the components' declared ``metadata_inputs`` (as a dataset would).
    """
    if isinstance(name_or_config, str):
        from .plugins import get_manager

        manager = get_manager()
        try:
            manager.get("model", name_or_config)
            model_cfg: dict = {"type": name_or_config, **kwargs}
        except UnknownComponentError:
            try:
                manager.get("backbone", name_or_config)
            except UnknownComponentError:
                raise UnknownComponentError(
                    f"Unknown model '{name_or_config}': it is neither a registered model nor a backbone. "
                    f"See: panconv.list_models()") from None
            model_cfg = classifier_config(name_or_config, **kwargs)
    elif isinstance(name_or_config, dict):
        model_cfg = dict(name_or_config)
        if kwargs:
            if builder.is_composed(model_cfg):
                raise TypeError("create_model(config, **kwargs): keyword arguments apply to a whole model "
                                "({type: ...}); put a composed model's arguments into its sections")
            model_cfg.update(kwargs)
    else:
        raise TypeError(f"create_model() takes a registered name or a model config dict, got "
                        f"{type(name_or_config).__name__}")
    model = builder.build_model(model_cfg, metadata=metadata)
    model.panconv_config = builder.resolve_model_config(model_cfg, metadata)
    return model


# ----------------------------------------------------------------------------- load_model

def find_checkpoint(work_dir: Path) -> Path:
    """The weights a finished work dir stands for: ``best.pth``, else the last checkpoint, else the
    newest ``epoch_N.pth``."""
    best = work_dir / "best.pth"
    if best.is_file():
        return best
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        path = Path(marker.read_text().strip())
        if not path.is_absolute():
            path = work_dir / path
        if path.is_file():
            return path
    epochs = sorted(work_dir.glob("epoch_*.pth"), key=lambda p: _epoch_number(p))
    if epochs:
        return epochs[-1]
    raise CheckpointError(f"{work_dir}: no checkpoint in this work dir (best.pth, last_checkpoint or epoch_N.pth)")


def _epoch_number(path: Path) -> int:
    try:
        return int(path.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def load_model(path: str | os.PathLike, *, config: str | os.PathLike | dict | None = None, device: str = "cpu",
               attach_data: bool | None = None, data_root: str | os.PathLike | None = None) -> Any:
    """A ready ``eval()`` model from a work dir or a checkpoint.

    ``path`` is a work dir written by ``panconv run`` (its ``config.yaml`` holds the resolved
    constructor arguments, so no data is needed) or a checkpoint file (its work dir's
    ``config.yaml`` is used unless ``config`` is given: a path or a loaded config).
    Models that are tied to their data (``attach_data``, e.g. a recommender's graph) get the
    training split attached unless ``attach_data=False``.
    """
    from .config import Config, load_config
    from .io import load_checkpoint, model_state_dict

    path = Path(path)
    if path.is_dir():
        work_dir, checkpoint = path, find_checkpoint(path)
    elif path.is_file():
        work_dir, checkpoint = path.parent, path
    else:
        raise CheckpointError(f"{path}: no such work dir or checkpoint")
    if config is None:
        config = work_dir / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"{config}: not found; pass config= (the YAML the model was trained with)")
    cfg = config if isinstance(config, dict) else load_config(config)
    if not isinstance(cfg, Config):
        cfg = Config(cfg)
    metadata: dict = {}
    needs_data = attach_data if attach_data is not None else _tied_to_data(cfg["model"])
    train = None
    if builder.missing_metadata(cfg["model"]) or needs_data:
        print(f"load_model: loading the training data ({cfg['data'].get('type')}) for the model's "
              f"metadata", file=sys.stderr, flush=True)
        datasets = builder.build_datasets(cfg, stages=("train",), data_root=data_root)
        train = datasets.get("train")
        metadata = dict(getattr(train, "metadata", {}) or {}) if train is not None else {}
    model = builder.build_model(cfg["model"], metadata=metadata)
    state = model_state_dict(load_checkpoint(checkpoint))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        source = getattr(cfg, "filename", None) or "the config"
        raise CheckpointError(f"{checkpoint}: does not fit the model of {source}: "
                              f"{str(exc).splitlines()[0]}") from None
    if needs_data and train is not None and hasattr(model, "attach_data"):
        model.attach_data(train)
    model.panconv_config = builder.resolve_model_config(cfg["model"], metadata)
    model.panconv_checkpoint = str(checkpoint)
    return model.to(device).eval()


def _tied_to_data(model_cfg: dict) -> bool:
    """Whether the model (or a part of a composed one) implements ``attach_data``: it needs its
    training data to predict."""
    from .api.modules import Model

    for part in builder.model_parts(model_cfg):
        factory = get_component(part.kind, part.type)
        cls = getattr(factory, "factory", factory)
        method = getattr(cls, "attach_data", None)
        if method is not None and method is not Model.attach_data:
            return True
    return False
