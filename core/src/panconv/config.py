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

import builtins
import collections.abc
import copy
import difflib
import inspect
import os
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml

from . import builder
from .errors import ConfigError, PanconvError, UnknownComponentError
from .factory import get_component
from .registry import factory_signature

SECTIONS = ("model", "data", "train", "eval", "run", "plugins")
STAGES = builder.STAGES
TRAIN_KEYS = {
    "epochs": int, "optimizer": dict, "scheduler": list, "accumulate": int, "amp": bool,
    "grad_clip": (float, type(None)),
    "val_interval": int, "checkpoint": dict, "log_interval": int, "activation_checkpointing": (bool, list),
}
CHECKPOINT_KEYS = {"interval": int, "max_keep": int, "best": (str, type(None))}
RUN_KEYS = {"work_dir": (str, type(None)), "seed": (int, type(None)), "deterministic": bool, "device": str,
            "threads": (int, type(None)), "launcher": str, "load_from": (str, type(None)),
            "init_from": (str, dict, type(None)), "strategy": str}
INIT_FROM_KEYS = {"path": str, "map": dict, "entry": str, "convert": str}
EVAL_KEYS = {"evaluators": list}
DEFAULTS: dict[str, Any] = {
    "plugins": [],
    "data": {"batch_size": 32, "num_workers": 0, "splits": {"train": "train", "val": "val", "test": "test"}},
    "train": {"epochs": 1, "optimizer": {"type": "Adam", "lr": 1e-3}, "scheduler": [], "accumulate": 1, "amp": False,
              "grad_clip": None, "val_interval": 1, "checkpoint": {"interval": 1, "max_keep": 2, "best": None},
              "log_interval": 50, "activation_checkpointing": False},
    "eval": {"evaluators": []},
    "run": {"work_dir": None, "seed": 0, "deterministic": False, "device": "auto", "threads": None,
            "launcher": "auto", "load_from": None, "init_from": None, "strategy": "ddp"},
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (a silent override is a classic config bug)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, got a {type(key).__name__}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


#: what one YAML document may expand to (aliases counted each time they are used): a
#: "billion laughs" document is refused instead of hanging the merge
MAX_VALUES = 100_000
MAX_DEPTH = 64
MAX_CONFIG_BYTES = 10_000_000


def shown(value: Any, limit: int = 60) -> str:
    """A value as it may appear in a one-line message: repr'd (newlines escaped), truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_yaml(text: str, where: str) -> Any:
    """``yaml`` text -> Python values, safely: no tags, unique plain keys, bounded alias expansion
    and nesting; every problem a one-line :class:`ConfigError` starting with ``where``."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = f"{where}:{mark.line + 1}" if mark else where
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigError(f"{place}: invalid YAML: {_key(problem, 200)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {_key(str(exc).splitlines()[0], 200)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None
    _check_size(data, where)
    return data


def _check_size(data: Any, where: str) -> None:
    """Refuse documents whose aliases expand to more than ``MAX_VALUES`` values or that nest deeper
    than ``MAX_DEPTH`` (counted on the shared structure, so the check itself is cheap)."""
    sizes: dict[int, tuple[int, int]] = {}

    def measure(value: Any, depth: int) -> tuple[int, int]:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if not isinstance(value, (dict, list)):
            return 1, 0
        if id(value) in sizes:
            return sizes[id(value)]
        children = value.values() if isinstance(value, dict) else value
        total, deepest = 1, 0
        for child in children:
            size, child_depth = measure(child, depth + 1)
            total += size
            deepest = max(deepest, child_depth + 1)
            if total > MAX_VALUES:
                raise ConfigError(f"{where}: expands to more than {MAX_VALUES:,} values (YAML aliases?); "
                                  f"refused")
        sizes[id(value)] = (total, deepest)
        return total, deepest

    measure(data, 0)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    data = parse_yaml(text, str(path))
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
        raise ConfigError(f"{path}: _base_: expected a file name or a list of file names, got {shown(bases)}")
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
        raise ConfigError(f"--set {shown(text)}: expected KEY.PATH=VALUE, e.g. --set train.epochs=5")
    try:
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else ""
    except ConfigError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise ConfigError(f"--set {shown(text)}: the value is not valid YAML ({detail})") from None
    return key.split("."), value


def apply_override(cfg: dict, path: list[str], value: Any, text: str) -> None:
    node: Any = cfg
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {shown(text)}: {where}: list index out of range "
                                  f"(the list has {len(node)} items)")
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
            raise ConfigError(f"--set {shown(text)}: {'.'.join(path[:i])} is a {type(node).__name__}, not a section")


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
    load_config_plugins(cfg)
    if validate:
        validate_config(cfg)
    return cfg


# --------------------------------------------------------------------------- validation

def resolve_function(spec: str):
    """The function a ``"package.module:function"`` string names (``run.init_from.convert``); a ValueError saying
    in one line what is wrong (the form, a module that does not import, a missing or uncallable attribute)."""
    import importlib

    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name or ":" in name:
        raise ValueError(f"expected \"package.module:function\", got {shown(spec)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot import {module_name!r}: {reason}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {name!r}")
    return function


def _suggest(name: str, options) -> str:
    if not isinstance(name, str) or len(name) > 200:
        return ""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f". Did you mean '{close[0]}'?" if close else ""


def _key(key: Any, limit: int = 60) -> str:
    """A key as part of a key path in a message (escaped, truncated)."""
    text = repr(key)[1:-1] if isinstance(key, str) else repr(key)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config_plugins(cfg: Config) -> None:
    """Load the config's ``plugins:`` (local modules or ``.py`` files) into the plugin manager.

    A config's ``plugins: [file.py]`` runs that file: a config from an untrusted source is code.
    """
    from .errors import PluginError
    from .plugins import get_manager

    file = cfg.filename or "<config>"
    plugins = cfg.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{file}: plugins: expected a list of module names or .py paths, got {shown(plugins)}")
    base = Path(file).parent if cfg.filename else None
    manager = get_manager()
    for i, spec in enumerate(plugins):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                name = manager.add_local(spec, base)
            except PluginError as exc:
                raise ConfigError(f"{file}: plugins.{i}: {exc}") from None
        record = manager.records[name]
        if record.status != "ok":  # the error says it; the loader's warning would repeat it
            raise ConfigError(f"{file}: plugins.{i}: plugin '{spec}' failed to load: {record.error}")
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class _Validator:
    """Checks a merged config against the constructors it feeds (no data is loaded)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.file = cfg.filename or "<config>"

    def fail(self, path: str, message: str) -> None:
        raise ConfigError(f"{self.file}: {path}: {message}")

    def check_mapping(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {_describe(value)}")
        return value

    def check_keys(self, section: dict, schema: dict, path: str) -> None:
        for key, value in section.items():
            if key not in schema:
                self.fail(f"{path}.{_key(key)}", f"unknown key{_suggest(key, schema)}; allowed: {', '.join(schema)}")
            self.check_type(value, schema[key], f"{path}.{key}")

    def check_type(self, value: Any, expected, path: str) -> None:
        types = expected if isinstance(expected, tuple) else (expected,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return
        if isinstance(value, bool) and bool not in types:
            self.fail(path, f"expected {_type_names(types)}, got bool {value!r}")
        if not isinstance(value, types):
            self.fail(path, f"expected {_type_names(types)}, got {_describe(value)}")

    def at_least(self, section: dict, keys: tuple[str, ...], path: str, minimum: int = 1) -> None:
        for key in keys:
            if isinstance(section.get(key), int) and section[key] < minimum:
                self.fail(f"{path}.{key}", f"must be >= {minimum}, got {section[key]}")

    # ---- components ----
    def lookup(self, kind: str, section: Any, path: str) -> Any:
        """The factory a ``{type: ...}`` section names (a one-line error when it names none)."""
        from .plugins import get_manager

        section = self.check_mapping(section, path)
        if "type" not in section:
            self.fail(path, f"missing 'type' (the registered {kind} to build; see: panconv list --kind {kind})")
        try:
            entry = get_manager().get(kind, section["type"], where=f"{self.file}: {path}.type")
        except UnknownComponentError as exc:
            raise ConfigError(str(exc)) from None
        try:
            return entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin module
            raise ConfigError(f"{self.file}: {path}.type: cannot import {entry.qualname} "
                              f"({entry.target_path}): {type(exc).__name__}: {exc}") from None

    def component(self, kind: str, section: Any, path: str, *, injected: tuple[str, ...] = (),
                  provided: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> Any:
        factory = self.lookup(kind, section, path)
        given = {k: v for k, v in section.items() if k != "type"}
        qualname = section["type"]
        declared = builder.metadata_inputs(factory)
        self.signature(factory, given, path, qualname, injected=injected, provided=provided, skip=skip,
                       declared=declared)
        loss = given.get(builder.LOSS_PARAMETER)
        if isinstance(loss, dict) and "type" in loss and builder._takes(factory, builder.LOSS_PARAMETER):
            self.component("loss", loss, f"{path}.{builder.LOSS_PARAMETER}")
        return factory

    def signature(self, factory, given: dict, path: str, qualname: str, *, injected=(), provided=(),
                  skip=(), declared=()) -> None:
        sig, hints = factory_signature(factory)
        if sig is None:
            return
        params = sig.parameters
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        for key, value in given.items():
            if key in injected or key in skip:
                self.fail(f"{path}.{key}", "is set by the engine and cannot be given in the config")
            if key not in named:
                if accepts_any:
                    continue
                self.fail(f"{path}.{_key(key)}", f"unknown key for {qualname}{_suggest(key, named)}; "
                                           f"its parameters: {', '.join(n for n in named if n not in injected + skip)}")
            self.check_value(value, named[key], hints.get(key), f"{path}.{key}", qualname)
        for name, param in named.items():
            if name in given or name in injected or name in skip or param.kind is param.POSITIONAL_ONLY:
                continue
            if name in declared and name in provided:
                continue
            if param.default is param.empty:
                if name in declared:
                    dataset = (self.cfg.get("data") or {}).get("type")
                    self.fail(f"{path}.{name}", f"{qualname} takes {name} from the dataset's metadata, but "
                                                f"{dataset} does not provide it (its metadata: "
                                                f"{', '.join(provided) or 'none'}); set it here")
                self.fail(f"{path}.{name}", f"missing required key for {qualname}")

    def check_value(self, value: Any, param: inspect.Parameter, hint: Any, path: str, qualname: str) -> None:
        if hint is None and param.default is not param.empty and param.default is not None:
            if type(param.default) in (int, float, bool, str):
                hint = type(param.default)
        if hint is None:
            return
        problem = type_problem(value, hint)
        if problem is not None:
            self.fail(path, f"{qualname} expects {problem}")

    # ---- sections ----
    def run(self) -> None:
        dataset = self.data()
        provided = tuple(getattr(dataset, "metadata_keys", ()))
        self.transforms(provided, tuple(getattr(dataset, "splits", ())))
        self.model(provided)
        self.train()
        self.eval()
        self.run_section()

    def data(self) -> Any:
        data = self.check_mapping(self.cfg.get("data"), "data")
        if "type" not in data:
            self.fail("data", "missing 'type' (the registered dataset; see: panconv list --kind dataset)")
        dataset = self.component("dataset", builder.dataset_spec(data), "data", skip=("root", "split"))
        for key, expected in (("batch_size", int), ("eval_batch_size", (int, type(None))), ("num_workers", int),
                              ("shuffle", bool), ("drop_last", bool), ("pin_memory", bool),
                              ("root", (str, type(None))), ("transforms", list)):
            if key in data:
                self.check_type(data[key], expected, f"data.{key}")
        self.at_least(data, ("batch_size", "eval_batch_size"), "data")
        self.at_least(data, ("num_workers",), "data", minimum=0)
        splits = self.check_mapping(data.get("splits"), "data.splits")
        valid = tuple(getattr(dataset, "splits", ()))
        for stage, split in splits.items():
            if stage not in STAGES:
                self.fail(f"data.splits.{stage}",
                          f"unknown stage{_suggest(stage, STAGES)}; stages: {', '.join(STAGES)}")
            if split is not None and valid and split not in valid:
                self.fail(f"data.splits.{stage}", f"{data['type']} has no split '{split}'"
                                                  f"{_suggest(split, valid)}; its splits: {', '.join(valid)}")
        return dataset

    def transforms(self, provided: tuple[str, ...], valid: tuple[str, ...]) -> None:
        data = self.cfg["data"]
        for i, spec in enumerate(data.get("transforms") or []):
            spec = self.check_mapping(spec, f"data.transforms.{i}")
            chosen = spec.get("splits")
            if chosen is not None and (not isinstance(chosen, list) or any(c not in valid for c in chosen)):
                self.fail(f"data.transforms.{i}.splits", f"expected a list of {data['type']}'s splits "
                                                         f"({', '.join(valid)}), got {shown(chosen)}")
            self.component("transform", {k: v for k, v in spec.items() if k != "splits"}, f"data.transforms.{i}",
                           provided=provided)

    def model(self, provided: tuple[str, ...]) -> None:
        cfg = self.cfg
        if "model" not in cfg or cfg["model"] is None:
            self.fail("model", "missing section (model: {type: ...} or model: {backbone: ..., head: ...})")
        model = self.check_mapping(cfg["model"], "model")
        if builder.is_composed(model):
            for key in model:
                if key not in builder.COMPOSED_KEYS:
                    hint = _suggest(key, (*builder.COMPOSED_KEYS, "type"))
                    self.fail(f"model.{key}",
                              f"unknown key: a model is either {{type: ...}} or {{backbone, neck, head}}{hint}")
            for key in ("backbone", "head"):
                if not model.get(key):
                    self.fail(f"model.{key}", "missing (a composed model needs a backbone and a head)")
        for part in builder.model_parts(model):
            injected = () if part.kind in ("model", "backbone") else builder.INJECTED
            self.component(part.kind, model[part.kind] if part.kind != "model" else model, part.path,
                           injected=injected, provided=provided)
        dry_build(model, self.file)

    def train(self) -> None:
        train = self.check_mapping(self.cfg.get("train"), "train")
        self.check_keys(train, TRAIN_KEYS, "train")
        self.at_least(train, ("epochs", "accumulate", "val_interval", "log_interval"), "train")
        if train.get("grad_clip") is not None and train["grad_clip"] <= 0:
            self.fail("train.grad_clip", f"must be > 0 (or null), got {train['grad_clip']}")
        checkpointing = train.get("activation_checkpointing")
        if isinstance(checkpointing, list) and not (checkpointing and all(isinstance(p, str) and p
                                                                          for p in checkpointing)):
            self.fail("train.activation_checkpointing", "expected true/false or a non-empty list of module-name "
                      f"patterns (e.g. ['backbone.stages.*']), got {shown(checkpointing)}")
        self.optimizer(train["optimizer"])
        for i, sched in enumerate(train.get("scheduler") or []):
            self.scheduler(sched, f"train.scheduler.{i}")
        ckpt = self.check_mapping(train.get("checkpoint"), "train.checkpoint")
        self.check_keys(ckpt, CHECKPOINT_KEYS, "train.checkpoint")
        self.at_least(ckpt, ("interval", "max_keep"), "train.checkpoint")

    def eval(self) -> None:
        ev = self.check_mapping(self.cfg.get("eval"), "eval")
        self.check_keys(ev, EVAL_KEYS, "eval")
        for i, spec in enumerate(ev.get("evaluators") or []):
            self.component("evaluator", spec, f"eval.evaluators.{i}")

    def run_section(self) -> None:
        run = self.check_mapping(self.cfg.get("run"), "run")
        self.check_keys(run, RUN_KEYS, "run")
        device = run.get("device", "auto")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            self.fail("run.device", f"expected auto, cpu, cuda or cuda:N, got {shown(device)}")
        if run.get("launcher", "auto") not in ("auto", "none", "pytorch"):
            self.fail("run.launcher", f"expected auto, none or pytorch, got {shown(run['launcher'])}")
        if run.get("launcher") == "pytorch" and "WORLD_SIZE" not in os.environ:
            self.fail("run.launcher", "'pytorch' needs the environment torchrun sets (WORLD_SIZE, RANK, ...): "
                                      "start with torchrun, or use launcher: auto")
        if run.get("strategy", "ddp") not in ("ddp", "fsdp"):
            self.fail("run.strategy", f"expected ddp or fsdp, got {shown(run['strategy'])}")
        self.init_from(run)
        if run.get("threads") is not None and run["threads"] < 1:
            self.fail("run.threads", f"must be >= 1, got {run['threads']}")
        seed = run.get("seed")
        if seed is not None and not 0 <= seed < 2**32:
            self.fail("run.seed", f"must be in 0 ... 2**32 - 1 (or null), got {shown(seed)}")
        if run.get("work_dir"):
            problem = _unwritable(Path(run["work_dir"]).expanduser())
            if problem:
                self.fail("run.work_dir", problem)

    def init_from(self, run: dict) -> None:
        """``run.init_from``: PATH, or ``{path: PATH, map: {model_prefix: checkpoint_prefix}, entry: NAME,
        convert: "module:function"}``."""
        spec = run.get("init_from")
        if spec is None:
            return
        if run.get("load_from"):
            self.fail("run.init_from", "set either run.load_from (all the weights) or run.init_from (the weights "
                                       "under some prefixes), not both")
        if isinstance(spec, str):
            return
        self.check_keys(spec, INIT_FROM_KEYS, "run.init_from")
        if "path" not in spec:
            self.fail("run.init_from.path", "missing: the checkpoint to take the weights from")
        for dst, src in (spec.get("map") or {}).items():
            if not isinstance(dst, str) or not isinstance(src, str):
                self.fail(f"run.init_from.map.{_key(dst)}", f"expected a model-prefix: checkpoint-prefix pair of "
                                                            f"strings, got {shown(dst)}: {shown(src)}")
        if spec.get("map") == {}:
            self.fail("run.init_from.map", "empty: name at least one model prefix (\"\" for every entry)")
        if spec.get("convert") is not None:
            try:
                resolve_function(spec["convert"])
            except ValueError as exc:
                self.fail("run.init_from.convert", str(exc))

    def optimizer(self, spec: Any) -> None:
        import torch.optim

        spec = self.check_mapping(spec, "train.optimizer")
        name = spec.get("type")
        options = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                   and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer"]
        if name not in options:
            self.fail("train.optimizer.type", f"unknown optimizer {shown(name)}{_suggest(name, options)}; "
                                              f"any torch.optim class works ({', '.join(sorted(options)[:6])}, ...)")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        self.signature(getattr(torch.optim, name), kwargs, "train.optimizer", f"torch.optim.{name}",
                       injected=("params",))
        try:  # the optimizer's own range checks (negative lr, betas outside [0, 1), ...)
            getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))], **kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            self.fail("train.optimizer", f"torch.optim.{name} rejects these arguments: {_key(str(exc), 200)}")

    def scheduler(self, spec: Any, path: str) -> None:
        import mmengine.optim  # noqa: F401 - registers the schedulers
        from mmengine.registry import PARAM_SCHEDULERS

        spec = self.check_mapping(spec, path)
        name = spec.get("type")
        cls = PARAM_SCHEDULERS.get(name) if isinstance(name, str) else None
        if cls is None:
            options = sorted(PARAM_SCHEDULERS.module_dict)
            self.fail(f"{path}.type", f"unknown scheduler {shown(name)}{_suggest(name, options)}; "
                                      f"e.g. {', '.join(o for o in options if 'LR' in o)[:120]}")
        # mmengine's LR schedulers forward (*args, **kwargs) to a ParamScheduler: check that one
        target = next((klass for klass in cls.__mro__ if "__init__" in vars(klass) and not any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(klass.__init__).parameters.values())), cls)
        self.signature(target, {k: v for k, v in spec.items() if k != "type"}, path, name,
                       injected=("optimizer", "param_name"))


#: what a config may make the process build: a stage depth of 2**63 must not hang validation
#: (the largest models of the papers have a few thousand parameter tensors and submodules)
MAX_MODULES = 100_000
MAX_PARAMETER_TENSORS = 100_000
MAX_PARAMETERS = 100_000_000_000


class _TooLarge(Exception):
    pass


def dry_build(model_cfg: dict, file: str) -> None:
    """Build the model on the meta device (no memory, no data) so a constructor's own checks run
    at validation time; metadata inputs the data would fill are taken from the constructors'
    defaults (or 2). Errors name the config file and the component's key path."""
    import torch
    from torch.nn.modules import module as torch_module

    placeholders = _metadata_placeholders(model_cfg)
    counts = {"modules": 0, "parameters": 0, "tensors": 0}

    def on_module(parent, name, submodule):
        counts["modules"] += 1
        if counts["modules"] > MAX_MODULES:
            raise _TooLarge(f"more than {MAX_MODULES:,} modules")

    def on_parameter(parent, name, parameter):
        if parameter is not None:
            counts["tensors"] += 1
            if counts["tensors"] > MAX_PARAMETER_TENSORS:
                raise _TooLarge(f"more than {MAX_PARAMETER_TENSORS:,} parameter tensors")
            counts["parameters"] += parameter.numel()
            if counts["parameters"] > MAX_PARAMETERS:
                raise _TooLarge(f"more than {MAX_PARAMETERS:,} parameters")

    hooks = [torch_module.register_module_module_registration_hook(on_module),
             torch_module.register_module_parameter_registration_hook(on_parameter)]
    part = builder.model_parts(model_cfg)[0]
    initialisers = _skip_weight_init()
    real_import = builtins.__import__

    cpu = torch.device("cpu")
    importing = []

    def import_off_meta(*args, **kwargs):  # a module first imported by a constructor keeps real tensors
        if importing:
            return real_import(*args, **kwargs)
        importing.append(True)
        try:
            with cpu:
                return real_import(*args, **kwargs)
        finally:
            importing.pop()

    builtins.__import__ = import_off_meta
    try:
        with torch.device("meta"):
            built = {}
            info = None
            for part in builder.model_parts(model_cfg):
                args = () if part.kind in ("model", "backbone") else (info,)
                spec = {**placeholders.get(part.path, {}), **part.spec}
                built[part.kind] = builder.build_component(part.kind, spec, *args)
                if part.kind in ("backbone", "neck"):
                    from .api.modules import feature_info_of

                    info = feature_info_of(built[part.kind])
    except _TooLarge as exc:
        raise ConfigError(f"{file}: {part.path}: {part.type} would build {exc}; check the sizes in this "
                          f"section") from None
    except ConfigError:
        raise
    except PanconvError as exc:  # e.g. a CheckpointError of a file the section names: same type, with its place
        try:
            placed = type(exc)(f"{file}: {part.path}: {exc}")
        except TypeError:  # a plugin's error class with its own constructor: raised as it came
            raise exc from None
        raise placed from None
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - the constructor's own complaint, with its place
        text = " ".join(str(exc).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        raise ConfigError(f"{file}: {part.path}: {part.type} rejects these arguments: "
                          f"{type(exc).__name__}: {text}") from None
    finally:
        builtins.__import__ = real_import
        for hook in hooks:
            hook.remove()
        for name, function in initialisers.items():
            setattr(torch.nn.init, name, function)


def _skip_weight_init() -> dict:
    """Make ``torch.nn.init``'s initialisers no-ops (meta tensors hold no values; initialising them
    costs 10x the build); returns the originals to restore."""
    import torch.nn.init as init

    saved = {name: getattr(init, name) for name in dir(init)
             if name.endswith("_") and not name.startswith("_") and callable(getattr(init, name))}
    for name in saved:
        setattr(init, name, lambda tensor, *args, **kwargs: tensor)
    return saved


def _metadata_placeholders(model_cfg: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for part in builder.model_parts(model_cfg):
        factory = get_component(part.kind, part.type)
        sig, _ = factory_signature(factory)
        values = {}
        for name in builder.metadata_inputs(factory):
            if name in part.spec:
                continue
            param = sig.parameters.get(name) if sig is not None else None
            values[name] = param.default if param is not None and param.default is not param.empty else 2
        out[part.path] = values
    return out


def type_problem(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for the annotation ``hint`` (``"int, got str 'a'"``), or None.

    Understands ``int``/``float``/``bool``/``str``, ``list[X]``/``tuple[X, ...]``/``Sequence[X]``
    (element by element), ``dict``, ``Optional``/unions and ``Literal``; richer annotations pass.
    ``null`` is accepted only where the annotation allows ``None``.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return type_problem(value, args[0]) or constraint_problem(value, hint.__metadata__)
    if hint is typing.Any or isinstance(hint, typing.TypeVar):
        return None
    if origin in (typing.Union, types.UnionType):
        problems = [type_problem(value, arg) for arg in args]
        if any(p is None for p in problems):
            return None
        # the one option of the value's shape (a scalar, a list) says what is wrong with it
        fitting = [p for arg, p in zip(args, problems) if arg is not type(None) and _same_shape(value, arg)]
        if len(fitting) == 1:
            return fitting[0]
        return f"{_hint_name(hint)}, got {_describe(value)}"
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return None
        return f"one of {', '.join(map(repr, args))}, got {_describe(value)}"
    if hint is type(None) or hint is None:
        return None if value is None else f"null, got {_describe(value)}"
    if value is None:
        return f"{_hint_name(hint)}, got null"
    if hint in (int, float, bool, str):
        if isinstance(value, bool) and hint is not bool:
            return f"{_hint_name(hint)}, got bool {value!r}"
        if hint is float and isinstance(value, int):
            return None
        return None if isinstance(value, hint) else f"{_hint_name(hint)}, got {_describe(value)}"
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence, typing.Sequence, set, frozenset):
        if not isinstance(value, (list, tuple)):
            return f"{_hint_name(hint)}, got {_describe(value)}"
        element_hints = [a for a in args if a is not Ellipsis]
        if container is tuple and args and Ellipsis not in args:
            if len(args) != len(value):
                return f"{_hint_name(hint)} ({len(args)} items), got {len(value)} items {_short(value)}"
            pairs = zip(value, args)
        else:
            pairs = ((item, element_hints[0]) for item in value) if element_hints else ()
        for i, (item, item_hint) in enumerate(pairs):
            problem = type_problem(item, item_hint)
            if problem is not None:
                return f"{_hint_name(hint)}, item {i}: {problem}"
        return None
    if container in (dict, collections.abc.Mapping, typing.Mapping):
        return None if isinstance(value, dict) else f"a mapping, got {_describe(value)}"
    return None


def constraint_problem(value: Any, constraints: tuple) -> str | None:
    """What ``value`` breaks among ``annotated_types`` constraints (``Ge(1)``, ``Interval(ge=0, lt=1)``,
    ``MinLen(1)``) of an ``Annotated[...]`` parameter, or None. Other metadata is ignored."""
    try:
        import annotated_types as at
    except ImportError:  # pragma: no cover - a core dependency
        return None
    flat: list = []
    for item in constraints:
        flat.extend(item if isinstance(item, at.GroupedMetadata) else [item])
    checks = ((at.Gt, "gt", ">", lambda v, b: v > b), (at.Ge, "ge", ">=", lambda v, b: v >= b),
              (at.Lt, "lt", "<", lambda v, b: v < b), (at.Le, "le", "<=", lambda v, b: v <= b))
    for item in flat:
        for cls, attr, sign, ok in checks:
            if isinstance(item, cls) and isinstance(value, (int, float)) and not ok(value, getattr(item, attr)):
                return f"a value {sign} {getattr(item, attr)}, got {shown(value)}"
        if isinstance(item, at.Predicate) and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                ok = bool(item.func(value))
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                return f"a value for which {getattr(item.func, '__name__', 'the check')} holds, got {shown(value)}"
        if isinstance(item, at.MinLen) and isinstance(value, (list, tuple, str)) and len(value) < item.min_length:
            return f"at least {item.min_length} items, got {len(value)}"
        if isinstance(item, at.MaxLen) and isinstance(value, (list, tuple, str)) and len(value) > item.max_length:
            return f"at most {item.max_length} items, got {len(value)}"
    return None


def _same_shape(value: Any, hint: Any) -> bool:
    """Whether ``value`` is the kind of thing ``hint`` describes (a list for a sequence, a scalar for
    a number or string), ignoring constraints and element types."""
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    origin = typing.get_origin(hint) or hint
    is_list = isinstance(value, (list, tuple))
    if origin in (list, tuple, collections.abc.Sequence, typing.Sequence, set, frozenset):
        return is_list
    if origin is typing.Literal:
        return not is_list and not isinstance(value, dict)
    if origin in (int, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (str, bool):
        return isinstance(value, origin)
    return False


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Annotated:
        return _hint_name(typing.get_args(hint)[0])
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if hint in (int, float, bool, str):
        return hint.__name__
    if hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_hint_name(a) for a in args))
    if origin in (list, tuple, collections.abc.Sequence, set, frozenset) or hint in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {_hint_name(inner[0])}" if len(set(inner)) == 1 else "a list"
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"


def _type_names(types_) -> str:
    names = {int: "int", float: "float", bool: "bool", str: "str", dict: "a mapping", list: "a list",
             tuple: "a list", type(None): "null"}
    seen = []
    types_ = types_ if isinstance(types_, tuple) else (types_,)
    if float in types_:  # ints are accepted where floats are: say "float"
        types_ = tuple(t for t in types_ if t is not int)
    for t in types_:
        name = names.get(t, getattr(t, "__name__", str(t)))
        if name not in seen:
            seen.append(name)
    return " or ".join(seen)


def _unwritable(path: Path) -> str | None:
    """Why outputs cannot be written under ``path`` (its nearest existing ancestor), or None."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write under {probe} (permission denied)"
    return None


def validate_config(cfg: Config) -> None:
    """Check every key against what it feeds; raise a one-line :class:`ConfigError`."""
    _Validator(cfg).run()
