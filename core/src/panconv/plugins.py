"""Plugin discovery (entry points), isolation of broken plugins, and listing.

A plugin that fails to import, breaks the hook contract, or raises inside a contribution
hook is recorded with its error and skipped; every other plugin keeps working. ``strict``
mode (``panconv --strict``, for CI) re-raises instead.

Environment:

``PANCONV_PLUGINS=a,b``
    allow-list: load only these entry-point plugins (the built-in ``core`` always loads).
``PANCONV_DISABLE_PLUGINS=a,b``
    never load these.
``PANCONV_STRICT=1``
    same as ``--strict``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownComponentError
from .registry import KINDS, MODEL_KINDS, Entry, Registry, make_register

ENTRY_POINT_GROUP = "panconv"
BUILTIN = "core"


@dataclass
class PluginRecord:
    """What ``panconv plugins`` shows for one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "pending"  # ok | failed | disabled | pending
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    contributes: dict[str, int] = field(default_factory=dict)
    traceback: str | None = None

    @property
    def reason(self) -> str:
        if self.status == "disabled":
            return f"plugin '{self.name}' is disabled ({self.error})"
        return f"plugin '{self.name}' failed to load: {self.error} (other plugins are unaffected)"


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}".rstrip(": ")


class PluginManager:
    """Loads plugins and owns the registries they fill."""

    def __init__(self, *, strict: bool | None = None, entry_points: bool = True):
        self.strict = bool(int(os.environ.get("PANCONV_STRICT", "0") or 0)) if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.registries: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
        self._collected = False
        self._use_entry_points = entry_points
        self._discovered = False

    # ------------------------------------------------------------------ discovery
    def discover(self) -> None:
        """Import the built-in plugin and every entry-point plugin (once)."""
        if self._discovered:
            return
        self._discovered = True
        from . import __version__

        self._add_module(BUILTIN, "panconv.builtin", distribution="panconv-core", version=__version__)
        if not self._use_entry_points:
            return
        allow = _env_list("PANCONV_PLUGINS")
        deny = set(_env_list("PANCONV_DISABLE_PLUGINS") or [])
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if ep.name in self.records:
                other = self.records[ep.name]
                if (other.distribution, other.module) == (dist_name, ep.value):
                    continue  # the same distribution seen twice on sys.path
                msg = (f"plugin name '{ep.name}' is provided by both {other.distribution or other.module} "
                       f"and {dist_name or ep.value}; uninstall one")
                if self.strict:
                    raise PluginError(msg)
                other.warnings.append(msg)
                continue
            if ep.name in deny or (allow is not None and ep.name not in allow):
                why = "PANCONV_DISABLE_PLUGINS" if ep.name in deny else "not in PANCONV_PLUGINS"
                self.records[ep.name] = PluginRecord(ep.name, ep.value, dist_name, version,
                                                     status="disabled", error=why)
                continue
            self._add_module(ep.name, ep.value, distribution=dist_name, version=version)

    def add_local(self, spec: str, base_dir: Path | None = None) -> str:
        """Load an unpackaged plugin: an importable module name or a path to a ``.py`` file."""
        path = Path(spec)
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            if not path.is_absolute() and base_dir is not None:
                path = (base_dir / path).resolve()
            name = path.stem
            if name in self.records:
                return name
            record = PluginRecord(name, str(path), None, None)
            self.records[name] = record
            try:
                if not path.is_file():
                    raise FileNotFoundError(f"no such file {path}")
                mod_spec = importlib.util.spec_from_file_location(f"panconv_local_{name}", path)
                module = importlib.util.module_from_spec(mod_spec)
                sys.modules[mod_spec.name] = module
                mod_spec.loader.exec_module(module)
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                self._fail(record, exc)
                return name
            self._register_module(record, module)
        else:
            name = spec.rsplit(".", 1)[-1]
            if name not in self.records:
                self._add_module(name, spec)
        self._collected_for(name)
        return name

    def add_plugin(self, plugin: Any, name: str) -> str:
        """Register an in-process plugin (a module or object holding hookimpls), e.g. in a notebook."""
        if name in self.records:
            raise PluginError(f"a plugin named '{name}' is already loaded")
        record = PluginRecord(name, getattr(plugin, "__name__", repr(plugin)))
        self.records[name] = record
        self._register_module(record, plugin)
        self._collected_for(name)
        return name

    def _add_module(self, name: str, module_path: str, distribution=None, version=None) -> None:
        record = PluginRecord(name, module_path, distribution, version)
        self.records[name] = record
        try:
            module = importlib.import_module(module_path.partition(":")[0])
        except Exception as exc:  # noqa: BLE001
            self._fail(record, exc)
            return
        self._register_module(record, module)

    def _register_module(self, record: PluginRecord, module: Any) -> None:
        try:
            self.pm.register(module, name=record.name)
        except Exception as exc:  # noqa: BLE001 - pluggy's PluginValidationError and friends
            self._fail(record, exc)
            return
        unknown = []
        specs = {name for name in dir(hookspecs) if name.startswith("panconv_")}
        for attr in dir(module):
            if attr.startswith("panconv_") and attr not in specs:
                unknown.append(attr)
            elif attr in specs and callable(getattr(module, attr)) and not hasattr(
                    getattr(module, attr), "panconv_impl"):
                record.warnings.append(f"plugin '{record.name}': {attr} is not decorated with @panconv.hookimpl "
                                       f"and is ignored")
        if unknown:
            msg = f"plugin '{record.name}' implements unknown hook(s) {', '.join(sorted(unknown))}"
            if self.strict:
                self.pm.unregister(module)
                self._fail(record, PluginError(msg))
                return
            record.warnings.append(msg)
        record.status = "ok"

    def _fail(self, record: PluginRecord, exc: BaseException, hook: str | None = None) -> None:
        record.status = "failed"
        where = f" in {hook}" if hook else ""
        record.error = f"{_one_line(exc)}{where}"
        record.traceback = "".join(traceback.format_exception(exc))
        if self.strict:
            raise PluginError(f"Plugin '{record.name}' failed to load{where}: {_one_line(exc)}") from exc
        warnings.warn(f"Plugin '{record.name}' failed to load: {record.error} (other plugins are unaffected)",
                      stacklevel=3)

    # ------------------------------------------------------------------ contributions
    def _collected_for(self, name: str) -> None:
        if self._collected:
            self._collect_plugin(self.records[name])

    def collect(self) -> None:
        """Run every plugin's contribution hooks (once); each plugin is isolated."""
        self.discover()
        if self._collected:
            return
        self._collected = True
        for record in list(self.records.values()):
            self._collect_plugin(record)

    def _collect_plugin(self, record: PluginRecord) -> None:
        if record.status != "ok" or record.contributes:
            return
        added: list[Entry] = []
        for hook_name, default_kind in hookspecs.CONTRIBUTION_HOOKS.items():
            impls = [i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if i.plugin_name == record.name]
            if not impls:
                continue
            function = impls[0].function
            allowed = MODEL_KINDS if default_kind == "model" else (default_kind,)
            register = make_register(self.registries.__getitem__, record.name, default_kind, allowed, added)
            try:
                function(register=register)
            except Exception as exc:  # noqa: BLE001
                for entry in added:  # all or nothing: drop what the plugin registered
                    self.registries[entry.kind].remove_plugin(record.name)
                self._fail(record, exc, hook=hook_name)
                return
        for entry in added:
            record.contributes[entry.kind] = record.contributes.get(entry.kind, 0) + 1

    # ------------------------------------------------------------------ lookups
    def registry(self, kind: str) -> Registry:
        self.collect()
        return self.registries[kind]

    def plugin_status(self, prefix: str) -> str | None:
        record = self.records.get(prefix)
        if record is not None and record.status in ("failed", "disabled"):
            return record.reason
        return None

    def get(self, kind: str, name: str, *, where: str | None = None) -> Entry:
        return self.registry(kind).get(name, where=where, plugin_status=self.plugin_status)

    def entries(self, kinds: Iterable[str] = KINDS) -> list[Entry]:
        self.collect()
        return [e for kind in kinds for e in self.registries[kind]]

    # ------------------------------------------------------------------ lifecycle
    def call_lifecycle(self, hook_name: str, **kwargs) -> None:
        """Call a lifecycle hook on every plugin; one plugin raising never stops the others."""
        self.discover()
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                if self.strict:
                    raise PluginError(f"Plugin '{impl.plugin_name}' raised in {hook_name}: {_one_line(exc)}") from exc
                warnings.warn(f"Plugin '{impl.plugin_name}' raised in {hook_name}: {_one_line(exc)}", stacklevel=2)

    def add_commands(self, subparsers) -> None:
        self.discover()
        for impl in reversed(self.pm.hook.panconv_add_commands.get_hookimpls()):
            try:
                impl.function(subparsers=subparsers)
            except Exception as exc:  # noqa: BLE001
                record = self.records.get(impl.plugin_name)
                if record is not None:
                    self._fail(record, exc, hook="panconv_add_commands")


_MANAGER: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = PluginManager()
    return _MANAGER


def reset(**kwargs) -> PluginManager:
    """Forget every loaded plugin and start again (tests, ``--strict``)."""
    global _MANAGER
    _MANAGER = PluginManager(**kwargs)
    return _MANAGER


def get(kind: str, name: str, *, where: str | None = None) -> Entry:
    """Look up a component of ``kind`` by qualified or short name."""
    return get_manager().get(kind, name, where=where)


def build(kind: str, name: str, *args, **kwargs) -> Any:
    """Build a component: ``build("backbone", "vision.ConvNeXt", depths=...)``."""
    return get(kind, name).load()(*args, **kwargs)


def known(kind: str, name: str) -> bool:
    try:
        get(kind, name)
    except UnknownComponentError:
        return False
    return True
