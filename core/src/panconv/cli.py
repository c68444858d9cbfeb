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
        "Run a YAML experiment: train, validate and test as the config says. Writes config.yaml (resolved), "
        "metrics.json, summary.json, curves.png, run.log and checkpoints into the work dir."))
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
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate the test split of "
                   "--resume CHECKPOINT (or run.load_from) into <work dir>/eval/")
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

    p = sub.add_parser("doctor", help="versions, each plugin's dependencies and each dataset's data")
    p.add_argument("--data-root", help="data root to check (default: $PANCONV_DATA, else ~/.cache/panconv)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("precise-bn", help="re-estimate a trained model's batch-norm statistics on training batches",
                       description=("Write a copy of a checkpoint whose batch-norm running statistics are the plain "
                                    "average over training batches of the run's own config, computed with its final "
                                    "weights (precise BN); every weight is kept. Evaluate it with "
                                    "'panconv run CONFIG --eval-only --resume OUTPUT'."))
    p.add_argument("path", help="a work dir or checkpoint written by 'panconv run' (its config.yaml beside it)")
    p.add_argument("output", help="the checkpoint file to write (config.yaml is copied beside it if absent)")
    p.add_argument("--batches", type=_positive_int, default=20, help="training batches to average over (default 20)")
    p.add_argument("--data-root", help="data root (default: $PANCONV_DATA, else ~/.cache/panconv)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order the training samples are drawn in")
    p.set_defaults(func=cmd_precise_bn)

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
        print(_injected_comment(cfg), end="")
        return 0
    if args.dry_run:
        from .builder import model_summary

        print(f"{args.config}: config is valid (model {model_summary(cfg['model'])}; dataset {cfg['data']['type']}; "
              f"{cfg['train']['epochs']} epochs)")
        return 0
    from .engine import run_experiment

    stages = ("test",) if args.eval_only else ("train", "test")
    metrics = run_experiment(cfg, work_dir=args.work_dir, resume=args.resume, quiet=args.quiet, stages=stages)
    if metrics and not args.quiet:
        print("final: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
    return 0


def _injected_comment(cfg) -> str:
    """YAML comments listing the values the dataset's metadata fills into the model (reading the
    training split's metadata; announced on stderr since it loads data)."""
    from .builder import build_datasets, injected_metadata, missing_metadata, model_parts
    from .factory import get_component

    if not missing_metadata(cfg["model"]):
        return ""
    stage = "train" if (cfg["data"].get("splits") or {}).get("train") else None
    stages = ("train",) if stage else ("val", "test")
    print(f"(reading the {cfg['data']['type']} metadata to show the injected values)", file=sys.stderr, flush=True)
    datasets = build_datasets(cfg, stages=stages)
    if not datasets:
        return ""
    dataset = next(iter(datasets.values()))
    metadata = dict(getattr(dataset, "metadata", {}) or {})
    lines = []
    for part in model_parts(cfg["model"]):
        for key, value in injected_metadata(get_component(part.kind, part.type), part.spec, metadata).items():
            lines.append(f"#   {part.path}.{key}: {value!r}")
    if not lines:
        return ""
    return (f"# filled from the dataset's metadata ({cfg['data']['type']}, split {dataset.split}):\n"
            + "\n".join(lines) + "\n")


def cmd_list(args) -> int:
    from .factory import name_matches
    from .plugins import get_manager
    from .registry import KINDS

    manager = get_manager()
    entries = manager.entries([args.kind] if args.kind else KINDS)
    if args.pattern:
        entries = [e for e in entries if name_matches(e, args.pattern)]
    rows = [(e.qualname, e.kind, e.doc or e.target_path) for e in entries]
    _table(("name", "kind", "description"), rows)
    failed = [r for r in manager.records.values() if r.status == "failed"]
    for record in failed:
        print(f"warning: {record.reason}", file=sys.stderr)
    prefix = (args.pattern or "").partition(".")[0].lower()
    if not rows and prefix:
        reason = manager.plugin_status(prefix)
        if reason:
            print(f"note: plugin '{prefix}': {reason}", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from .errors import AmbiguousNameError, UnknownComponentError
    from .plugins import get_manager
    from .registry import KINDS, factory_signature

    manager = get_manager()
    kinds = [args.kind] if args.kind else list(KINDS)
    found, errors = [], []
    for kind in kinds:
        try:
            found.append(manager.get(kind, args.name))
        except AmbiguousNameError:
            raise
        except UnknownComponentError as exc:
            errors.append(exc)
    if not found:
        prefix, dot, _ = args.name.partition(".")
        reason = manager.plugin_status(prefix) if dot else None
        if len(kinds) == 1 or reason:
            raise errors[0]
        raise UnknownComponentError(f"Unknown component '{args.name}'.{_suggest_any(manager, args.name)}")
    entry = found[0]
    target = entry.load()
    record = manager.records.get(entry.plugin)
    print(f"{entry.qualname}  ({entry.kind})")
    print(f"  provided by: plugin '{entry.plugin}'" + (f" ({record.distribution} {record.version})"
                                                       if record and record.distribution else ""))
    print(f"  target:      {entry.target_path}")
    if entry.is_variant:
        fixed = ", ".join(f"{k}={v!r}" for k, v in entry.args.items())
        print(f"  variant of:  {getattr(target.factory, '__qualname__', target.factory)} with {fixed}")
    sig, hints = factory_signature(target)
    if sig is not None:
        print(f"  signature:   {entry.name}({_format_parameters(sig, hints)})")
    doc = _description(entry, target)
    if doc:
        print("  doc:         " + doc.replace("\n", "\n               "))
    inputs = getattr(target, "metadata_inputs", ())
    if inputs and entry.kind in ("model", "backbone", "neck", "head"):
        print(f"  from data:   {', '.join(inputs)} (filled from the dataset's metadata when unset)")
    if entry.kind in ("model", "backbone", "neck", "head"):
        for label, count in _parameter_counts(entry, target):
            print(f"  parameters:  {count:,} ({count / 1e6:.2f}M) {label}")
    return 0


def _format_parameters(sig, hints: dict) -> str:
    """``in_dim: int >= 1 = 2, hidden: list of int >= 1 = (32, 32)``: resolved annotations, ranges in words."""
    parts = []
    for name, param in sig.parameters.items():
        text = ("**" if param.kind is param.VAR_KEYWORD else "*" if param.kind is param.VAR_POSITIONAL else "") + name
        hint = hints.get(name)
        if hint is not None:
            text += f": {_hint_text(hint)}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    return ", ".join(parts)


def _hint_text(hint) -> str:
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        words = [_constraint_text(c) for c in hint.__metadata__]
        return " ".join([_hint_text(args[0]), *[w for w in words if w]])
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return " | ".join(_hint_text(a) for a in args)
    if hint is type(None):
        return "None"
    if origin is not None and args:
        inner = [a for a in args if a is not Ellipsis]
        name = getattr(origin, "__name__", str(origin))
        if name in ("list", "tuple", "Sequence") and len(set(map(str, inner))) == 1:
            return f"list of {_hint_text(inner[0])}"
        return f"{name}[{', '.join(_hint_text(a) for a in inner)}]"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _constraint_text(constraint) -> str:
    bounds = [(attr, sign) for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
              if getattr(constraint, attr, None) is not None]
    if not bounds:
        return ""
    return " ".join(f"{sign} {getattr(constraint, attr)}" for attr, sign in bounds)


def _description(entry, target) -> str:
    """The registered description, then the target's docstring (for a variant: its base class's)."""
    import inspect

    parts = []
    if entry.doc:
        parts.append(entry.doc)
    base = getattr(target, "factory", target)
    doc = inspect.getdoc(base) or ""
    if doc and doc not in parts:
        parts.append(doc)
    return "\n".join(parts)


def _parameter_counts(entry, target) -> list[tuple[str, int]]:
    """``[(label, count)]``: the component with its defaults, and for a backbone also with the
    paper's classification head (``paper_head``), in the deploy form when it re-parameterises."""
    try:
        import torch  # noqa: F401

        if entry.kind in ("neck", "head"):
            module = target(target.example_in_features() if hasattr(target, "example_in_features") else [])
        else:
            module = target()
    except Exception:  # noqa: BLE001 - needs arguments (e.g. n_users): say nothing
        return []
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    out = [("with its defaults" if entry.kind != "backbone" else "backbone alone, with its defaults",
            count(module))]
    if entry.kind == "backbone" and getattr(target, "paper_head", None):
        from .factory import create_model

        try:
            model = create_model(entry.qualname)
        except Exception:  # noqa: BLE001
            return out
        head = model.head
        classes = getattr(head, "num_classes", None) or getattr(getattr(head, "fc", None), "out_features", "?")
        out.append((f"with the paper's classification head ({classes} classes)", count(model)))
        if hasattr(model.backbone, "reparameterize"):
            model.eval()
            model.backbone.reparameterize()
            out.append(("with that head, re-parameterised (the deploy form the paper counts)", count(model)))
    return out


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
    if getattr(args, "debug", False):
        for record in manager.records.values():
            if record.traceback:
                print(f"\n--- plugin '{record.name}' failed to load ---\n{record.traceback}", file=sys.stderr, end="")
    elif any(r.traceback for r in manager.records.values()):
        print("(panconv --debug plugins shows the tracebacks)", file=sys.stderr)
    return 0


def cmd_doctor(args) -> int:
    """Versions, each plugin's required dependencies, and each dataset's data prerequisites.

    Exit 1 when a plugin failed to load or a required dependency is missing; optional extras
    and data sets whose files are absent are reported without failing (you may not need them).
    """
    import importlib
    import platform

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
    from .builder import resolve_data_root
    from .plugins import get_manager

    manager = get_manager()
    manager.collect()
    root = resolve_data_root(None, getattr(args, "data_root", None))
    print(f"data root   {root}")
    problems = 0
    for record in manager.records.values():
        print(f"\nplugin {record.name} [{record.status}]" + (f": {record.error}" if record.error else ""))
        problems += record.status == "failed"
        missing = _missing_requirements(record.distribution)
        for name in missing:
            print(f"  MISSING dependency {name}")
        problems += len(missing)
        for entry in manager.registries["dataset"]:
            if entry.plugin == record.name:
                print(f"  {_dataset_status(entry, root)}")
    return 1 if problems else 0


def _missing_requirements(distribution: str | None) -> list[str]:
    """Required (not extra) dependencies of ``distribution`` that are not installed."""
    import re
    from importlib import metadata

    if not distribution:
        return []
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    missing = []
    for req in requires:
        if "extra ==" in req:
            continue
        name = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(req)
    return missing


def _dataset_status(entry, root) -> str:
    """``dataset graph.RecSysData: ok`` or what is missing (``Dataset.check_prerequisites``)."""
    try:
        cls = entry.load()
        check = getattr(cls, "check_prerequisites", None)
        issues = check(root) if check is not None else []
    except Exception as exc:  # noqa: BLE001 - a dataset module that cannot even be imported
        return f"dataset {entry.qualname}: cannot be imported: {type(exc).__name__}: {exc}"
    if not issues:
        return f"dataset {entry.qualname}: ok"
    return f"dataset {entry.qualname}: not usable here: " + "; ".join(issues)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_precise_bn(args) -> int:
    from .precise_bn import precise_bn

    print(precise_bn(args.path, args.output, batches=args.batches, data_root=args.data_root, seed=args.seed))
    return 0


def cmd_new_plugin(args) -> int:
    from .scaffold import write_plugin

    path = write_plugin(args.name, args.output)
    print(f"wrote {path}\nnext: pip install -e \"{path}[test]\" && pytest {path}/tests")
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
    strict = "--strict" in argv
    if strict:
        os.environ["PANCONV_STRICT"] = "1"
    # the global flags work before or after the subcommand (panconv plugins --debug)
    argv = [a for a in argv if a not in ("--debug", "--strict")]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.debug, args.strict = debug, strict
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        _apply_strict(args)
        return int(args.func(args) or 0)
    except PanconvError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # panconv list | head: the reader left; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            text = str(exc).strip().splitlines()
            print(f"error: {type(exc).__name__}: {text[0] if text else ''} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


def _one_line(text: str, limit: int = 1000) -> str:
    """An error message as one line (newlines from file names or data escaped), of readable length."""
    text = text.strip().replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def core_run(argv: Sequence[str] | None = None) -> int:
    """``core-run CONFIG ...`` is ``panconv run CONFIG ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in argv if a in ("--strict", "--debug")]
    rest = [a for a in argv if a not in ("--strict", "--debug")]
    return main([*flags, "run", *rest])


if __name__ == "__main__":
    sys.exit(main())
