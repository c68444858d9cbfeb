"""Generate ``docs/hooks.md`` from :mod:`panconv.hookspecs` (``python -m panconv.docs``)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from . import hookspecs


def hooks_markdown() -> str:
    lines = ["# Hook reference", "",
             "Generated from `core/src/panconv/hookspecs.py` by `python -m panconv.docs`; do not edit by hand.", "",
             inspect.cleandoc(hookspecs.__doc__ or ""), ""]
    groups = {"Contribution hooks": list(hookspecs.CONTRIBUTION_HOOKS),
              "Lifecycle hooks": ["panconv_before_run", "panconv_after_evaluation", "panconv_after_run"],
              "CLI hooks": ["panconv_add_commands"]}
    for title, names in groups.items():
        lines += [f"## {title}", ""]
        for name in names:
            function = getattr(hookspecs, name)
            lines += [f"### `{name}{inspect.signature(function)}`", "", inspect.cleandoc(function.__doc__ or ""), ""]
    return "\n".join(lines).rstrip() + "\n"


def conformance_markdown() -> str:
    from .testing.conformance import describe_checks

    return "\n".join([
        "# Conformance checks", "",
        "Generated from `core/src/panconv/testing/conformance.py` by `python -m panconv.docs`.", "",
        "Each check builds the component from its declared example (`example_config()`, `example_inputs()`, "
        "`example_in_features()`, a dataset's `example()`/`broken_example()`, an evaluator's `example()`, a "
        "kernel's `make_inputs`) and asserts one property of the contract. A component opts out of a check "
        "only by declaring `conformance_skips = {\"check\": \"reason\"}`; the reason shows in the report "
        "(`pytest -ra`).", "", describe_checks(), ""])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else Path("docs")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("hooks.md", hooks_markdown()), ("conformance.md", conformance_markdown())):
        (folder / name).write_text(text)
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
