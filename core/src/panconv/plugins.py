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

import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import AmbiguousNameError, PluginError, UnknownComponentError
from .registry import FIRST_PARTY, FIRST_PARTY_REQUIRES, KINDS, MODEL_KINDS, Entry, Registry, make_register

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


class _UserInterrupt(Exception):
    """Marks a Ctrl-C that arrived while plugin code ran (re-raised as KeyboardInterrupt)."""


@contextlib.contextmanager
def _plugin_code() -> Iterator[None]:
    """Run plugin code so that it can break only itself.

    ``sys.exit()`` or a ``KeyboardInterrupt`` raised by the plugin become ordinary failures;
    a real Ctrl-C from the user (SIGINT while the plugin runs) still interrupts the command.
    """
    interrupted = []
    previous = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        def on_sigint(signum, frame):
            interrupted.append(True)
            raise KeyboardInterrupt

        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except (ValueError, OSError):  # not settable here (embedded interpreters)
            main_thread = False
    try:
        yield
    except KeyboardInterrupt:
        if interrupted:
            raise
        raise PluginError("raised KeyboardInterrupt (not a Ctrl-C from the user)") from None
    except SystemExit as exc:
        raise PluginError(f"called sys.exit({exc.code!r})") from None
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def install_hint(plugin: str) -> str:
    """How to install the first-party plugin ``plugin`` (and the first-party plugins it is built
    on): valid in and outside a source checkout."""
    needs = [*FIRST_PARTY_REQUIRES.get(plugin, ()), plugin]
    hint = "pip install " + " ".join(FIRST_PARTY.get(p, f"panconv-{p}") for p in needs)
    if all((Path.cwd() / "plugins" / p / "pyproject.toml").is_file() for p in needs):
        hint += " (from this source checkout: pip install " + " ".join(f"./plugins/{p}" for p in needs) + ")"
    return hint


def _provided_by(plugin: str) -> str:
    needs = FIRST_PARTY_REQUIRES.get(plugin, ())
    also = f" (which needs {', '.join(FIRST_PARTY[p] for p in needs)})" if needs else ""
    return f"{FIRST_PARTY[plugin]}{also}"


#: hook implementation options panconv does not honour (each plugin's hook is called on its own,
#: so that one plugin can fail without stopping the others): refused at registration
_UNSUPPORTED_OPTIONS = ("wrapper", "hookwrapper")

#: module names that say nothing about a local plugin; its name comes from the parent then
_GENERIC_MODULE_NAMES = ("plugin", "plugins", "hooks", "panconv_plugin", "__init__")


def local_plugin_name(spec: str) -> tuple[str, str]:
    """``(name, target)`` of a config's ``plugins:`` item.

    ``"name=target"`` names it explicitly; otherwise the name is the module's (or file's)
    last part, or its parent's when that part is generic (``pkga.plugin`` -> ``pkga``).
    """
    name, eq, target = spec.partition("=")
    if eq:
        name, target = name.strip(), target.strip()
        if not name.isidentifier():
            raise PluginError(f"local plugin '{spec}': '{name}' is not a valid plugin name (a Python identifier)")
        return name, target
    target = spec
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        parts = [path.stem, path.parent.name]
    else:
        parts = list(reversed(target.split(".")))
    for part in parts:
        if part and part not in _GENERIC_MODULE_NAMES:
            return part.replace("-", "_"), target
    return parts[0], target


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
            if ep.name in deny or (allow is not None and ep.name not in allow):
                if ep.name not in self.records:
                    why = "PANCONV_DISABLE_PLUGINS" if ep.name in deny else "not in PANCONV_PLUGINS"
                    self.records[ep.name] = PluginRecord(ep.name, ep.value, dist_name, version,
                                                         status="disabled", error=why)
                continue
            reserved = FIRST_PARTY.get(ep.name)
            if reserved and dist_name is not None and _normal(dist_name) != _normal(reserved):
                # a third-party distribution may not take a first-party plugin's name
                msg = (f"plugin name '{ep.name}' belongs to {reserved}; {dist_name} also claims it "
                       f"(entry point {ep.value}) and is ignored: uninstall {dist_name} or rename its entry point")
                if self.strict:
                    raise PluginError(msg)
                key = f"{ep.name}@{dist_name}"
                self.records[key] = PluginRecord(key, ep.value, dist_name, version, status="failed", error=msg)
                continue
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
            self._add_module(ep.name, ep.value, distribution=dist_name, version=version)

    def add_local(self, spec: str, base_dir: Path | None = None) -> str:
        """Load an unpackaged plugin: a module name or a ``.py`` path, optionally ``name=...``.

        Returns the plugin's name. Loading the same target twice is a no-op; two different
        targets that would get the same name (or a name an installed plugin has) raise
        :class:`PluginError` naming both, so one can never shadow the other.
        """
        name, target = local_plugin_name(spec)
        is_path = target.endswith(".py") or os.sep in target or "/" in target
        if is_path:
            path = Path(target)
            if not path.is_absolute() and base_dir is not None:
                path = (base_dir / path)
            target = str(path.resolve())
        same = next((r.name for r in self.records.values() if r.module == target), None)
        if same is not None:  # already loaded (an installed plugin's entry point, or this config before)
            return same
        existing = self.records.get(name)
        if existing is not None:
            if existing.module == target:
                return name
            other = existing.distribution or existing.module
            raise PluginError(f"local plugin '{spec}' would be named '{name}', which {other} already is; "
                              f"name one explicitly ('othername={spec}')")
        if is_path:
            record = PluginRecord(name, target, None, None)
            self.records[name] = record
            try:
                with _plugin_code():
                    path = Path(target)
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
            self._add_module(name, target)
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
            with _plugin_code():
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
        for caller in self.pm.get_hookcallers(module) or []:
            for impl in caller.get_hookimpls():
                used = [o for o in _UNSUPPORTED_OPTIONS if impl.plugin_name == record.name and getattr(impl, o)]
                if used:
                    self.pm.unregister(module)
                    self._fail(record, PluginError(
                        f"{caller.name} is declared with @hookimpl({used[0]}=True), which panconv does not "
                        f"support: each plugin's hook is called on its own (see panconv.hookspecs)"))
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
        self._collect([r for r in self.records.values() if r.status == "ok" and not r.contributes])

    def _collect_plugin(self, record: PluginRecord) -> None:
        if record.status == "ok" and not record.contributes:
            self._collect([record])

    def _collect(self, records: list[PluginRecord]) -> None:
        """Call the contribution hooks of ``records``: hook by hook, plugins in pluggy's call order
        (``tryfirst``/``trylast`` honoured), each with its own ``register``; a plugin that raises
        is rolled back (all or nothing) and marked failed."""
        wanted = {r.name: r for r in records}
        added: dict[str, list[Entry]] = {name: [] for name in wanted}
        for hook_name, default_kind in hookspecs.CONTRIBUTION_HOOKS.items():
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                record = wanted.get(impl.plugin_name)
                if record is None or record.status != "ok":
                    continue
                allowed = MODEL_KINDS if default_kind == "model" else (default_kind,)
                register = make_register(self.registries.__getitem__, record.name, default_kind, allowed,
                                         added[record.name])
                try:
                    with _plugin_code():
                        impl.function(register=register)
                except Exception as exc:  # noqa: BLE001
                    for kind in {e.kind for e in added[record.name]}:  # all or nothing
                        self.registries[kind].remove_plugin(record.name)
                    added[record.name] = []
                    self._fail(record, exc, hook=hook_name)
        for name, entries in added.items():
            for entry in entries:
                wanted[name].contributes[entry.kind] = wanted[name].contributes.get(entry.kind, 0) + 1

    # ------------------------------------------------------------------ lookups
    def registry(self, kind: str) -> Registry:
        self.collect()
        return self.registries[kind]

    def plugin_status(self, prefix: str) -> str | None:
        """Why components of plugin ``prefix`` cannot be found, or None when it is loaded."""
        record = self.records.get(prefix)
        if record is not None and record.status in ("failed", "disabled"):
            return record.reason
        if record is None:
            impostors = [r for key, r in self.records.items() if key.startswith(f"{prefix}@")]
            if impostors:
                return impostors[0].error
            if prefix in FIRST_PARTY:
                return f"it is provided by {_provided_by(prefix)}, which is not installed: {install_hint(prefix)}"
        return None

    def get(self, kind: str, name: str, *, where: str | None = None) -> Entry:
        """Look ``name`` up in the ``kind`` registry; when it is registered under another kind, say
        which and how to use it."""
        try:
            return self.registry(kind).get(name, where=where, plugin_status=self.plugin_status)
        except AmbiguousNameError:
            raise
        except UnknownComponentError as exc:
            if not isinstance(name, str) or ("." in name and self.plugin_status(name.partition(".")[0])):
                raise
            other = self._other_kinds(kind, name)
            if not other:
                raise
            raise UnknownComponentError(f"{_kind_label(kind)} '{name}'{_at(where)} is not a {kind}: "
                                        f"{other}") from exc

    def _other_kinds(self, kind: str, name: str) -> str:
        found = []
        for other in KINDS:
            if other == kind:
                continue
            try:
                found.append(self.registries[other].get(name))
            except UnknownComponentError:
                continue
        if not found:
            return ""
        entry = found[0]
        usage = USAGE.get(entry.kind, "").format(name=entry.qualname)
        return f"{entry.qualname} is a {entry.kind}" + (f"; {usage}" if usage else "")

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
                with _plugin_code():
                    impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001
                if self.strict:
                    raise PluginError(f"Plugin '{impl.plugin_name}' raised in {hook_name}: {_one_line(exc)}") from exc
                warnings.warn(f"Plugin '{impl.plugin_name}' raised in {hook_name}: {_one_line(exc)}", stacklevel=2)

    def add_commands(self, subparsers) -> None:
        self.discover()
        for impl in reversed(self.pm.hook.panconv_add_commands.get_hookimpls()):
            try:
                with _plugin_code():
                    impl.function(subparsers=subparsers)
            except Exception as exc:  # noqa: BLE001
                record = self.records.get(impl.plugin_name)
                if record is not None:
                    self._fail(record, exc, hook="panconv_add_commands")


#: how to use a component of each kind, for "is a backbone, not a model" errors
USAGE = {
    "model": "use it as model: {{type: {name}}}",
    "backbone": ("compose it (model: {{backbone: {{type: {name}}}, head: {{type: core.LinearClsHead}}}}) "
                 "or in Python: panconv.create_model('{name}', num_classes=N)"),
    "neck": "use it as model: {{backbone: ..., neck: {{type: {name}}}, head: ...}}",
    "head": "use it as model: {{backbone: ..., head: {{type: {name}}}}}",
    "dataset": "use it as data: {{type: {name}}}",
    "evaluator": "use it in eval: {{evaluators: [{{type: {name}}}]}}",
    "transform": "use it in data: {{transforms: [{{type: {name}}}]}}",
    "loss": "use it as a component's loss: {{type: {name}}}",
    "kernel": "call it from Python: panconv.api.Kernel / the plugin's module",
}


def _kind_label(kind: str) -> str:
    return kind.capitalize()


def _at(where: str | None) -> str:
    return f" in {where}" if where else ""


def _normal(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


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
