"""Choosing the checks of a component, running them, and the report."""

from __future__ import annotations

import fnmatch
import time

from ...registry import MODEL_KINDS
from .base import CHECKS, Check, CheckResult, ConformanceError, SkipCheck
from .capabilities import CAPABILITIES, capabilities_of
from .models import SIZE_VARIANT_CHECKS, is_size_variant


def checks_for(entry) -> dict[str, Check]:
    """The checks that apply to ``entry``: those of its kind, plus those of the capabilities it declares.

    A size variant gets only ``build_on_meta``: its class is registered and checked on its own.
    """
    if entry.kind in MODEL_KINDS and is_size_variant(entry):
        return dict(SIZE_VARIANT_CHECKS)
    declared = capabilities_of(entry)
    checks = [c for c in CHECKS.get(entry.kind, {}).values() if c.capability is None or c.capability in declared]
    return {c.name: c for c in sorted(checks, key=lambda c: c.capability is not None)}


def run_check(entry, name: str) -> CheckResult:
    """Run one check on one component; a crash is a failure of that check, never of the run."""
    fn = checks_for(entry)[name].fn
    skips = getattr(entry.load(), "conformance_skips", {}) or {}
    if name in skips:
        return CheckResult(entry.qualname, name, "skipped", f"declared: {skips[name]}")
    start = time.perf_counter()
    try:
        fn(entry)
    except SkipCheck as exc:
        return CheckResult(entry.qualname, name, "skipped", str(exc), time.perf_counter() - start)
    except ConformanceError as exc:
        return CheckResult(entry.qualname, name, "failed", str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - any crash is a failure of that component's check
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"{entry.qualname}: {name}: {type(exc).__name__}: {first}"
        return CheckResult(entry.qualname, name, "failed", message, time.perf_counter() - start)
    return CheckResult(entry.qualname, name, "passed", "", time.perf_counter() - start)


def plugin_entries(plugin: str) -> list:
    """Every component ``plugin`` registers that the kit checks (raises if the plugin is absent or broken)."""
    from ...plugins import get_manager

    manager = get_manager()
    manager.collect()
    record = manager.records.get(plugin)
    if record is None:
        raise ConformanceError(f"plugin '{plugin}' is not installed (panconv plugins lists what is)")
    if record.status != "ok":
        raise ConformanceError(f"plugin '{plugin}' failed to load: {record.error}")
    return [e for e in manager.entries() if e.plugin == plugin and e.kind in CHECKS]


def check_plugin(plugin: str, *, only: str | None = None) -> list[CheckResult]:
    """Run every check on every component ``plugin`` registers (``only``: a glob on names)."""
    results = []
    for entry in plugin_entries(plugin):
        if only and not fnmatch.fnmatch(entry.qualname, only):
            continue
        for name in checks_for(entry):
            results.append(run_check(entry, name))
    return results


def describe_checks() -> str:
    """Markdown table of every check and what it proves (used by the docs)."""
    rows: dict[tuple[str, str], list[str]] = {}
    for kind, checks in CHECKS.items():
        for name, c in checks.items():
            rows.setdefault((name, c.doc), []).append(kind)
    lines = ["| check | applies to | proves |", "|---|---|---|"]

    def capability(row) -> str:
        (name, _), kinds = row
        return CHECKS[kinds[0]][name].capability or ""

    for row in sorted(rows.items(), key=lambda row: bool(capability(row))):  # capability checks last
        (name, doc), kinds = row
        where = ", ".join(kinds) + (f" declaring `{capability(row)}`" if capability(row) else "")
        lines.append(f"| `{name}` | {where} | {doc} |")
    for name, c in SIZE_VARIANT_CHECKS.items():
        lines.append(f"| `{name}` | size variants (instead of the checks above) | {c.doc} |")
    return "\n".join(lines)


def describe_capabilities() -> str:
    """Markdown table of the capability protocols (used by the docs)."""
    lines = ["| capability | protocol | checks |", "|---|---|---|"]
    for name, cap in CAPABILITIES.items():
        checks = sorted({c.name for kind in CHECKS.values() for c in kind.values() if c.capability == name})
        lines.append(f"| `{name}` | {cap.doc} | {', '.join(f'`{c}`' for c in checks)} |")
    return "\n".join(lines)
