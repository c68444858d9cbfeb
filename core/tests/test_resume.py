"""Resuming: kill -9 at the awkward moments, the newest complete checkpoint, a history that matches
what was resumed, checkpoints checked field by field. Runs in-process; a killed run is a forked
child that SIGKILLs itself at a chosen write."""

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch

from panconv.config import load_config
from panconv.errors import CheckpointError
from panconv.io import check_checkpoint, load_checkpoint, save_checkpoint

BLOBS = """\
model:
  backbone: {type: core.MLP, hidden: [16], dropout: 0.1}
  head: {type: core.LinearClsHead}
data: {type: core.GaussianBlobs, num_classes: 3, size: 256, spread: 3.0, batch_size: 32}
train:
  epochs: 4
  optimizer: {type: SGD, lr: 0.1, momentum: 0.9}
  scheduler: [{type: StepLR, step_size: 2, gamma: 0.5, by_epoch: true}]
  checkpoint: {interval: 1, max_keep: 2, best: accuracy}
eval: {evaluators: [{type: core.Accuracy}]}
run: {seed: 3, threads: 1}
"""


def config(directory: Path, *overrides):
    path = directory / "blobs.yaml"
    path.write_text(BLOBS)
    return load_config(path, list(overrides))


def run(cfg, work, **kwargs):
    from panconv.engine import run_experiment

    return run_experiment(cfg, work_dir=work, quiet=True, **kwargs)


def history(work: Path) -> dict:
    return json.loads((work / "metrics.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The uninterrupted run every interrupted one must end up identical to."""
    directory = tmp_path_factory.mktemp("straight")
    run(config(directory), directory / "work")
    return history(directory / "work")


def assert_same_run(a: dict, b: dict) -> None:
    assert [h["epoch"] for h in b["train"]] == [h["epoch"] for h in a["train"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in b["train"]] == pytest.approx([h["loss"] for h in a["train"]], rel=1e-6, abs=1e-7)
    assert [h["lr"] for h in b["train"]] == [h["lr"] for h in a["train"]]
    assert b["val"] == a["val"] and b["test"] == a["test"]


def _die_at(moment: str, name: str, cfg, work) -> None:
    import panconv.io as pio

    write = pio.atomic_write

    def atomic_write(path, fill, mode="wb"):
        if Path(path).name == name:
            if moment == "before":
                os.kill(os.getpid(), signal.SIGKILL)

            def half(handle):  # part of the file is on disk (in the temporary) when the process dies
                handle.write(b"\x50\x4b\x03\x04 half a checkpoint")
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            return write(path, half, mode)
        return write(path, fill, mode)

    pio.atomic_write = atomic_write
    run(cfg, work)


def killed_run(cfg, work: Path, moment: str, name: str) -> None:
    """Run ``cfg`` in a forked child that kill -9s itself ``moment`` ("before"/"during") writing ``name``."""
    child = multiprocessing.get_context("fork").Process(target=_die_at, args=(moment, name, cfg, work))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        pytest.fail("the run to be killed hung")
    assert child.exitcode == -signal.SIGKILL, f"the run was not killed (exit code {child.exitcode})"
    assert not (work / "summary.json").exists()


def test_kill_before_the_first_checkpoint_then_resume_starts_a_fresh_history(tmp_path, straight):
    cfg = config(tmp_path, "train.checkpoint.interval=2")  # epoch 1 is never saved
    work = tmp_path / "w"
    killed_run(cfg, work, "before", "epoch_2.pth")  # epochs 1 and 2 are in metrics.json, no checkpoint exists
    assert [h["epoch"] for h in history(work)["train"]] == [1, 2]
    assert not list(work.glob("epoch_*.pth")) and not (work / "last_checkpoint").exists()  # (best.pth is there)

    run(cfg, work, resume=True)
    assert_same_run(straight, history(work))  # from scratch, and the history with it (not [1, 2, 1, 2, 3, 4])


def test_kill_before_last_checkpoint_is_written_resumes_from_the_complete_epoch_checkpoint(tmp_path, straight):
    cfg = config(tmp_path)
    work = tmp_path / "w"
    killed_run(cfg, work, "before", "last_checkpoint")  # epoch_1.pth is complete, the marker never written
    assert (work / "epoch_1.pth").is_file() and not (work / "last_checkpoint").exists()
    run(cfg, work, resume=True)
    assert_same_run(straight, history(work))
    assert "resuming from" in (work / "run.log").read_text().split("==== panconv training started")[-1]


def test_kill_during_a_checkpoint_write_leaves_no_torn_file_and_resumes(tmp_path, straight):
    cfg = config(tmp_path)
    work = tmp_path / "w"
    killed_run(cfg, work, "during", "epoch_3.pth")
    stale = list(work.glob(".epoch_3.pth.*.tmp"))
    assert len(stale) == 1 and not (work / "epoch_3.pth").exists()
    assert Path((work / "last_checkpoint").read_text().strip()).name == "epoch_2.pth"
    assert [h["epoch"] for h in history(work)["val"]] == [1, 2, 3]  # epoch 3 was validated, not saved

    run(cfg, work, resume=True)
    assert not stale[0].exists()
    assert_same_run(straight, history(work))  # epoch 3's rows were dropped and redone


def test_a_fresh_run_in_a_used_work_dir_starts_a_fresh_history(tmp_path):
    cfg = config(tmp_path, "train.epochs=2")
    work = tmp_path / "w"
    run(cfg, work)
    first = history(work)
    run(cfg, work)  # no --resume: a new run
    second = history(work)
    assert [h["epoch"] for h in second["train"]] == [1, 2]
    assert second["run_id"] != first["run_id"]
    # --resume with nothing to resume from: from scratch, and so is the history
    for path in [*work.glob("*.pth"), work / "last_checkpoint"]:
        path.unlink()
    run(cfg, work, resume=True)
    assert [h["epoch"] for h in history(work)["train"]] == [1, 2]


def test_auto_resume_never_takes_an_earlier_runs_checkpoints(tmp_path):
    work = tmp_path / "w"
    run(config(tmp_path), work)  # an earlier run leaves epoch_3.pth and epoch_4.pth
    run(config(tmp_path, "train.epochs=1"), work)  # a new run in the same dir
    assert (work / "epoch_1.pth").is_file()  # not pruned in favour of the earlier run's higher epochs
    (work / "last_checkpoint").unlink()  # as if killed before writing it
    run(config(tmp_path, "train.epochs=2"), work, resume=True)
    assert [h["epoch"] for h in history(work)["train"]] == [1, 2]
    assert load_checkpoint(work / "epoch_2.pth")["meta"]["run_id"] == history(work)["run_id"]


def test_resume_path_relative_to_the_work_dir(tmp_path):
    work = tmp_path / "w"
    run(config(tmp_path, "train.epochs=1"), work)
    run(config(tmp_path, "train.epochs=2"), work, resume="epoch_1.pth")
    assert [h["epoch"] for h in history(work)["train"]] == [1, 2]
    assert json.loads((work / "summary.json").read_text())["resumed_from"] == str(work / "epoch_1.pth")


# ----------------------------------------------------------------------------- checkpoint structure

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("good")
    run(config(directory, "train.epochs=2"), directory / "w")
    return directory / "w" / "epoch_1.pth"


def tampered(good: Path, tmp_path: Path, change) -> Path:
    checkpoint = load_checkpoint(good)
    change(checkpoint)
    path = tmp_path / "tampered.pth"
    save_checkpoint(checkpoint, path)
    return path


def _set(*keys, value):
    def change(checkpoint):
        target = checkpoint
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


MALFORMED = {
    "negative epoch": (_set("meta", "epoch", value=-5), r"meta.epoch: expected a non-negative int, got -5"),
    "epoch not an int": (_set("meta", "epoch", value="3"), r"meta.epoch: expected a non-negative int, got '3'"),
    "epoch past iterations": (_set("meta", "iter", value=0), r"meta.epoch: 1 epochs in 0 iterations"),
    "meta not a dict": (_set("meta", value=[1]), r"meta: expected a dict, got list"),
    "meta missing": (lambda c: c.pop("meta"), r"meta: missing: this file holds weights only"),
    "optimizer a list": (_set("optimizer", value=[1, 2]), r"optimizer: expected a dict, got list"),
    "optimizer groups": (_set("optimizer", "param_groups", value={"lr": 1}), r"optimizer.param_groups: expected a "
                                                                             r"list of dicts, got dict"),
    "message hub a string": (_set("message_hub", value="x"), r"message_hub: expected a dict, got str"),
    "message hub part": (_set("message_hub", "runtime_info", value=3), r"message_hub.runtime_info: expected a dict"),
    "schedulers a dict": (_set("param_schedulers", value={"a": 1}), r"param_schedulers: expected a list of dicts"),
    "scheduler an int": (_set("param_schedulers", value=[7]), r"param_schedulers\[0\]: expected a dict, got int"),
    "weights not tensors": (_set("state_dict", "model.head.fc.bias", value=[0.0, 1.0]),
                            r"state_dict\['model.head.fc.bias'\]: expected a tensor"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_checkpoint_structure_is_named_in_one_line(good, tmp_path, case):
    change, expected = MALFORMED[case]
    path = tampered(good, tmp_path, change)
    with pytest.raises(CheckpointError, match=rf"^{path}: {expected}") as err:
        check_checkpoint(load_checkpoint(path), path, resume=True)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=rf"^{path}: {expected}"):  # and a run refuses it before any data
        run(config(tmp_path), tmp_path / "w", resume=path)
    assert not (tmp_path / "w" / "metrics.json").exists()


RESTORE = {
    "scheduler of another type": (_set("param_schedulers", value=[{"T_max": 4, "eta_min": 0.0}]),
                                  r"param_schedulers\[0\]: does not match train.scheduler\[0\] \(StepLR\): missing "),
    "one scheduler too many": (lambda c: c["param_schedulers"].append(dict(c["param_schedulers"][0])),
                               r"param_schedulers: the checkpoint holds 2 scheduler state\(s\) but train.scheduler "
                               r"has 1"),
    "optimizer of another model": (lambda c: c["optimizer"]["param_groups"].append(
        dict(c["optimizer"]["param_groups"][0])), r"optimizer: does not fit train.optimizer"),
    "history buffer": (_set("message_hub", "log_scalars", value={"train/loss": {"__history_buffer__": True}}),
                       r"message_hub: malformed"),
    "past train.epochs": (lambda c: c["meta"].update(epoch=7, iter=56),
                          r"meta.epoch: the checkpoint is at epoch 7, past train.epochs=4"),
}


@pytest.mark.parametrize("case", sorted(RESTORE))
def test_checkpoint_that_does_not_fit_the_run_is_refused_in_one_line(good, tmp_path, case):
    change, expected = RESTORE[case]
    path = tampered(good, tmp_path, change)
    with pytest.raises(CheckpointError, match=rf"^{path}: {expected}") as err:
        run(config(tmp_path), tmp_path / "w", resume=path)
    assert "\n" not in str(err.value)
    record = tmp_path / "w" / "metrics.json"
    assert not record.exists() or json.loads(record.read_text())["train"] == []  # nothing trained


def test_weights_only_checks_accept_a_plain_state_dict(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"w": torch.ones(2)}, path)
    assert check_checkpoint(load_checkpoint(path), path)["w"].tolist() == [1.0, 1.0]
    with pytest.raises(CheckpointError, match=r"plain.pth: meta: missing"):
        check_checkpoint(load_checkpoint(path), path, resume=True)


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_refusing_a_pickle_says_why_in_panconvs_words(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"meta": {"epoch": 1, "iter": 1}, "state_dict": {}, "x": _Payload()}, evil)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil)
    message = str(err.value)
    assert message.startswith(f"{evil}: refused to load: it contains objects outside the allow-list "
                              f"(a pickled reference to {os.system.__module__}.system)")
    assert "can run arbitrary code" in message and "\n" not in message
    assert "weights_only" not in message and "add_safe_globals" not in message


def test_a_file_that_is_not_a_checkpoint_is_not_called_a_pickle_attack(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("garbage, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a readable checkpoint \(corrupt, or not a torch "
                                              r"checkpoint\)"):
        load_checkpoint(text)
