"""The layering of ARCHITECTURE.md, enforced with import-linter: plugins import only the core's
public surface (``panconv``, ``panconv.api``, ``panconv.io``, ``panconv.errors``,
``panconv.testing``) and the core never imports a plugin."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
PLUGIN_PACKAGES = sorted(f"panconv_{p.name}" for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())
PUBLIC = {"panconv", "panconv.api", "panconv.io", "panconv.errors", "panconv.testing"}


def _contract(name_part: str) -> dict:
    return next(c for c in CONFIG["contracts"] if name_part in c["name"])


def test_every_plugin_is_under_contract():
    assert set(PLUGIN_PACKAGES) <= set(CONFIG["root_packages"])
    assert set(PLUGIN_PACKAGES) == set(_contract("public surface")["source_modules"])
    assert set(PLUGIN_PACKAGES) == set(_contract("never imports a plugin")["forbidden_modules"])


def test_forbidden_modules_are_every_core_module_but_the_public_ones():
    core = REPO / "core" / "src" / "panconv"
    modules = {f"panconv.{p.stem}" for p in core.glob("*.py") if p.stem != "__init__"}
    modules |= {f"panconv.{p.name}" for p in core.iterdir() if (p / "__init__.py").is_file()}
    forbidden = set(_contract("public surface")["forbidden_modules"])
    assert forbidden == modules - PUBLIC, "a new core module must be declared public or forbidden here"


@pytest.mark.timeout(300)
def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a dev dependency (pyproject.toml [dev])"
    proc = subprocess.run([exe, str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]
