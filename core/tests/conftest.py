import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
DUPLICATE = FIXTURES / "panconv-fixture-dupname"  # same plugin name as panconv-fixture-good
FIXTURE_PACKAGES = sorted(p for p in FIXTURES.iterdir() if (p / "pyproject.toml").is_file() and p != DUPLICATE)


def _pip_target(target: Path, packages) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), *map(str, packages)], check=True,
                   env={**os.environ, "PIP_NO_CACHE_DIR": "1"})
    return target


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory) -> Path:
    """The fixture plugins installed as real distributions (wheels built by pip) into one folder."""
    return _pip_target(tmp_path_factory.mktemp("site"), FIXTURE_PACKAGES)


@pytest.fixture(scope="session")
def duplicate_site(tmp_path_factory) -> Path:
    """A second distribution that also names its plugin 'good'."""
    return _pip_target(tmp_path_factory.mktemp("dupsite"), [DUPLICATE])


@pytest.fixture
def plugin_env(monkeypatch, fixture_site):
    """Activate some fixture plugins (by entry-point name) and return a fresh plugin manager."""
    from panconv import plugins

    def activate(*names: str, strict: bool = False):
        monkeypatch.syspath_prepend(str(fixture_site))
        importlib.invalidate_caches()
        monkeypatch.setenv("PANCONV_PLUGINS", ",".join(names) if names else "none")
        monkeypatch.delenv("PANCONV_DISABLE_PLUGINS", raising=False)
        return plugins.reset(strict=strict)

    yield activate
    plugins.reset()


@pytest.fixture(autouse=True)
def _fresh_manager():
    from panconv import plugins

    plugins.reset()
    yield
    plugins.reset()
