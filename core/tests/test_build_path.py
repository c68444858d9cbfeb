"""One path from config to component (issue 10 §2): variants as data, element types, constructor
errors at validation with their place, declared metadata, transforms and losses from configs."""

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

import panconv
from panconv.api import Backbone, FeatureInfo
from panconv.cli import main
from panconv.config import load_config, type_problem
from panconv.errors import ConfigError

BASE = textwrap.dedent("""\
    model:
      backbone: {type: local.tiny_wide}
      head: {type: core.LinearClsHead}
    data: {type: core.GaussianBlobs, num_classes: 3, dim: 4, size: 32, batch_size: 8}
    train: {epochs: 1}
    eval: {evaluators: [{type: core.Accuracy}]}
    """)


class Stages(Backbone):
    """A vector backbone with stages (a stand-in for ConvNeXt's depths/dims)."""

    metadata_inputs = ("in_dim",)

    def __init__(self, in_dim: int = 2, depths: Sequence[int] = (1, 1), dims: Sequence[int] = (4, 8),
                 act: str = "relu"):
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"Stages: depths {tuple(depths)} and dims {tuple(dims)} differ in length")
        layers, width = [], in_dim
        for depth, dim in zip(depths, dims):
            for _ in range(depth):
                layers += [nn.Linear(width, dim), nn.ReLU()]
                width = dim
        self.layers = nn.Sequential(*layers)
        self.feature_info = [FeatureInfo(width, 1, "layers")]

    def forward(self, x):
        return [self.layers(x)]


class Scale:
    """A sample transform: multiplies the inputs."""

    def __init__(self, factor: float = 2.0):
        self.factor = factor

    def __call__(self, sample):
        return {**sample, "inputs": sample["inputs"] * self.factor}


class CountBatches:
    """A batch transform that tags every collated batch."""

    level = "batch"

    def __call__(self, batch):
        return {**batch, "tagged": torch.ones(1)}


class WeightedHead(panconv.api.Head):
    metadata_inputs = ("num_classes",)

    def __init__(self, in_features, num_classes: int = 2, loss: nn.Module | None = None):
        super().__init__(in_features)
        self.fc = nn.Linear(self.in_features[-1].channels, num_classes)
        self.criterion = loss or nn.CrossEntropyLoss()

    def forward(self, features):
        return self.fc(features[-1])

    def loss(self, outputs, batch):
        return {"loss": self.criterion(outputs, batch["labels"])}


class Pretrained(Stages):
    """Stages whose constructor reads a weights file (as a backbone with ``pretrained: PATH``)."""

    def __init__(self, in_dim: int = 2, weights: str = ""):
        super().__init__(in_dim)
        if not Path(weights).is_file():
            raise panconv.CheckpointError(f"{weights}: the weights file does not exist")


class _Local:
    @panconv.hookimpl
    def panconv_register_models(self, register):
        register("Stages", Stages, kind="backbone")
        register("Pretrained", Pretrained, kind="backbone")
        register("tiny_wide", Stages, kind="backbone", args={"depths": (1, 2), "dims": (6, 12)},
                 doc="Stages with depths 1/2 and dims 6/12")
        register("WeightedHead", WeightedHead, kind="head")

    @panconv.hookimpl
    def panconv_register_transforms(self, register):
        register("Scale", Scale)
        register("CountBatches", CountBatches)

    @panconv.hookimpl
    def panconv_register_losses(self, register):
        register("LabelSmoothing", "torch.nn:CrossEntropyLoss")


@pytest.fixture
def local():
    from panconv import plugins

    manager = plugins.reset(entry_points=False)
    manager.collect()
    manager.add_plugin(_Local(), "local")
    return manager


def _config(tmp_path, *overrides, text=BASE):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return load_config(path, list(overrides))


def _error(tmp_path, *overrides, text=BASE) -> str:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, *overrides, text=text)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ variants as data

def test_a_variant_is_its_class_with_defaults(local):
    factory = panconv.get_component("backbone", "local.tiny_wide")
    import inspect

    sig = inspect.signature(factory)
    assert sig.parameters["depths"].default == (1, 2) and sig.parameters["dims"].default == (6, 12)
    model = factory(in_dim=3)
    assert isinstance(model, Stages) and model.feature_info[0].channels == 12
    assert factory(in_dim=3, dims=(6, 7)).feature_info[0].channels == 7  # still overridable
    assert factory.metadata_inputs == ("in_dim",)  # class attributes come through


def test_the_validator_checks_a_variants_keys(local, tmp_path):
    assert "model.backbone.nonexistent_key: unknown key for local.tiny_wide" in _error(
        tmp_path, "model.backbone.nonexistent_key=3")


def test_a_variant_with_an_unknown_argument_is_refused_at_load(local):
    from panconv.registry import Variant

    with pytest.raises(TypeError, match="has no parameter widths"):
        Variant(Stages, {"widths": (1,)}, "bad")


def test_info_shows_a_variants_real_signature(local, capsys):
    assert main(["info", "local.tiny_wide"]) == 0
    out = capsys.readouterr().out
    assert "variant of:  Stages with depths=(1, 2), dims=(6, 12)" in out
    assert "depths: list of int = (1, 2)" in out
    assert "Stages with depths 1/2 and dims 6/12" in out and "A vector backbone with stages" in out


# ------------------------------------------------------------------ element types

@pytest.mark.parametrize("value,hint,expected", [
    ([8, "a"], Sequence[int], "a list of int, item 1: int, got str 'a'"),
    ("abc", Sequence[int], "a list of int, got str 'abc'"),
    ([1.5], list[int], "item 0: int, got float 1.5"),
    ([1, 2], tuple[int, int, int], "(3 items), got 2 items"),
    (None, int, "int, got null"),
    (3, int | None, None),
    (None, int | None, None),
    ([[1, 2], [3]], list[list[int]], None),
    ([[1, "x"]], list[list[int]], "item 0: a list of int, item 1: int, got str 'x'"),
    (True, int, "int, got bool True"),
    (2, float, None),
])
def test_type_problem(value, hint, expected):
    problem = type_problem(value, hint)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


def test_annotated_ranges_are_enforced(tmp_path):
    from typing import Annotated

    from annotated_types import Ge, Interval, MinLen

    assert type_problem(-1, Annotated[int, Ge(1)]) == "a value >= 1, got -1"
    assert type_problem(1.0, Annotated[float, Interval(ge=0, lt=1)]) == "a value < 1, got 1.0"
    assert type_problem(float("nan"), Annotated[float, Ge(0)]) == "a value >= 0, got nan"
    assert type_problem([], Annotated[list[int], MinLen(1)]) == "at least 1 items, got 0"
    assert type_problem([3, 0], Sequence[Annotated[int, Ge(1)]]) == "a list of int, item 1: a value >= 1, got 0"
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE.replace("local.tiny_wide", "core.MLP"))
    for override, expected in (("model.head.num_classes=-1", "model.head.num_classes: core.LinearClsHead expects "
                                                            "a value >= 1, got -1"),
                               ("model.backbone.dropout=-1", "model.backbone.dropout: core.MLP expects a value >= 0"),
                               ("data.size=0", "data.size: core.GaussianBlobs expects a value >= 1, got 0"),
                               ("model.backbone.hidden=[8, .nan]", "expects a list of int, item 1: int, got float nan"),
                               ("train.optimizer.lr=-0.1", "train.optimizer: torch.optim.Adam rejects these arguments: "
                                                          "Invalid learning rate: -0.1"),
                               ("run.seed=-5", "run.seed: must be in 0 ... 2**32 - 1"),
                               ("run.launcher=pytorch", "run.launcher: 'pytorch' needs the environment torchrun sets")):
        with pytest.raises(ConfigError) as info:
            load_config(path, [override])
        assert expected in str(info.value), (override, str(info.value))


def test_list_elements_are_checked_in_configs(local, tmp_path):
    message = _error(tmp_path, "model.backbone.dims=[8, a]")
    assert "model.backbone.dims: local.tiny_wide expects a list of int, item 1: int, got str 'a'" in message


# ------------------------------------------------------------------ constructor errors at validation

def test_a_constructor_error_names_file_and_key_before_data_loads(local, tmp_path):
    message = _error(tmp_path, "model.backbone.depths=[1, 2]", "model.backbone.dims=[24, 48, 96]")
    assert message.startswith(f"{tmp_path / 'cfg.yaml'}: model.backbone: local.tiny_wide rejects these arguments: ")
    assert "ValueError: Stages: depths (1, 2) and dims (24, 48, 96) differ in length" in message


def test_a_panconv_error_of_a_constructor_keeps_its_type_and_gains_its_place(local, tmp_path, capsys):
    # a missing weights file the section names: still a CheckpointError, now naming the config file and key
    missing = tmp_path / "nowhere.pth"
    text = BASE.replace("{type: local.tiny_wide}", f"{{type: local.Pretrained, weights: '{missing}'}}")
    with pytest.raises(panconv.CheckpointError) as info:
        _config(tmp_path, text=text)
    assert str(info.value) == f"{tmp_path / 'cfg.yaml'}: model.backbone: {missing}: the weights file does not exist"
    assert main(["run", str(tmp_path / "cfg.yaml"), "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert f"cfg.yaml: model.backbone: {missing}: the weights file does not exist" in err
    assert "Traceback" not in err


def test_dry_run_catches_it_too(local, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    assert main(["run", str(path), "--dry-run", "--set", "model.backbone.dims=[1]"]) == 2
    assert "model.backbone: local.tiny_wide rejects these arguments" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_size_bomb_is_stopped_at_validation(local, tmp_path, monkeypatch):
    from panconv import config

    assert config.MAX_PARAMETER_TENSORS == 100_000
    # the same check at a cap of 1,000 tensors: building 100,000 on the meta device takes a minute on a busy CI box
    monkeypatch.setattr(config, "MAX_PARAMETER_TENSORS", 1_000)
    message = _error(tmp_path, f"model.backbone.depths=[{2**62}, 1]")
    assert "model.backbone: local.tiny_wide would build more than 1,000 parameter tensors" in message


# ------------------------------------------------------------------ declared metadata

def test_only_declared_metadata_is_injected(local):
    class Undeclared(Stages):
        metadata_inputs = ()

    from panconv.builder import build_component

    model = build_component("backbone", {"type": "local.Stages"}, metadata={"in_dim": 4})
    assert model.layers[0].in_features == 4
    from panconv import plugins

    plugins.get_manager().add_plugin(type("P", (), {"panconv_register_models": panconv.hookimpl(
        lambda self, register: register("Undeclared", Undeclared, kind="backbone"))})(), "undeclared")
    model = build_component("backbone", {"type": "undeclared.Undeclared"}, metadata={"in_dim": 4})
    assert model.layers[0].in_features == 2  # its default: in_dim was not declared


def test_a_variant_fixed_input_is_not_overwritten_by_metadata(local):
    from panconv.builder import build_component
    from panconv.registry import Variant

    class Speakers(Stages):
        metadata_inputs = ("in_dim",)

    from panconv import plugins

    plugins.get_manager().add_plugin(type("P", (), {"panconv_register_models": panconv.hookimpl(
        lambda self, register: register("wide_in", Speakers, kind="backbone", args={"in_dim": 3}))})(), "spk")
    assert isinstance(panconv.get_component("backbone", "spk.wide_in"), Variant)
    model = build_component("backbone", {"type": "spk.wide_in"}, metadata={"in_dim": 3})
    assert model.layers[0].in_features == 3
    with pytest.raises(ConfigError, match=r"wide_in is built for in_dim=3 but the dataset provides in_dim=4; "
                                          r"choose a variant that fits or set in_dim explicitly"):
        build_component("backbone", {"type": "spk.wide_in"}, metadata={"in_dim": 4}, where="cfg.yaml: model")
    assert build_component("backbone", {"type": "spk.wide_in", "in_dim": 4}, metadata={"in_dim": 4})


def test_a_required_input_the_dataset_does_not_provide_is_reported(local, tmp_path):
    class NeedsVocab(Stages):
        metadata_inputs = ("in_dim", "vocab_size")

        def __init__(self, vocab_size: int, in_dim: int = 2):
            super().__init__(in_dim)

    from panconv import plugins

    plugins.get_manager().add_plugin(type("P", (), {"panconv_register_models": panconv.hookimpl(
        lambda self, register: register("NeedsVocab", NeedsVocab, kind="backbone"))})(), "vocab")
    message = _error(tmp_path, "model.backbone={type: vocab.NeedsVocab}")
    assert ("model.backbone.vocab_size: vocab.NeedsVocab takes vocab_size from the dataset's metadata, but "
            "core.GaussianBlobs does not provide it (its metadata: num_classes, in_dim); set it here") in message
    assert _config(tmp_path, "model.backbone={type: vocab.NeedsVocab, vocab_size: 7}")


def test_print_config_shows_injected_values_and_still_round_trips(local, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    assert main(["run", str(path), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "# filled from the dataset's metadata (core.GaussianBlobs, split train):" in printed
    assert "#   model.backbone.in_dim: 4" in printed and "#   model.head.num_classes: 3" in printed
    again = tmp_path / "again.yaml"
    again.write_text(printed)
    assert load_config(again) == load_config(path)


# ------------------------------------------------------------------ transforms and losses

def test_transforms_apply_per_split_and_per_level(local, tmp_path):
    cfg = _config(tmp_path, "data.transforms=[{type: local.Scale, factor: 10.0, splits: [train]}, "
                            "{type: local.CountBatches}]")
    datasets = panconv.build_datasets(cfg, stages=("train", "test"))
    plain = panconv.build_datasets(_config(tmp_path), stages=("train", "test"))
    assert torch.allclose(datasets["train"][0]["inputs"], plain["train"][0]["inputs"] * 10)
    assert torch.equal(datasets["test"][0]["inputs"], plain["test"][0]["inputs"])  # train only
    batch = datasets["test"].collate([datasets["test"][0], datasets["test"][1]])
    assert "tagged" in batch and batch["inputs"].shape[0] == 2
    assert datasets["train"].metadata == plain["train"].metadata


def test_transform_errors_are_one_line_with_their_place(local, tmp_path):
    assert "data.transforms.0.factr: unknown key for local.Scale" in _error(
        tmp_path, "data.transforms=[{type: local.Scale, factr: 2}]")
    assert "data.transforms.0.splits: expected a list of core.GaussianBlobs's splits" in _error(
        tmp_path, "data.transforms=[{type: local.Scale, splits: [dev]}]")
    assert "Unknown transform 'local.Scal'" in _error(tmp_path, "data.transforms=[{type: local.Scal}]")


def test_a_loss_section_is_built_from_the_loss_registry(local, tmp_path):
    cfg = _config(tmp_path, "model.head={type: local.WeightedHead, loss: {type: local.LabelSmoothing, "
                            "label_smoothing: 0.2}}")
    model = panconv.create_model(cfg["model"], metadata={"num_classes": 3, "in_dim": 4})
    assert isinstance(model.head.criterion, nn.CrossEntropyLoss) and model.head.criterion.label_smoothing == 0.2
    assert "model.head.loss.label_smothing: unknown key for local.LabelSmoothing" in _error(
        tmp_path, "model.head={type: local.WeightedHead, loss: {type: local.LabelSmoothing, label_smothing: 0.2}}")


def test_a_module_first_imported_by_a_constructor_during_the_dry_build_keeps_real_tensors(tmp_path, monkeypatch):
    import sys

    from panconv import plugins
    from panconv.config import dry_build

    (tmp_path / "panconv_lazy_constants.py").write_text("import torch\nEPS = torch.tensor(1e-3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Lazy(Stages):
        def __init__(self, in_dim: int = 2):
            import panconv_lazy_constants  # noqa: F401 - first imported here, inside the meta build

            super().__init__(in_dim)

    manager = plugins.reset(entry_points=False)
    manager.collect()
    manager.add_plugin(type("P", (), {"panconv_register_models": panconv.hookimpl(
        lambda self, register: register("Lazy", Lazy, kind="backbone"))})(), "lazy")
    dry_build({"backbone": {"type": "lazy.Lazy"}, "head": {"type": "core.LinearClsHead"}}, "cfg.yaml")
    assert sys.modules["panconv_lazy_constants"].EPS.device.type == "cpu"
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"  # nothing left on meta
    sys.modules.pop("panconv_lazy_constants")


def test_predicate_constraints():
    import math
    from typing import Annotated

    from annotated_types import Predicate

    assert type_problem(float("inf"), Annotated[float, Predicate(math.isfinite)]) == \
        "a value for which isfinite holds, got inf"
    assert type_problem(1.5, Annotated[float, Predicate(math.isfinite)]) is None


def test_cli_errors_stay_one_line_with_newlines_in_names(capsys):
    from panconv.errors import DataError

    def fail(args):
        raise DataError("/tmp/a\nb.wav: unreadable")

    from panconv import cli

    original = cli.build_parser

    def build():
        p = original()
        p._subparsers._group_actions[0].choices["list"].set_defaults(func=fail)
        return p

    cli.build_parser = build
    try:
        assert cli.main(["list"]) == 2
    finally:
        cli.build_parser = original
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/tmp/a\\nb.wav: unreadable" in err


class Grouped(Stages):
    """Stages whose first layer follows S4's optimiser rule (no decay, a tenth of the learning rate)."""

    def param_groups(self):
        return {"layers.0.": {"lr_mult": 0.1, "decay_mult": 0.0}}


def test_components_declare_optimizer_param_groups_the_engine_uses(local, tmp_path, monkeypatch):
    from panconv import plugins
    from panconv.engine import run_experiment
    from panconv.io import load_checkpoint

    plugins.get_manager().add_plugin(type("P", (), {"panconv_register_models": panconv.hookimpl(
        lambda self, register: register("Grouped", Grouped, kind="backbone"))})(), "grouped")
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, "model.backbone={type: grouped.Grouped}", "train.optimizer={type: AdamW, lr: 0.01, "
                  "weight_decay: 0.05}")
    run_experiment(cfg, work_dir=tmp_path / "work", quiet=True)
    groups = load_checkpoint(sorted((tmp_path / "work").glob("epoch_*.pth"))[-1])["optimizer"]["param_groups"]
    settings = sorted((round(g["lr"], 6), g["weight_decay"], len(g["params"])) for g in groups)
    assert settings[0] == (0.001, 0.0, 1) and sum(g[2] for g in settings if g[0] == 0.001) == 2  # layers.0 w, b
    assert all(g[:2] == (0.01, 0.05) for g in settings if g[0] != 0.001)


def test_one_cycle_with_one_peak_is_refused_when_groups_are_declared(local, tmp_path, monkeypatch):
    from panconv import plugins
    from panconv.engine import run_experiment

    plugins.get_manager().add_plugin(type("P", (), {"panconv_register_models": panconv.hookimpl(
        lambda self, register: register("Grouped", Grouped, kind="backbone"))})(), "grouped")
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, "model.backbone={type: grouped.Grouped}",
                  "train.scheduler=[{type: OneCycleLR, eta_max: 0.1, total_steps: 8, by_epoch: false}]")
    with pytest.raises(ConfigError, match=r"train.scheduler.0: OneCycleLR with one eta_max sets every parameter "
                                          r"group to that peak"):
        run_experiment(cfg, work_dir=tmp_path / "work", quiet=True)
