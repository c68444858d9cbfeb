"""Typed registries of components contributed by plugins.

Names are qualified by plugin (``graph.LightGCN``); the short name works when it is unique
across plugins. Entries hold an import string and import it on first use, so listing
never imports torch-heavy modules.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import AmbiguousNameError, DuplicateComponentError, UnknownComponentError

KINDS = ("model", "backbone", "neck", "head", "dataset", "evaluator", "transform", "kernel", "loss")
MODEL_KINDS = ("model", "backbone", "neck", "head")

# First-party plugins: what to install when a qualified name points at one that is absent.
FIRST_PARTY = {
    "graph": "panconv-graph",
    "vision": "panconv-vision",
    "pointcloud": "panconv-pointcloud",
    "audio": "panconv-audio",
    "sequence": "panconv-sequence",
    "genomics": "panconv-genomics",
    "documents": "panconv-documents",
    "education": "panconv-education",
}
# First-party plugins built on others (declared in their pyproject too): installed together.
FIRST_PARTY_REQUIRES = {
    "genomics": ("sequence",),
    "pointcloud": ("vision",),
}


@dataclass
class Entry:
    """One registered component. ``target`` is ``"module:attr"`` or the object itself."""

    kind: str
    name: str
    plugin: str
    target: Any
    doc: str | None = None
    tags: tuple[str, ...] = ()
    #: constructor arguments this entry fixes (a size variant: ``convnext_tiny`` is ``ConvNeXt``
    #: with ``depths``/``dims`` set); ``None`` for a plain factory
    args: dict[str, Any] | None = None
    _loaded: Any = field(default=None, repr=False)

    @property
    def qualname(self) -> str:
        return f"{self.plugin}.{self.name}"

    @property
    def target_path(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return f"{getattr(self.target, '__module__', '?')}:{getattr(self.target, '__qualname__', '?')}"

    def load(self) -> Any:
        """Import (once) and return the factory."""
        if self._loaded is None:
            if isinstance(self.target, str):
                module_name, _, attr = self.target.partition(":")
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            else:
                obj = self.target
            self._loaded = Variant(obj, self.args, self.name, self.doc) if self.args is not None else obj
        return self._loaded

    @property
    def is_variant(self) -> bool:
        return self.args is not None

    def summary(self) -> str:
        """One line of description; imports the target only if no doc was registered."""
        if self.doc:
            return self.doc
        doc = getattr(self.load(), "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Variant:
    """A size variant: a factory with some constructor arguments fixed as data (timm's ``model_args``).

    ``Variant(ConvNeXt, {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)}, "convnext_tiny")``
    builds ``ConvNeXt(depths=..., dims=..., **overrides)``. Its ``__signature__`` is the factory's
    with those defaults, so config validation checks every key and ``panconv info`` shows the
    real signature; class attributes (``example_config``, ``metadata_inputs``, ...) are the
    factory's.
    """

    def __init__(self, factory: Callable, args: dict[str, Any], name: str, doc: str | None = None):
        self.factory = factory
        self.args = dict(args)
        self.__name__ = self.__qualname__ = name
        self.__module__ = getattr(factory, "__module__", None)
        base_doc = inspect.getdoc(factory) or ""
        self.__doc__ = doc or (base_doc.splitlines()[0] if base_doc else None)
        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            unknown = sorted(set(self.args) - set(sig.parameters))
            if unknown and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                raise TypeError(f"variant {name}: {getattr(factory, '__qualname__', factory)} has no parameter "
                                f"{', '.join(unknown)}")
            params, keyword_only = [], False
            for p in sig.parameters.values():
                if p.kind is p.VAR_POSITIONAL:
                    continue
                if p.name in self.args:
                    p = p.replace(default=self.args[p.name])
                    keyword_only = True
                if keyword_only and p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY):
                    p = p.replace(kind=p.KEYWORD_ONLY)
                params.append(p)
            self.__signature__ = sig.replace(parameters=params)

    def __call__(self, *args, **kwargs):
        return self.factory(*args, **{**self.args, **kwargs})

    def __getattr__(self, attr: str) -> Any:  # class attributes of the factory
        if attr.startswith("__") or attr == "factory":
            raise AttributeError(attr)
        return getattr(self.factory, attr)

    def __repr__(self) -> str:
        return f"<variant {self.__name__} of {getattr(self.factory, '__qualname__', self.factory)}>"


def factory_signature(factory: Callable) -> tuple[inspect.Signature | None, dict[str, Any]]:
    """The signature a config is checked against, and the parameters' resolved type hints.

    Works for classes (their ``__init__``), functions and :class:`Variant` s; the one place
    config validation, ``panconv info`` and the builder look at a constructor.
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None, {}
    base = factory.factory if isinstance(factory, Variant) else factory
    target = base.__init__ if inspect.isclass(base) else base
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no type checks
        hints = {}
    return sig, hints


class Registry:
    """All components of one kind, indexed by qualified and short name."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown registry kind {kind!r}; kinds are {', '.join(KINDS)}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._sources: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda e: e.qualname))

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownComponentError:
            return False
        return True

    def add(self, entry: Entry, source: str | None = None) -> None:
        """Add ``entry``; the same qualified name from two sources is an error naming both."""
        key = entry.qualname
        source = source or f"plugin '{entry.plugin}'"
        if key in self._entries:
            raise DuplicateComponentError(
                f"{self.kind} '{key}' is registered twice: by {self._sources[key]} and by {source}; "
                f"rename one or disable a plugin with PANCONV_DISABLE_PLUGINS"
            )
        self._entries[key] = entry
        self._sources[key] = source

    def remove_plugin(self, plugin: str) -> None:
        for key in [k for k, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[key]
            del self._sources[key]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, *, where: str | None = None, plugin_status=None) -> Entry:
        """Find ``name`` (qualified or unique short name) or raise a one-line error.

        ``where`` (``"file.yaml: model.type"``) is put into the message;
        ``plugin_status(prefix)`` returns a reason when the prefix names a plugin that failed.
        """
        if not isinstance(name, str) or not name:
            raise UnknownComponentError(
                f"{self.kind} name must be a non-empty string, got {name!r}{_at(where)}"
            )
        if name in self._entries:
            return self._entries[name]
        matches = [e for e in self._entries.values() if e.name == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            options = ", ".join(sorted(e.qualname for e in matches))
            raise AmbiguousNameError(
                f"{self.kind.capitalize()} name '{name}'{_at(where)} is ambiguous: {options}; "
                f"use the qualified name"
            )
        prefix, dot, _ = name.partition(".")
        if dot:
            reason = plugin_status(prefix) if plugin_status else None
            if reason:
                raise UnknownComponentError(
                    f"{self.kind.capitalize()} '{name}'{_at(where)} is not available: {reason}"
                )
        raise UnknownComponentError(
            f"Unknown {self.kind} '{name}'{_at(where)}.{self._suggest(name)}"
        )

    def _suggest(self, name: str) -> str:
        candidates = list(self._entries) + [e.name for e in self._entries.values()]
        lowered = {c.lower(): c for c in candidates}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        qualified = []
        for c in close:
            original = lowered[c]
            entry = self._entries.get(original) or next(
                e for e in self._entries.values() if e.name == original
            )
            if entry.qualname not in qualified:
                qualified.append(entry.qualname)
        if qualified:
            return " Did you mean " + " or ".join(f"'{q}'" for q in qualified) + "?"
        if not self._entries:
            return f" No {self.kind} is registered: is the plugin that provides it installed? (panconv plugins)"
        return f" See: panconv list --kind {self.kind}"

    def build(self, name: str, *args, **kwargs) -> Any:
        return self.get(name).load()(*args, **kwargs)


def _at(where: str | None) -> str:
    return f" in {where}" if where else ""


def make_register(registry_for: Callable[[str], Registry], plugin: str, default_kind: str,
                  allowed_kinds: Iterable[str], added: list) -> Callable:
    """The ``register`` callable handed to one plugin's contribution hook."""
    allowed = tuple(allowed_kinds)

    def register(name: str, target: Any, *, kind: str | None = None, doc: str | None = None,
                 tags: Iterable[str] = (), args: dict[str, Any] | None = None) -> None:
        kind = kind or default_kind
        if kind not in allowed:
            raise ValueError(
                f"plugin '{plugin}' registered '{name}' with kind={kind!r}; allowed here: {', '.join(allowed)}"
            )
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"plugin '{plugin}' registered an invalid name {name!r} (no dots allowed)")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(
                f"plugin '{plugin}' registered '{name}' with target {target!r}; use 'package.module:attr'"
            )
        if args is not None and (not isinstance(args, dict) or not all(isinstance(k, str) for k in args)):
            raise ValueError(f"plugin '{plugin}' registered '{name}' with args={args!r}; expected a dict of "
                             f"constructor arguments")
        entry = Entry(kind=kind, name=name, plugin=plugin, target=target, doc=doc, tags=tuple(tags),
                      args=dict(args) if args is not None else None)
        registry_for(kind).add(entry, source=f"plugin '{plugin}'")
        added.append(entry)

    return register
