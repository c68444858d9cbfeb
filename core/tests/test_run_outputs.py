"""What a run leaves in its work dir: evaluation apart from the training record, weights-only
initialisation, extended schedules, the text log and progress lines, file modes, curves,
summary and the resolved config. Runs in-process on the tiny built-in components."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from panconv.config import load_config
from panconv.errors import CheckpointError, ConfigError
from panconv.io import atomic_write_text, load_checkpoint

BLOBS = """\
plugins: {plugins}
model:
  backbone: {{type: core.MLP, hidden: [16], dropout: 0.1}}
  head: {{type: core.LinearClsHead}}
data: {{type: {dataset}, num_classes: 3, size: 256, spread: 3.0, batch_size: 32}}
train:
  epochs: 2
  optimizer: {{type: SGD, lr: 0.1, momentum: 0.9}}
  scheduler: [{{type: StepLR, step_size: 2, gamma: 0.5, by_epoch: true}}]
  checkpoint: {{interval: 1, max_keep: 2, best: accuracy}}
eval: {{evaluators: [{{type: core.Accuracy}}]}}
run: {{seed: 3, threads: 1}}
"""


def config(tmp_path, *overrides, dataset="core.GaussianBlobs", plugins="[]"):
    path = tmp_path / "blobs.yaml"
    path.write_text(BLOBS.format(dataset=dataset, plugins=plugins))
    return load_config(path, list(overrides))


def run(cfg, work, **kwargs):
    from panconv.engine import run_experiment

    return run_experiment(cfg, work_dir=work, quiet=kwargs.pop("quiet", True), **kwargs)


def history(work: Path) -> dict:
    return json.loads((work / "metrics.json").read_text())


# ----------------------------------------------------------------------------- --eval-only

def test_eval_only_writes_its_own_record_and_leaves_the_training_record_alone(tmp_path):
    work = tmp_path / "work"
    run(config(tmp_path), work)
    record = {name: (work / name).read_bytes() for name in ("metrics.json", "summary.json", "curves.png",
                                                              "config.yaml")}
    trained = history(work)

    metrics = run(config(tmp_path), work, resume="best.pth", stages=("test",))  # relative: found in the work dir
    assert {name: (work / name).read_bytes() for name in record} == record  # nothing of the training touched
    evaluation = json.loads((work / "eval" / "metrics.json").read_text())
    best_epoch = json.loads(record["summary.json"])["best"]["epoch"]
    assert evaluation["checkpoint"] == str((work / "best.pth").resolve())
    assert evaluation["test"] == {"epoch": best_epoch, **metrics}
    summary = json.loads((work / "eval" / "summary.json").read_text())
    assert summary["final_metrics"] == metrics and summary["checkpoint_epoch"] == best_epoch
    assert not (work / "eval" / "curves.png").exists() and (work / "eval" / "run.log").is_file()
    assert history(work) == trained

    # the last checkpoint of the run scores what the run itself reported at the end
    again = run(config(tmp_path), work, resume=True, stages=("test",))
    assert again == {k: v for k, v in trained["test"].items() if k != "epoch"}


def test_eval_only_without_weights_is_refused(tmp_path):
    work = tmp_path / "work"
    with pytest.raises(CheckpointError, match=r"evaluation needs trained weights: pass --resume CHECKPOINT") as err:
        run(config(tmp_path), work, stages=("test",))
    assert "\n" not in str(err.value)
    assert not (work / "eval").exists()
    # --resume without a value finds nothing in an empty work dir: the same refusal, not random weights
    with pytest.raises(CheckpointError, match=r"pass --resume CHECKPOINT"):
        run(config(tmp_path), work, resume=True, stages=("test",))


def test_cli_eval_only_without_weights_is_a_one_line_error(tmp_path, capsys):
    from panconv.cli import main

    cfg = tmp_path / "blobs.yaml"
    cfg.write_text(BLOBS.format(dataset="core.GaussianBlobs", plugins="[]"))
    assert main(["run", str(cfg), "--work-dir", str(tmp_path / "w"), "--eval-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "--resume CHECKPOINT" in err[-1]


def test_missing_resume_path_names_both_places_it_looked(tmp_path):
    expected = r"nope.pth: checkpoint not found \(--resume; also looked for .*w/nope.pth"
    with pytest.raises(CheckpointError, match=expected):
        run(config(tmp_path), tmp_path / "w", resume="nope.pth")


# ----------------------------------------------------------------------------- run.load_from

def test_load_from_initialises_the_weights_only(tmp_path):
    first = tmp_path / "first"
    run(config(tmp_path), first)
    source = load_checkpoint(first / "epoch_2.pth")
    assert source["meta"]["epoch"] == 2

    # lr 0: training cannot move the weights, so the new run's checkpoint holds exactly what it started from
    tuned = tmp_path / "tuned"
    run(config(tmp_path, f"run.load_from={first / 'epoch_2.pth'}", "train.epochs=1", "train.optimizer.lr=0.0"), tuned)
    result = load_checkpoint(tuned / "epoch_1.pth")
    assert result["state_dict"].keys() == source["state_dict"].keys()
    assert all(torch.equal(result["state_dict"][k], source["state_dict"][k]) for k in source["state_dict"])
    # ...but nothing else was resumed: a fresh epoch count, schedule and optimizer
    assert [h["epoch"] for h in history(tuned)["train"]] == [1] and result["meta"]["epoch"] == 1
    assert result["optimizer"]["param_groups"][0]["initial_lr"] == 0.0
    summary = json.loads((tuned / "summary.json").read_text())
    assert summary["load_from"] == str(first / "epoch_2.pth") and summary["resumed_from"] is None
    assert yaml.safe_load((tuned / "config.yaml").read_text())["run"]["load_from"] == \
        str((first / "epoch_2.pth").resolve())


def test_load_from_also_takes_a_plain_model_state_dict(tmp_path):
    from panconv.builder import build_model

    cfg = config(tmp_path, "train.epochs=1", "train.optimizer.lr=0.0")
    torch.manual_seed(123)
    model = build_model(cfg["model"], metadata={"in_dim": 2, "num_classes": 3})
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    cfg["run"]["load_from"] = str(tmp_path / "plain.pth")
    run(cfg, tmp_path / "w")
    saved = load_checkpoint(tmp_path / "w" / "epoch_1.pth")["state_dict"]
    assert all(torch.equal(saved[f"model.{k}"], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("case", ["missing", "corrupt", "other model"])
def test_load_from_fails_clearly(tmp_path, case):
    first = tmp_path / "first"
    if case == "missing":
        path, expected = tmp_path / "nope.pth", r"nope.pth: checkpoint not found \(run.load_from"
    elif case == "corrupt":
        path, expected = tmp_path / "corrupt.pth", r"corrupt.pth: not a readable checkpoint"
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    else:
        run(config(tmp_path, "train.epochs=1"), first)
        path = first / "epoch_1.pth"
        expected = (r"epoch_1.pth: does not fit this model: size mismatch for model.backbone.layers.0.weight "
                    r"\(checkpoint \[16, 2\], model \[7, 2\]\)")
    cfg = config(tmp_path, f"run.load_from={path}", "model.backbone.hidden=[7]")
    with pytest.raises(CheckpointError, match=expected) as err:
        run(cfg, tmp_path / "w")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- run.init_from (transfer learning)

def _state(work_dir, name="epoch_1.pth"):
    return load_checkpoint(work_dir / name)["state_dict"]


def test_init_from_copies_the_backbone_only(tmp_path):
    first, tuned = tmp_path / "first", tmp_path / "tuned"
    run(config(tmp_path, "train.epochs=1"), first)
    source = _state(first)
    # another seed: without init_from every tensor would differ; lr 0 keeps what the run started from
    run(config(tmp_path, f"run.init_from={first / 'epoch_1.pth'}", "train.epochs=1", "train.optimizer.lr=0.0",
               "run.seed=4"), tuned)
    result = _state(tuned)
    backbone = [k for k in source if k.startswith("model.backbone.")]
    head = [k for k in source if k.startswith("model.head.")]
    assert backbone and head
    assert all(torch.equal(result[k], source[k]) for k in backbone)
    assert not any(torch.equal(result[k], source[k]) for k in head)
    summary = json.loads((tuned / "summary.json").read_text())
    assert summary["init_from"] == {"path": str(first / "epoch_1.pth"), "map": {"backbone.": "backbone."},
                                    "tensors": len(backbone)}
    assert summary["load_from"] is None
    resolved = yaml.safe_load((tuned / "config.yaml").read_text())["run"]["init_from"]
    assert resolved == {"path": str((first / "epoch_1.pth").resolve()), "map": {"backbone.": "backbone."}}
    assert "initialised 2 tensors from" in (tuned / "run.log").read_text()


def test_init_from_maps_prefixes(tmp_path):
    """A model prefix takes a differently named checkpoint prefix (a pre-training model's encoder)."""
    from panconv.builder import build_model

    cfg = config(tmp_path, "train.epochs=1", "train.optimizer.lr=0.0")
    torch.manual_seed(5)
    backbone = build_model(cfg["model"], metadata={"in_dim": 2, "num_classes": 3}).backbone
    torch.save({f"student.encoder.{k}": v for k, v in backbone.state_dict().items()}, tmp_path / "pretrain.pth")
    cfg["run"]["init_from"] = {"path": str(tmp_path / "pretrain.pth"), "map": {"backbone.": "student.encoder."}}
    run(cfg, tmp_path / "w")
    saved = _state(tmp_path / "w")
    assert all(torch.equal(saved[f"model.backbone.{k}"], v) for k, v in backbone.state_dict().items())


def test_init_from_is_ignored_when_resuming(tmp_path):
    first, other, straight = tmp_path / "first", tmp_path / "other", tmp_path / "straight"
    run(config(tmp_path, "train.epochs=1", "run.seed=9"), other)
    run(config(tmp_path, "train.epochs=2"), straight)
    run(config(tmp_path, "train.epochs=1"), first)
    # the resumed weights win: init_from (another run's backbone) is not applied over them, so the
    # resumed run ends where the straight 2-epoch run does
    run(config(tmp_path, "train.epochs=2", f"run.init_from={other / 'epoch_1.pth'}"), first, resume=True)
    expected = _state(straight, "epoch_2.pth")
    assert all(torch.allclose(_state(first, "epoch_2.pth")[k].float(), v.float(), rtol=1e-5, atol=1e-6)
               for k, v in expected.items())
    assert json.loads((first / "summary.json").read_text())["init_from"] is None


@pytest.mark.parametrize("case", ["missing file", "no such model prefix", "no such checkpoint prefix",
                                  "size mismatch"])
def test_init_from_fails_clearly(tmp_path, case):
    first = tmp_path / "first"
    if case != "missing file":
        run(config(tmp_path, "train.epochs=1"), first)
    path = first / "epoch_1.pth"
    spec, overrides = str(path), []
    if case == "missing file":
        path, spec = tmp_path / "nope.pth", str(tmp_path / "nope.pth")
        expected = r"nope.pth: checkpoint not found \(run.init_from"
    elif case == "no such model prefix":
        spec = {"path": str(path), "map": {"encoder.": "backbone."}}
        expected = r"epoch_1.pth: run.init_from.map: the model has no entry under 'encoder.' \(its top-level " \
                   r"modules: backbone, head\)"
    elif case == "no such checkpoint prefix":
        spec = {"path": str(path), "map": {"backbone.": "student."}}
        expected = r"the checkpoint has no entry under 'student.' \(its top-level names: backbone, head\)"
    else:
        overrides = ["model.backbone.hidden=[7]"]
        expected = (r"epoch_1.pth: run.init_from: does not fit this model: size mismatch for "
                    r"backbone.layers.0.weight \(checkpoint \[16, 2\], model backbone.layers.0.weight \[7, 2\]\)")
    cfg = config(tmp_path, *overrides)
    cfg["run"]["init_from"] = spec
    with pytest.raises(CheckpointError, match=expected) as err:
        run(cfg, tmp_path / "w")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w" / "metrics.json").exists()  # refused before the run started


@pytest.mark.parametrize("value, expected", [
    ("{path: a.pth, mapp: {}}", r"run.init_from.mapp: unknown key. Did you mean 'map'\?; allowed: path, map"),
    ("{map: {backbone.: encoder.}}", r"run.init_from.path: missing"),
    ("{path: a.pth, map: {}}", r"run.init_from.map: empty"),
    ("{path: a.pth, map: {backbone.: 3}}", r"run.init_from.map.backbone.: expected a model-prefix: "),
    ("7", r"run.init_from: expected"),
])
def test_init_from_is_validated(tmp_path, value, expected):
    with pytest.raises(ConfigError, match=expected):
        config(tmp_path, f"run.init_from={value}")


PUBLISHED_MAP = """
def convert(state):
    out = {}
    for key, value in state.items():
        if not key.startswith("trunk."):
            raise KeyError(f"unexpected key in a published state dict: {key}")
        out["backbone." + key[len("trunk."):]] = value
    return out
"""


def _published(tmp_path, monkeypatch):
    """A published checkpoint (another naming, under a wrapper entry) and the module that maps it."""
    from panconv.builder import build_model

    (tmp_path / "pubmap.py").write_text(PUBLISHED_MAP)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(6)
    backbone = build_model(config(tmp_path)["model"], metadata={"in_dim": 2, "num_classes": 3}).backbone
    torch.save({"model": {f"trunk.{k}": v for k, v in backbone.state_dict().items()}, "epoch": 300},
               tmp_path / "published.pth")
    return backbone


def test_init_from_converts_a_published_checkpoint(tmp_path, monkeypatch):
    """``entry`` picks the wrapper's state dict, ``convert`` (a family's map_official_state_dict) renames it."""
    backbone = _published(tmp_path, monkeypatch)
    cfg = config(tmp_path, "train.epochs=1", "train.optimizer.lr=0.0")
    cfg["run"]["init_from"] = {"path": str(tmp_path / "published.pth"), "entry": "model", "convert": "pubmap:convert"}
    run(cfg, tmp_path / "w")
    saved = _state(tmp_path / "w")
    assert all(torch.equal(saved[f"model.backbone.{k}"], v) for k, v in backbone.state_dict().items())
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())["init_from"]
    assert summary == {"path": str(tmp_path / "published.pth"), "map": {"backbone.": "backbone."}, "entry": "model",
                       "convert": "pubmap:convert", "tensors": len(backbone.state_dict())}
    resolved = yaml.safe_load((tmp_path / "w" / "config.yaml").read_text())["run"]["init_from"]
    assert resolved["entry"] == "model" and resolved["convert"] == "pubmap:convert"


@pytest.mark.parametrize("case", ["no such entry", "a wrapper without entry", "the map refuses a key"])
def test_init_from_convert_fails_clearly(tmp_path, monkeypatch, case):
    _published(tmp_path, monkeypatch)
    spec = {"path": str(tmp_path / "published.pth"), "entry": "model", "convert": "pubmap:convert"}
    if case == "no such entry":
        spec["entry"] = "params"
        expected = (r"published.pth: run.init_from.entry: the checkpoint holds no state dict under 'params' "
                    r"\(its top-level names: epoch, model\)")
    elif case == "a wrapper without entry":
        del spec["entry"]
        expected = (r"published.pth: run.init_from: the checkpoint holds no tensors at its top level; set "
                    r"run.init_from.entry to the name of its state dict: one of model")
    else:
        torch.save({"model": {"stray.weight": torch.zeros(2)}}, tmp_path / "published.pth")
        expected = (r"published.pth: run.init_from.convert \(pubmap:convert\): unexpected key in a published state "
                    r"dict: stray.weight")
    cfg = config(tmp_path)
    cfg["run"]["init_from"] = spec
    with pytest.raises(CheckpointError, match=expected) as err:
        run(cfg, tmp_path / "w")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w" / "metrics.json").exists()


@pytest.mark.parametrize("value, expected", [
    ("nocolon", r"run.init_from.convert: expected \"package.module:function\", got 'nocolon'"),
    ("no_such_module_xyz:f", r"run.init_from.convert: cannot import 'no_such_module_xyz': No module named"),
    ("json:no_such_function", r"run.init_from.convert: 'json' has no function 'no_such_function'"),
])
def test_init_from_convert_is_validated(tmp_path, value, expected):
    with pytest.raises(ConfigError, match=expected):
        config(tmp_path, f"run.init_from={{path: a.pth, convert: '{value}'}}")


def test_init_from_and_load_from_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match=r"run.init_from: set either run.load_from .* not both"):
        config(tmp_path, "run.init_from=a.pth", "run.load_from=b.pth")


# ----------------------------------------------------------------------------- extending a finished run

@pytest.mark.parametrize("schedulers", [
    "[{type: LinearLR, start_factor: 0.5, end: 1, by_epoch: true}, {type: StepLR, step_size: 2, gamma: 0.5}]",
    "[{type: StepLR, step_size: 12, gamma: 0.5, by_epoch: false}]",  # per iteration (8 an epoch)
])
def test_extending_a_finished_run_continues_its_schedule(tmp_path, schedulers):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    run(config(tmp_path, "train.epochs=6", f"train.scheduler={schedulers}"), straight)
    run(config(tmp_path, "train.epochs=3", f"train.scheduler={schedulers}"), extended)
    assert [h["epoch"] for h in history(extended)["train"]] == [1, 2, 3]
    run(config(tmp_path, "train.epochs=6", f"train.scheduler={schedulers}"), extended, resume=True)
    a, b = history(straight), history(extended)
    assert [h["epoch"] for h in b["train"]] == [1, 2, 3, 4, 5, 6]
    assert [h["lr"] for h in b["train"]] == pytest.approx([h["lr"] for h in a["train"]], rel=1e-12)
    assert len(set(h["lr"] for h in b["train"][3:])) > 1  # the learning rate did not go flat
    assert [h["loss"] for h in b["train"]] == pytest.approx([h["loss"] for h in a["train"]], rel=1e-6, abs=1e-7)
    assert b["val"] == a["val"] and b["test"] == a["test"]


def test_extending_a_schedule_spread_over_train_epochs_is_refused(tmp_path):
    work = tmp_path / "w"
    cosine = "train.scheduler=[{type: CosineAnnealingLR, by_epoch: true}]"
    run(config(tmp_path, cosine), work)
    before = (work / "metrics.json").read_bytes()
    expected = (r"epoch_2.pth: cannot extend this run from 2 to 4 epochs: train.scheduler\[0\] "
                r"\(CosineAnnealingLR\) spreads its schedule over train.epochs")
    with pytest.raises(ConfigError, match=expected) as err:
        run(config(tmp_path, cosine, "train.epochs=4"), work, resume=True)
    assert "run.load_from=" in str(err.value) and "\n" not in str(err.value)
    assert json.loads(before)["train"] == history(work)["train"]  # nothing trained
    # with an explicit end the schedule is the config's own: extending keeps it
    explicit = "train.scheduler=[{type: CosineAnnealingLR, by_epoch: true, T_max: 2, end: 2}]"
    run(config(tmp_path, explicit), tmp_path / "x")
    run(config(tmp_path, explicit, "train.epochs=3"), tmp_path / "x", resume=True)
    assert [h["epoch"] for h in history(tmp_path / "x")["train"]] == [1, 2, 3]


# ----------------------------------------------------------------------------- log and progress

def test_run_log_and_one_progress_line_per_interval_when_stderr_is_not_a_terminal(tmp_path, capsys):
    work = tmp_path / "w"
    run(config(tmp_path, "train.log_interval=4"), work, quiet=False)  # 256 samples / 32 = 8 iterations an epoch
    out, err = capsys.readouterr()
    assert "\r" not in err
    lines = [line for line in err.splitlines() if " iter " in line]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2 iter 4/8", "epoch 1/2 iter 8/8",
                                                       "epoch 2/2 iter 4/8", "epoch 2/2 iter 8/8"]
    assert all("loss=" in line and "lr=0.1" in line and " eta 0:" in line for line in lines)
    assert "epoch 1/2 done in" in err and "epoch 2 val: accuracy=" in out

    log = (work / "run.log").read_text()
    for expected in ("==== panconv training started", "command: ", f"torch {torch.__version__}", "mmengine ",
                     "panconv ", "device cpu", "config:", "type: core.GaussianBlobs", "epoch 2/2 iter 8/8",
                     "epoch 2 val: accuracy=", "epoch 2 test: accuracy=", "final: accuracy="):
        assert expected in log, expected
    assert "Initialization information" not in log
    assert not [p for p in work.iterdir() if p.is_dir() and p.name[:1].isdigit()]  # no mmengine time-stamped folder


def test_quiet_run_still_logs_to_run_log(tmp_path, capsys):
    work = tmp_path / "w"
    run(config(tmp_path, "train.log_interval=8"), work, quiet=True)
    out, err = capsys.readouterr()
    assert out == "" and "epoch" not in err
    assert "epoch 1/2 iter 8/8" in (work / "run.log").read_text()


SLEEPY = '''\
import time

from panconv import hookimpl
from panconv.builtin.components import GaussianBlobs


class SleepyBlobs(GaussianBlobs):
    def __init__(self, *args, **kwargs):
        time.sleep(0.3)
        super().__init__(*args, **kwargs)


@hookimpl
def panconv_register_datasets(register):
    register("SleepyBlobs", SleepyBlobs)
'''


def test_slow_data_preparation_is_announced(tmp_path, capsys, monkeypatch):
    from panconv.engine import runner

    (tmp_path / "sleepyblobs.py").write_text(SLEEPY)
    cfg = config(tmp_path, "train.epochs=1", dataset="sleepyblobs.SleepyBlobs",
                 plugins=f"[{tmp_path / 'sleepyblobs.py'}]")
    run(cfg, tmp_path / "fast", quiet=False)  # below the threshold: not a word
    assert "preparing data" not in capsys.readouterr().err
    monkeypatch.setattr(runner, "SLOW_DATA_SECONDS", 0.1)
    run(cfg, tmp_path / "slow", quiet=False)
    err = capsys.readouterr().err.splitlines()
    announced = [line for line in err if line.startswith("preparing data: sleepyblobs.SleepyBlobs")]
    assert announced[0] == "preparing data: sleepyblobs.SleepyBlobs ..."
    assert announced[1].startswith("preparing data: sleepyblobs.SleepyBlobs done in ")
    assert float(announced[1].split("done in ")[1].split()[0]) >= 0.8  # three splits of 0.3 s


# ----------------------------------------------------------------------------- files

def test_work_dir_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run(config(tmp_path, "train.epochs=1"), tmp_path / "w")
        run(config(tmp_path), tmp_path / "w", resume="epoch_1.pth", stages=("test",))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "w").rglob("*") if p.is_file()]
    assert {"epoch_1.pth", "best.pth", "metrics.json", "summary.json", "config.yaml", "curves.png", "run.log",
            "last_checkpoint"} <= {p.name for p in files}
    assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {str(p.relative_to(tmp_path)): "0o644" for p in files}
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "strict.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "strict.txt").stat().st_mode) == 0o640


def test_stale_temporaries_are_removed_when_a_run_starts(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    stale = [work / ".epoch_3.pth.k2j3h4.tmp", work / ".metrics.json.abcd.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    (work / "keep.tmp").write_text("not ours")
    run(config(tmp_path, "train.epochs=1"), work)
    assert not any(p.exists() for p in stale) and (work / "keep.tmp").exists()


# ----------------------------------------------------------------------------- curves, TensorBoard, summary

def test_curves_figure_wraps_marks_the_best_epoch_and_has_an_lr_panel():
    from panconv.engine.hooks import curves_figure

    metrics = ["accuracy", "f1", "precision", "recall", "top5"]
    hist = {"train": [{"epoch": e, "loss": 1.0 / e, "lr": 0.1 * 0.5 ** (e // 3)} for e in range(1, 8)],
            "val": [{"epoch": e, **{m: e / 10 - (e == 7) * 0.2 for m in metrics}} for e in range(1, 8)]}
    fig = curves_figure(hist, best="accuracy", best_epoch=6)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["training loss", "learning rate"] + [f"val {m}" for m in metrics]
    geometry = {ax.get_subplotspec().get_geometry()[:2] for ax in axes}
    assert geometry == {(3, 3)}  # 7 panels: 3 per row, 3 rows
    fig.canvas.draw()
    for ax in axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
    accuracy = axes[2]
    best = [line for line in accuracy.get_lines() if line.get_marker() == "*"]
    assert len(best) == 1 and list(best[0].get_xdata()) == [6] and list(best[0].get_ydata()) == [pytest.approx(0.6)]
    assert best[0].get_label() == "best 0.6 (epoch 6)"
    assert all(any(list(line.get_xdata()) == [6, 6] for line in ax.get_lines()) for ax in axes)  # best-epoch rule
    lr = axes[1].get_lines()[0]
    assert list(lr.get_ydata()) == [h["lr"] for h in hist["train"]]
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert curves_figure({"train": [], "val": []}) is None


def test_tensorboard_gets_the_learning_rate(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    work = tmp_path / "w"
    run(config(tmp_path, "train.log_interval=1"), work)
    events = event_accumulator.EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "val/accuracy"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("train/lr")][:2] == pytest.approx([0.1, 0.1])


def test_summary_has_versions_git_commit_and_command_line(tmp_path, monkeypatch):
    import mmengine

    import panconv
    from panconv.engine.runner import git_commit

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "argv", ["core-run", "blobs.yaml", "--set", "train.epochs=1"])
    run(config(tmp_path, "train.epochs=1"), tmp_path / "w")
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["git_commit"] == head
    assert summary["command"] == ["core-run", "blobs.yaml", "--set", "train.epochs=1"]
    versions = summary["versions"]
    assert versions["panconv"] == panconv.__version__ and versions["mmengine"] == mmengine.__version__
    assert versions["torch"] == torch.__version__ and versions["plugins"]["core"] == panconv.__version__
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_commit(outside) is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert git_commit(repo) is None


def test_config_yaml_is_the_resolved_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "w"
    run(config(tmp_path, "train.epochs=1", "data.root=./somewhere/../data"), work)
    saved = yaml.safe_load((work / "config.yaml").read_text())
    assert saved["model"]["backbone"] == {"type": "core.MLP", "hidden": [16], "dropout": 0.1, "in_dim": 2}
    assert saved["model"]["head"] == {"type": "core.LinearClsHead", "num_classes": 3}
    assert saved["data"]["root"] == str((tmp_path / "data").resolve())
    # what was resolved rebuilds the model without any data
    from panconv.builder import build_model

    model = build_model(saved["model"])
    state = load_checkpoint(work / "epoch_1.pth")["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items()})


def test_resolved_config_yaml_runs_again(tmp_path):
    # the resolved config.yaml of a run is itself a config a run accepts
    work = tmp_path / "w"
    run(config(tmp_path, "train.epochs=1"), work)
    again = load_config(work / "config.yaml", ["train.epochs=1"])
    assert again["model"]["head"]["num_classes"] == 3
    run(again, tmp_path / "again")
    assert history(tmp_path / "again")["train"][0]["loss"] == pytest.approx(history(work)["train"][0]["loss"])


def test_run_experiment_is_made_of_small_named_steps():
    import inspect

    from panconv.engine import runner

    lengths = {name: len(inspect.getsource(obj).splitlines()) for name, obj in vars(runner).items()
               if inspect.isfunction(obj) and obj.__module__ == runner.__name__}
    assert lengths["run_experiment"] <= 50
    for step in ("_find_weights", "_build_data", "_build_model", "_build_runner", "_write_outputs"):
        assert step in lengths
    assert max(lengths.values()) <= 80, lengths

