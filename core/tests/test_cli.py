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
    assert ("signature:   MLP(in_dim: int >= 1 = 2, hidden: list of int >= 1 = (32, 32), "
            "dropout: float >= 0 < 1 = 0.0, batch_norm: bool = False)") in out
    assert "parameters:  1,152 (0.00M) backbone alone" in out  # 2*32+32 + 32*32+32


def test_info_unknown_suggests(capsys):
    assert main(["info", "GausianBlobs"]) == 2
    assert "Did you mean 'core.GaussianBlobs'?" in capsys.readouterr().err


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["plugin", "distribution", "version", "status", "contributes", "/", "error"]
    core = next(line for line in out if line.startswith("core "))
    assert "ok" in core and "1 backbone" in core


def test_doctor_reports_versions_and_data(capsys, tmp_path):
    assert main(["doctor", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "torch " in out and "plugin core [ok]" in out
    assert f"data root   {tmp_path}" in out
    assert "dataset core.GaussianBlobs: ok" in out
    assert "MISSING" not in out  # optional extras are not faults


def test_doctor_fails_for_a_failed_plugin(plugin_env, capsys):
    plugin_env("importerror")
    with pytest.warns(UserWarning):
        assert main(["doctor"]) == 1
    assert "plugin importerror [failed]" in capsys.readouterr().out


def test_doctor_reports_a_dataset_that_cannot_load(tmp_path, capsys, monkeypatch):
    from panconv.builtin.components import GaussianBlobs

    monkeypatch.setattr(GaussianBlobs, "check_prerequisites",
                        classmethod(lambda cls, root: [f"no blobs under {root}: make some"]), raising=False)
    assert main(["doctor", "--data-root", str(tmp_path)]) == 0  # a data set you may not need
    assert f"dataset core.GaussianBlobs: not usable here: no blobs under {tmp_path}: make some" in \
        capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--debug", "plugins"], ["plugins", "--debug"]])
def test_debug_before_or_after_the_subcommand_shows_plugin_tracebacks(plugin_env, capsys, argv):
    plugin_env("importerror", "good")
    with pytest.warns(UserWarning):
        assert main(argv) == 0
    err = capsys.readouterr().err
    assert "--- plugin 'importerror' failed to load ---" in err
    assert "Traceback (most recent call last)" in err and "a_module_that_does_not_exist" in err


def test_without_debug_plugins_says_how_to_see_tracebacks(plugin_env, capsys):
    plugin_env("importerror", "good")
    with pytest.warns(UserWarning):
        assert main(["plugins"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "panconv --debug plugins shows the tracebacks" in err


def test_strict_after_the_subcommand(plugin_env, capsys, monkeypatch):
    monkeypatch.setenv("PANCONV_STRICT", "0")  # main() sets it to 1: restored after the test
    plugin_env("importerror")
    assert main(["plugins", "--strict"]) == 2
    assert "Plugin 'importerror' failed to load" in capsys.readouterr().err


def test_broken_pipe_exits_quietly():
    proc = subprocess.run(f"{sys.executable} -m panconv.cli list | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.startswith("name")
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


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
