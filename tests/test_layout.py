"""Every first-party plugin, the example third-party plugin and what ``panconv new-plugin`` writes have the
canonical plugin shape.

The shape (docs/plugin-authoring.md)::

    plugins/<name>/
      pyproject.toml        name "panconv-<name>"; depends on "panconv-core"; extra "test";
                            [project.entry-points.panconv] <name> = "panconv_<name>.plugin"
      README.md             model table, measured results next to the commands
      src/panconv_<name>/
        __init__.py
        plugin.py           registrations only (lazy "module:attr" strings), imports no torch
        models/__init__.py, models/layers.py (shared blocks), models/<family>.py
        datasets/__init__.py, evaluators/__init__.py, kernels/__init__.py (required, may be empty)
        transforms.py, losses.py (optional; the only places for transforms and losses)
        tools/ (optional: CLI subcommands), testing.py (optional: test helpers), configs/ (optional: YAML)
      tests/test_conformance.py (runs the kit), tests/test_plugin.py

Each check returns the list of drifts ("what, where, what to do"), so one failure lists them all.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())

REQUIRED = ("__init__.py", "plugin.py", "models/__init__.py", "models/layers.py", "datasets/__init__.py",
            "evaluators/__init__.py", "kernels/__init__.py")
TOP_LEVEL_MODULES = {"__init__.py", "plugin.py", "transforms.py", "losses.py", "testing.py"}
TOP_LEVEL_FOLDERS = {"models", "datasets", "evaluators", "kernels", "tools", "configs", "__pycache__"}
TOP_LEVEL_DATA = {"py.typed"}
#: where each kind's registered targets live, relative to the package
HOME = {"model": "models.", "backbone": "models.", "neck": "models.", "head": "models.", "dataset": "datasets.",
        "evaluator": "evaluators.", "kernel": "kernels.", "transform": "transforms", "loss": "losses"}
KIT_IMPORT = "from panconv.testing.pytest_plugin import test_conformance"


# --------------------------------------------------------------------------- the checks

def pyproject_drift(project: Path, name: str) -> list[str]:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    drift = []
    if meta.get("name") != f"panconv-{name}":
        drift.append(f"pyproject.toml: project.name is {meta.get('name')!r}, expected 'panconv-{name}'")
    if not any(re.match(r"panconv-core\b", dep) for dep in meta.get("dependencies", [])):
        drift.append("pyproject.toml: no dependency on panconv-core")
    test_extra = meta.get("optional-dependencies", {}).get("test")
    if not test_extra or not any(dep.startswith("pytest") for dep in test_extra):
        drift.append("pyproject.toml: no 'test' extra with pytest ([project.optional-dependencies] test = [...])")
    entry_points = meta.get("entry-points", {}).get("panconv")
    if entry_points != {name: f"panconv_{name}.plugin"}:
        drift.append(f"pyproject.toml: [project.entry-points.panconv] is {entry_points!r}, expected "
                     f"{{{name!r}: 'panconv_{name}.plugin'}}")
    readme = project / "README.md"
    if not readme.is_file() or not re.search(r"^\|.+\|\s*$", readme.read_text(), re.M):
        drift.append("README.md: missing, or without the table of what the plugin registers")
    return drift


def package_drift(project: Path, name: str) -> list[str]:
    package = project / "src" / f"panconv_{name}"
    drift = [f"src/panconv_{name}/{part} is missing" for part in REQUIRED if not (package / part).is_file()]
    if not package.is_dir():
        return drift
    for path in sorted(package.iterdir()):
        if path.is_dir() and path.name not in TOP_LEVEL_FOLDERS:
            drift.append(f"src/panconv_{name}/{path.name}/: not part of the shape (models/, datasets/, evaluators/, "
                         f"kernels/, tools/, configs/); move its modules into one of them")
        elif path.is_file() and path.suffix == ".py" and path.name not in TOP_LEVEL_MODULES:
            drift.append(f"src/panconv_{name}/{path.name}: no top-level modules besides "
                         f"{', '.join(sorted(TOP_LEVEL_MODULES))}; move it into models/, datasets/, ...")
        elif path.is_file() and path.suffix != ".py" and path.name not in TOP_LEVEL_DATA:
            drift.append(f"src/panconv_{name}/{path.name}: unexpected file")
    tools = package / "tools"
    if tools.is_dir() and not (tools / "__init__.py").is_file():
        drift.append(f"src/panconv_{name}/tools/__init__.py is missing")
    configs = package / "configs"
    if configs.is_dir():
        drift += [f"src/panconv_{name}/configs/{p.name}: configs/ holds YAML configs only"
                  for p in configs.iterdir() if p.suffix not in (".yaml", ".yml")]
    for path in sorted((package / "datasets").rglob("*.py")):
        text = path.read_text()
        if re.search(r"\bos\.environ\b|\bgetenv\(", text):
            drift.append(f"{path.relative_to(project)}: reads the environment; a dataset finds its files under "
                         f"the root argument the core passes")
    return drift


_PROBE = """
import json, sys
import {package}.plugin as plugin
registered = []
for hook in dir(plugin):
    if hook.startswith("panconv_register_"):
        def register(name, target, *, kind=None, doc=None, tags=(), args=None, _hook=hook):
            registered.append({{"hook": _hook, "name": name, "kind": kind, "args": args is not None,
                               "target": target if isinstance(target, str) else repr(target)}})
        getattr(plugin, hook)(register)
heavy = sorted(m for m in ("torch", "numpy", "torchvision", "torchaudio") if m in sys.modules)
print(json.dumps({{"registered": registered, "heavy": heavy}}))
"""

DEFAULT_KIND = {"panconv_register_models": "model", "panconv_register_datasets": "dataset",
                "panconv_register_evaluators": "evaluator", "panconv_register_transforms": "transform",
                "panconv_register_kernels": "kernel", "panconv_register_losses": "loss"}


def probe_plugin_module(project: Path, name: str) -> dict:
    """Import plugin.py from the source tree in a fresh interpreter and record what its hooks register."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(package=f"panconv_{name}")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plugin_module_drift(project: Path, name: str) -> list[str]:
    package = project / "src" / f"panconv_{name}"
    drift = []
    source = (package / "plugin.py").read_text()
    for node in ast.walk(ast.parse(source)):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for module in modules:
            if module.split(".")[0] in ("torch", "torchvision", "torchaudio"):
                drift.append(f"plugin.py:{node.lineno}: imports {module}; plugin.py registers lazy strings only")
    probe = probe_plugin_module(project, name)
    if probe["heavy"]:
        drift.append(f"importing plugin.py imports {', '.join(probe['heavy'])}: register 'module:attr' strings")
    prefix = f"panconv_{name}."
    for reg in probe["registered"]:
        kind = reg["kind"] or DEFAULT_KIND.get(reg["hook"], "?")
        what = f"plugin.py: {kind} '{reg['name']}'"
        target = reg["target"]
        if ":" not in target or not target.startswith(prefix):
            drift.append(f"{what}: target {target} is not a lazy '{prefix}module:attr' string")
            continue
        module, _, attr = target.partition(":")
        home = HOME.get(kind, "")
        relative = module.removeprefix(prefix)
        if not (relative == home or (home.endswith(".") and relative.startswith(home))):
            where = f"{prefix}{home}<file>" if home.endswith(".") else f"{prefix}{home}"
            drift.append(f"{what}: lives in {module}; {kind}s live in {where}")
            continue
        if kind in ("model", "backbone", "neck", "head"):
            file = package / (relative.replace(".", "/") + ".py")
            if not file.is_file():
                file = package / relative.replace(".", "/") / "__init__.py"
            definition = _top_level_definition(file, attr.split(".")[0])
            if isinstance(definition, ast.FunctionDef):
                drift.append(f"{what}: {target} is a factory function; register the class with args=dict(...) "
                             f"(size variants are data)")
    return drift


def _top_level_definition(file: Path, name: str):
    if not file.is_file():
        return None
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
    return None


def suite_drift(project: Path, name: str) -> list[str]:
    drift = []
    kit = project / "tests" / "test_conformance.py"
    if not kit.is_file():
        drift.append("tests/test_conformance.py is missing: every plugin runs panconv.testing's kit")
    else:
        text = kit.read_text()
        if KIT_IMPORT not in text or not re.search(rf'^PANCONV_PLUGIN = "{name}"$', text, re.M):
            drift.append(f"tests/test_conformance.py: expected '{KIT_IMPORT}' and 'PANCONV_PLUGIN = \"{name}\"'")
    if not (project / "tests" / "test_plugin.py").is_file():
        drift.append("tests/test_plugin.py is missing")
    return drift


CHECKS = {"pyproject": pyproject_drift, "package": package_drift, "plugin_module": plugin_module_drift,
          "tests": suite_drift}


# --------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def scaffold(tmp_path_factory) -> Path:
    from panconv.scaffold import write_plugin

    return write_plugin("shapecheck", tmp_path_factory.mktemp("scaffold"))


def _project(request, which: str) -> tuple[Path, str]:
    if which == "scaffold":
        return request.getfixturevalue("scaffold"), "shapecheck"
    if which == "lenet":  # the example third-party plugin follows the same shape
        return REPO / "examples" / "third_party_plugin", "lenet"
    return REPO / "plugins" / which, which


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("which", [*(p.name for p in PLUGINS), "lenet", "scaffold"])
def test_canonical_shape(request, which, check):
    project, name = _project(request, which)
    drift = CHECKS[check](project, name)
    assert not drift, f"{project.name} drifts from the canonical plugin shape:\n  " + "\n  ".join(drift)


P = "src/panconv_shapecheck"
DRIFTS = {  # name: (operation, path, old, new), the start of the expected report line
    "no layers.py": (("rm", f"{P}/models/layers.py"), f"{P}/models/layers.py is missing"),
    "no kernels/": (("rm", f"{P}/kernels/__init__.py"), f"{P}/kernels/__init__.py is missing"),
    "extra module": (("add", f"{P}/utils.py"), f"{P}/utils.py: no top-level modules besides"),
    "extra package": (("add", f"{P}/layers/__init__.py"), f"{P}/layers/: not part of the shape"),
    "torch in plugin.py": (("prepend", f"{P}/plugin.py", "import torch  # noqa: F401\n"), "plugin.py:1: imports torch"),
    "no test_plugin.py": (("rm", "tests/test_plugin.py"), "tests/test_plugin.py is missing"),
    "no test_conformance.py": (("rm", "tests/test_conformance.py"), "tests/test_conformance.py is missing"),
    "no core dependency": (("sub", "pyproject.toml", '"panconv-core>=0.1", ', ""),
                           "pyproject.toml: no dependency on panconv-core"),
    "no test extra": (("sub", "pyproject.toml", "test = [", "tests = ["), "pyproject.toml: no 'test' extra"),
    "entry point": (("sub", "pyproject.toml", '"panconv_shapecheck.plugin"', '"panconv_shapecheck.hooks"'),
                    "pyproject.toml: [project.entry-points.panconv] is"),
    "evaluator in models/": (("sub", f"{P}/plugin.py", "evaluators.error_rate", "models.error_rate"),
                             "plugin.py: evaluator 'ErrorRate': lives in panconv_shapecheck.models.error_rate"),
    "dataset reads env": (("sub", f"{P}/datasets/csv_vectors.py", "Path(self.root)", "Path(os.environ['DATA'])"),
                          f"{P}/datasets/csv_vectors.py: reads the environment"),
    "size factory function": (("sub", f"{P}/plugin.py", "models.example:ExampleNet", "models.example:example_net"),
                              "plugin.py: backbone 'ExampleNet': panconv_shapecheck.models.example:example_net is a "
                              "factory function"),
}


@pytest.mark.parametrize("drift_name", list(DRIFTS))
def test_layout_checks_fail_on_drift(scaffold, tmp_path, drift_name):
    """Each kind of drift, applied to a copy of the scaffold's output, is reported."""
    import shutil

    (op, path, *args), expected = DRIFTS[drift_name]
    project = tmp_path / scaffold.name
    shutil.copytree(scaffold, project)
    target = project / path
    if op == "rm":
        target.unlink()
    elif op == "add":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text('"""drift"""\n')
    elif op == "prepend":
        target.write_text(args[0] + target.read_text())
    else:
        old, new = args
        text = target.read_text()
        assert old in text
        target.write_text(text.replace(old, new))
    if drift_name == "size factory function":
        models = project / P / "models" / "example.py"
        models.write_text(models.read_text() + "\n\ndef example_net(**kwargs):\n    return ExampleNet(**kwargs)\n")
    drift = [line for check in CHECKS.values() for line in check(project, "shapecheck")]
    assert any(line.startswith(expected) for line in drift), drift
