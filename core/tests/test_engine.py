"""The engine end to end: outputs, resume after kill -9, refused pickles, DDP == one process."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from panconv.errors import CheckpointError
from panconv.io import atomic_write, load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
BIN = Path(sys.executable).parent


def blobs_config(tmp_path, *, epochs=4, size=256, extra="", dataset="core.GaussianBlobs", plugins="[]"):
    path = tmp_path / "blobs.yaml"
    path.write_text(textwrap.dedent(f"""\
        plugins: {plugins}
        model:
          backbone: {{type: core.MLP, hidden: [16], dropout: 0.1}}
          head: {{type: core.LinearClsHead}}
        data: {{type: {dataset}, num_classes: 3, size: {size}, spread: 3.0, batch_size: 32}}
        train:
          epochs: {epochs}
          optimizer: {{type: SGD, lr: 0.1, momentum: 0.9}}
          scheduler: [{{type: StepLR, step_size: 2, gamma: 0.5, by_epoch: true}}]
          checkpoint: {{interval: 1, max_keep: 2, best: accuracy}}
        eval: {{evaluators: [{{type: core.Accuracy}}]}}
        run: {{seed: 3, threads: 1}}
        """) + extra)
    return path


def core_run(*args, env=None, check=True, runner=None):
    cmd = [*(runner or [str(BIN / "core-run")]), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def metrics(work_dir: Path) -> dict:
    return json.loads((work_dir / "metrics.json").read_text())


def test_run_writes_metrics_summary_plot_and_checkpoints(tmp_path):
    cfg = blobs_config(tmp_path)
    work = tmp_path / "work"
    proc = core_run(cfg, "--work-dir", work)
    assert "epoch 4 val: accuracy=" in proc.stdout and "final: accuracy=" in proc.stdout
    assert "epoch 1/4" in proc.stderr  # the progress bar
    history = metrics(work)
    assert [h["epoch"] for h in history["train"]] == [1, 2, 3, 4]
    assert history["train"][-1]["loss"] < history["train"][0]["loss"]
    assert [h["lr"] for h in history["train"]] == pytest.approx([0.1, 0.1, 0.05, 0.05])  # StepLR ran
    assert history["test"]["accuracy"] > 0.6  # 3 well-separated-ish blobs; chance is 1/3
    summary = json.loads((work / "summary.json").read_text())
    assert summary["final_metrics"] == {"accuracy": history["test"]["accuracy"]}
    assert summary["best"]["metric"] == "accuracy"
    assert summary["parameters"] == (2 * 16 + 16) + (16 * 3 + 3)  # in_dim=2 comes from the dataset metadata
    assert (work / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in work.glob("epoch_*.pth")) == ["epoch_3.pth", "epoch_4.pth"]  # max_keep=2
    assert (work / "last_checkpoint").read_text().strip().endswith("epoch_4.pth")
    assert (work / "best.pth").is_file() and (work / "config.yaml").is_file()
    ckpt = load_checkpoint(work / "epoch_4.pth")
    assert ckpt["meta"]["epoch"] == 4 and "optimizer" in ckpt and "param_schedulers" in ckpt

    # evaluation only, from the last checkpoint: the same test metrics as the run itself
    # (no training split at all: the scheduler and optimizer of the config are not built),
    # written under <work dir>/eval/
    again = core_run(cfg, "--work-dir", tmp_path / "eval", "--eval-only", "--resume", work / "epoch_4.pth", "--quiet",
                     "--set", "data.splits={train: null, val: null, test: test}")
    assert again.returncode == 0
    assert metrics(tmp_path / "eval" / "eval")["test"]["accuracy"] == history["test"]["accuracy"]
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_amp_on_cpu_and_gradient_accumulation_train(tmp_path):
    work = tmp_path / "work"
    core_run(blobs_config(tmp_path), "--work-dir", work, "--quiet", "--set", "train.amp=true",
             "--set", "train.accumulate=2", "--set", "train.grad_clip=1.0", "--set",
             "train.scheduler=[{type: OneCycleLR, eta_max: 0.1, total_steps: 32, by_epoch: false}]")
    # OneCycleLR keeps a function in its state: the checkpoint must still load weights-only
    assert load_checkpoint(work / "epoch_4.pth")["param_schedulers"]
    history = metrics(work)
    assert history["train"][-1]["loss"] < history["train"][0]["loss"]
    assert history["test"]["accuracy"] > 0.6


SLOW_WRITES = """\
import time
from pathlib import Path

import panconv.io as pio
from panconv import hookimpl

_write = pio.atomic_write


def atomic_write(path, fill, mode="wb"):
    if not Path(path).name.startswith("epoch_"):
        return _write(path, fill, mode)

    def slowly(handle):  # the temporary exists, half written, for a while
        handle.write(b"PK half")
        handle.flush()
        time.sleep(1.0)
        handle.seek(0)
        handle.truncate()
        fill(handle)

    return _write(path, slowly, mode)


pio.atomic_write = atomic_write


@hookimpl
def panconv_before_run(config, work_dir):
    pass
"""


def _kill_when(proc, ready, deadline_s=300):
    deadline = time.time() + deadline_s
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("moment", [
    "mid-epoch",
    pytest.param("before the first checkpoint", marks=pytest.mark.slow),
    pytest.param("during a checkpoint write", marks=pytest.mark.slow),
])
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path, moment):
    slow = FIXTURES / "slowblobs.py"
    plugins = [slow]
    extra = ""
    if moment == "during a checkpoint write":
        (tmp_path / "slowwrites.py").write_text(SLOW_WRITES)
        plugins.append(tmp_path / "slowwrites.py")
    if moment == "before the first checkpoint":
        extra = "  checkpoint: {interval: 5, max_keep: 2, best: null}\n"  # nothing saved before the end
    cfg = blobs_config(tmp_path, epochs=5, size=384, dataset="slowblobs.SlowBlobs",
                       plugins="[" + ", ".join(map(str, plugins)) + "]")
    if extra:
        cfg.write_text(cfg.read_text().replace("  checkpoint: {interval: 1, max_keep: 2, best: accuracy}\n", extra))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    core_run(cfg, "--work-dir", straight, "--quiet")

    proc = subprocess.Popen([str(BIN / "core-run"), str(cfg), "--work-dir", str(killed), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if moment == "mid-epoch":
        _kill_when(proc, lambda: (killed / "epoch_2.pth").exists())
        time.sleep(0.3)  # well inside epoch 3 (an epoch takes ~1 s)
    elif moment == "before the first checkpoint":
        _kill_when(proc, lambda: (killed / "metrics.json").exists()
                   and len(json.loads((killed / "metrics.json").read_text() or "{}").get("val", [])) >= 2)
        assert not list(killed.glob("*.pth")) and not (killed / "last_checkpoint").exists()
    else:
        _kill_when(proc, lambda: bool(list(killed.glob(".epoch_2.pth.*.tmp"))))
        assert list(killed.glob(".epoch_2.pth.*.tmp")) and not (killed / "epoch_2.pth").exists()
    assert not (killed / "summary.json").exists()
    if (killed / "last_checkpoint").exists():
        load_checkpoint(Path((killed / "last_checkpoint").read_text().strip()))  # never torn

    out = core_run(cfg, "--work-dir", killed, "--resume", "--quiet")
    assert out.returncode == 0
    assert not list(killed.glob(".*.tmp"))
    a, b = metrics(straight), metrics(killed)
    assert [h["epoch"] for h in b["train"]] == [1, 2, 3, 4, 5]
    assert [h["loss"] for h in b["train"]] == pytest.approx([h["loss"] for h in a["train"]], rel=1e-6, abs=1e-7)
    assert b["val"] == a["val"] and b["test"] == a["test"]


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    evil = tmp_path / "evil.pth"
    torch.save({"meta": {"epoch": 1, "iter": 1}, "state_dict": {}, "x": payload}, evil)
    with pytest.raises(CheckpointError, match=r"evil.pth: refused to load: it contains objects outside the allow-list"):
        load_checkpoint(evil)
    assert not marker.exists()
    proc = core_run(blobs_config(tmp_path), "--resume", evil, "--work-dir", tmp_path / "w", check=False)
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {evil}: refused to load")


def test_corrupt_and_missing_checkpoints(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.pth: not a readable checkpoint"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="nope.pth: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")
    assert torch.equal(load_checkpoint(good)["state_dict"]["w"], torch.ones(3))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def broken(handle):
        handle.write(b"half of the new con")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_resume_from_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    work = tmp_path / "w"
    core_run(blobs_config(tmp_path, epochs=1), "--work-dir", work, "--quiet")
    proc = core_run(blobs_config(tmp_path, epochs=2), "--work-dir", tmp_path / "w2", "--quiet",
                    "--set", "model.backbone.hidden=[7]", "--resume", work / "epoch_1.pth", check=False)
    assert proc.returncode == 2
    assert "epoch_1.pth: does not fit this model" in proc.stderr.strip().splitlines()[-1]


def test_two_process_ddp_equals_one_process(tmp_path):
    cfg = blobs_config(tmp_path, epochs=3)
    one, two = tmp_path / "one", tmp_path / "two"
    core_run(cfg, "--work-dir", one, "--quiet", "--set", "model.backbone.dropout=0.0")
    core_run(cfg, "--work-dir", two, "--quiet", "--set", "model.backbone.dropout=0.0",
             runner=[str(BIN / "torchrun"), "--nproc_per_node=2", "--master_port=29561", str(BIN / "core-run")],
             env={"OMP_NUM_THREADS": "1"})
    a, b = metrics(one), metrics(two)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    assert [h["loss"] for h in b["train"]] == pytest.approx([h["loss"] for h in a["train"]], rel=1e-5)
    assert b["val"] == a["val"] and b["test"] == a["test"]
