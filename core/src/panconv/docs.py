"""Generate ``docs/hooks.md`` (from :mod:`panconv.hookspecs`) and ``docs/conformance.md`` (from the
conformance kit): ``python -m panconv.docs [FOLDER]``."""

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
    from .testing.conformance import capabilities, describe_capabilities, describe_checks

    return "\n".join([
        "# Conformance checks", "",
        "Generated from `core/src/panconv/testing/conformance/` by `python -m panconv.docs`; do not edit by hand.", "",
        "Each check builds the component from its declared example (`example_config()`, `example_inputs()`, "
        "`example_in_features()`, a dataset's `example()`/`broken_example()`, an evaluator's `example()`, a "
        "kernel's `make_inputs`) and asserts one property of the contract. Which checks run depends on the "
        "component's kind and on the capabilities it declares (below). A component opts out of a check "
        "only by declaring `conformance_skips = {\"check\": \"reason\"}`; the reason shows in the report "
        "(`pytest -ra`).", "",
        "Run it: `pytest --panconv-plugin NAME` (any installed plugin), a `tests/test_conformance.py` with "
        "`from panconv.testing.pytest_plugin import test_conformance` and `PANCONV_PLUGIN = \"NAME\"`, or "
        "`panconv.testing.check_plugin(\"NAME\")` from Python.", "",
        "## Checks", "", describe_checks(), "",
        "## Capabilities", "",
        "Checks chosen by declared capability, as scikit-learn's `check_estimator` does: a component declares "
        "a capability by implementing its protocol, and gets the capability's checks.", "",
        describe_capabilities(), "",
        "### Protocols", "",
        "From `panconv.testing.conformance.capabilities`:", "",
        inspect.cleandoc(capabilities.__doc__ or "").split("\n", 1)[1].strip(), ""])


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
