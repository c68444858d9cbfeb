"""The one path from config sections to components.

Everything that reads the shape of a config's ``model`` or ``data`` section goes through
here: the validator (:mod:`panconv.config`), the engine, the CLI's summaries, the Python API
(:func:`panconv.create_model`, :func:`panconv.load_model`, :func:`panconv.build_datasets`) and
plugin tools such as ``panconv cam``.

``model`` is either a whole model (``{type: graph.LightGCN, ...}``) or a composition
(``{backbone: {...}, neck: {...}, head: {...}}``); necks and heads receive the previous
stage's ``feature_info`` as ``in_features``. Constructor arguments a component declares in
``metadata_inputs`` and the config leaves unset are filled from the dataset's ``metadata``.
A constructor parameter named ``loss`` given as ``{type: ...}`` is built from the loss registry.

``data`` holds the dataset's ``type`` and constructor arguments, the loader options
(:data:`LOADER_KEYS`), ``splits`` (stage -> split name), ``root`` and ``transforms``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .plugins import get
from .registry import Variant, factory_signature

COMPOSED_KEYS = ("backbone", "neck", "head")
#: constructor arguments the builder passes itself (never given in a config)
INJECTED = ("in_features",)
LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "shuffle", "drop_last", "pin_memory")
#: keys of ``data`` that are not the dataset's constructor arguments
DATA_KEYS = (*LOADER_KEYS, "splits", "root", "transforms")
STAGES = ("train", "val", "test")
#: the constructor parameter whose ``{type: ...}`` value is built from the loss registry
LOSS_PARAMETER = "loss"


# ----------------------------------------------------------------------------- the model section

@dataclass(frozen=True)
class Part:
    """One component of a ``model`` section: its kind, key path and ``{type, **kwargs}`` spec."""

    kind: str
    path: str
    spec: dict

    @property
    def type(self) -> str:
        return self.spec.get("type")

    @property
    def kwargs(self) -> dict:
        return {k: v for k, v in self.spec.items() if k != "type"}


def is_composed(model_cfg: dict) -> bool:
    return "type" not in model_cfg


def model_parts(model_cfg: dict, path: str = "model") -> list[Part]:
    """The components of a ``model`` section in build order (no validation: see the validator)."""
    if not is_composed(model_cfg):
        return [Part("model", path, dict(model_cfg))]
    return [Part(key, f"{path}.{key}", dict(model_cfg[key])) for key in COMPOSED_KEYS
            if isinstance(model_cfg.get(key), dict)]


def model_summary(model_cfg: dict) -> str:
    """``graph.LightGCN`` or ``vision.convnext_tiny + vision.PoolNorm + core.LinearClsHead``."""
    return " + ".join(str(p.type) for p in model_parts(model_cfg))


# ----------------------------------------------------------------------------- the data section

def dataset_spec(data_cfg: dict) -> dict:
    """``{type, **constructor kwargs}`` of the dataset (loader options, splits, root, transforms removed)."""
    return {k: v for k, v in data_cfg.items() if k not in DATA_KEYS}


def resolve_data_root(data_cfg: dict | None = None, data_root: str | os.PathLike | None = None) -> Path:
    """``data_root`` (``--data-root``), else ``data.root``, else ``$PANCONV_DATA``, else ``~/.cache/panconv``."""
    from .api.data import default_data_root

    root = data_root if data_root is not None else (data_cfg or {}).get("root")
    return Path(root).expanduser().resolve() if root is not None else default_data_root()


def stage_splits(data_cfg: dict, stages: Iterable[str] = STAGES) -> dict[str, str]:
    """Stage -> split name for the requested stages whose split is set."""
    splits = data_cfg.get("splits") or {}
    return {stage: splits[stage] for stage in stages if splits.get(stage) is not None}


def build_datasets(cfg: dict, stages: Iterable[str] = STAGES, data_root: str | os.PathLike | None = None,
                   where: str | None = None) -> dict[str, Any]:
    """The dataset of every requested stage whose split is set, each split built once, with the
    ``data.transforms`` that apply to it."""
    data = cfg["data"]
    where = where or f"{getattr(cfg, 'filename', None) or '<config>'}: data"
    root = resolve_data_root(data, data_root)
    spec = dataset_spec(data)
    built: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for stage, split in stage_splits(data, stages).items():
        if split not in built:
            built[split] = build_component("dataset", {**spec, "root": root, "split": split}, where=f"{where}.type")
        dataset = built[split]
        transforms = build_transforms(data.get("transforms") or [], split, where=f"{where}.transforms",
                                      metadata=getattr(dataset, "metadata", None))
        out[stage] = TransformedDataset(dataset, *transforms) if any(transforms) else dataset
    return out


def build_transforms(specs: list, split: str, where: str = "data.transforms",
                     metadata: dict | None = None) -> tuple[list, list]:
    """``(sample_transforms, batch_transforms)`` of ``data.transforms`` that apply to ``split``
    (a transform's declared ``metadata_inputs`` filled from the dataset's ``metadata``)."""
    sample, batch = [], []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        splits = spec.pop("splits", None)
        if splits is not None and split not in splits:
            continue
        transform = build_component("transform", spec, metadata=metadata, where=f"{where}.{i}")
        (batch if getattr(transform, "level", "sample") == "batch" else sample).append(transform)
    return sample, batch


class TransformedDataset:
    """A dataset whose samples (and collated batches) pass through ``data.transforms``.

    Everything else (``metadata``, ``splits``, attributes models read in ``attach_data``) is
    the wrapped dataset's.
    """

    def __init__(self, dataset: Any, sample_transforms: list[Callable], batch_transforms: list[Callable]):
        self.dataset = dataset
        self.sample_transforms = list(sample_transforms)
        self.batch_transforms = list(batch_transforms)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        sample = self.dataset[index]
        for transform in self.sample_transforms:
            sample = transform(sample)
        return sample

    def collate(self, samples: list) -> Any:
        collate = getattr(self.dataset, "collate", None)
        if collate is None:
            import torch.utils.data

            collate = torch.utils.data.default_collate
        batch = collate(samples)
        for transform in self.batch_transforms:
            batch = transform(batch)
        return batch

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the dataset and to every transform that has it (reseeding per epoch)."""
        for target in (self.dataset, *self.sample_transforms, *self.batch_transforms):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)

    def __getattr__(self, attr: str) -> Any:
        if attr == "dataset":
            raise AttributeError(attr)
        return getattr(self.dataset, attr)


# ----------------------------------------------------------------------------- components

def metadata_inputs(factory: Any) -> tuple[str, ...]:
    """The constructor arguments ``factory`` declares it takes from dataset metadata."""
    return tuple(getattr(factory, "metadata_inputs", ()) or ())


def injected_metadata(factory: Any, given: dict, metadata: dict | None, where: str | None = None) -> dict:
    """The declared metadata inputs the config leaves unset and ``metadata`` provides.

    A size variant's fixed arguments are not overwritten: a variant that fixes an input to another
    value than the data's (``mossformer_3spk`` on two-speaker mixtures) is a :class:`ConfigError`.
    """
    if not metadata:
        return {}
    fixed = getattr(factory, "args", None) if isinstance(factory, Variant) else None
    out = {}
    for name in metadata_inputs(factory):
        if name in given or name not in metadata:
            continue
        if fixed and name in fixed:
            if fixed[name] != metadata[name]:
                raise ConfigError(f"{where + ': ' if where else ''}{factory.__name__} is built for "
                                  f"{name}={fixed[name]!r} but the dataset provides {name}={metadata[name]!r}; "
                                  f"choose a variant that fits or set {name} explicitly")
            continue
        out[name] = metadata[name]
    return out


def build_component(kind: str, spec: dict, *args, metadata: dict | None = None, where: str | None = None) -> Any:
    """Build ``{type: name, **kwargs}`` from the ``kind`` registry (metadata and losses filled in)."""
    spec = dict(spec)
    name = spec.pop("type")
    factory = get(kind, name, where=where).load()
    kwargs = {**spec, **injected_metadata(factory, spec, metadata, where)}
    loss = kwargs.get(LOSS_PARAMETER)
    if isinstance(loss, dict) and "type" in loss and _takes(factory, LOSS_PARAMETER):
        kwargs[LOSS_PARAMETER] = build_component("loss", loss, where=f"{where or kind}.{LOSS_PARAMETER}")
    return factory(*args, **kwargs)


def _takes(factory: Any, parameter: str) -> bool:
    sig, _ = factory_signature(factory)
    return sig is not None and (parameter in sig.parameters
                                or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()))


def build_model(model_cfg: dict, metadata: dict | None = None, where: str | None = None):
    """Build the ``model`` config section (whole or composed)."""
    from .api.modules import ComposedModel, feature_info_of

    parts = model_parts(model_cfg)
    at = (lambda part: f"{where}: {part.path}.type") if where else (lambda part: None)
    if not is_composed(model_cfg):
        return build_component("model", parts[0].spec, metadata=metadata, where=at(parts[0]))
    built: dict[str, Any] = {}
    info = None
    for part in parts:
        args = () if part.kind == "backbone" else (info,)
        built[part.kind] = build_component(part.kind, part.spec, *args, metadata=metadata, where=at(part))
        info = feature_info_of(built[part.kind]) if part.kind != "head" else info
    return ComposedModel(built["backbone"], built["head"], built.get("neck"))


def resolve_model_config(model_cfg: dict, metadata: dict | None) -> dict:
    """The ``model`` section with the injected metadata made explicit (what a work dir stores, so
    :func:`panconv.load_model` can rebuild the model without loading data)."""
    if not is_composed(model_cfg):
        return _resolve_spec("model", dict(model_cfg), metadata)
    out = dict(model_cfg)
    for part in model_parts(model_cfg):
        out[part.kind] = _resolve_spec(part.kind, part.spec, metadata)
    return out


def _resolve_spec(kind: str, spec: dict, metadata: dict | None) -> dict:
    factory = get(kind, spec["type"]).load()
    given = {k: v for k, v in spec.items() if k != "type"}
    return {**spec, **injected_metadata(factory, given, metadata)}


def missing_metadata(model_cfg: dict) -> list[str]:
    """Declared metadata inputs that the model section leaves unset (so data must provide them)."""
    missing = []
    for part in model_parts(model_cfg):
        factory = get(part.kind, part.type).load()
        missing += [name for name in metadata_inputs(factory) if name not in part.spec]
    return missing
