"""panconv.testing: helpers for tests and the conformance kit for plugin authors."""

from __future__ import annotations

import os
from pathlib import Path


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


def check_plugin(plugin: str, only: str | None = None):
    """Run the conformance kit on an installed plugin; returns a list of CheckResult."""
    from .conformance import check_plugin as _check

    return _check(plugin, only=only)
