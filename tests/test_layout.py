"""Every first-party plugin has the common shape, and runs the conformance kit by default."""

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plugin_shape(plugin):
    name = plugin.name
    meta = tomllib.loads((plugin / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"panconv-{name}"
    assert meta["project"]["entry-points"]["panconv"] == {name: f"panconv_{name}.plugin"}
    assert any(dep.startswith("panconv-core") for dep in meta["project"]["dependencies"])
    package = plugin / "src" / f"panconv_{name}"
    for part in ("plugin.py", "models", "datasets", "evaluators"):
        if part in ("datasets", "evaluators") and not (package / part).exists():
            continue  # a plugin may contribute no dataset/evaluator of its own
        assert (package / part).exists(), f"{package / part} missing"
    assert (plugin / "README.md").is_file() and (plugin / "tests").is_dir()


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plugin_runs_the_conformance_kit(plugin):
    kit = plugin / "tests" / "test_conformance.py"
    assert kit.is_file(), f"{kit} missing: every plugin runs panconv.testing's kit"
    text = kit.read_text()
    assert "from panconv.testing.pytest_plugin import test_conformance" in text
    assert re.search(rf'^PANCONV_PLUGIN = "{plugin.name}"$', text, re.M)


def test_no_torch_import_in_plugin_modules():
    """plugin.py lists what a plugin registers and stays import-light (no torch)."""
    for plugin in PLUGINS:
        source = (plugin / "src" / f"panconv_{plugin.name}" / "plugin.py").read_text()
        assert not re.search(r"^\s*(import torch|from torch)", source, re.M), plugin
