"""Training and evaluation on mmengine's Runner.

``run_experiment(cfg)`` builds datasets, model and evaluators from a validated
:class:`~panconv.config.Config`, hands the loop to mmengine (epochs, DDP, AMP, gradient
accumulation, schedulers), and writes into the work dir:

- ``config.yaml``: the resolved config (the model's constructor arguments filled from the
  dataset's metadata made explicit, ``data.root`` absolute), what :func:`panconv.load_model` reads;
- ``metrics.json``: the run's id and per-epoch train losses/lr, validation and test metrics;
- ``summary.json``: final metrics, best epoch, versions (panconv, plugins, mmengine, torch,
  python), git commit and command line;
- ``curves.png``, ``run.log`` (config, environment, losses/lr/ETA per ``log_interval``,
  metric lines), TensorBoard event files when TensorBoard is installed;
- ``epoch_N.pth`` / ``best.pth`` checkpoints and ``last_checkpoint``.

Evaluation only (``stages=("test",)``, ``--eval-only``) needs weights (``resume`` or
``run.load_from``) and writes its own ``metrics.json``/``summary.json``/``config.yaml``/
``run.log`` under ``<work_dir>/eval/``, leaving the training record untouched.

``resume``: ``True``/``"auto"`` continues from the newest complete checkpoint of the run in the
work dir (``last_checkpoint``, else the highest ``epoch_N.pth`` that loads and belongs to the
run of ``metrics.json``), a path from that checkpoint (a relative path that does not exist as
given is looked up in the work dir: ``--resume best.pth``). ``run.load_from`` initialises the
weights only (fine-tuning: fresh optimizer, schedule and epoch count).

``data.batch_size`` is the *global* batch: under ``torchrun --nproc_per_node=P`` each
process loads ``batch_size / P`` samples, so one process and P processes see the same
batches and reach the same metrics.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.runner import Runner

from ..builder import build_component, build_datasets, build_model, model_summary, resolve_data_root
from ..config import Config, resolve_function
from ..errors import CheckpointError, ConfigError
from ..io import (
    atomic_write_json,
    atomic_write_text,
    check_checkpoint,
    clean_stale_temporaries,
    load_checkpoint,
    save_checkpoint,
)
from ..plugins import get_manager
from . import scale
from .hooks import CHECKPOINT_NAME, RunLog, history_rows
from .state import from_plain, restore_schedulers, scheduler_states, to_plain

#: data preparation taking longer than this many seconds is announced on the console
SLOW_DATA_SECONDS = 2.0


def _quiet_mmengine() -> None:
    """mmengine logs its environment, hooks and warnings at length; keep only real problems."""
    for name in ("mmengine", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mmengine(\.|$)")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp.*")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device: '{name}' was asked for but CUDA is not available here; use device: auto or cpu")
    return device


# ----------------------------------------------------------------------------- what a run is

@dataclass
class _Run:
    """Where and how this process runs: stages, dirs, device, processes."""

    cfg: Config
    stages: tuple[str, ...]
    quiet: bool
    work_dir: Path
    out_dir: Path  # the work dir, or <work_dir>/eval for an evaluation
    device: torch.device
    distributed: bool
    world: int
    rank: int
    seed: int
    started: float = field(default_factory=time.time)
    owns_process_group: bool = False  # this run started the process group, and ends it

    @property
    def training(self) -> bool:
        return "train" in self.stages

    @property
    def main(self) -> bool:
        return self.rank == 0

    def say(self, line: str, log: RunLog | None = None, *, stream=None) -> None:
        """A console line from the main process (stdout unless ``stream``), also into ``log``."""
        if not self.main:
            return
        if log is not None:
            log.write(line)
        if not self.quiet:
            print(line, file=stream or sys.stdout, flush=True)


@dataclass
class _Weights:
    """The checkpoint a run starts from: resumed (``resume``) or weights only."""

    path: Path
    checkpoint: dict
    resume: bool

    @property
    def epoch(self) -> int:
        return int((self.checkpoint.get("meta") or {}).get("epoch", 0) or 0)


@dataclass
class _Data:
    datasets: dict[str, Any]
    loaders: dict[str, Any]
    metadata: dict
    root: Path


def _setup(cfg: Config, work_dir, stages: tuple[str, ...], quiet: bool) -> _Run:
    run_cfg = cfg["run"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    launcher = run_cfg.get("launcher", "auto")
    distributed = world > 1 if launcher == "auto" else launcher == "pytorch"
    device = resolve_device(run_cfg.get("device", "auto"))
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = distributed and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if run_cfg.get("threads"):
        torch.set_num_threads(int(run_cfg["threads"]))
    name = Path(cfg.filename or "run").stem
    work_dir = Path(work_dir or run_cfg.get("work_dir") or Path("work_dirs") / name)
    seed = run_cfg.get("seed")
    out_dir = work_dir if "train" in stages else work_dir / "eval"
    return _Run(cfg, tuple(stages), quiet, work_dir, out_dir, device, distributed, world, rank,
                0 if seed is None else int(seed), owns_process_group=owns_group)


# ----------------------------------------------------------------------------- weights to start from

def _checkpoint_path(value: str | os.PathLike, work_dir: Path, what: str) -> Path:
    """``value`` as given, else (relative and missing) inside the work dir."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    inside = work_dir / path
    if not path.is_absolute() and inside.is_file():
        return inside
    also = "" if path.is_absolute() else f"; also looked for {inside}"
    raise CheckpointError(f"{path}: checkpoint not found ({what}{also})")


def _load(path: Path, *, resume: bool) -> dict:
    return check_checkpoint(load_checkpoint(path), path, resume=resume)


def _saved_run_id(work_dir: Path) -> str | None:
    try:
        run_id = json.loads((work_dir / "metrics.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None


def newest_checkpoint(work_dir: Path, *, resume: bool = True, notes: list[str] | None = None):
    """``(path, checkpoint)`` of the newest complete checkpoint of the run in ``work_dir``, or None.

    Candidates: the target of ``last_checkpoint`` and every ``epoch_N.pth``, newest epoch
    first; the first that loads, passes :func:`~panconv.io.check_checkpoint` and (when both
    say) carries the ``run_id`` of ``metrics.json`` wins. What was skipped and why goes to ``notes``.
    """
    notes = notes if notes is not None else []
    candidates: dict[Path, int] = {}
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        target = Path(marker.read_text().strip())
        if target.is_file():
            match = CHECKPOINT_NAME.fullmatch(target.name)
            candidates[target.resolve()] = int(match.group(1)) if match else 1 << 62
        else:
            notes.append(f"{marker}: points to {target}, which does not exist")
    for path in work_dir.glob("epoch_*.pth"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            candidates.setdefault(path.resolve(), int(match.group(1)))
    run_id = _saved_run_id(work_dir)
    for path in sorted(candidates, key=lambda p: -candidates[p]):
        try:
            checkpoint = _load(path, resume=resume)
        except CheckpointError as exc:
            notes.append(f"skipping {exc}")
            continue
        saved_run = (checkpoint.get("meta") or {}).get("run_id")
        if run_id is not None and saved_run is not None and saved_run != run_id:
            notes.append(f"skipping {path}: it belongs to an earlier run in this work dir")
            continue
        return path, checkpoint
    return None


def _find_weights(run: _Run, resume: str | bool | None, log: RunLog) -> _Weights | None:
    """The checkpoint to resume or to take the weights from (``--resume`` first, then
    ``run.load_from``); None for a training run from scratch. Loaded and checked here, before
    any data is prepared."""
    cfg = run.cfg
    if resume:
        if resume is True or resume == "auto":
            notes: list[str] = []
            found = newest_checkpoint(run.work_dir, resume=run.training, notes=notes)
            for note in notes:
                run.say(note, log, stream=sys.stderr)
            if found is not None:
                return _Weights(found[0], found[1], resume=run.training)
            if run.training:
                run.say(f"no checkpoint to resume in {run.work_dir}; starting from scratch", log)
        else:
            path = _checkpoint_path(resume, run.work_dir, "--resume")
            return _Weights(path, _load(path, resume=run.training), resume=run.training)
    load_from = cfg["run"].get("load_from")
    if load_from:
        path = _checkpoint_path(load_from, run.work_dir, "run.load_from")
        return _Weights(path, _load(path, resume=False), resume=False)
    if not run.training:
        raise CheckpointError(f"{cfg.filename or '<config>'}: evaluation needs trained weights: pass --resume "
                              f"CHECKPOINT (a path, or a file of the work dir such as best.pth), or set run.load_from")
    return None


@dataclass
class _InitFrom:
    """``run.init_from``: the checkpoint whose entries under some prefixes initialise the model."""

    path: Path
    state: dict
    mapping: dict[str, str]
    loaded: int = 0
    entry: str | None = None
    convert: str | None = None

    def spec(self) -> dict:
        """As written to the resolved config and ``summary.json``: ``path`` absolute, ``map``, and ``entry`` /
        ``convert`` when set."""
        return {"path": str(self.path.resolve()), "map": self.mapping,
                **({"entry": self.entry} if self.entry else {}), **({"convert": self.convert} if self.convert else {})}


def _find_init(run: _Run, weights: _Weights | None) -> _InitFrom | None:
    """``run.init_from`` loaded and checked before any data is prepared; None when unset or when
    the run resumes (the resumed weights replace everything)."""
    spec = run.cfg["run"].get("init_from")
    if not spec or (weights is not None and weights.resume):
        return None
    spec = {"path": spec} if isinstance(spec, str) else spec
    path = _checkpoint_path(spec["path"], run.work_dir, "run.init_from")
    checkpoint = _load(path, resume=False)
    entry, convert = spec.get("entry"), spec.get("convert")
    if entry is not None:
        state = checkpoint.get(entry)
        if not isinstance(state, dict):
            names = ", ".join(sorted(map(str, checkpoint))[:8])
            raise CheckpointError(f"{path}: run.init_from.entry: the checkpoint holds no state dict under {entry!r} "
                                  f"(its top-level names: {names})")
    else:
        state = checkpoint.get("state_dict", checkpoint)
        wrappers = sorted(k for k, v in state.items() if isinstance(v, dict))
        if wrappers and not any(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: run.init_from: the checkpoint holds no tensors at its top level; set run."
                                  f"init_from.entry to the name of its state dict: one of {', '.join(wrappers[:8])}")
    if convert is not None:  # a published checkpoint's names -> ours (e.g. a family's map_official_state_dict)
        state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        try:
            state = resolve_function(convert)(state)
        except (KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise CheckpointError(f"{path}: run.init_from.convert ({convert}): {message}") from None
    state = {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    return _InitFrom(path, state, dict(spec.get("map") or {"backbone.": "backbone."}), entry=entry, convert=convert)


def init_weights_from(model: torch.nn.Module, state: dict, mapping: dict[str, str], path) -> int:
    """Copy ``state[src + rest]`` into the model's ``dst + rest`` for every ``dst: src`` of ``mapping``
    (transfer learning: a fine-tuning model's ``backbone.`` from a pre-training model's ``encoder.``);
    every model entry under a mapped prefix must be there with the same shape, else a one-line
    CheckpointError naming what does not fit. The other entries keep their initialisation. Returns the
    number of tensors copied."""
    own = model.state_dict()

    def tops(names) -> str:
        return ", ".join(sorted({n.split(".")[0] for n in names})[:8])

    take, missing, shapes = {}, [], []
    for dst, src in mapping.items():
        names = [k for k in own if k.startswith(dst)]
        if not names:
            raise CheckpointError(f"{path}: run.init_from.map: the model has no entry under {dst!r} "
                                  f"(its top-level modules: {tops(own)})")
        if not any(k.startswith(src) for k in state):
            raise CheckpointError(f"{path}: run.init_from.map: the checkpoint has no entry under {src!r} "
                                  f"(its top-level names: {tops(state)})")
        for name in names:
            key = src + name[len(dst):]
            if key not in state:
                missing.append(key)
            elif state[key].shape != own[name].shape:
                shapes.append(f"{key} (checkpoint {list(state[key].shape)}, model {name} {list(own[name].shape)})")
            else:
                take[name] = state[key]
    if missing or shapes:
        problems = [f"{label} {_names(names)}" + (f" ({len(names)} in all)" if len(names) > 3 else "")
                    for label, names in (("size mismatch for", shapes), ("missing", missing)) if names]
        raise CheckpointError(f"{path}: run.init_from: does not fit this model: {'; '.join(problems)}")
    model.load_state_dict(take, strict=False)
    return len(take)


def _check_resumable(run: _Run, weights: _Weights) -> None:
    epochs = int(run.cfg["train"].get("epochs", 1))
    if weights.epoch > epochs:
        raise CheckpointError(f"{weights.path}: meta.epoch: the checkpoint is at epoch {weights.epoch}, past "
                              f"train.epochs={epochs}; raise train.epochs to extend the run")


# ----------------------------------------------------------------------------- the work dir

def _prepare_out_dir(run: _Run, weights: _Weights | None) -> None:
    """Create the output dir, remove the temporaries a killed run left, and on a fresh training
    start drop the previous run's ``last_checkpoint`` (its history is replaced too)."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    if not run.main:
        return
    clean_stale_temporaries(run.out_dir)
    if run.training and (weights is None or not weights.resume):
        (run.work_dir / "last_checkpoint").unlink(missing_ok=True)


def _initial_history(run: _Run, weights: _Weights | None) -> dict:
    """The record this run continues: the saved history up to the resumed epoch when resuming the
    run it belongs to, else a fresh one (a new ``run_id``); an evaluation's own record."""
    if not run.training:
        return {"checkpoint": str(weights.path.resolve()), "epoch": weights.epoch, "test": None}
    if weights is None or not weights.resume:
        return {"run_id": uuid.uuid4().hex, "train": [], "val": [], "test": None}
    ckpt_run = (weights.checkpoint.get("meta") or {}).get("run_id")
    try:
        saved = json.loads((run.out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        saved = None
    same_run = isinstance(saved, dict) and (ckpt_run is None or saved.get("run_id") in (None, ckpt_run))
    run_id = ckpt_run or (saved.get("run_id") if same_run else None) or uuid.uuid4().hex
    if not same_run:
        return {"run_id": run_id, "train": [], "val": [], "test": None}
    return {"run_id": run_id, "train": history_rows(saved.get("train"), weights.epoch),
            "val": history_rows(saved.get("val"), weights.epoch), "test": None}


# ----------------------------------------------------------------------------- data and model

def _build_data(run: _Run, log: RunLog) -> _Data:
    cfg, data_cfg = run.cfg, run.cfg["data"]
    root = resolve_data_root(data_cfg).expanduser().resolve()
    log.write(f"preparing data: {data_cfg.get('type')} (root {root})")
    started = time.time()
    announced = threading.Event()

    def announce() -> None:
        announced.set()
        run.say(f"preparing data: {data_cfg.get('type')} ...", stream=sys.stderr)

    timer = threading.Timer(SLOW_DATA_SECONDS, announce) if run.main and not run.quiet else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        datasets = build_datasets(cfg, data_root=root)
    finally:
        if timer is not None:
            timer.cancel()
    seconds = time.time() - started
    log.write(f"data ready in {seconds:.1f} s: " + ", ".join(f"{s} {len(d)}" for s, d in datasets.items()))
    if announced.is_set():
        run.say(f"preparing data: {data_cfg.get('type')} done in {seconds:.1f} s", stream=sys.stderr)
    if not datasets:
        raise ConfigError(f"{cfg.filename}: data.splits: no split is set")
    if run.training and "train" not in datasets:
        raise ConfigError(f"{cfg.filename}: data.splits.train: no training split is set")
    first = datasets.get("train") or next(iter(datasets.values()))
    return _Data(datasets, {}, dict(getattr(first, "metadata", {}) or {}), root)


def _build_loaders(run: _Run, data: _Data, evaluate: bool) -> None:
    data_cfg = run.cfg["data"]
    batch = int(data_cfg.get("batch_size", 32))
    eval_batch = int(data_cfg.get("eval_batch_size") or batch)
    stages = [s for s in ("train", "val", "test") if s in data.datasets
              and (s in run.stages if s != "val" else run.training) and (s == "train" or evaluate)]
    for stage in stages:
        data.loaders[stage] = _loader(data.datasets[stage], batch if stage == "train" else eval_batch,
                                      train=stage == "train", data_cfg=data_cfg, seed=run.seed, world=run.world)
    if not run.training and "test" not in data.loaders:
        raise ConfigError(f"{run.cfg.filename}: nothing to evaluate: set data.splits.test and eval.evaluators")


def _loader(dataset, batch_size: int, *, train: bool, data_cfg: dict, seed: int, world: int):
    from mmengine.dataset import DefaultSampler

    if batch_size % world:
        raise ConfigError(f"data.batch_size={batch_size} must be divisible by the number of processes ({world}): "
                          f"it is the global batch")
    shuffle = data_cfg.get("shuffle", True) if train else False
    sampler = DefaultSampler(dataset, shuffle=shuffle, seed=seed, round_up=train)
    workers = data_cfg.get("num_workers", 0)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size // world, sampler=sampler, num_workers=workers,
        collate_fn=getattr(dataset, "collate", None), drop_last=bool(data_cfg.get("drop_last", False)) and train,
        pin_memory=bool(data_cfg.get("pin_memory", False)), persistent_workers=workers > 0, generator=generator,
        worker_init_fn=_seed_worker if workers else None)


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)


def _build_model(run: _Run, data: _Data, init: _InitFrom | None = None, log: RunLog | None = None) -> torch.nn.Module:
    torch.manual_seed(run.seed)
    model = build_model(run.cfg["model"], metadata=data.metadata, where=run.cfg.filename)
    if hasattr(model, "attach_data") and "train" in data.datasets:
        model.attach_data(data.datasets["train"])
    if init is not None:
        init.loaded = init_weights_from(model, init.state, init.mapping, init.path)
        run.say(f"initialised {init.loaded} tensors from {init.path} ({_mapping_text(init.mapping)})", log)
        init.state = {}
    return model


def _build_evaluators(cfg: Config) -> list:
    return [build_component("evaluator", spec, where=f"{cfg.filename}: eval.evaluators.{i}")
            for i, spec in enumerate(cfg["eval"].get("evaluators") or [])]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- mmengine's Runner

class PanconvRunner(Runner):
    """mmengine's Runner with atomic checkpoint writes, safe (weights-only) loading of checked
    checkpoints, schedulers that follow a changed ``train.epochs``, and no log folder of its own
    (the engine writes ``run.log``; mmengine's warnings go there too)."""

    def __init__(self, *, device: torch.device, log: RunLog, weights: _Weights | None = None,
                 scheduler_cfgs: list[dict] | None = None, say=None, strategy: str = "ddp",
                 activation_checkpointing: bool | list[str] = False, config_file: str | None = None, **kwargs):
        self.panconv_config_file = config_file or "config"
        self.panconv_device = device  # read by wrap_model, which Runner.__init__ calls
        self.panconv_strategy = strategy
        self.panconv_activation_checkpointing = activation_checkpointing
        self.panconv_log = log
        self.panconv_weights = weights
        self.panconv_schedulers = list(scheduler_cfgs or [])
        self.panconv_say = say or (lambda line: None)
        super().__init__(**kwargs)
        try:  # the time-stamped folder mmengine makes for its own log stays empty
            Path(self.log_dir).rmdir()
        except OSError:
            pass

    def dump_config(self) -> None:
        """The engine writes the resolved config itself (config.yaml)."""

    def build_logger(self, log_level="INFO", log_file=None, **kwargs):
        from mmengine.logging import MMLogger

        logger = MMLogger.get_instance(self._experiment_name, log_level=log_level)
        logger.addHandler(self.panconv_log.handler())
        return logger

    def wrap_model(self, model_wrapper_cfg, model):
        device = self.panconv_device
        model = model.to(device)
        if self.panconv_activation_checkpointing:
            try:
                chosen = scale.apply_activation_checkpointing(model.model, self.panconv_activation_checkpointing)
            except ValueError as exc:
                raise ConfigError(f"{self.panconv_config_file}: {exc}") from None
            self.panconv_say(f"activation checkpointing: {len(chosen)} units ({_names(chosen)})")
        if not self.distributed:
            return model
        if self.panconv_strategy == "fsdp":
            for tensor in model.state_dict().values():  # every process shards the same weights
                dist.broadcast(tensor, 0)
            chosen = scale.apply_fsdp(model, device)
            self.panconv_say(f"fsdp: parameters sharded over {dist.get_world_size()} processes, "
                             f"{len(chosen)} units ({_names(chosen)}) and the root")
            return model
        device_ids = [device.index or 0] if device.type == "cuda" else None
        return MMDistributedDataParallel(module=model, device_ids=device_ids, broadcast_buffers=False,
                                         find_unused_parameters=False)

    def _init_model_weights(self) -> None:
        """mmengine's weight sync broadcasts whole tensors; a sharded model was synced before sharding."""
        if not scale.is_sharded(self.model):
            super()._init_model_weights()

    def _checkpoint(self, filename, *, resume: bool) -> dict:
        weights = self.panconv_weights
        if weights is not None and Path(filename) == weights.path:
            return weights.checkpoint
        return _load(Path(filename), resume=resume)

    def _load_weights(self, checkpoint: dict, filename) -> None:
        model = self.model.module if hasattr(self.model, "module") else self.model
        state = checkpoint.get("state_dict", checkpoint)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        if scale.is_sharded(model):
            if not any(k.startswith("model.") for k in state):  # the state dict of a panconv model itself
                state = {f"model.{k}": v for k, v in state.items()}
            load_weights(model, state, filename, load=lambda full: scale.load_full_state_dicts(model, full))
            return
        if not any(k.startswith("model.") for k in state):
            model = model.model
        load_weights(model, state, filename)

    def load_checkpoint(self, filename, map_location="cpu", strict=False, revise_keys=((r"^module.", ""),)):
        """Weights only (``run.load_from``, evaluation)."""
        checkpoint = self._checkpoint(filename, resume=False)
        self._load_weights(checkpoint, filename)
        self._has_loaded = True
        return checkpoint

    def resume(self, filename, resume_optimizer=True, resume_param_scheduler=True, map_location="default"):
        """Weights, epoch and iteration, logging state, optimizer and schedulers; every part checked."""
        checkpoint = self._checkpoint(filename, resume=True)
        self._load_weights(checkpoint, filename)
        meta = checkpoint["meta"]
        self.train_loop._epoch, self.train_loop._iter = meta["epoch"], meta["iter"]
        try:
            if "message_hub" in checkpoint:
                self.message_hub.load_state_dict(from_plain(checkpoint["message_hub"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{filename}: message_hub: malformed ({type(exc).__name__}: "
                                  f"{str(exc)[:120]})") from None
        if "optimizer" in checkpoint:
            try:
                self._load_optimizer(checkpoint["optimizer"])
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
                raise CheckpointError(f"{filename}: optimizer: does not fit train.optimizer "
                                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        if self.param_schedulers or checkpoint.get("param_schedulers"):
            self._restore_schedulers(checkpoint, filename)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        self._has_loaded = True

    def _load_optimizer(self, state: dict) -> None:
        """An optimizer state saved sharded (keyed by parameter name) or not (by position), into
        this run's optimizer, sharded or not."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        optimizer = self.optim_wrapper.optimizer
        if not scale.is_sharded(model) and not scale.is_by_name(state):
            self.optim_wrapper.load_state_dict(state)
            return
        if not scale.is_by_name(state):
            state = scale.optimizer_state_by_name(state, optimizer, model)
        scale.load_full_state_dicts(model, None, optimizer, state)

    def _restore_schedulers(self, checkpoint: dict, filename) -> None:
        meta = checkpoint["meta"]
        runtime = (checkpoint.get("message_hub") or {}).get("runtime_info") or {}
        saved_max = meta.get("max_epochs", runtime.get("max_epochs"))
        note = restore_schedulers(
            list(self.param_schedulers or []), checkpoint.get("param_schedulers"), self.panconv_schedulers,
            optimizer=self.optim_wrapper.optimizer, path=filename, max_epochs=self.max_epochs,
            saved_max_epochs=saved_max if isinstance(saved_max, int) else None,
            epochs_done=meta["epoch"], iters_done=meta["iter"], epoch_length=len(self.train_dataloader))
        if note:
            self.panconv_say(note)

    def save_checkpoint(self, out_dir, filename, file_client_args=None, save_optimizer=True,
                        save_param_scheduler=True, meta=None, by_epoch=True, backend_args=None):
        from mmengine.dist import is_main_process
        from mmengine.runner.checkpoint import weights_to_cpu
        from mmengine.utils import apply_to

        model = self.model.module if hasattr(self.model, "module") else self.model
        sharded = scale.is_sharded(model)
        if sharded:  # a collective: every process gathers, the first writes
            weights, optimizer = scale.full_state_dicts(model, self.optim_wrapper.optimizer if save_optimizer else None)
        if not is_main_process():
            return
        meta = dict(meta or {})
        meta.setdefault("epoch", self.epoch + 1 if by_epoch else self.epoch)
        meta.setdefault("iter", self.iter if by_epoch else self.iter + 1)
        meta.update(seed=self.seed, time=time.strftime("%Y%m%d_%H%M%S"))
        to_cpu = lambda tree: apply_to(tree, lambda x: hasattr(x, "cpu"), lambda x: x.cpu())  # noqa: E731
        checkpoint = {"meta": meta, "state_dict": weights if sharded else weights_to_cpu(model.state_dict()),
                      "message_hub": to_plain(to_cpu(self.message_hub.state_dict()))}
        if save_optimizer:
            checkpoint["optimizer"] = optimizer if sharded else to_cpu(self.optim_wrapper.state_dict())
        if save_param_scheduler and self.param_schedulers:
            # callables (OneCycleLR keeps its annealing function in its state) are rebuilt from
            # the config, and a function cannot be loaded with weights_only=True
            checkpoint["param_schedulers"] = scheduler_states(self.param_schedulers)
        self.call_hook("before_save_checkpoint", checkpoint=checkpoint)
        save_checkpoint(checkpoint, Path(out_dir) / filename)


def _mapping_text(mapping: dict[str, str]) -> str:
    return ", ".join(f"model {dst or '(all)'!s} <- checkpoint {src or '(all)'!s}" for dst, src in mapping.items())


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f", ... {names[-1]}" if len(names) > shown else "")


def load_weights(model: torch.nn.Module, state: dict, path, load=None) -> None:
    """``model.load_state_dict(state, strict=True)`` (or ``load(state)``) with a one-line
    CheckpointError naming what does not fit (missing, unexpected and differently shaped entries)."""
    own = model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict[{bad[0][:80]!r}]: expected a tensor, "
                              f"got {type(state[bad[0]]).__name__}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (checkpoint {list(state[k].shape)}, model {list(own[k].shape)})" for k in own
              if k in state and state[k].shape != own[k].shape]

    def listed(label: str, names: list[str]) -> str:
        return f"{label} {', '.join(names[:3])}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    problems = [listed(label, names) for label, names in (("size mismatch for", shapes), ("missing", missing),
                                                          ("unexpected", unexpected)) if names]
    if problems:
        raise CheckpointError(f"{path}: does not fit this model: {'; '.join(problems)}")
    if load is not None:
        load(state)
    else:
        model.load_state_dict(state, strict=True)


def _data_source(cfg: Config, data: _Data) -> str:
    """``core.GaussianBlobs split 'train' (under /data)`` plus the dataset's files when it names them."""
    split = (cfg["data"].get("splits") or {}).get("train")
    dataset = data.datasets.get("train")
    files = getattr(dataset, "file", None) or getattr(dataset, "folder", None)
    where = f"{files}" if files else f"under {data.root}"
    return f"{cfg['data']['type']} split '{split}' ({where})"


def param_group_rules(model: torch.nn.Module) -> dict[str, dict]:
    """The optimiser rules a model's components declare, as mmengine ``paramwise_cfg`` custom keys.

    A component (whole model, backbone, neck or head) may define ``param_groups()`` returning
    ``{name_pattern: {"lr_mult": float, "decay_mult": float}}``: every parameter whose name
    contains ``name_pattern`` gets ``lr * lr_mult`` and ``weight_decay * decay_mult`` (S4's rule:
    no weight decay and a lower learning rate on A, B and the step size).
    """
    rules: dict[str, dict] = {}
    for module in model.modules():
        declare = getattr(type(module), "param_groups", None)
        if callable(declare):
            for pattern, rule in (module.param_groups() or {}).items():
                if not isinstance(rule, dict) or set(rule) - {"lr_mult", "decay_mult"}:
                    raise ConfigError(f"{type(module).__name__}.param_groups(): {pattern!r}: expected "
                                      f"{{'lr_mult': x, 'decay_mult': y}}, got {rule!r}")
                rules[pattern] = dict(rule)
    return rules


def _optim_wrapper(run: _Run, model: torch.nn.Module | None = None) -> dict:
    train_cfg = run.cfg["train"]
    amp = bool(train_cfg.get("amp"))
    cuda_amp = amp and run.device.type == "cuda"
    wrapper: dict[str, Any] = {
        "type": "AmpOptimWrapper" if cuda_amp else "OptimWrapper",
        "optimizer": dict(train_cfg["optimizer"]),
        "accumulative_counts": int(train_cfg.get("accumulate", 1)),
    }
    if train_cfg.get("grad_clip"):
        wrapper["clip_grad"] = {"max_norm": float(train_cfg["grad_clip"])}
    if cuda_amp:
        wrapper["dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    rules = param_group_rules(model) if model is not None else {}
    if rules:
        wrapper["paramwise_cfg"] = {"custom_keys": rules}
        for i, sched in enumerate(train_cfg.get("scheduler") or []):
            if sched.get("type") == "OneCycleLR" and not isinstance(sched.get("eta_max"), (list, tuple)):
                raise ConfigError(
                    f"{run.cfg.filename}: train.scheduler.{i}: OneCycleLR with one eta_max sets every parameter "
                    f"group to that peak, overriding the per-group learning rates the model declares "
                    f"({', '.join(sorted(rules))}); use LinearLR + CosineAnnealingLR, which scale each group")
    return wrapper


def _build_runner(run: _Run, data: _Data, model, evaluators: list, weights: _Weights | None, history: dict,
                  log: RunLog):
    """mmengine's Runner with the engine's hooks; returns ``(runner, progress, checkpoints)``."""
    from mmengine.evaluator import Evaluator as MMEvaluator

    from .adapters import EngineModel, EvaluatorMetric
    from .hooks import CheckpointHook, EpochSeedHook, PeakMemoryHook, ProgressHook

    cfg, train_cfg = run.cfg, run.cfg["train"]
    manager = get_manager()
    loaders = data.loaders
    progress = ProgressHook(run.out_dir / "metrics.json", dict(cfg), manager, history, log,
                            log_interval=int(train_cfg.get("log_interval", 50)), quiet=run.quiet,
                            tensorboard=run.out_dir / "tensorboard" if run.training else None,
                            eval_epoch=None if run.training else weights.epoch)
    ckpt_cfg = train_cfg["checkpoint"]
    meta = (weights.checkpoint.get("meta") or {}) if weights is not None and weights.resume else {}
    checkpoints = CheckpointHook(run.work_dir, ckpt_cfg.get("interval", 1), ckpt_cfg.get("max_keep", 2),
                                 ckpt_cfg.get("best"), evaluators[0].greater_is_better if evaluators else None,
                                 run_id=history.get("run_id"), best_value=meta.get("best_value"),
                                 best_epoch=meta.get("best_epoch"))
    memory = PeakMemoryHook(run.device)
    hooks = [EpochSeedHook(run.seed), progress, memory] + ([checkpoints] if run.training else [])
    train = "train" in loaders
    schedulers = [dict(s) for s in train_cfg.get("scheduler") or []]
    runner = PanconvRunner(
        device=run.device, log=log, weights=weights, scheduler_cfgs=schedulers,
        say=lambda line: run.say(line, log, stream=sys.stderr),
        strategy=cfg["run"].get("strategy", "ddp"),
        activation_checkpointing=train_cfg.get("activation_checkpointing") or False, config_file=cfg.filename,
        model=EngineModel(model, cpu_amp=bool(train_cfg.get("amp")) and run.device.type == "cpu",
                          data_source=_data_source(run.cfg, data)),
        work_dir=str(run.out_dir),
        train_dataloader=loaders.get("train"),
        val_dataloader=loaders.get("val"),
        test_dataloader=loaders.get("test"),
        train_cfg={"by_epoch": True, "max_epochs": int(train_cfg.get("epochs", 1)),
                   "val_interval": int(train_cfg.get("val_interval", 1))} if train else None,
        val_cfg={} if "val" in loaders else None,
        val_evaluator=MMEvaluator([EvaluatorMetric(evaluators)]) if "val" in loaders else None,
        test_cfg={} if "test" in loaders else None,
        test_evaluator=MMEvaluator([EvaluatorMetric(evaluators)]) if "test" in loaders else None,
        optim_wrapper=_optim_wrapper(run, model) if train else None,
        param_scheduler=(schedulers or None) if train else None,
        default_hooks={"runtime_info": {"type": "RuntimeInfoHook"}, "timer": {"type": "IterTimerHook"},
                       "sampler_seed": {"type": "DistSamplerSeedHook"},
                       "param_scheduler": {"type": "ParamSchedulerHook"}, "logger": None, "checkpoint": None},
        custom_hooks=hooks,
        launcher="pytorch" if run.distributed else "none",
        env_cfg={"cudnn_benchmark": False, "dist_cfg": {"backend": "gloo" if run.device.type == "cpu" else "nccl"}},
        randomness={"seed": run.seed, "deterministic": bool(cfg["run"].get("deterministic"))},
        visualizer={"type": "Visualizer", "vis_backends": []},
        log_level="ERROR",
        default_scope=None,
        experiment_name=f"panconv_{uuid.uuid4().hex[:12]}",  # mmengine's global instances are per name
        resume=weights is not None and weights.resume,
        load_from=str(weights.path) if weights is not None else None,
    )
    runner.panconv_memory = memory
    _quiet_mmengine()
    return runner, progress, checkpoints


# ----------------------------------------------------------------------------- outputs

def _versions() -> dict[str, Any]:
    from .. import __version__

    versions: dict[str, Any] = {"panconv": __version__, "python": platform.python_version(),
                                "torch": torch.__version__}
    try:
        import mmengine

        versions["mmengine"] = mmengine.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    versions["plugins"] = {name: record.version for name, record in sorted(get_manager().records.items())
                           if record.status == "ok"}
    return versions


def git_commit(directory: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``directory`` (default: the current
    one); None outside a repository, without git, or on any failure. Never uses the network."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=directory, capture_output=True, text=True,
                              timeout=10, env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and len(commit) in (40, 64) and all(c in "0123456789abcdef"
                                                                              for c in commit) else None


def _environment(run: _Run) -> str:
    versions = _versions()
    plugins = ", ".join(f"{k} {v or '(local)'}" for k, v in versions["plugins"].items()) or "none"
    device = str(run.device)
    if run.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(run.device)})"
    return (f"python {versions['python']}, torch {versions['torch']}, mmengine {versions.get('mmengine')}, "
            f"panconv {versions['panconv']}; plugins: {plugins}\n"
            f"device {device}, {run.world} process(es), {torch.get_num_threads()} thread(s), seed {run.seed}")


def _start_log(run: _Run, log: RunLog, weights: _Weights | None) -> None:
    kind = "training" if run.training else "evaluation"
    log.write(f"==== panconv {kind} started in {run.out_dir.resolve()} ====")
    log.write("command: " + " ".join(sys.argv))
    log.write(_environment(run))
    if weights is not None:
        log.write(f"{'resuming from' if weights.resume else 'weights from'} {weights.path} (epoch {weights.epoch})")
    log.write("config:\n" + run.cfg.to_yaml())


def resolved_config(cfg: Config, data: _Data, weights: _Weights | None = None,
                    init: _InitFrom | None = None) -> Config:
    """The config as run: the model section with the injected metadata explicit, ``data.root``
    absolute (and ``run.load_from``/``run.init_from`` absolute when set)."""
    from ..builder import resolve_model_config

    out = {**cfg, "model": resolve_model_config(cfg["model"], data.metadata),
           "data": {**cfg["data"], "root": str(data.root)}}
    if cfg["run"].get("load_from") and weights is not None and not weights.resume:
        out["run"] = {**cfg["run"], "load_from": str(weights.path.resolve())}
    if init is not None:
        out["run"] = {**out.get("run", cfg["run"]), "init_from": init.spec()}
    return Config(out, cfg.filename)


def _peak_memory_mib(run: _Run, memory) -> float:
    """The largest peak memory of any process of the run over its iterations, in MiB
    (:class:`~panconv.engine.hooks.PeakMemoryHook`)."""
    from .hooks import process_peak_memory_mib

    peak = memory.peak or process_peak_memory_mib(run.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = torch.tensor([peak], dtype=torch.float64, device=run.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        peak = float(value.item())
    return round(peak, 1)


def _write_summary(run: _Run, progress, checkpoints, n_params: int, weights: _Weights | None,
                   peak_memory_mib: float | None = None, init: _InitFrom | None = None) -> dict:
    cfg = run.cfg
    best = cfg["train"]["checkpoint"].get("best")
    summary = {
        "config": cfg.filename, "work_dir": str(run.work_dir), "model": model_summary(cfg["model"]),
        "parameters": n_params, "epochs": int(cfg["train"].get("epochs", 1)), "world_size": run.world,
        "device": str(run.device), "seed": run.seed, "seconds": round(time.time() - run.started, 2),
        "final_metrics": progress.final_metrics(),
        "peak_memory_mib": peak_memory_mib,
    }
    if run.training:
        summary["best"] = {"metric": best, "value": checkpoints.best_value,
                           "epoch": checkpoints.best_epoch} if best else None
        summary["resumed_from"] = str(weights.path) if weights is not None and weights.resume else None
        summary["load_from"] = str(weights.path) if weights is not None and not weights.resume else None
        summary["init_from"] = ({**init.spec(), "path": str(init.path), "tensors": init.loaded}
                                if init is not None else None)
    else:
        summary["checkpoint"] = str(weights.path.resolve())
        summary["checkpoint_epoch"] = weights.epoch
    summary.update(versions=_versions(), git_commit=git_commit(), command=list(sys.argv))
    atomic_write_json(run.out_dir / "summary.json", summary)
    return summary


def _write_outputs(run: _Run, progress, checkpoints, n_params: int, weights: _Weights | None,
                   peak_memory_mib: float | None = None, init: _InitFrom | None = None) -> None:
    """``summary.json`` and (training) ``curves.png``."""
    from .hooks import plot_curves

    _write_summary(run, progress, checkpoints, n_params, weights, peak_memory_mib, init)
    if run.training:
        plot_curves(run.out_dir / "curves.png", progress.history, run.cfg["train"]["checkpoint"].get("best"),
                    checkpoints.best_epoch)


# ----------------------------------------------------------------------------- the run

def run_experiment(cfg: Config, *, work_dir: str | os.PathLike | None = None, resume: str | bool | None = None,
                   quiet: bool = False, stages: tuple[str, ...] = ("train", "test")) -> dict[str, float]:
    """Train/validate/test as the config says (or only evaluate: ``stages=("test",)``); return
    the final metrics. See the module docstring for what the work dir receives."""
    from mmengine.runner import set_random_seed

    _quiet_mmengine()
    run = _setup(cfg, work_dir, stages, quiet)
    log = RunLog(None)
    try:
        weights = _find_weights(run, resume, log)
        if weights is not None and weights.resume:
            _check_resumable(run, weights)
        init = _find_init(run, weights)
        _prepare_out_dir(run, weights)
        log = RunLog(run.out_dir / "run.log" if run.main else None)
        _start_log(run, log, weights)
        set_random_seed(run.seed, deterministic=bool(cfg["run"].get("deterministic")))
        data = _build_data(run, log)
        model = _build_model(run, data, init, log)
        evaluators = _build_evaluators(cfg)
        _build_loaders(run, data, evaluate=bool(evaluators))
        history = _initial_history(run, weights)
        runner, progress, checkpoints = _build_runner(run, data, model, evaluators, weights, history, log)
        manager = get_manager()
        if run.main:
            atomic_write_text(run.out_dir / "config.yaml", resolved_config(cfg, data, weights, init).to_yaml())
            atomic_write_json(run.out_dir / "metrics.json", history)
        manager.call_lifecycle("panconv_before_run", config=dict(cfg), work_dir=run.out_dir)
        if weights is not None:
            run.say(f"{'resuming from' if weights.resume else 'loading weights from'} {weights.path}", log)
        try:
            _execute(run, runner, data)
        finally:
            progress.close()
        peak = _peak_memory_mib(run, runner.panconv_memory)  # a collective under torchrun
        if run.main:
            _write_outputs(run, progress, checkpoints, count_parameters(model), weights, peak, init)
            manager.call_lifecycle("panconv_after_run", config=dict(cfg), work_dir=run.out_dir,
                                   metrics=progress.final_metrics())
        log.write("final: " + "  ".join(f"{k}={v:.4f}" for k, v in progress.final_metrics().items()))
        if run.owns_process_group:  # no process leaves while another still writes or talks to the store
            dist.barrier()
            dist.destroy_process_group()
        return progress.final_metrics()
    except BaseException as exc:
        log.write(f"stopped: {type(exc).__name__}: {str(exc)[:500]}")
        raise
    finally:
        log.close()


def _execute(run: _Run, runner, data: _Data) -> None:
    if run.training and "train" in data.loaders:
        runner.train()
    if "test" in run.stages and "test" in data.loaders:
        if run.training:
            runner._has_loaded = True  # test the weights just trained, do not reload
        runner.test()


# ``panconv.engine.runner.build_datasets`` predates :mod:`panconv.builder`; kept for callers of that path.
__all__ = ["build_datasets", "count_parameters", "git_commit", "load_weights", "newest_checkpoint",
           "resolved_config", "run_experiment"]
