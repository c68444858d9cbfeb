"""The engine's mmengine hooks, the run's text log and its curves.

- :class:`EpochSeedHook`: every RNG re-seeded per epoch, so a resumed run draws what an
  uninterrupted one would.
- :class:`ProgressHook`: console progress (a bar on a terminal, one line per ``log_interval``
  iterations otherwise), ``run.log`` lines, ``metrics.json`` and TensorBoard scalars.
- :class:`CheckpointHook`: ``epoch_N.pth`` / ``best.pth`` / ``last_checkpoint``, atomically.
- :class:`RunLog`: the plain text log of a work dir.
- :func:`curves_figure`: what ``curves.png`` shows.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from ..io import atomic_write, atomic_write_json, atomic_write_text

CHECKPOINT_NAME = re.compile(r"epoch_(\d+)\.pth")


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31)


def _mean_over_ranks(values: dict) -> dict[str, float]:
    """Logged losses averaged over processes, so DDP logs the loss of the global batch."""
    if not values:
        return {}
    keys = sorted(values)
    flat = torch.tensor([float(values[k].detach()) if hasattr(values[k], "detach") else float(values[k])
                         for k in keys], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
    return dict(zip(keys, flat.tolist()))


def _current_lr(runner) -> float | None:
    lr = runner.optim_wrapper.get_lr() if getattr(runner, "optim_wrapper", None) is not None else None
    return float(next(iter(lr.values()))[0]) if lr else None


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _values(values: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in values.items())


class RunLog:
    """The plain text log of a run (``run.log``): config, environment, losses, metrics.

    Every run in a work dir appends to it (a resumed run continues the file); each line is
    time-stamped. ``path=None`` (processes other than the first under DDP) writes nothing.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._file = open(self.path, "a", encoding="utf-8") if self.path is not None else None  # noqa: SIM115

    def write(self, text: str) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in str(text).splitlines() or [""]:
            self._file.write(f"{stamp}  {line}\n")
        self._file.flush()

    def handler(self, level: int = logging.WARNING) -> logging.Handler:
        """A logging handler that writes records (mmengine's warnings and errors) into this log."""
        log = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                message = record.getMessage()
                if "has no metainfo" not in message:  # mmengine's visualizer notes, not a problem here
                    log.write(f"{record.levelname.lower()}: {message}")

        handler = _Handler(level)
        return handler

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EpochSeedHook(Hook):
    """Re-seeds every RNG at the start of each epoch from ``(seed, epoch)``.

    A run resumed from the checkpoint of epoch *k* therefore draws exactly the random numbers
    (dropout masks, negative samples, augmentation) the uninterrupted run drew in epoch *k+1*.
    Also calls ``dataset.set_epoch(epoch)`` when the dataset has it.
    """

    priority = "VERY_HIGH"

    def __init__(self, seed: int):
        self.seed = seed

    def before_train_epoch(self, runner) -> None:
        seed = _epoch_seed(self.seed, runner.epoch) + (torch.distributed.get_rank()
                                                       if torch.distributed.is_initialized() else 0)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        dataset = runner.train_dataloader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(runner.epoch)


def process_peak_memory_mib(device: torch.device) -> float:
    """This process's peak memory so far, in MiB: allocated CUDA memory on a GPU, the resident
    high-water mark (``ru_maxrss``) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakMemoryHook(Hook):
    """The peak memory of this process over the training, validation and test iterations,
    sampled after each one: what the model, its optimizer state and the activations needed, not
    the full state dict a sharded run gathers when it writes a checkpoint (taken after an epoch's
    iterations; on a CPU the resident high-water mark also holds what came before, such as
    building the model and earlier checkpoint writes)."""

    priority = "VERY_LOW"

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0.0

    def _sample(self) -> None:
        self.peak = max(self.peak, process_peak_memory_mib(self.device))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._sample()

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._sample()

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._sample()


class ProgressHook(Hook):
    """Progress, metric lines, ``metrics.json`` and TensorBoard scalars.

    ``history`` is the record this run continues (``{"train": [...], "val": [...], "test": ...}``,
    already trimmed to the resumed epoch; an evaluation's record holds only ``test``), written to
    ``metrics_path`` after every epoch and evaluation. On a terminal (``sys.stderr.isatty()``)
    progress is a bar; otherwise one line per ``log_interval`` iterations and one per epoch.
    ``run.log`` gets those lines whatever the console shows. ``eval_epoch`` is the epoch
    reported for a stand-alone evaluation (that of the evaluated checkpoint).
    """

    priority = "BELOW_NORMAL"

    def __init__(self, metrics_path: Path, config: dict, manager, history: dict, log: RunLog,
                 log_interval: int = 50, quiet: bool = False, tensorboard: Path | None = None,
                 eval_epoch: int | None = None):
        self.metrics_path = Path(metrics_path)
        self.work_dir = self.metrics_path.parent
        self.config = config
        self.manager = manager
        self.history = history
        self.log = log
        self.log_interval = max(1, int(log_interval))
        self.quiet = quiet
        self.tensorboard = tensorboard
        self.eval_epoch = eval_epoch
        self.tb = None
        self.bar = None
        self.epoch_losses: dict[str, list[float]] = {}
        self.epoch_started = time.time()
        self.train_started: float | None = None
        self.iters_run = 0
        self.last_lr: float | None = None
        self.last_val: dict[str, float] = {}
        self.test_metrics: dict[str, float] | None = None

    @property
    def _terminal(self) -> bool:
        return sys.stderr.isatty()

    def _say(self, line: str) -> None:
        """A progress line: ``run.log`` always, stderr when it is not a terminal (and not quiet)."""
        if not is_main_process():
            return
        self.log.write(line)
        if not self.quiet and not self._terminal:
            print(line, file=sys.stderr, flush=True)

    # ---- setup ----
    def before_run(self, runner) -> None:
        if not is_main_process() or self.tb is not None:
            return
        self.tb = False
        if self.tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.tensorboard))
            except Exception:  # noqa: BLE001 - TensorBoard is optional
                self.tb = False

    # ---- training ----
    def before_train_epoch(self, runner) -> None:
        self.epoch_losses = {}
        self.epoch_started = time.time()
        if self.train_started is None:
            self.train_started = time.time()
        if is_main_process() and not self.quiet and self._terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=len(runner.train_dataloader), desc=f"epoch {runner.epoch + 1}/{runner.max_epochs}",
                            unit="it", dynamic_ncols=True, leave=True, file=sys.stderr, mininterval=0.5)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        outputs = _mean_over_ranks(outputs or {})
        self.iters_run += 1
        for key, value in outputs.items():
            self.epoch_losses.setdefault(key, []).append(value)
        if self.bar is not None:
            self.bar.update(1)
            if batch_idx % max(1, self.log_interval // 5) == 0 and outputs:
                self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in outputs.items()}, refresh=False)
        # before ParamSchedulerHook (priority LOW) steps: the rate this iteration trained with
        lr = self.last_lr = _current_lr(runner)
        if (batch_idx + 1) % self.log_interval == 0:
            per_iter = (time.time() - self.train_started) / self.iters_run
            eta = per_iter * max(0, runner.max_iters - runner.iter - 1)
            shown = {**outputs, **({"lr": lr} if lr is not None else {})}
            self._say(f"epoch {runner.epoch + 1}/{runner.max_epochs} iter {batch_idx + 1}/"
                      f"{len(runner.train_dataloader)}  {_values(shown)}  eta {_duration(eta)}")
        if self.tb and runner.iter % self.log_interval == 0:
            for key, value in outputs.items():
                self.tb.add_scalar(f"train/{key}", value, runner.iter)
            if lr is not None:
                self.tb.add_scalar("train/lr", lr, runner.iter)

    def after_train_epoch(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not is_main_process():
            return
        means = {k: float(np.mean(v)) for k, v in self.epoch_losses.items()}
        seconds = time.time() - self.epoch_started
        record = {"epoch": runner.epoch + 1, **means, "seconds": round(seconds, 3)}
        lr = self.last_lr  # that of the epoch's last iteration (per-iteration schedules change it within)
        if lr is not None:
            record["lr"] = lr
        self.history["train"].append(record)
        self._say(f"epoch {runner.epoch + 1}/{runner.max_epochs} done in {seconds:.1f} s  "
                  f"{_values({**means, **({'lr': lr} if lr is not None else {})})}")
        if self.tb and lr is not None:
            self.tb.add_scalar("train/epoch_lr", lr, runner.epoch + 1)
        self._write()

    # ---- evaluation ----
    def after_val_epoch(self, runner, metrics=None) -> None:
        self._report("val", runner.epoch, metrics or {})

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._report("test", runner.epoch if self.eval_epoch is None else self.eval_epoch, metrics or {})

    def _report(self, split: str, epoch: int, metrics: dict) -> None:
        if not is_main_process():
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        if split == "val":
            self.last_val = metrics
            self.history["val"].append({"epoch": epoch, **metrics})
        else:
            self.test_metrics = metrics
            self.history["test"] = {"epoch": epoch, **metrics}
        line = f"epoch {epoch} {split}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self.log.write(line)
        if not self.quiet:
            print(line, flush=True)
        if self.tb:
            for key, value in metrics.items():
                self.tb.add_scalar(f"{split}/{key}", value, epoch)
        self._write()
        self.manager.call_lifecycle("panconv_after_evaluation", config=self.config, work_dir=self.work_dir,
                                    split=split, epoch=epoch, metrics=metrics)

    def _write(self) -> None:
        atomic_write_json(self.metrics_path, self.history)

    def after_run(self, runner) -> None:
        if self.tb:
            self.tb.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.close()
            self.tb = None

    def final_metrics(self) -> dict[str, float]:
        return dict(self.test_metrics if self.test_metrics is not None else self.last_val)


class CheckpointHook(Hook):
    """Checkpoint every ``interval`` epochs (keeping ``max_keep``) and the best by ``best``.

    Files: ``epoch_N.pth``, ``best.pth`` and ``last_checkpoint`` (the absolute path of the newest
    epoch checkpoint); all written atomically. ``meta`` carries the run's id (``run_id``, also in
    ``metrics.json``), ``max_epochs`` and the best value so far, which a resumed run continues
    from (``best_value``/``best_epoch``). Only checkpoints up to the current epoch are pruned:
    files a longer, earlier run left in the work dir are never taken for this run's.
    """

    priority = "LOW"

    def __init__(self, work_dir: Path, interval: int = 1, max_keep: int = 2, best: str | None = None,
                 greater_is_better=None, run_id: str | None = None, best_value: float | None = None,
                 best_epoch: int | None = None):
        self.work_dir = Path(work_dir)
        self.interval = interval
        self.max_keep = max_keep
        self.best = best
        self.greater_is_better = greater_is_better or (lambda name: True)
        self.run_id = run_id
        self.best_value = best_value
        self.best_epoch = best_epoch

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        checkpoint["meta"].update(best_value=self.best_value, best_epoch=self.best_epoch, run_id=self.run_id,
                                  max_epochs=runner.max_epochs)

    def after_train_epoch(self, runner) -> None:
        # When this epoch is validated, save after validation, so that a checkpoint always
        # comes with its metrics (a run killed in between resumes from the previous epoch).
        epoch = runner.epoch + 1
        loop = runner.train_loop
        val_due = runner.val_loop is not None and (epoch % loop.val_interval == 0 or epoch == runner.max_epochs)
        if not val_due:
            self._save_epoch(runner, epoch)

    def _save_epoch(self, runner, epoch: int) -> None:
        if epoch % self.interval and epoch != runner.max_epochs:
            return
        path = self.work_dir / f"epoch_{epoch}.pth"
        runner.save_checkpoint(str(self.work_dir), path.name, meta={"epoch": epoch, "iter": runner.iter})
        if is_main_process():
            atomic_write_text(self.work_dir / "last_checkpoint", str(path.resolve()))
            kept = sorted((p for p in self.work_dir.glob("epoch_*.pth") if _epoch_of(p) is not None
                           and _epoch_of(p) <= epoch), key=_epoch_of)
            for old in kept[: max(0, len(kept) - self.max_keep)]:
                old.unlink(missing_ok=True)

    def after_val_epoch(self, runner, metrics=None) -> None:
        from mmengine.runner import BaseLoop

        if isinstance(runner._train_loop, BaseLoop):  # validation inside training (not a stand-alone val)
            self._update_best(runner, metrics)
            self._save_epoch(runner, runner.epoch)

    def _update_best(self, runner, metrics) -> None:
        if not self.best or not metrics:
            return
        if self.best not in metrics:
            import warnings

            warnings.warn(f"train.checkpoint.best: metric '{self.best}' was not computed; "
                          f"available: {', '.join(metrics)}", stacklevel=1)
            return
        value = float(metrics[self.best])
        better = self.greater_is_better(self.best)
        if math.isfinite(value) and (self.best_value is None
                                     or (value > self.best_value if better else value < self.best_value)):
            self.best_value, self.best_epoch = value, runner.epoch
            runner.save_checkpoint(str(self.work_dir), "best.pth",
                                   meta={"best_metric": self.best, "epoch": runner.epoch, "iter": runner.iter})


def _epoch_of(path: Path) -> int | None:
    match = CHECKPOINT_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------- curves

def curves_figure(history: dict, best: str | None = None, best_epoch: int | None = None, columns: int = 3):
    """The figure of ``curves.png``: training losses, the learning rate and every validation
    metric against the epoch, in a grid of at most ``columns`` panels per row; integer epoch
    ticks; the best epoch (by ``best``) marked. ``None`` when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    train = [h for h in history.get("train") or [] if isinstance(h, dict) and "epoch" in h]
    val = [h for h in history.get("val") or [] if isinstance(h, dict) and "epoch" in h]
    loss_keys = sorted({k for h in train for k in h if "loss" in k})
    metric_keys = sorted({k for h in val for k in h if k != "epoch"})
    panels: list[tuple[str, list[dict], list[str]]] = []
    if loss_keys:
        panels.append(("training loss", train, loss_keys))
    if any("lr" in h for h in train):
        panels.append(("learning rate", train, ["lr"]))
    panels += [(f"val {key}", val, [key]) for key in metric_keys]
    if not panels:
        return None
    ncols = min(columns, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    for (title, rows, keys), ax in zip(panels, flat):
        for key in keys:
            ax.plot([h["epoch"] for h in rows if key in h], [h[key] for h in rows if key in h], marker="o",
                    label=key if len(keys) > 1 else None)
        is_best = best is not None and keys == [best] and rows is val
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.6", linestyle="--", linewidth=1, label="best epoch" if is_best else None)
        value = next((h[best] for h in rows if h["epoch"] == best_epoch and best in h), None) if is_best else None
        if value is not None:
            ax.plot([best_epoch], [value], marker="*", markersize=14, color="tab:red", linestyle="none",
                    label=f"best {value:.4g} (epoch {best_epoch})")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    height = 3.2 * nrows  # margins in inches, whatever the number of rows (tight_layout costs a second)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.5 / height, top=1 - 0.35 / height, wspace=0.3,
                        hspace=0.5)
    return fig


def plot_curves(path: Path, history: dict, best: str | None = None, best_epoch: int | None = None) -> bool:
    """Write ``curves.png`` (atomically); False when matplotlib is missing or nothing to draw."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = curves_figure(history, best, best_epoch)
    if fig is None:
        return False
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return True


def history_rows(rows: Any, up_to: int) -> list[dict]:
    """The well-formed rows of a saved history up to epoch ``up_to`` (a resumed run's past)."""
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int) and r["epoch"] <= up_to]


__all__ = ["CheckpointHook", "EpochSeedHook", "ProgressHook", "RunLog", "curves_figure", "history_rows",
           "plot_curves"]
