"""The ``panconv`` command line (``core-run`` is ``panconv run``).

``--help``, ``list`` and ``plugins`` import no torch-heavy module: plugins register lazy
import strings, and torch is imported only by the commands that build something.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from .errors import PanconvError


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="train / evaluate an experiment config", description=(
        "Run a YAML experiment: train, validate and test as the config says. Writes metrics.json, "
        "summary.json, curves.png, config.yaml and checkpoints into the work dir."))
    _run_arguments(p)
    p.set_defaults(func=cmd_run)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable; VALUE is YAML)")
    p.add_argument("--work-dir", help="output directory (default: run.work_dir, else work_dirs/<config name>)")
    p.add_argument("--data-root", help="data root (default: $PANCONV_DATA, else ~/.cache/panconv)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or (no value) from the newest checkpoint in the work dir")
    p.add_argument("--print-config", action="store_true", help="print the merged, validated config and exit")
    p.add_argument("--dry-run", action="store_true", help="validate the config and plugins, then exit")
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate the test split "
                   "(with --resume CHECKPOINT to evaluate trained weights)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or metric lines")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="panconv", description=(
        "panconv: convolution-era models across domains behind one interface. "
        "Install plugins (pip install ./plugins/graph) and run YAML experiments."))
    parser.add_argument("--version", action="version", version=f"panconv {__version__}")
    parser.add_argument("--strict", action="store_true", help="re-raise plugin errors instead of isolating them (CI)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(sub)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("pattern", nargs="?", help="substring or glob to filter names")
    p.add_argument("--kind", choices=_kinds(), help="only this kind")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a component: signature, defaults, plugin, doc, parameters")
    p.add_argument("name")
    p.add_argument("--kind", choices=_kinds())
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plugins", help="installed plugins, their status and contributions")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("doctor", help="versions of torch/CUDA/Triton and each plugin's dependencies")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("new-plugin", help="write a ready-to-install plugin package")
    p.add_argument("name", help="plugin name (a Python identifier, e.g. 'demo')")
    p.add_argument("-o", "--output", default=".", help="directory to create panconv-<name>/ in")
    p.set_defaults(func=cmd_new_plugin)

    from .plugins import get_manager

    get_manager().add_commands(sub)
    return parser


def _kinds():
    from .registry import KINDS

    return KINDS


def _apply_strict(args) -> None:
    if args.strict:
        os.environ["PANCONV_STRICT"] = "1"
        from . import plugins

        if not plugins.get_manager().strict:
            plugins.reset(strict=True)


# ----------------------------------------------------------------------------- commands

def cmd_run(args) -> int:
    from .config import load_config

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.dry_run:
        print(f"{args.config}: config is valid ({_model_summary(cfg)}; dataset {cfg['data']['type']}; "
              f"{cfg['train']['epochs']} epochs)")
        return 0
    from .engine import run_experiment

    stages = ("test",) if args.eval_only else ("train", "test")
    metrics = run_experiment(cfg, work_dir=args.work_dir, resume=args.resume, quiet=args.quiet, stages=stages)
    if metrics and not args.quiet:
        print("final: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
    return 0


def _model_summary(cfg) -> str:
    model = cfg["model"]
    if "type" in model:
        return f"model {model['type']}"
    return "model " + " + ".join(model[k]["type"] for k in ("backbone", "neck", "head") if model.get(k))


def cmd_list(args) -> int:
    import fnmatch

    from .plugins import get_manager
    from .registry import KINDS

    manager = get_manager()
    entries = manager.entries([args.kind] if args.kind else KINDS)
    if args.pattern:
        pattern = args.pattern.lower()
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        entries = [e for e in entries if fnmatch.fnmatch(e.qualname.lower(), glob)]
    rows = [(e.qualname, e.kind, e.doc or e.target_path) for e in entries]
    _table(("name", "kind", "description"), rows)
    failed = [r for r in manager.records.values() if r.status == "failed"]
    for record in failed:
        print(f"warning: {record.reason}", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    import inspect

    from .errors import UnknownComponentError
    from .plugins import get_manager
    from .registry import KINDS

    manager = get_manager()
    kinds = [args.kind] if args.kind else KINDS
    found = []
    for kind in kinds:
        try:
            found.append(manager.get(kind, args.name))
        except UnknownComponentError as exc:
            last_error = exc
    if not found:
        raise last_error if len(kinds) == 1 else UnknownComponentError(
            f"Unknown component '{args.name}'.{_suggest_any(manager, args.name)}")
    entry = found[0]
    target = entry.load()
    record = manager.records.get(entry.plugin)
    print(f"{entry.qualname}  ({entry.kind})")
    print(f"  provided by: plugin '{entry.plugin}'" + (f" ({record.distribution} {record.version})"
                                                       if record and record.distribution else ""))
    print(f"  target:      {entry.target_path}")
    try:
        print(f"  signature:   {entry.name}{inspect.signature(target)}")
    except (TypeError, ValueError):
        pass
    doc = inspect.getdoc(target) or entry.doc or ""
    if doc:
        print("  doc:         " + doc.replace("\n", "\n               "))
    if entry.kind in ("model", "backbone", "neck", "head"):
        count = _try_count(entry, target)
        if count is not None:
            print(f"  parameters:  {count:,} ({count / 1e6:.2f}M) with its defaults")
    return 0


def _try_count(entry, target):
    try:
        import torch  # noqa: F401

        if entry.kind in ("neck", "head"):
            module = target(target.example_in_features() if hasattr(target, "example_in_features") else [])
        else:
            module = target()
        return sum(p.numel() for p in module.parameters())
    except Exception:  # noqa: BLE001 - needs arguments (e.g. n_users): say nothing
        return None


def _suggest_any(manager, name: str) -> str:
    import difflib

    names = {e.qualname: e for e in manager.entries()}
    shorts = {e.name: e.qualname for e in manager.entries()}
    close = difflib.get_close_matches(name, list(names) + list(shorts), n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{shorts.get(close[0], close[0])}'?"
    return " See: panconv list"


def cmd_plugins(args) -> int:
    from .plugins import get_manager

    manager = get_manager()
    manager.collect()
    rows = []
    for record in manager.records.values():
        contributes = ", ".join(f"{n} {_plural(k, n)}" for k, n in sorted(record.contributes.items()))
        rows.append((record.name, record.distribution or record.module, record.version or "-", record.status,
                     contributes or ("-" if record.status == "ok" else record.error or "")))
    _table(("plugin", "distribution", "version", "status", "contributes / error"), rows)
    for record in manager.records.values():
        for warning in record.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_doctor(args) -> int:
    import importlib
    import platform
    import re
    from importlib import metadata

    print(f"python      {platform.python_version()} ({sys.executable})")
    for module in ("torch", "torchvision", "torchaudio", "triton", "mmengine", "numpy", "pluggy"):
        try:
            mod = importlib.import_module(module)
            print(f"{module:<11} {getattr(mod, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001
            print(f"{module:<11} not importable ({type(exc).__name__})")
    try:
        import torch

        cuda = torch.cuda.is_available()
        print(f"cuda        {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available'}"
              f" (torch built with CUDA {torch.version.cuda})")
    except Exception:  # noqa: BLE001
        pass
    print(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}")
    from .plugins import get_manager

    manager = get_manager()
    manager.collect()
    problems = 0
    for record in manager.records.values():
        print(f"\nplugin {record.name} [{record.status}]" + (f": {record.error}" if record.error else ""))
        problems += record.status == "failed"
        if not record.distribution:
            continue
        try:
            requires = metadata.requires(record.distribution) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            name = re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0]
            optional = "extra ==" in req
            try:
                version = metadata.version(name)
                status = f"{version}"
            except metadata.PackageNotFoundError:
                status = "MISSING" + (" (optional)" if optional else "")
                problems += not optional
            print(f"  {name:<18} {status}")
    return 1 if problems else 0


def cmd_new_plugin(args) -> int:
    from .scaffold import write_plugin

    path = write_plugin(args.name, args.output)
    print(f"wrote {path}\nnext: pip install -e {path} && pytest {path}/tests")
    return 0


def _plural(kind: str, n: int) -> str:
    if n == 1:
        return kind
    return kind + ("es" if kind.endswith("s") else "s")


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> None:
    if not rows:
        print("(nothing registered)")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    widths[-1] = 0
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(line(header))
    for row in rows:
        print(line(row))


# ----------------------------------------------------------------------------- entry points

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PANCONV_DEBUG") == "1"
    if "--strict" in argv:
        os.environ["PANCONV_STRICT"] = "1"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        _apply_strict(args)
        return int(args.func(args) or 0)
    except PanconvError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            text = str(exc).strip().splitlines()
            print(f"error: {type(exc).__name__}: {text[0] if text else ''} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


def core_run(argv: Sequence[str] | None = None) -> int:
    """``core-run CONFIG ...`` is ``panconv run CONFIG ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in argv if a in ("--strict", "--debug")]
    rest = [a for a in argv if a not in ("--strict", "--debug")]
    return main([*flags, "run", *rest])


if __name__ == "__main__":
    sys.exit(main())
