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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0]) if argv else Path("docs/hooks.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(hooks_markdown())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
