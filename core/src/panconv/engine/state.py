"""A run's training state in checkpoints: mmengine's logging state as plain containers (so
checkpoints load with ``weights_only=True``), and restoring the parameter schedulers on resume.

Extending a run (``--set train.epochs=N --resume``) is a known mmengine trap: a scheduler
whose ``end`` was left to the default is built with ``end = train.epochs``, and resuming
restores the saved ``end``, so the schedule stops at the old horizon and the learning rate
goes flat. :func:`restore_schedulers` replays the schedule under both horizons; when the
epochs already run would have had the same values under the new horizon (``StepLR``,
``MultiStepLR``, ``ExponentialLR``, a warm-up with an explicit ``end``...), the schedulers
continue exactly as an uninterrupted run of N epochs would; when they would not (a cosine
or linear schedule laid out over ``train.epochs``), extending is refused with what to do.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

from ..errors import CheckpointError, ConfigError


def to_plain(value: Any) -> Any:
    """mmengine's logging state as tensors and builtin containers (``weights_only``-loadable).

    ``HistoryBuffer`` objects (which pickle bound methods) become a tagged dict; numpy arrays
    and scalars become tensors and Python numbers. :func:`from_plain` reverses it.
    """
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    if isinstance(value, HistoryBuffer):
        logs, counts = value.data
        return {"__history_buffer__": True, "log": torch.from_numpy(np.asarray(logs, dtype=np.float64)),
                "count": torch.from_numpy(np.asarray(counts, dtype=np.float64)), "max_length": int(value.max_length)}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    from mmengine.logging.history_buffer import HistoryBuffer

    if isinstance(value, dict):
        if value.get("__history_buffer__"):
            return HistoryBuffer(value["log"].tolist(), value["count"].tolist(), int(value["max_length"]))
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- schedulers

def _plain_state(scheduler) -> dict:
    """A scheduler's state without callables (those are rebuilt from the config, never saved)."""
    return {k: v for k, v in scheduler.state_dict().items() if not callable(v)}


def scheduler_states(schedulers) -> list[dict]:
    return [_plain_state(s) for s in schedulers]


def restore_schedulers(schedulers: list, states: Any, configs: list[dict], *, optimizer, path, max_epochs: int,
                       saved_max_epochs: int | None, epochs_done: int, iters_done: int,
                       epoch_length: int) -> str | None:
    """Load the saved scheduler ``states`` into ``schedulers`` (built from ``configs`` for
    ``max_epochs``); when ``train.epochs`` changed since the checkpoint, move the default
    ``end`` of the schedulers to the new horizon (or refuse). Returns a note on what changed.

    ``optimizer`` is the torch optimizer, already restored from the checkpoint.
    """
    states = states if states is not None else []
    if len(states) != len(schedulers):
        raise CheckpointError(
            f"{path}: param_schedulers: the checkpoint holds {len(states)} scheduler state(s) but train.scheduler "
            f"has {len(schedulers)}; resume with the schedulers the run started with, or start a new run from "
            f"these weights with run.load_from")
    for i, (scheduler, state, cfg) in enumerate(zip(schedulers, states, configs)):
        missing = sorted(set(_plain_state(scheduler)) - set(state))
        if missing:
            raise CheckpointError(f"{path}: param_schedulers[{i}]: does not match train.scheduler[{i}] "
                                  f"({cfg.get('type')}): missing {', '.join(missing)}")
        scheduler.load_state_dict(state)
    default_end = [i for i, cfg in enumerate(configs) if "end" not in cfg]
    if saved_max_epochs is None or saved_max_epochs == max_epochs or not default_end:
        return None

    names = sorted({s.param_name for s in schedulers})
    if any(not s.by_epoch for s in schedulers) and iters_done != epochs_done * epoch_length:
        raise ConfigError(
            f"{path}: cannot move the schedule from {saved_max_epochs} to {max_epochs} epochs: the checkpoint ran "
            f"{iters_done} iterations in {epochs_done} epochs, but an epoch now has {epoch_length}; keep "
            f"train.epochs={saved_max_epochs} and the data as they were, or give the schedulers an explicit end")
    old_optimizer, new_optimizer = _replica(optimizer), _replica(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = _build(configs, old_optimizer, saved_max_epochs, epoch_length)
        new = _build(configs, new_optimizer, max_epochs, epoch_length)
        old_trace = _trace(old, old_optimizer, names, epochs_done, epoch_length)
        new_trace = _trace(new, new_optimizer, names, epochs_done, epoch_length)
    if not _same(old_trace, new_trace):
        culprits = [i for i in default_end if _horizon_keys(old[i], new[i]) - {"end"}] or default_end
        named = ", ".join(f"train.scheduler[{i}] ({configs[i].get('type')})" for i in culprits)
        raise ConfigError(
            f"{path}: cannot extend this run from {saved_max_epochs} to {max_epochs} epochs: {named} spreads its "
            f"schedule over train.epochs, so the {epochs_done} epochs already run would have had other values; "
            f"give it an explicit end (and T_max/total_steps) in the config the run started with, or train a new "
            f"schedule from these weights with run.load_from={path}")
    for scheduler, replayed in zip(schedulers, new):
        scheduler.load_state_dict(_plain_state(replayed))
    for group, replayed in zip(optimizer.param_groups, new_optimizer.param_groups):
        for name in names:
            group[name] = replayed[name]
        if "betas" in replayed:
            group["betas"] = replayed["betas"]
    moved = ", ".join(f"train.scheduler[{i}] ({configs[i].get('type')})" for i in default_end)
    return f"train.epochs changed from {saved_max_epochs} to {max_epochs}: {moved} now end at epoch {max_epochs}"


def _replica(optimizer):
    """A one-parameter optimizer with ``optimizer``'s param groups at their initial values."""
    import torch

    groups = []
    for group in optimizer.param_groups:
        replica = {k: copy.deepcopy(v) for k, v in group.items() if k != "params" and not k.startswith("initial_")}
        for key, value in group.items():
            if key.startswith("initial_"):
                name = key[len("initial_"):]
                replica[name] = value
                if name == "momentum" and "betas" in replica:
                    replica["betas"] = (value, replica["betas"][1])
        groups.append({**replica, "params": [torch.zeros(1, requires_grad=True)]})
    replica = torch.optim.SGD(groups, lr=groups[0].get("lr", 1e-3) if groups else 1e-3)
    replica.defaults = dict(optimizer.defaults)  # momentum schedulers read momentum/betas from the defaults
    return replica


def _build(configs: list[dict], optimizer, max_epochs: int, epoch_length: int) -> list:
    """The schedulers as mmengine's Runner builds them (default ``end``: the train loop's length)."""
    from mmengine.registry import PARAM_SCHEDULERS

    built = []
    for cfg in configs:
        cfg = copy.deepcopy(dict(cfg))
        cfg.setdefault("end", max_epochs if cfg.get("by_epoch", True) else max_epochs * epoch_length)
        built.append(PARAM_SCHEDULERS.build(cfg, default_args={"optimizer": optimizer, "epoch_length": epoch_length}))
    return built


def _trace(schedulers: list, optimizer, names: list[str], epochs: int, epoch_length: int) -> list[tuple]:
    """The scheduled values every training iteration used, stepping as ParamSchedulerHook does."""
    trace = []
    for _ in range(epochs):
        for _ in range(epoch_length):
            trace.append(tuple(float(g[n]) for g in optimizer.param_groups for n in names if n in g))
            for scheduler in schedulers:
                if not scheduler.by_epoch:
                    scheduler.step()
        for scheduler in schedulers:
            if scheduler.by_epoch:
                scheduler.step()
    return trace


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-15)
                                                              for u, v in zip(x, y)) for x, y in zip(a, b))


def _horizon_keys(old, new) -> set[str]:
    """The state keys two builds of one scheduler (old and new horizon) differ in."""
    a, b = _plain_state(old), _plain_state(new)
    return {k for k in a.keys() | b.keys() if k not in ("base_values", "_last_value") and a.get(k) != b.get(k)}
