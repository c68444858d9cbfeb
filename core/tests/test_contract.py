"""The plugin contract (issue 10 §1, issue 11 plugin isolation): pluggy options, local plugin
names, isolation of plugins that exit or interrupt, first-party names, installed-ness."""

import sys
import textwrap

import pytest

from panconv.errors import AmbiguousNameError, PluginError, UnknownComponentError


def _local(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.py"
    path.write_text("from panconv import hookimpl\n\n" + textwrap.dedent(body))
    return path


# ------------------------------------------------------------------ pluggy call semantics

@pytest.mark.parametrize("option", ["wrapper", "hookwrapper"])
def test_wrapper_hookimpls_are_refused_with_one_line(tmp_path, option):
    from panconv import plugins

    path = _local(tmp_path, "wrapping", f"""
        @hookimpl({option}=True)
        def panconv_register_models(register):
            register("Never", "panconv.builtin.components:MLP", kind="backbone")
            yield
        """)
    manager = plugins.reset(entry_points=False)
    with pytest.warns(UserWarning, match="wrapping"):
        manager.add_local(str(path))
    record = manager.records["wrapping"]
    assert record.status == "failed"
    assert f"@hookimpl({option}=True), which panconv does not support" in record.error
    assert "\n" not in record.error
    manager.collect()
    assert "wrapping.Never" not in {e.qualname for e in manager.entries()}


def test_tryfirst_and_trylast_order_lifecycle_hooks(tmp_path):
    from panconv import plugins

    order = []
    sys.modules["order_log_for_test"] = type(sys)("order_log_for_test")
    sys.modules["order_log_for_test"].order = order
    for name, option in (("late", "trylast=True"), ("plain", ""), ("early", "tryfirst=True")):
        _local(tmp_path, name, f"""
            import order_log_for_test

            @hookimpl({option})
            def panconv_after_run(config, work_dir, metrics):
                order_log_for_test.order.append({name!r})
            """)
    manager = plugins.reset(entry_points=False)
    for name in ("late", "plain", "early"):
        manager.add_local(str(tmp_path / f"{name}.py"))
    manager.call_lifecycle("panconv_after_run", config={}, work_dir=tmp_path, metrics={})
    assert order == ["early", "plain", "late"]
    del sys.modules["order_log_for_test"]


def test_every_hookspec_documents_its_call_model():
    from panconv import hookspecs

    for name in dir(hookspecs):
        if name.startswith("panconv_"):
            assert "Call model:" in getattr(hookspecs, name).__doc__, name


# ------------------------------------------------------------------ local plugin names

def _package(tmp_path, package: str, component: str):
    root = tmp_path / package
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "plugin.py").write_text(textwrap.dedent(f"""
        from panconv import hookimpl

        @hookimpl
        def panconv_register_evaluators(register):
            register({component!r}, "panconv.builtin.components:Accuracy")
        """))


def test_local_plugins_in_two_packages_keep_both(tmp_path, monkeypatch):
    from panconv import plugins

    _package(tmp_path, "pkga", "A")
    _package(tmp_path, "pkgb", "B")
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = plugins.reset(entry_points=False)
    manager.collect()
    assert manager.add_local("pkga.plugin") == "pkga"
    assert manager.add_local("pkgb.plugin") == "pkgb"
    assert manager.get("evaluator", "pkga.A") and manager.get("evaluator", "pkgb.B")


def test_local_plugin_name_clash_is_an_error_naming_both(tmp_path, monkeypatch):
    from panconv import plugins

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _local(tmp_path / "one", "mine", "")
    _local(tmp_path / "two", "mine", "")
    manager = plugins.reset(entry_points=False)
    manager.add_local(str(tmp_path / "one" / "mine.py"))
    assert manager.add_local(str(tmp_path / "one" / "mine.py")) == "mine"  # the same file again: fine
    with pytest.raises(PluginError, match=r"would be named 'mine', which .*one/mine\.py already is; "
                                          r"name one explicitly"):
        manager.add_local(str(tmp_path / "two" / "mine.py"))
    assert manager.add_local(f"other={tmp_path / 'two' / 'mine.py'}") == "other"


def test_a_local_plugin_cannot_take_the_builtin_name(tmp_path):
    from panconv import plugins

    _local(tmp_path, "core", "")
    manager = plugins.reset(entry_points=False)
    manager.collect()
    with pytest.raises(PluginError, match="would be named 'core'"):
        manager.add_local(str(tmp_path / "core.py"))


# ------------------------------------------------------------------ isolation

def test_sys_exit_and_keyboard_interrupt_break_only_their_plugin(plugin_env):
    with pytest.warns(UserWarning):
        manager = plugin_env("exits", "interrupts", "good")
        manager.collect()
    assert manager.records["exits"].status == "failed"
    assert "called sys.exit(3)" in manager.records["exits"].error
    assert manager.records["interrupts"].status == "failed"
    assert "raised KeyboardInterrupt (not a Ctrl-C from the user)" in manager.records["interrupts"].error
    assert manager.get("backbone", "good.TinyNet")


def test_cli_survives_a_plugin_that_exits(plugin_env, capsys):
    from panconv.cli import main

    plugin_env("exits", "good")
    with pytest.warns(UserWarning):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "exits" in out and "failed" in out and "good" in out


def test_third_party_cannot_take_a_first_party_name(plugin_env):
    manager = plugin_env("graph")
    manager.collect()
    impostor = manager.records["graph@panconv-fixture-impostor"]
    assert impostor.status == "failed"
    assert "belongs to panconv-graph; panconv-fixture-impostor also claims it" in impostor.error
    assert not sys.modules.get("panconv_fixture_impostor.plugin")  # never imported
    record = manager.records.get("graph")
    if record is not None:  # panconv-graph is installed in this environment
        assert record.distribution == "panconv-graph" and record.status == "ok"
        assert "panconv_graph" in manager.get("model", "graph.LightGCN").target_path
    else:
        with pytest.raises(UnknownComponentError, match="panconv-fixture-impostor also claims it"):
            manager.get("model", "graph.LightGCN")


# ------------------------------------------------------------------ names and kinds

def test_a_backbone_asked_for_as_a_model_says_what_it_is(plugin_env):
    manager = plugin_env("good")
    with pytest.raises(UnknownComponentError) as info:
        manager.get("model", "good.TinyNet")
    message = str(info.value)
    assert "is not a model: good.TinyNet is a backbone" in message
    assert "not installed" not in message
    assert "panconv.create_model('good.TinyNet', num_classes=N)" in message


def test_ambiguous_short_name_is_its_own_error(plugin_env):
    manager = plugin_env("good")
    with pytest.raises(AmbiguousNameError, match="ambiguous: core.MLP, good.MLP"):
        manager.get("backbone", "MLP")


def test_info_on_an_ambiguous_short_name_lists_the_candidates(plugin_env, capsys):
    from panconv.cli import main

    plugin_env("good")
    assert main(["info", "MLP"]) == 2
    assert "ambiguous: core.MLP, good.MLP; use the qualified name" in capsys.readouterr().err


def test_info_and_list_give_the_install_hint(plugin_env, capsys, monkeypatch):
    from panconv import registry
    from panconv.cli import main

    # a first-party plugin that is not installed (every real one is, in this checkout)
    monkeypatch.setitem(registry.FIRST_PARTY, "weather", "panconv-weather")
    plugin_env("good")
    assert main(["info", "weather.Radar"]) == 2
    assert "provided by panconv-weather, which is not installed: pip install panconv-weather" in \
        capsys.readouterr().err
    assert main(["list", "weather.*"]) == 0
    assert "pip install panconv-weather" in capsys.readouterr().err


def test_the_install_hint_names_the_plugins_a_plugin_is_built_on(plugin_env, capsys, monkeypatch):
    from panconv import registry
    from panconv.cli import main

    monkeypatch.setitem(registry.FIRST_PARTY, "weather", "panconv-weather")
    monkeypatch.setitem(registry.FIRST_PARTY_REQUIRES, "weather", ("sequence",))
    plugin_env("good")
    assert main(["info", "weather.Radar"]) == 2
    assert ("provided by panconv-weather (which needs panconv-sequence), which is not installed: "
            "pip install panconv-sequence panconv-weather") in capsys.readouterr().err


def test_a_config_naming_an_installed_plugins_module_is_a_no_op(plugin_env):
    manager = plugin_env("good")
    manager.collect()
    before = dict(manager.records)
    assert manager.add_local("panconv_fixture_good.plugin") == "good"
    assert manager.records == before and manager.records["good"].status == "ok"  # nothing new, nothing failed
