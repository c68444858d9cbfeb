"""YAML experiment configs: loading, ``_base_`` inheritance, ``--set`` overrides, validation.

Only YAML is read (``yaml.safe_load``: no code execution, no Python tags). Merge rules:

* ``_base_: a.yaml`` or ``_base_: [a.yaml, b.yaml]`` (paths relative to the file) are loaded
  first, in order; later bases override earlier ones, the file itself overrides them all.
* Mappings merge key by key, recursively. Anything else (lists, scalars) replaces.
* ``_delete_: true`` inside a mapping replaces the inherited mapping instead of merging.
* ``key: null`` sets ``key`` to null (``neck: null`` removes an inherited neck).
* ``--set a.b.c=VALUE`` overrides after merging; ``VALUE`` is parsed as YAML
  (``3`` int, ``1e-3`` float, ``true`` bool, ``[10, 20]`` list, ``null``); list items are
  addressed by index (``eval.evaluators.0.ks=[10]``).

Validation runs before any data is loaded: every key is checked against the signature of
the constructor it feeds, and every error is one line naming the file, the key path, what
is wrong and a suggestion.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, PanconvError, UnknownComponentError

SECTIONS = ("model", "data", "train", "eval", "run", "plugins")
DATA_RESERVED = ("type", "batch_size", "eval_batch_size", "num_workers", "shuffle", "drop_last", "pin_memory",
                 "splits", "root")
STAGES = ("train", "val", "test")
TRAIN_KEYS = {
    "epochs": int, "optimizer": dict, "scheduler": list, "accumulate": int, "amp": bool,
    "grad_clip": (float, type(None)),
    "val_interval": int, "checkpoint": dict, "log_interval": int,
}
CHECKPOINT_KEYS = {"interval": int, "max_keep": int, "best": (str, type(None))}
RUN_KEYS = {"work_dir": str, "seed": (int, type(None)), "deterministic": bool, "device": str,
            "threads": (int, type(None)), "launcher": str}
EVAL_KEYS = {"evaluators": list}
DEFAULTS: dict[str, Any] = {
    "plugins": [],
    "data": {"batch_size": 32, "num_workers": 0, "splits": {"train": "train", "val": "val", "test": "test"}},
    "train": {"epochs": 1, "optimizer": {"type": "Adam", "lr": 1e-3}, "scheduler": [], "accumulate": 1, "amp": False,
              "grad_clip": None, "val_interval": 1, "checkpoint": {"interval": 1, "max_keep": 2, "best": None},
              "log_interval": 50},
    "eval": {"evaluators": []},
    "run": {"work_dir": None, "seed": 0, "deterministic": False, "device": "auto", "threads": None,
            "launcher": "auto"},
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (a silent override is a classic config bug)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(SECTIONS)}), "
                          f"got {type(data).__name__}")
    return data


def merge(base: Any, child: Any) -> Any:
    """Deep-merge ``child`` into ``base`` (see the module doc for the rules)."""
    if isinstance(base, dict) and isinstance(child, dict):
        if child.get("_delete_"):
            return {k: copy.deepcopy(v) for k, v in child.items() if k != "_delete_"}
        out = copy.deepcopy(base)
        for key, value in child.items():
            if key == "_delete_":
                continue
            out[key] = merge(out[key], value) if key in out else _strip_delete(copy.deepcopy(value))
        return out
    return _strip_delete(copy.deepcopy(child))


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return value


def _load_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ConfigError(f"{chain[-1]}: _base_: inheritance cycle {cycle}")
    data = _read_yaml(path)
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_: expected a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base)
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_: file '{base}' not found (looked in {path.parent})")
        merged = merge(merged, _load_with_bases(base_path, (*chain, path)))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> ``(["a", "b"], 3)``; the value is parsed as YAML."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
    return key.split("."), value


def apply_override(cfg: dict, path: list[str], value: Any, text: str) -> None:
    node: Any = cfg
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {text!r}: {where}: list index out of range (the list has {len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"--set {text!r}: {'.'.join(path[:i])} is a {type(node).__name__}, not a section")


class Config(dict):
    """The merged config (a ``dict``) plus the file it came from."""

    def __init__(self, data: dict, filename: str | None = None):
        super().__init__(data)
        self.filename = filename

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(dict(self)), sort_keys=False, default_flow_style=None)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_config(path: str | Path, overrides: list[str] = (), *, validate: bool = True) -> Config:
    """Load, merge and (by default) validate a config; raises :class:`ConfigError`."""
    path = Path(path)
    data = _load_with_bases(path)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
    filename = str(path)
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{filename}: {key}: unknown section{_suggest(key, SECTIONS)}; "
                              f"sections are {', '.join(SECTIONS)}")
    cfg = Config(merge(DEFAULTS, data), filename)
    if validate:
        validate_config(cfg)
    return cfg


# --------------------------------------------------------------------------- validation

def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.6)
    return f". Did you mean '{close[0]}'?" if close else ""


class _Validator:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.file = cfg.filename or "<config>"

    def fail(self, path: str, message: str) -> None:
        raise ConfigError(f"{self.file}: {path}: {message}")

    def check_mapping(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value

    def check_keys(self, section: dict, schema: dict, path: str) -> None:
        for key, value in section.items():
            if key not in schema:
                self.fail(f"{path}.{key}", f"unknown key{_suggest(key, schema)}; allowed: {', '.join(schema)}")
            self.check_type(value, schema[key], f"{path}.{key}")

    def check_type(self, value: Any, expected, path: str) -> None:
        types = expected if isinstance(expected, tuple) else (expected,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return
        if isinstance(value, bool) and bool not in types:
            self.fail(path, f"expected {_type_names(types)}, got bool {value!r}")
        if not isinstance(value, types):
            self.fail(path, f"expected {_type_names(types)}, got {type(value).__name__} {value!r}")

    # ---- components ----
    def component(self, kind: str, section: Any, path: str, *, injected: tuple[str, ...] = (),
                  metadata_keys: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> Any:
        from .plugins import get_manager

        section = self.check_mapping(section, path)
        if "type" not in section:
            self.fail(path, f"missing 'type' (the registered {kind} to build; see: panconv list --kind {kind})")
        try:
            entry = get_manager().get(kind, section["type"], where=f"{self.file}: {path}.type")
        except UnknownComponentError as exc:
            raise ConfigError(str(exc)) from None
        try:
            factory = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin module
            raise ConfigError(f"{self.file}: {path}.type: cannot import {entry.qualname} "
                              f"({entry.target_path}): {type(exc).__name__}: {exc}") from None
        given = {k: v for k, v in section.items() if k != "type"}
        self.signature(factory, given, path, entry.qualname, injected=injected, metadata_keys=metadata_keys,
                       skip=skip)
        return factory

    def signature(self, factory, given: dict, path: str, qualname: str, *, injected=(), metadata_keys=(),
                  skip=()) -> None:
        try:
            target = factory.__init__ if inspect.isclass(factory) else factory
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            return
        params = sig.parameters
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
            hints = {}
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        for key, value in given.items():
            if key in injected or key in skip:
                self.fail(f"{path}.{key}", "is set by the engine and cannot be given in the config")
            if key not in named:
                if accepts_any:
                    continue
                self.fail(f"{path}.{key}", f"unknown key for {qualname}{_suggest(key, named)}; "
                                           f"its parameters: {', '.join(n for n in named if n not in injected + skip)}")
            self.check_value(value, named[key], hints.get(key), f"{path}.{key}", qualname)
        for name, param in named.items():
            if param.default is param.empty and name not in given and name not in injected and name not in skip \
                    and name not in metadata_keys and param.kind is not param.POSITIONAL_ONLY:
                self.fail(f"{path}.{name}", f"missing required key for {qualname}")

    def check_value(self, value: Any, param: inspect.Parameter, hint: Any, path: str, qualname: str) -> None:
        expected = _simple_types(hint) if hint is not None else None
        if expected is None and param.default is not param.empty and param.default is not None:
            default_type = type(param.default)
            if default_type in (int, float, bool, str):
                expected = (float, int) if default_type is float else (default_type,)
        if not expected or value is None:
            return
        if isinstance(value, bool) and bool not in expected:
            self.fail(path, f"{qualname} expects {_type_names(expected)}, got bool {value!r}")
        if float in expected and isinstance(value, int):
            return
        if isinstance(value, (list, tuple)) and (list in expected or tuple in expected):
            return
        if not isinstance(value, expected):
            self.fail(path, f"{qualname} expects {_type_names(expected)}, got {type(value).__name__} {value!r}")

    # ---- sections ----
    def run(self) -> None:
        cfg = self.cfg
        plugins = cfg.get("plugins") or []
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            self.fail("plugins", f"expected a list of module names or .py paths, got {plugins!r}")
        if plugins:
            from .plugins import get_manager

            base = Path(self.file).parent if cfg.filename else None
            manager = get_manager()
            for i, spec in enumerate(plugins):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    name = manager.add_local(spec, base)
                record = manager.records[name]
                if record.status != "ok":  # the error says it; the loader's warning would repeat it
                    self.fail(f"plugins.{i}", f"plugin '{spec}' failed to load: {record.error}")
                for w in caught:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

        data = self.check_mapping(cfg.get("data"), "data")
        dataset_cls = None
        metadata_keys: tuple[str, ...] = ()
        if "type" not in data:
            self.fail("data", "missing 'type' (the registered dataset; see: panconv list --kind dataset)")
        dataset_cls = self.component("dataset", {k: v for k, v in data.items() if k not in DATA_RESERVED[1:]},
                                     "data", skip=("root", "split"))
        metadata_keys = tuple(getattr(dataset_cls, "metadata_keys", ()))
        for key, expected in (("batch_size", int), ("eval_batch_size", (int, type(None))), ("num_workers", int),
                              ("shuffle", bool), ("drop_last", bool), ("pin_memory", bool),
                              ("root", (str, type(None)))):
            if key in data:
                self.check_type(data[key], expected, f"data.{key}")
        for key in ("batch_size", "eval_batch_size"):
            if isinstance(data.get(key), int) and data[key] < 1:
                self.fail(f"data.{key}", f"must be >= 1, got {data[key]}")
        splits = self.check_mapping(data.get("splits"), "data.splits")
        for stage, split in splits.items():
            if stage not in STAGES:
                self.fail(f"data.splits.{stage}",
                          f"unknown stage{_suggest(stage, STAGES)}; stages: {', '.join(STAGES)}")
            valid = tuple(getattr(dataset_cls, "splits", ()))
            if split is not None and valid and split not in valid:
                self.fail(f"data.splits.{stage}", f"{data['type']} has no split '{split}'"
                                                  f"{_suggest(split, valid)}; its splits: {', '.join(valid)}")

        if "model" not in cfg or cfg["model"] is None:
            self.fail("model", "missing section (model: {type: ...} or model: {backbone: ..., head: ...})")
        model = self.check_mapping(cfg["model"], "model")
        if "type" in model:
            self.component("model", model, "model", metadata_keys=metadata_keys)
        else:
            for key in model:
                if key not in ("backbone", "neck", "head"):
                    hint = _suggest(key, ("backbone", "neck", "head", "type"))
                    self.fail(f"model.{key}",
                              f"unknown key: a model is either {{type: ...}} or {{backbone, neck, head}}{hint}")
            for key in ("backbone", "head"):
                if not model.get(key):
                    self.fail(f"model.{key}", "missing (a composed model needs a backbone and a head)")
            self.component("backbone", model["backbone"], "model.backbone", metadata_keys=metadata_keys)
            if model.get("neck"):
                self.component("neck", model["neck"], "model.neck", injected=("in_features",),
                               metadata_keys=metadata_keys)
            self.component("head", model["head"], "model.head", injected=("in_features",),
                           metadata_keys=metadata_keys)

        train = self.check_mapping(cfg.get("train"), "train")
        self.check_keys(train, TRAIN_KEYS, "train")
        for key in ("epochs", "accumulate", "val_interval", "log_interval"):
            if train.get(key) is not None and train[key] < 1:
                self.fail(f"train.{key}", f"must be >= 1, got {train[key]}")
        if train.get("grad_clip") is not None and train["grad_clip"] <= 0:
            self.fail("train.grad_clip", f"must be > 0 (or null), got {train['grad_clip']}")
        self.optimizer(train["optimizer"])
        for i, sched in enumerate(train.get("scheduler") or []):
            self.scheduler(sched, f"train.scheduler.{i}")
        ckpt = self.check_mapping(train.get("checkpoint"), "train.checkpoint")
        self.check_keys(ckpt, CHECKPOINT_KEYS, "train.checkpoint")
        for key in ("interval", "max_keep"):
            if ckpt.get(key) is not None and ckpt[key] < 1:
                self.fail(f"train.checkpoint.{key}", f"must be >= 1, got {ckpt[key]}")

        ev = self.check_mapping(cfg.get("eval"), "eval")
        self.check_keys(ev, EVAL_KEYS, "eval")
        for i, spec in enumerate(ev.get("evaluators") or []):
            self.component("evaluator", spec, f"eval.evaluators.{i}")

        run = self.check_mapping(cfg.get("run"), "run")
        self.check_keys(run, {**RUN_KEYS, "work_dir": (str, type(None))}, "run")
        device = run.get("device", "auto")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            self.fail("run.device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
        if run.get("launcher", "auto") not in ("auto", "none", "pytorch"):
            self.fail("run.launcher", f"expected auto, none or pytorch, got {run['launcher']!r}")
        if run.get("threads") is not None and run["threads"] < 1:
            self.fail("run.threads", f"must be >= 1, got {run['threads']}")

    def optimizer(self, spec: Any) -> None:
        import torch.optim

        spec = self.check_mapping(spec, "train.optimizer")
        name = spec.get("type")
        options = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                   and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer"]
        if name not in options:
            self.fail("train.optimizer.type", f"unknown optimizer {name!r}{_suggest(name, options)}; "
                                              f"any torch.optim class works ({', '.join(sorted(options)[:6])}, ...)")
        self.signature(getattr(torch.optim, name), {k: v for k, v in spec.items() if k != "type"},
                       "train.optimizer", f"torch.optim.{name}", injected=("params",))

    def scheduler(self, spec: Any, path: str) -> None:
        import mmengine.optim  # noqa: F401 - registers the schedulers
        from mmengine.registry import PARAM_SCHEDULERS

        spec = self.check_mapping(spec, path)
        name = spec.get("type")
        cls = PARAM_SCHEDULERS.get(name) if isinstance(name, str) else None
        if cls is None:
            options = sorted(PARAM_SCHEDULERS.module_dict)
            self.fail(f"{path}.type", f"unknown scheduler {name!r}{_suggest(name, options)}; "
                                      f"e.g. {', '.join(o for o in options if 'LR' in o)[:120]}")
        # mmengine's LR schedulers forward (*args, **kwargs) to a ParamScheduler: check that one
        target = next((klass for klass in cls.__mro__ if "__init__" in vars(klass) and not any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(klass.__init__).parameters.values())), cls)
        self.signature(target, {k: v for k, v in spec.items() if k != "type"}, path, name,
                       injected=("optimizer", "param_name"))


def _simple_types(hint: Any) -> tuple | None:
    """Plain Python types an annotation allows, or None when it is anything richer."""
    origin = typing.get_origin(hint)
    if hint in (int, float, bool, str):
        return (float, int) if hint is float else (hint,)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        return (list, tuple)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        out: list = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                out.append(type(None))
                continue
            sub = _simple_types(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    return None


def _type_names(types) -> str:
    names = {int: "int", float: "float", bool: "bool", str: "str", dict: "a mapping", list: "a list",
             tuple: "a list", type(None): "null"}
    seen = []
    types = types if isinstance(types, tuple) else (types,)
    if float in types:  # ints are accepted where floats are: say "float"
        types = tuple(t for t in types if t is not int)
    for t in types:
        name = names.get(t, getattr(t, "__name__", str(t)))
        if name not in seen:
            seen.append(name)
    return " or ".join(seen)


def validate_config(cfg: Config) -> None:
    """Check every key against what it feeds; raise a one-line :class:`ConfigError`."""
    try:
        _Validator(cfg).run()
    except PanconvError:
        raise
