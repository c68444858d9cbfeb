"""Config loading: inheritance, overrides, and one-line errors for malformed configs."""

import textwrap
import warnings

import pytest

from panconv.cli import main
from panconv.config import load_config, merge
from panconv.errors import ConfigError

VALID = textwrap.dedent("""\
    model:
      backbone: {type: core.MLP, hidden: [8]}
      head: {type: core.LinearClsHead}
    data: {type: core.GaussianBlobs, num_classes: 3, batch_size: 16}
    train: {epochs: 2, optimizer: {type: SGD, lr: 0.1}}
    eval: {evaluators: [{type: core.Accuracy}]}
    run: {seed: 1}
    """)


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------ merge rules

def test_merge_rules():
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "keep": 1}
    assert merge(base, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}, "l": [1, 2], "keep": 1}
    assert merge(base, {"l": [9]})["l"] == [9]  # lists replace
    assert merge(base, {"a": {"_delete_": True, "z": 0}})["a"] == {"z": 0}  # replace instead of merge
    assert merge(base, {"a": None})["a"] is None
    assert base == {"a": {"x": 1, "y": 2}, "l": [1, 2], "keep": 1}  # inputs untouched


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path, VALID, "base.yaml")
    write(tmp_path, """\
        _base_: base.yaml
        train: {epochs: 5}
        model: {backbone: {hidden: [4, 4]}}
        """)
    cfg = load_config(tmp_path / "cfg.yaml", ["train.optimizer.lr=0.5", "eval.evaluators.0.topk=[1, 2]",
                                              "run.deterministic=true"])
    assert cfg["train"]["epochs"] == 5
    assert cfg["train"]["optimizer"] == {"type": "SGD", "lr": 0.5}
    assert cfg["model"]["backbone"] == {"type": "core.MLP", "hidden": [4, 4]}
    assert cfg["model"]["head"] == {"type": "core.LinearClsHead"}
    assert cfg["eval"]["evaluators"] == [{"type": "core.Accuracy", "topk": [1, 2]}]
    assert cfg["run"]["deterministic"] is True
    assert cfg["train"]["accumulate"] == 1  # engine defaults filled in


def test_multiple_bases_later_wins(tmp_path):
    write(tmp_path, VALID, "a.yaml")
    write(tmp_path, "train: {epochs: 7}\n", "b.yaml")
    write(tmp_path, "_base_: [a.yaml, b.yaml]\n")
    assert load_config(tmp_path / "cfg.yaml")["train"]["epochs"] == 7


def test_print_config_round_trips(tmp_path, capsys):
    path = write(tmp_path, VALID)
    assert main(["run", str(path), "--print-config", "--set", "train.epochs=3"]) == 0
    printed = capsys.readouterr().out
    again = write(tmp_path, printed, "again.yaml")
    assert load_config(again) == load_config(path, ["train.epochs=3"])


# ------------------------------------------------------------------ malformed configs
# (name, config text or None for VALID, overrides, expected one-line error text)
BAD = [
    ("yaml syntax", "model: {type: [unclosed\n", [], "cfg.yaml:2: invalid YAML: expected ',' or ']'"),
    ("top level list", "- a\n- b\n", [], "the top level must be a mapping"),
    ("python tag", "model: !!python/object:os.system {}\n", [], "invalid YAML"),
    ("duplicate key", VALID + "run: {seed: 2}\n", [], "duplicate key 'run'"),
    ("unknown section", VALID + "trian: {epochs: 1}\n", [], "trian: unknown section. Did you mean 'train'?"),
    ("missing base", "_base_: nowhere.yaml\n", [], "_base_: file 'nowhere.yaml' not found"),
    ("base cycle", "_base_: cfg.yaml\n", [], "inheritance cycle"),
    ("base wrong type", "_base_: {a: 1}\n", [], "_base_: expected a file name or a list"),
    ("no model", "data: {type: core.GaussianBlobs}\n", [], "model: missing section"),
    ("model not mapping", VALID.replace("model:\n", "model: 3\nx:\n"), [], None),
    ("unknown model", None, ["model={type: core.MLPP}"], "Unknown model 'core.MLPP'"),
    ("backbone typo", None, ["model.backbone.type=core.MPL"], "Unknown backbone 'core.MPL' in"),
    ("backbone typo suggestion", None, ["model.backbone.type=core.MPL"], "Did you mean 'core.MLP'?"),
    ("unknown backbone key", None, ["model.backbone.hiden=[4]"],
     "model.backbone.hiden: unknown key for core.MLP. Did you mean 'hidden'?"),
    ("wrong type for key", None, ["model.backbone.dropout=lots"],
     "model.backbone.dropout: core.MLP expects float, got str 'lots'"),
    ("bool for int", None, ["model.backbone.in_dim=true"], "model.backbone.in_dim: core.MLP expects int, got bool"),
    ("head missing", None, ["model.head=null"], "model.head: missing (a composed model needs a backbone and a head)"),
    ("composed unknown key", None, ["model.neek={type: core.GlobalAvgPool}"],
     "model.neek: unknown key: a model is either"),
    ("injected key given", None, ["model.head.in_features=[1]"], "model.head.in_features: is set by the engine"),
    ("unknown neck", None, ["model.neck={type: core.FPN}"], "Unknown neck 'core.FPN'"),
    ("data without type", None, ["data={batch_size: 2}"], "data: missing 'type'"),
    ("unknown dataset key", None, ["data.num_clases=3"], "data.num_clases: unknown key for core.GaussianBlobs. "
                                                         "Did you mean 'num_classes'?"),
    ("bad batch size", None, ["data.batch_size=0"], "data.batch_size: must be >= 1, got 0"),
    ("batch size str", None, ["data.batch_size=big"], "data.batch_size: expected int, got str 'big'"),
    ("unknown split", None, ["data.splits.val=valid"], "data.splits.val: core.GaussianBlobs has no split 'valid'"),
    ("unknown stage", None, ["data.splits.dev=val"], "data.splits.dev: unknown stage"),
    ("negative epochs", None, ["train.epochs=-1"], "train.epochs: must be >= 1, got -1"),
    ("epochs str", None, ["train.epochs=ten"], "train.epochs: expected int, got str 'ten'"),
    ("unknown train key", None, ["train.epoch=3"], "train.epoch: unknown key. Did you mean 'epochs'?"),
    ("unknown optimizer", None, ["train.optimizer.type=Adamm"], "unknown optimizer 'Adamm'. Did you mean 'Adam'?"),
    ("optimizer key", None, ["train.optimizer.learning_rate=0.1"],
     "train.optimizer.learning_rate: unknown key for torch.optim.SGD"),
    ("scheduler not list", None, ["train.scheduler={type: StepLR}"], "train.scheduler: expected a list"),
    ("unknown scheduler", None, ["train.scheduler=[{type: CosineLR}]"], "train.scheduler.0.type: unknown scheduler"),
    ("scheduler key", None, ["train.scheduler=[{type: StepLR, step: 2}]"],
     "train.scheduler.0.step: unknown key for StepLR"),
    ("grad clip", None, ["train.grad_clip=0"], "train.grad_clip: must be > 0"),
    ("checkpoint key", None, ["train.checkpoint.intervall=2"], "train.checkpoint.intervall: unknown key"),
    ("evaluators not list", None, ["eval.evaluators={type: core.Accuracy}"], "eval.evaluators: expected a list"),
    ("unknown evaluator", None, ["eval.evaluators=[{type: core.Acuracy}]"],
     "Unknown evaluator 'core.Acuracy' in"),
    ("evaluator key", None, ["eval.evaluators.0.top_k=[1]"], "eval.evaluators.0.top_k: unknown key for core.Accuracy"),
    ("bad device", None, ["run.device=gpu"], "run.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("seed str", None, ["run.seed=abc"], "run.seed: expected int or null, got str 'abc'"),
    ("unknown run key", None, ["run.workdir=x"], "run.workdir: unknown key. Did you mean 'work_dir'?"),
    ("plugins not list", None, ["plugins=my_plugin"], "plugins: expected a list"),
    ("plugin missing", None, ["plugins=[./nowhere.py]"], "plugins.0: plugin './nowhere.py' failed to load"),
    ("not installed plugin", None, ["model={type: audio2.Squeezeformer}"], "Unknown model 'audio2.Squeezeformer'"),
    ("override without =", None, ["train.epochs"], "--set 'train.epochs': expected KEY.PATH=VALUE"),
    ("override into scalar", None, ["train.epochs.x=1"], "train.epochs is a int, not a section"),
    ("override list index", None, ["eval.evaluators.3.topk=[1]"], "list index out of range"),
    ("override bad yaml", None, ["train.epochs=[1"], "the value is not valid YAML"),
]


@pytest.mark.parametrize("name,text,overrides,expected", BAD, ids=[b[0] for b in BAD])
def test_malformed_config_gives_one_line_error(tmp_path, capsys, name, text, overrides, expected):
    path = write(tmp_path, VALID if text is None else text)
    args = ["run", str(path), "--dry-run"]
    for override in overrides:
        args += ["--set", override]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(args)
    assert not [w for w in caught if "failed to load" in str(w.message)]  # the error line says it once
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert str(path) in lines[0] or "--set" in lines[0]
    if expected is not None:
        assert expected in lines[0], lines[0]


def test_valid_config_dry_run(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, VALID)), "--dry-run"]) == 0
    assert "config is valid" in capsys.readouterr().out


def test_errors_in_a_base_file_name_that_file(tmp_path):
    write(tmp_path, VALID.replace("num_classes: 3", "num_classes: 3, nclasses: 2"), "base.yaml")
    write(tmp_path, "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match="data.nclasses: unknown key"):
        load_config(tmp_path / "cfg.yaml")
