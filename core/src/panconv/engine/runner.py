"""Training and evaluation on mmengine's Runner.

``run_experiment(cfg)`` builds datasets, model and evaluators from a validated
:class:`~panconv.config.Config`, hands the loop to mmengine (epochs, DDP, AMP, gradient
accumulation, schedulers), and writes into the work dir:

``config.yaml`` (the merged config), ``metrics.json`` (per-epoch train losses, validation
metrics, test metrics), ``summary.json``, ``curves.png``, ``epoch_N.pth`` / ``best.pth``
checkpoints and ``last_checkpoint``; TensorBoard event files when TensorBoard is installed.

``data.batch_size`` is the *global* batch: under ``torchrun --nproc_per_node=P`` each
process loads ``batch_size / P`` samples, so one process and P processes see the same
batches and reach the same metrics.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..builder import build_component, build_model
from ..config import Config
from ..errors import CheckpointError, ConfigError, PanconvError
from ..plugins import get_manager
from .io import atomic_write_json, atomic_write_text, from_plain, load_checkpoint, save_checkpoint, to_plain


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


def _distributed_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _make_runner_class():
    from mmengine.model import MMDistributedDataParallel
    from mmengine.runner import Runner

    class PanconvRunner(Runner):
        """mmengine's Runner with atomic checkpoint writes and safe (weights-only) loading."""

        panconv_device: torch.device = torch.device("cpu")

        def dump_config(self) -> None:
            """The engine writes the merged YAML config itself (config.yaml)."""

        def wrap_model(self, model_wrapper_cfg, model):
            model = model.to(self.panconv_device)
            if not self.distributed:
                return model
            device_ids = [self.panconv_device.index or 0] if self.panconv_device.type == "cuda" else None
            return MMDistributedDataParallel(module=model, device_ids=device_ids, broadcast_buffers=False,
                                             find_unused_parameters=False)

        def load_checkpoint(self, filename, map_location="cpu", strict=False, revise_keys=((r"^module.", ""),)):
            from mmengine.runner.checkpoint import _load_checkpoint_to_model

            checkpoint = load_checkpoint(filename, map_location=self.panconv_device
                                         if map_location == "default" else map_location)
            if "message_hub" in checkpoint:
                checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])
            self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
            model = self.model.module if hasattr(self.model, "module") else self.model
            try:
                checkpoint = _load_checkpoint_to_model(model, checkpoint, strict=True, revise_keys=list(revise_keys))
            except RuntimeError as exc:
                raise CheckpointError(f"{filename}: does not fit this model: {str(exc).splitlines()[0]}") from None
            self._has_loaded = True
            return checkpoint

        def resume(self, filename, resume_optimizer=True, resume_param_scheduler=True, map_location="default"):
            super().resume(filename, resume_optimizer, resume_param_scheduler, map_location="cpu")

        def save_checkpoint(self, out_dir, filename, file_client_args=None, save_optimizer=True,
                            save_param_scheduler=True, meta=None, by_epoch=True, backend_args=None):
            from mmengine.dist import is_main_process
            from mmengine.runner.checkpoint import weights_to_cpu
            from mmengine.utils import apply_to

            if not is_main_process():
                return
            meta = dict(meta or {})
            meta.setdefault("epoch", self.epoch + 1 if by_epoch else self.epoch)
            meta.setdefault("iter", self.iter if by_epoch else self.iter + 1)
            meta.update(seed=self.seed, time=time.strftime("%Y%m%d_%H%M%S"))
            model = self.model.module if hasattr(self.model, "module") else self.model
            to_cpu = lambda tree: apply_to(tree, lambda x: hasattr(x, "cpu"), lambda x: x.cpu())  # noqa: E731
            checkpoint = {"meta": meta, "state_dict": weights_to_cpu(model.state_dict()),
                          "message_hub": to_plain(to_cpu(self.message_hub.state_dict()))}
            if save_optimizer:
                checkpoint["optimizer"] = to_cpu(self.optim_wrapper.state_dict())
            if save_param_scheduler and self.param_schedulers:
                # drop callables (OneCycleLR keeps its annealing function in its state): they are
                # rebuilt from the config, and a function cannot be loaded with weights_only=True
                checkpoint["param_schedulers"] = [{k: v for k, v in s.state_dict().items() if not callable(v)}
                                                  for s in self.param_schedulers]
            self.call_hook("before_save_checkpoint", checkpoint=checkpoint)
            save_checkpoint(checkpoint, Path(out_dir) / filename)

    return PanconvRunner


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


def build_datasets(cfg: Config) -> dict[str, Any]:
    """The datasets of every stage whose split is set (``data.splits``), built once per split."""
    from ..api.data import default_data_root

    data = cfg["data"]
    root = data.get("root")
    if root is not None:
        root = Path(root).expanduser()
    else:
        root = default_data_root()
    spec = {k: v for k, v in data.items() if k not in ("batch_size", "eval_batch_size", "num_workers", "shuffle",
                                                       "drop_last", "pin_memory", "splits", "root")}
    built: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for stage in ("train", "val", "test"):
        split = (data.get("splits") or {}).get(stage)
        if split is None:
            continue
        if split not in built:
            built[split] = build_component("dataset", {**spec, "root": root, "split": split},
                                           where=f"{cfg.filename}: data.type")
        out[stage] = built[split]
    return out


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_experiment(cfg: Config, *, work_dir: str | os.PathLike | None = None, resume: str | bool | None = None,
                   quiet: bool = False, stages: tuple[str, ...] = ("train", "test")) -> dict[str, float]:
    """Train/validate/test as the config says; return the final metrics."""
    from mmengine.evaluator import Evaluator as MMEvaluator

    from .adapters import EngineModel, EvaluatorMetric
    from .hooks import CheckpointHook, EpochSeedHook, ProgressHook

    _quiet_mmengine()
    run_cfg, train_cfg, data_cfg = cfg["run"], cfg["train"], cfg["data"]
    manager = get_manager()
    world, rank, local_rank = _distributed_env()
    launcher = run_cfg.get("launcher", "auto")
    distributed = world > 1 if launcher == "auto" else launcher == "pytorch"
    device = resolve_device(run_cfg.get("device", "auto"))
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if run_cfg.get("threads"):
        torch.set_num_threads(int(run_cfg["threads"]))

    name = Path(cfg.filename or "run").stem
    work_dir = Path(work_dir or run_cfg.get("work_dir") or Path("work_dirs") / name)
    work_dir.mkdir(parents=True, exist_ok=True)
    seed = run_cfg.get("seed")
    seed = 0 if seed is None else int(seed)

    from mmengine.runner import set_random_seed

    set_random_seed(seed, deterministic=bool(run_cfg.get("deterministic")))
    datasets = build_datasets(cfg)
    if "train" not in datasets and "train" in stages:
        raise ConfigError(f"{cfg.filename}: data.splits.train: no training split is set")
    first = datasets.get("train") or next(iter(datasets.values()))
    metadata = dict(getattr(first, "metadata", {}) or {})
    torch.manual_seed(seed)
    model = build_model(cfg["model"], metadata=metadata)
    if hasattr(model, "attach_data") and "train" in datasets:
        model.attach_data(datasets["train"])
    n_params = count_parameters(model)

    evaluators = [build_component("evaluator", spec) for spec in cfg["eval"].get("evaluators") or []]
    best = train_cfg["checkpoint"].get("best")

    batch = int(data_cfg.get("batch_size", 32))
    eval_batch = int(data_cfg.get("eval_batch_size") or batch)
    loaders = {}
    if "train" in datasets:
        loaders["train"] = _loader(datasets["train"], batch, train=True, data_cfg=data_cfg, seed=seed, world=world)
    for stage in ("val", "test"):
        if stage in datasets and evaluators:
            loaders[stage] = _loader(datasets[stage], eval_batch, train=False, data_cfg=data_cfg, seed=seed,
                                     world=world)

    amp = bool(train_cfg.get("amp"))
    optim_wrapper: dict[str, Any] = {
        "type": "AmpOptimWrapper" if amp and device.type == "cuda" else "OptimWrapper",
        "optimizer": dict(train_cfg["optimizer"]),
        "accumulative_counts": int(train_cfg.get("accumulate", 1)),
    }
    if train_cfg.get("grad_clip"):
        optim_wrapper["clip_grad"] = {"max_norm": float(train_cfg["grad_clip"])}
    if amp and device.type == "cuda":
        optim_wrapper["dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    progress = ProgressHook(work_dir, dict(cfg), manager, log_interval=int(train_cfg.get("log_interval", 50)),
                            quiet=quiet)
    greater = evaluators[0].greater_is_better if evaluators else None
    ckpt_cfg = train_cfg["checkpoint"]
    hooks = [EpochSeedHook(seed), progress,
             CheckpointHook(work_dir, ckpt_cfg.get("interval", 1), ckpt_cfg.get("max_keep", 2), best, greater)]

    resume_path = _resolve_resume(work_dir, resume) if resume else None
    Runner = _make_runner_class()
    Runner.panconv_device = device
    epochs = int(train_cfg.get("epochs", 1))
    has_val = "val" in loaders
    runner = Runner(
        model=EngineModel(model, cpu_amp=amp and device.type == "cpu"),
        work_dir=str(work_dir),
        train_dataloader=loaders.get("train"),
        val_dataloader=loaders.get("val"),
        test_dataloader=loaders.get("test"),
        train_cfg={"by_epoch": True, "max_epochs": epochs, "val_interval": int(train_cfg.get("val_interval", 1))}
        if "train" in loaders else None,
        val_cfg={} if has_val else None,
        val_evaluator=MMEvaluator([EvaluatorMetric(evaluators)]) if has_val else None,
        test_cfg={} if "test" in loaders else None,
        test_evaluator=MMEvaluator([EvaluatorMetric(evaluators)]) if "test" in loaders else None,
        optim_wrapper=optim_wrapper if "train" in loaders else None,
        param_scheduler=([dict(s) for s in train_cfg.get("scheduler") or []] or None) if "train" in loaders else None,
        default_hooks={"runtime_info": {"type": "RuntimeInfoHook"}, "timer": {"type": "IterTimerHook"},
                       "sampler_seed": {"type": "DistSamplerSeedHook"},
                       "param_scheduler": {"type": "ParamSchedulerHook"}, "logger": None, "checkpoint": None},
        custom_hooks=hooks,
        launcher="pytorch" if distributed else "none",
        env_cfg={"cudnn_benchmark": False, "dist_cfg": {"backend": "gloo" if device.type == "cpu" else "nccl"}},
        randomness={"seed": seed, "deterministic": bool(run_cfg.get("deterministic"))},
        visualizer={"type": "Visualizer", "vis_backends": []},
        log_level="ERROR",
        default_scope=None,
        # training resumes (weights, optimizer, schedulers, epoch); evaluation only loads the weights
        resume=resume_path is not None and "train" in stages,
        load_from=str(resume_path) if resume_path is not None else None,
    )
    _quiet_mmengine()

    if dist.is_initialized():
        rank = dist.get_rank()
    if rank == 0:
        atomic_write_text(work_dir / "config.yaml", cfg.to_yaml())
    manager.call_lifecycle("panconv_before_run", config=dict(cfg), work_dir=work_dir)
    started = time.time()

    if resume_path is not None and rank == 0 and not quiet:
        print(f"resuming from {resume_path}", flush=True)
    if "train" in stages and "train" in loaders:
        runner.train()
    if "test" in stages and "test" in loaders:
        if "train" in stages:
            runner._has_loaded = True  # test the weights just trained, do not reload
        runner.test()

    final = progress.final_metrics()
    if rank == 0:
        summary = {
            "config": cfg.filename, "work_dir": str(work_dir), "model": _model_name(cfg), "parameters": n_params,
            "epochs": epochs, "world_size": world, "device": str(device), "seed": seed,
            "seconds": round(time.time() - started, 2), "final_metrics": final,
            "best": {"metric": best, "value": _best_of(hooks)[0], "epoch": _best_of(hooks)[1]} if best else None,
            "versions": {"panconv": _version(), "torch": torch.__version__},
        }
        atomic_write_json(work_dir / "summary.json", summary)
        _plot(work_dir, progress.history)
        manager.call_lifecycle("panconv_after_run", config=dict(cfg), work_dir=work_dir, metrics=final)
    return final


def _best_of(hooks) -> tuple:
    from .hooks import CheckpointHook

    for hook in hooks:
        if isinstance(hook, CheckpointHook):
            return hook.best_value, hook.best_epoch
    return None, None


def _version() -> str:
    from .. import __version__

    return __version__


def _model_name(cfg: Config) -> str:
    model = cfg["model"]
    if "type" in model:
        return model["type"]
    parts = [model.get(k, {}).get("type") for k in ("backbone", "neck", "head") if model.get(k)]
    return " + ".join(p for p in parts if p)


def _resolve_resume(work_dir: Path, resume: str | bool) -> Path | None:
    if resume is True or resume == "auto":
        marker = work_dir / "last_checkpoint"
        if not marker.is_file():
            print(f"no checkpoint to resume in {work_dir}; starting from scratch", flush=True)
            return None
        path = Path(marker.read_text().strip())
        if not path.is_file():
            raise CheckpointError(f"{marker}: points to {path}, which does not exist")
        return path
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (--resume)")
    return path


def _plot(work_dir: Path, history: dict) -> None:
    """``curves.png``: training losses and every validation metric against the epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    train = history.get("train") or []
    val = history.get("val") or []
    loss_keys = sorted({k for h in train for k in h if "loss" in k})
    metric_keys = sorted({k for h in val for k in h if k != "epoch"})
    panels = (1 if loss_keys else 0) + len(metric_keys)
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
    axes = list(axes[0])
    if loss_keys:
        ax = axes.pop(0)
        for key in loss_keys:
            ax.plot([h["epoch"] for h in train if key in h], [h[key] for h in train if key in h], marker="o",
                    label=key)
        ax.set_xlabel("epoch")
        ax.set_title("training loss")
        ax.legend()
    for key, ax in zip(metric_keys, axes):
        ax.plot([h["epoch"] for h in val if key in h], [h[key] for h in val if key in h], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(f"val {key}")
    fig.tight_layout()
    from .io import atomic_write

    atomic_write(work_dir / "curves.png", lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


__all__ = ["PanconvError", "build_datasets", "count_parameters", "run_experiment"]
