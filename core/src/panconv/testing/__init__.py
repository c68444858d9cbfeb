"""panconv.testing: the conformance kit for plugin authors, and helpers for tests.

The kit (:mod:`panconv.testing.conformance`)::

    from panconv.testing import check_plugin
    check_plugin("demo")                     # list of CheckResult, one per (component, check)

``checks_for(entry)`` says which checks apply to a registered component: those of its kind and
those of the capabilities it declares by implementing their protocol (``reparameterize()``;
``initial_state()`` + ``step()``: see :mod:`panconv.testing.conformance.capabilities`).
``describe_checks()`` / ``describe_capabilities()`` are the tables of ``docs/conformance.md``.

In pytest (the ``panconv`` pytest plugin, :mod:`panconv.testing.pytest_plugin`): one test file
``from panconv.testing.pytest_plugin import test_conformance`` with ``PANCONV_PLUGIN = "demo"``,
or ``pytest --panconv-plugin demo``; the fixtures ``single_thread`` and ``shared_data`` and the
``slow`` marker.

Importing this package is cheap: the kit (and torch) are imported on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

_KIT = ("CAPABILITIES", "CHECKS", "CheckResult", "ConformanceError", "SkipCheck", "capabilities_of", "check_plugin",
        "checks_for", "describe_capabilities", "describe_checks", "plugin_entries", "run_check")

__all__ = [*_KIT, "assert_rejected_at_validation", "dry_run", "import_official", "load_script", "shared_data_root"]


def dry_run(config: str | os.PathLike, *overrides: str, cwd: str | os.PathLike | None = None) -> tuple[int, str, str]:
    """``panconv run CONFIG --dry-run --set OVERRIDE ...`` in this process: ``(exit code, stdout, stderr)``.

    ``cwd`` (default: unchanged) is the working directory for the run, restored afterwards.
    """
    import contextlib
    import io

    from ..cli import main

    argv = ["run", str(config), "--dry-run"]
    for override in overrides:
        argv += ["--set", override]
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def assert_rejected_at_validation(config: str | os.PathLike, override: str, key: str,
                                  cwd: str | os.PathLike | None = None) -> str:
    """Assert that ``--set OVERRIDE`` makes ``--dry-run`` fail with exactly one line naming ``CONFIG: KEY``.

    Returns that line. The shape of every bad-value test: exit code 2, ``error: <config>: <key>: ...``,
    no traceback, nothing else printed.
    """
    code, out, err = dry_run(config, override, cwd=cwd)
    lines = err.splitlines()
    assert code == 2, f"--set {override}: exit code {code}, expected 2\n{out}{err}"
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: {key}: "), \
        f"--set {override}: expected one line 'error: {config}: {key}: ...', got:\n{err}"
    assert "Traceback" not in err and "config is valid" not in out, err
    return lines[0]


def shared_data_root() -> Path | None:
    """The real-data folder for tests and benchmarks.

    ``$PANCONV_DATA`` if set; else the first ``shared/data`` found beside or inside a parent
    of the working directory or of this file (the repository keeps it at ``../shared/data``
    from its root). ``None`` when there is none.
    """
    env = os.environ.get("PANCONV_DATA")
    if env:
        return Path(env).expanduser()
    for start in (Path.cwd().resolve(), Path(__file__).resolve()):
        for parent in [start, *start.parents]:
            for candidate in (parent / "shared" / "data", parent.parent / "shared" / "data"):
                if (candidate / "README.md").is_file():
                    return candidate
    return None



def import_official(env_var: str, module: str):
    """A module of a paper's official code for a live parity test, or ``None`` when it cannot be imported.

    ``$env_var`` holds the folder(s) to import from (``os.pathsep``-separated: the checkout, then any folder
    of its extra dependencies); they are put first on ``sys.path`` and ``module`` is imported. Unset, or an
    ``ImportError``: ``None``, so the test can skip saying which variable to set (recorded fixtures keep
    parity checked in CI without the checkout).
    """
    import importlib
    import sys

    paths = os.environ.get(env_var)
    if not paths:
        return None
    sys.path[:0] = [p for p in paths.split(os.pathsep) if p and p not in sys.path]
    try:
        return importlib.import_module(module)
    except ImportError:
        return None

def load_script(path: str | os.PathLike, name: str | None = None):
    """A script that is not in a package (a ``benchmarks/*.py`` file) loaded as a module, so that tests can call
    its functions; ``name`` defaults to the file's stem. Its ``if __name__ == "__main__"`` block does not run."""
    import importlib.util

    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def __getattr__(name: str):
    if name in _KIT:
        from . import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module 'panconv.testing' has no attribute {name!r}")
