"""CLI: fast commands import no torch; list/info/plugins/doctor output; plugin-added commands."""

import subprocess
import sys

import pytest

from panconv.cli import main

PROBE = ("import sys, runpy; sys.argv = ['panconv'] + {args!r}\n"
         "try:\n    runpy.run_module('panconv.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "heavy = sorted(m for m in ('torch', 'mmengine', 'numpy') if m in sys.modules)\n"
         "print('HEAVY=' + ','.join(heavy))")


@pytest.mark.parametrize("args", [["--help"], ["list"], ["plugins"], ["list", "--kind", "backbone"]])
def test_fast_commands_do_not_import_torch(args):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout + proc.stderr


def test_list_filters(capsys):
    assert main(["list", "blob"]) == 0
    out = capsys.readouterr().out
    assert "core.GaussianBlobs" in out and "core.MLP" not in out
    assert main(["list", "--kind", "evaluator"]) == 0
    assert "core.Accuracy" in capsys.readouterr().out


def test_info_shows_signature_plugin_and_parameters(capsys):
    assert main(["info", "core.MLP"]) == 0
    out = capsys.readouterr().out
    assert "provided by: plugin 'core' (panconv-core" in out
    assert "signature:   MLP(in_dim: 'int' = 2" in out
    assert "parameters:  1,152 (0.00M)" in out  # 2*32+32 + 32*32+32


def test_info_unknown_suggests(capsys):
    assert main(["info", "GausianBlobs"]) == 2
    assert "Did you mean 'core.GaussianBlobs'?" in capsys.readouterr().err


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["plugin", "distribution", "version", "status", "contributes", "/", "error"]
    core = next(line for line in out if line.startswith("core "))
    assert "ok" in core and "1 backbone" in core


def test_doctor_reports_versions(capsys):
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert "torch " in out and "plugin core [ok]" in out
    assert code in (0, 1)


def test_plugin_added_command(plugin_env, capsys):
    plugin_env("good")
    assert main(["hello"]) == 0
    assert "hello from fixture" in capsys.readouterr().out


def test_unexpected_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "x.yaml"
    bad.write_text("model: {type: core.Nothing}\ndata: {type: core.GaussianBlobs}\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert main(["--debug", "run", str(bad)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_core_run_is_panconv_run(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {backbone: {type: core.MLP}, head: {type: core.LinearClsHead}}\n"
                   "data: {type: core.GaussianBlobs}\n")
    proc = subprocess.run([sys.executable, "-c", "import sys; from panconv.cli import core_run; "
                           f"sys.exit(core_run([{str(cfg)!r}, '--print-config']))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "type: core.MLP" in proc.stdout


def test_hook_reference_is_up_to_date():
    from pathlib import Path

    from panconv.docs import conformance_markdown, hooks_markdown

    docs = Path(__file__).resolve().parents[2] / "docs"
    assert (docs / "hooks.md").read_text() == hooks_markdown(), "docs/hooks.md is stale: run python -m panconv.docs"
    assert (docs / "conformance.md").read_text() == conformance_markdown(), "stale: run python -m panconv.docs"
