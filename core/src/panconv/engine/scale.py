"""Training models bigger than one process holds: activation checkpointing and sharded data parallel.

Both work for every model, with no change to its code, because they act on its *units*: the
elements of its outermost ``nn.ModuleList``\\ s (the stages of a hierarchical backbone, the blocks of
a sequence model), or the modules a config names.

* ``train.activation_checkpointing: true`` (or a list of module-name patterns) recomputes each
  unit's activations in the backward pass instead of keeping them (``torch.utils.checkpoint``,
  non-reentrant): memory of one unit instead of all, for one more forward.
* ``run.strategy: fsdp`` under ``torchrun`` shards parameters, gradients and optimizer state over
  the processes with PyTorch's FSDP2 (``fully_shard``): each unit is one all-gather/reduce-scatter
  group, then the whole model (ZeRO-3, as the Swin V2 paper trains its 3 B model). Checkpoints are
  gathered into the ordinary full state dict, so a run saved sharded resumes, evaluates and
  fine-tunes like any other (with or without sharding, on any number of processes).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

STRATEGIES = ("ddp", "fsdp")


def units(model: nn.Module, patterns: Iterable[str] | None = None) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of the model's units, outermost first, never nested.

    Without ``patterns``: the elements of every outermost ``nn.ModuleList`` (a ModuleList inside a
    unit is not descended into). With ``patterns``: the outermost modules whose qualified name
    matches one of them (``fnmatch``: ``backbone.stages.*``, ``*.blocks.?``).
    """
    patterns = list(patterns) if patterns is not None else None
    found: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            qualified = f"{prefix}{name}"
            if patterns is None:
                if isinstance(child, nn.ModuleList):
                    found.extend((f"{qualified}.{i}", unit) for i, unit in enumerate(child))
                    continue
            elif any(fnmatch.fnmatchcase(qualified, p) for p in patterns):
                found.append((qualified, child))
                continue
            visit(qualified + ".", child)

    visit("", model)
    return found


def _checkpointed_forward(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.__wrapped__ = forward
    return run


def apply_activation_checkpointing(model: nn.Module, setting: bool | list[str]) -> list[str]:
    """Checkpoint the units ``setting`` selects (``True``: the default units; a list: patterns).

    The unit's ``forward`` is wrapped in place (its parameters, names and state dict do not
    change, so checkpoints are interchangeable with unwrapped runs). Returns the unit names;
    a pattern list that selects nothing is an error (a silent no-op would look like a saving).
    """
    if setting is False or setting is None:
        return []
    patterns = None if setting is True else list(setting)
    chosen = units(model, patterns)
    if not chosen:
        what = f"no module matches {patterns}" if patterns else "the model has no nn.ModuleList of blocks"
        raise ValueError(f"train.activation_checkpointing: {what}; name the units, e.g. ['backbone.stages.*']")
    for _, unit in chosen:
        if not getattr(unit.forward, "__wrapped__", None):
            unit.forward = _checkpointed_forward(unit.forward)
    return [name for name, _ in chosen]


def apply_fsdp(model: nn.Module, device: torch.device) -> list[str]:
    """Shard ``model`` over the default process group with FSDP2: each unit, then the root.

    Returns the unit names. The module is changed in place (``fully_shard`` turns its
    parameters into DTensors); the optimizer must be built afterwards, which mmengine's Runner
    does.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    chosen = units(model)
    for _, unit in chosen:
        if any(p.requires_grad for p in unit.parameters()):
            fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return [name for name, _ in chosen]


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`apply_fsdp`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """The full (unsharded) model and optimizer state dicts of a sharded model, on the CPU of
    rank 0 (empty on the other ranks). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    return weights, optim


def optimizer_state_by_name(state: dict, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """An optimizer state dict keyed by parameter position (``optimizer.state_dict()``, what an
    unsharded run saves) re-keyed by parameter name, the form sharded loading takes. Positions
    follow this optimizer's groups, which the same config builds in the same order."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved = [i for group in state["param_groups"] for i in group["params"]]
    if len(saved) != len(order):
        raise ValueError(f"the checkpoint's optimizer holds {len(saved)} parameters, this model's {len(order)}")
    name_of = dict(zip(saved, order))
    return {"state": {name_of[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [name_of[i] for i in g["params"]]} for g in state["param_groups"]]}


def is_by_name(state: dict) -> bool:
    """Whether an optimizer state dict is keyed by parameter name (saved by a sharded run)."""
    groups = state.get("param_groups") or []
    return any(isinstance(p, str) for g in groups for p in g.get("params", []))


def load_full_state_dicts(model: nn.Module, weights: dict | None, optimizer: torch.optim.Optimizer | None = None,
                          optim_state: dict | None = None) -> None:
    """Load full state dicts (as :func:`full_state_dicts` wrote them) into a sharded model and
    its optimizer; every rank passes the same full dicts."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    if weights is not None:
        set_model_state_dict(model, weights, options=options)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=options)
