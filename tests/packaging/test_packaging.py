"""Wheels build; core works alone; each plugin works with only core beside it (fresh venvs)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())

FAST = ("graph",)  # the default run checks one plugin; the full matrix runs with -m slow


def test_every_package_builds_a_wheel(wheels):
    expected = {"panconv-core", "panconv-lenet", *(f"panconv-{p}" for p in PLUGINS)}
    assert expected <= set(wheels), sorted(wheels)


def test_core_alone_installs_and_runs(fresh_venv, wheels, tmp_path):
    fresh_venv.install(wheels["panconv-core"])
    plugins = fresh_venv.panconv("plugins")
    assert plugins.returncode == 0, plugins.stderr
    rows = [line.split()[0] for line in plugins.stdout.splitlines()[1:]]
    assert rows == ["core"]
    config = tmp_path / "blobs.yaml"
    config.write_text("model: {backbone: {type: core.MLP}, head: {type: core.LinearClsHead}}\n"
                      "data: {type: core.GaussianBlobs, batch_size: 32}\n"
                      "train: {epochs: 2, optimizer: {type: SGD, lr: 0.1}}\n"
                      "eval: {evaluators: [{type: core.Accuracy}]}\n")
    run = fresh_venv.panconv("run", config, "--work-dir", tmp_path / "work", "--quiet")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "work" / "metrics.json").is_file()
    missing = fresh_venv.panconv("run", config, "--dry-run", "--set", "model={type: graph.LightGCN}")
    assert missing.returncode == 2
    assert "is provided by panconv-graph, which is not installed: pip install panconv-graph" in missing.stderr


def _check_plugin_alone(fresh_venv, wheels, plugin):
    from panconv.registry import FIRST_PARTY_REQUIRES

    # the plugin, core, and the first-party plugins it declares it is built on (nothing else)
    built_on = [wheels[f"panconv-{p}"] for p in FIRST_PARTY_REQUIRES.get(plugin, ())]
    fresh_venv.install(wheels["panconv-core"], *built_on, wheels[f"panconv-{plugin}"])
    listed = fresh_venv.panconv("plugins")
    row = next((line.split() for line in listed.stdout.splitlines() if line.startswith(f"{plugin} ")), None)
    assert row is not None and row[3] == "ok", listed.stdout + listed.stderr
    # every registered component imports with only core beside the plugin
    probe = fresh_venv.run("-c", (
        "from panconv.plugins import get_manager\n"
        f"m = get_manager(); entries = [e for e in m.entries() if e.plugin == {plugin!r}]\n"
        "assert entries, 'nothing registered'\n"
        "for e in entries: e.load()\n"
        "print(len(entries))"))
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert int(probe.stdout.strip()) > 0


@pytest.mark.parametrize("plugin", [p for p in PLUGINS if p in FAST])
def test_plugin_installs_with_only_core(fresh_venv, wheels, plugin):
    _check_plugin_alone(fresh_venv, wheels, plugin)


@pytest.mark.slow
@pytest.mark.parametrize("plugin", [p for p in PLUGINS if p not in FAST])
def test_plugin_installs_with_only_core_full_matrix(fresh_venv, wheels, plugin):
    _check_plugin_alone(fresh_venv, wheels, plugin)


def test_first_party_requirements_match_the_plugins_metadata():
    """The install hint's list of plugins a plugin is built on is what its pyproject declares."""
    import re
    import tomllib

    from panconv.registry import FIRST_PARTY_REQUIRES

    for plugin in PLUGINS:
        deps = tomllib.loads((REPO / "plugins" / plugin / "pyproject.toml").read_text())["project"]["dependencies"]
        declared = {m.group(1) for d in deps if (m := re.match(r"panconv-([a-z]+)", d)) and m.group(1) != "core"}
        assert declared == set(FIRST_PARTY_REQUIRES.get(plugin, ())), plugin
