"""``panconv sweep``: log-spaced fractions, the log-linear fit, and the runs it asks the engine for."""

import argparse
import gzip
import json
import pickle

import numpy as np
import pytest

from panconv_vision.tools import sweep


def test_log_fractions():
    f = sweep.log_fractions(4, 0.001)
    assert f[0] == pytest.approx(0.001) and f[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log10(f)), 1.0)
    with pytest.raises(ValueError):
        sweep.log_fractions(3, 0.0)


def test_fit_recovers_a_log_linear_law():
    sizes = [100, 1000, 10000, 100000]
    fit = sweep.fit_log_linear(sizes, [0.5 + 0.1 * np.log10(n) for n in sizes])
    assert fit["intercept"] == pytest.approx(0.5) and fit["slope_per_decade"] == pytest.approx(0.1)
    assert fit["r2"] == pytest.approx(1.0)
    assert sweep.fit_log_linear(sizes, [0.9, 0.7, 0.95, 0.6])["r2"] < 0.5


def write_config(tmp_path, data_type="vision.MNIST"):
    rng = np.random.default_rng(0)
    file = tmp_path / "mnist.pkl.gz"
    with gzip.open(file, "wb") as fh:
        pickle.dump(tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (100, 20, 20)), fh)
    config = tmp_path / "cfg.yaml"
    data = f"{{type: vision.MNIST, file: '{file}', splits: {{train: train, val: val, test: test}}}}" \
        if data_type == "vision.MNIST" else "{type: vision.OpenCVDigits, splits: {test: test}}"
    config.write_text("model:\n  backbone: {type: vision.MobileNetV1, width_mult: 0.25}\n"
                      "  neck: {type: core.GlobalAvgPool}\n  head: {type: core.LinearClsHead}\n"
                      f"data: {data}\ntrain: {{epochs: 1}}\neval: {{evaluators: [{{type: core.Accuracy}}]}}\n")
    return config


def fake_engine(tmp_path, monkeypatch) -> list:
    """Replace the engine runs the sweep asks for: a training run leaves a checkpoint, an evaluation run
    a test accuracy of 0.2 + 0.1 log10(n) (n from the work dir's name); returns the list of commands."""
    calls = []

    def fake_run(command, check):
        calls.append(command)
        work_dir = tmp_path / "out" / command[command.index("--work-dir") + 1].split("/")[-1]
        if "--eval-only" in command:
            n = int(work_dir.name[1:])
            (work_dir / "eval").mkdir(parents=True)
            (work_dir / "eval" / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.2 + 0.1 * np.log10(n)}}))
        else:
            work_dir.mkdir(parents=True)
            (work_dir / "epoch_1.pth").write_bytes(b"")
            (work_dir / "last_checkpoint").write_text(str(work_dir / "epoch_1.pth"))

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    return calls


def test_sweep_trains_on_subsets_and_evaluates_on_the_full_test_split(tmp_path, monkeypatch):
    calls = fake_engine(tmp_path, monkeypatch)
    config = write_config(tmp_path)
    args = argparse.Namespace(config=str(config), checkpoint=None, device="cpu", data_root=None,
                              output=str(tmp_path / "out"), fractions=3, min_fraction=0.01, metric="accuracy",
                              overrides=["train.epochs=1"], min_steps=0)
    assert sweep.main(args) == 0
    train_calls, eval_calls = calls[0::2], calls[1::2]
    assert [c for c in train_calls[0] if c.startswith("--set=data.limit")] == ["--set=data.limit=1"]
    assert [c for c in train_calls[-1] if c.startswith("--set=data.limit")] == ["--set=data.limit=100"]
    assert all("--set=train.epochs=1" in c for c in calls)
    assert all("--eval-only" in c and not any("data.limit" in x for x in c) for c in eval_calls)
    report = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["train_size"] for r in report["runs"]] == [1, 10, 100] and report["full_train_size"] == 100
    assert report["fit"]["slope_per_decade"] == pytest.approx(0.1)
    assert (tmp_path / "out" / "sweep.png").is_file()


def test_epochs_are_raised_so_small_subsets_get_min_steps():
    assert sweep.epochs_for(10_000, 64, 2, 0) == 2
    assert sweep.epochs_for(10_000, 64, 2, 300) == 2  # 157 steps an epoch: 314 >= 300 already
    assert sweep.epochs_for(200, 64, 2, 300) == 75    # 4 steps an epoch
    assert sweep.epochs_for(1, 64, 1, 10) == 10
    with pytest.raises(ValueError, match="min_steps >= 0"):
        sweep.epochs_for(10, 64, 1, -1)


def test_min_steps_reaches_the_engine(tmp_path, monkeypatch):
    calls = fake_engine(tmp_path, monkeypatch)
    args = argparse.Namespace(config=str(write_config(tmp_path)), data_root=None, output=str(tmp_path / "out"),
                              fractions=2, min_fraction=0.1, metric="accuracy", overrides=[], min_steps=20)
    assert sweep.main(args) == 0
    # 10 and 100 training examples at the default batch size 32: 1 and 4 steps an epoch
    assert [[c for c in call if c.startswith("--set=train.epochs")] for call in calls[0::2]] == \
        [["--set=train.epochs=20"], ["--set=train.epochs=5"]]
    assert [r["epochs"] for r in json.loads((tmp_path / "out" / "sweep.json").read_text())["runs"]] == [20, 5]


def test_the_subset_option_of_each_data_set(tmp_path, monkeypatch):
    import panconv

    cfg = panconv.load_config(write_config(tmp_path))
    assert sweep.subset_option(cfg) == "limit"  # vision.MNIST

    def interactions(root=None, split="train", train_fraction: float = 1.0):  # graph.RecSysData's option
        pass

    def neither(root=None, split="train"):
        pass

    for factory, expected in ((interactions, "train_fraction"), (neither, None)):
        monkeypatch.setattr(sweep.panconv, "get_component", lambda kind, name, f=factory: f)
        assert sweep.subset_option(cfg) == expected


def test_train_fraction_reaches_the_engine(tmp_path, monkeypatch):
    calls = fake_engine(tmp_path, monkeypatch)
    monkeypatch.setattr(sweep, "subset_option", lambda cfg: "train_fraction")
    args = argparse.Namespace(config=str(write_config(tmp_path)), data_root=None, output=str(tmp_path / "out"),
                              fractions=2, min_fraction=0.1, metric="accuracy", overrides=[], min_steps=0)
    assert sweep.main(args) == 0
    assert [[c for c in call if c.startswith("--set=data.")] for call in calls[0::2]] == \
        [["--set=data.train_fraction=0.1"], ["--set=data.train_fraction=1.0"]]


def test_a_data_set_without_a_subset_option_is_refused(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    monkeypatch.setattr(sweep, "subset_option", lambda cfg: None)
    args = argparse.Namespace(config=str(config), data_root=None, output=str(tmp_path / "o"), fractions=2,
                              min_fraction=0.1, metric="accuracy", overrides=[],
                              min_steps=0)
    with pytest.raises(SystemExit, match="no `limit` or `train_fraction` argument"):
        sweep.main(args)


@pytest.mark.slow
def test_a_real_two_point_sweep(tmp_path):
    config = write_config(tmp_path)
    args = argparse.Namespace(config=str(config), data_root=None, output=str(tmp_path / "out"), fractions=2,
                              min_fraction=0.2, metric="accuracy", overrides=["run.device=cpu"],
                              min_steps=0)
    assert sweep.main(args) == 0
    report = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["train_size"] for r in report["runs"]] == [20, 100]
