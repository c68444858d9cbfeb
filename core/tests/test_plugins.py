"""Discovery through entry points of real distributions, isolation of broken plugins."""

import sys
import warnings

import pytest

from panconv.errors import DuplicateComponentError, PluginError, UnknownComponentError
from panconv.registry import Entry, Registry


def test_good_plugin_is_discovered_with_its_distribution(plugin_env):
    manager = plugin_env("good")
    names = {e.qualname for e in manager.entries()}
    assert {"good.TinyNet", "good.PairHead", "good.Numbers", "good.MLP", "core.MLP"} <= names
    record = manager.records["good"]
    assert (record.status, record.distribution, record.version) == ("ok", "panconv-fixture-good", "1.2.3")
    assert record.contributes == {"backbone": 2, "head": 1, "dataset": 1}


def test_listing_imports_no_component_module(plugin_env):
    manager = plugin_env("good")
    manager.collect()
    assert "panconv_fixture_good.components" not in sys.modules
    entry = manager.get("backbone", "good.TinyNet")
    entry.load()
    assert "panconv_fixture_good.components" in sys.modules


def test_short_name_when_unique_and_ambiguity_error(plugin_env):
    manager = plugin_env("good")
    assert manager.get("backbone", "TinyNet").qualname == "good.TinyNet"
    with pytest.raises(UnknownComponentError, match=r"ambiguous: core\.MLP, good\.MLP; use the qualified name"):
        manager.get("backbone", "MLP")
    assert manager.get("backbone", "core.MLP").plugin == "core"


def test_import_error_is_isolated_and_reported(plugin_env):
    with pytest.warns(UserWarning, match="Plugin 'importerror' failed to load"):
        manager = plugin_env("good", "importerror")
        manager.collect()
    record = manager.records["importerror"]
    assert record.status == "failed"
    assert "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'" in record.error
    assert manager.get("backbone", "good.TinyNet")  # others unaffected
    with pytest.raises(UnknownComponentError, match=r"plugin 'importerror' failed to load: ModuleNotFoundError"):
        manager.get("backbone", "importerror.Anything")


def test_hook_that_raises_registers_nothing_and_others_work(plugin_env):
    with pytest.warns(UserWarning, match="boom while registering"):
        manager = plugin_env("good", "hookraises")
        manager.collect()
    record = manager.records["hookraises"]
    assert record.status == "failed" and "in panconv_register_models" in record.error
    assert "hookraises.HalfRegistered" not in {e.qualname for e in manager.entries()}  # rolled back
    assert manager.get("head", "good.PairHead")


def test_unknown_hook_warns_or_fails_under_strict(plugin_env):
    manager = plugin_env("badhook")
    manager.collect()
    assert manager.records["badhook"].status == "ok"
    assert any("unknown hook(s) panconv_register_modles" in w for w in manager.records["badhook"].warnings)
    assert manager.get("dataset", "badhook.Fine")
    strict = plugin_env("badhook", strict=True)
    with pytest.raises(PluginError, match="unknown hook"):
        strict.collect()


def test_hookimpl_with_wrong_signature_is_rejected(plugin_env):
    with pytest.warns(UserWarning, match="extra_argument"):
        manager = plugin_env("badsig")
        manager.collect()
    assert manager.records["badsig"].status == "failed"


def test_two_distributions_with_one_plugin_name(plugin_env, duplicate_site, monkeypatch):
    monkeypatch.syspath_prepend(str(duplicate_site))
    manager = plugin_env("good")
    manager.collect()
    warnings_ = manager.records["good"].warnings
    assert any("panconv-fixture-good" in w and "panconv-fixture-dupname" in w for w in warnings_)
    with pytest.raises(PluginError, match="provided by both"):
        plugin_env("good", strict=True).collect()


def test_disable_list(plugin_env, monkeypatch):
    plugin_env("good")
    monkeypatch.setenv("PANCONV_PLUGINS", "good,importerror")
    monkeypatch.setenv("PANCONV_DISABLE_PLUGINS", "importerror")
    from panconv import plugins

    manager = plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a disabled plugin is not even imported
        manager.collect()
    assert manager.records["importerror"].status == "disabled"
    with pytest.raises(UnknownComponentError, match="plugin 'importerror' is disabled"):
        manager.get("model", "importerror.X")


def test_strict_reraises_import_errors(plugin_env):
    with pytest.raises(PluginError, match="Plugin 'importerror' failed to load: ModuleNotFoundError"):
        plugin_env("importerror", strict=True).collect()


def test_local_plugin_from_a_path(tmp_path):
    from panconv import plugins

    path = tmp_path / "myplugin.py"
    path.write_text("from panconv import hookimpl\n\n@hookimpl\ndef panconv_register_evaluators(register):\n"
                    "    register('Mine', 'panconv.builtin.components:Accuracy')\n")
    manager = plugins.reset(entry_points=False)
    manager.collect()
    assert manager.add_local(str(path)) == "myplugin"
    assert manager.get("evaluator", "myplugin.Mine").load().__name__ == "Accuracy"


def test_lifecycle_hook_errors_do_not_stop_others(tmp_path):
    from panconv import plugins

    calls = []
    (tmp_path / "a_plug.py").write_text(
        "from panconv import hookimpl\n@hookimpl\ndef panconv_after_run(config, work_dir, metrics):\n"
        "    raise ValueError('tracker down')\n")
    (tmp_path / "b_plug.py").write_text(
        "from panconv import hookimpl\nCALLS = []\n@hookimpl\ndef panconv_after_run(config, work_dir, metrics):\n"
        "    CALLS.append(metrics)\n")
    manager = plugins.reset(entry_points=False)
    manager.add_local(str(tmp_path / "a_plug.py"))
    manager.add_local(str(tmp_path / "b_plug.py"))
    with pytest.warns(UserWarning, match="tracker down"):
        manager.call_lifecycle("panconv_after_run", config={}, work_dir=tmp_path, metrics={"acc": 1.0})
    calls = sys.modules["panconv_local_b_plug"].CALLS
    assert calls == [{"acc": 1.0}]


# ---------------------------------------------------------------- registry unit tests

def _registry():
    reg = Registry("model")
    reg.add(Entry("model", "LightGCN", "graph", "m:LightGCN"))
    reg.add(Entry("model", "NGCF", "graph", "m:NGCF"))
    return reg


def test_did_you_mean():
    with pytest.raises(UnknownComponentError) as info:
        _registry().get("LightGNC", where="examples/lightgcn.yaml: model.type")
    assert str(info.value) == ("Unknown model 'LightGNC' in examples/lightgcn.yaml: model.type. "
                               "Did you mean 'graph.LightGCN'?")


def test_not_installed_first_party_plugin(monkeypatch, tmp_path):
    from panconv import plugins

    monkeypatch.chdir(tmp_path)  # outside a source checkout: the registry's name only
    manager = plugins.reset(entry_points=False)
    with pytest.raises(UnknownComponentError) as info:
        manager.get("model", "audio.Squeezeformer")
    assert str(info.value) == ("Model 'audio.Squeezeformer' is not available: it is provided by panconv-audio, "
                               "which is not installed: pip install panconv-audio")
    (tmp_path / "plugins" / "audio").mkdir(parents=True)
    (tmp_path / "plugins" / "audio" / "pyproject.toml").write_text("")
    with pytest.raises(UnknownComponentError, match=r"pip install panconv-audio \(from this source checkout: "
                                                    r"pip install \./plugins/audio\)$"):
        manager.get("model", "audio.Squeezeformer")


def test_duplicate_qualified_name_names_both():
    reg = _registry()
    with pytest.raises(DuplicateComponentError, match="by plugin 'graph' and by plugin 'graph2'"):
        reg.add(Entry("model", "LightGCN", "graph", "x:y"), source="plugin 'graph2'")


def test_nothing_close():
    with pytest.raises(UnknownComponentError, match="See: panconv list --kind model"):
        _registry().get("Transformer")


def test_register_validates_names():
    from panconv.registry import make_register

    added = []
    register = make_register(lambda kind: Registry(kind), "p", "model", ("model", "backbone"), added)
    with pytest.raises(ValueError, match="use 'package.module:attr'"):
        register("X", "no_colon")
    with pytest.raises(ValueError, match="kind='dataset'"):
        register("X", "a:b", kind="dataset")
    with pytest.raises(ValueError, match="no dots"):
        register("a.b", "a:b")
