"""The engine's mmengine hooks: progress bar, metrics files, checkpoints, per-epoch seeding."""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from .io import atomic_write_json, atomic_write_text


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


class ProgressHook(Hook):
    """A progress bar with ETA per epoch, metric lines, ``metrics.json`` and TensorBoard scalars."""

    priority = "BELOW_NORMAL"

    def __init__(self, work_dir: Path, config: dict, manager, log_interval: int = 50, quiet: bool = False):
        self.work_dir = Path(work_dir)
        self.config = config
        self.manager = manager
        self.log_interval = log_interval
        self.quiet = quiet
        self.history: dict[str, Any] = {"train": [], "val": [], "test": None}
        self.bar = None
        self.epoch_losses: dict[str, list[float]] = {}
        self.tb = None
        self.started = time.time()
        self.epoch_started = time.time()
        self.last_val: dict[str, float] = {}
        self.test_metrics: dict[str, float] | None = None

    # ---- setup ----
    def before_run(self, runner) -> None:
        if not is_main_process() or self.tb is not None:
            return
        path = self.work_dir / "metrics.json"
        if path.is_file():  # resumed run: keep the history of the epochs already done
            try:
                self.history = json.loads(path.read_text())
            except (OSError, ValueError):
                pass
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.work_dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = False

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        epoch = checkpoint.get("meta", {}).get("epoch", 0)
        self.history["train"] = [h for h in self.history.get("train", []) if h["epoch"] <= epoch]
        self.history["val"] = [h for h in self.history.get("val", []) if h["epoch"] <= epoch]

    # ---- training ----
    def before_train_epoch(self, runner) -> None:
        self.epoch_losses = {}
        self.epoch_started = time.time()
        if is_main_process() and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=len(runner.train_dataloader), desc=f"epoch {runner.epoch + 1}/{runner.max_epochs}",
                            unit="it", dynamic_ncols=True, leave=True, file=sys.stderr,
                            mininterval=0.5 if sys.stderr.isatty() else 30.0)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        outputs = _mean_over_ranks(outputs or {})
        for key, value in outputs.items():
            self.epoch_losses.setdefault(key, []).append(value)
        if self.bar is not None:
            self.bar.update(1)
            if batch_idx % max(1, self.log_interval // 5) == 0 and outputs:
                self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in outputs.items()}, refresh=False)
        if self.tb and runner.iter % self.log_interval == 0:
            for key, value in outputs.items():
                self.tb.add_scalar(f"train/{key}", value, runner.iter)

    def after_train_epoch(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not is_main_process():
            return
        means = {k: float(np.mean(v)) for k, v in self.epoch_losses.items()}
        record = {"epoch": runner.epoch + 1, **means, "seconds": round(time.time() - self.epoch_started, 3)}
        lr = runner.optim_wrapper.get_lr()
        if lr:
            record["lr"] = float(next(iter(lr.values()))[0])
        self.history["train"].append(record)
        self._write()

    # ---- evaluation ----
    def after_val_epoch(self, runner, metrics=None) -> None:
        self._report("val", runner.epoch, metrics or {})

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._report("test", runner.epoch, metrics or {})

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
        if not self.quiet:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            print(f"epoch {epoch} {split}: {shown}", flush=True)
        if self.tb:
            for key, value in metrics.items():
                self.tb.add_scalar(f"{split}/{key}", value, epoch)
        self._write()
        self.manager.call_lifecycle("panconv_after_evaluation", config=self.config, work_dir=self.work_dir,
                                    split=split, epoch=epoch, metrics=metrics)

    def _write(self) -> None:
        atomic_write_json(self.work_dir / "metrics.json", self.history)

    def after_run(self, runner) -> None:
        if self.tb:
            self.tb.flush()

    def final_metrics(self) -> dict[str, float]:
        return dict(self.test_metrics if self.test_metrics is not None else self.last_val)


class CheckpointHook(Hook):
    """Checkpoint every ``interval`` epochs (keeping ``max_keep``) and the best by ``best``.

    Files: ``epoch_N.pth``, ``best.pth`` and ``last_checkpoint`` (the path of the newest
    epoch checkpoint, read by ``--resume``); all written atomically.
    """

    priority = "LOW"

    def __init__(self, work_dir: Path, interval: int = 1, max_keep: int = 2, best: str | None = None,
                 greater_is_better=None):
        self.work_dir = Path(work_dir)
        self.interval = interval
        self.max_keep = max_keep
        self.best = best
        self.greater_is_better = greater_is_better or (lambda name: True)
        self.best_value: float | None = None
        self.best_epoch: int | None = None

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        meta = checkpoint.get("meta", {})
        self.best_value = meta.get("best_value")
        self.best_epoch = meta.get("best_epoch")

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        checkpoint["meta"]["best_value"] = self.best_value
        checkpoint["meta"]["best_epoch"] = self.best_epoch

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
        runner.save_checkpoint(str(self.work_dir), f"epoch_{epoch}.pth", meta={"epoch": epoch, "iter": runner.iter})
        if is_main_process():
            atomic_write_text(self.work_dir / "last_checkpoint", str(self.work_dir / f"epoch_{epoch}.pth"))
            kept = sorted(self.work_dir.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
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
        if self.best_value is None or (value > self.best_value if better else value < self.best_value) \
                and math.isfinite(value):
            self.best_value, self.best_epoch = value, runner.epoch
            runner.save_checkpoint(str(self.work_dir), "best.pth",
                                   meta={"best_metric": self.best, "epoch": runner.epoch, "iter": runner.iter})
