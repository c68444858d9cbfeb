"""Checks of models, backbones, necks and heads: every one of them, whatever it declares.

Size variants (``register("convnext_tiny", ..., args=dict(...))``) get :func:`check_build_on_meta`
instead: the behaviour is checked once, on the registered class and its tiny ``example_config()``.
"""

from __future__ import annotations

import fnmatch
import inspect
import io
import math

import torch
import yaml

from ...api.modules import feature_info_of
from ...registry import Variant
from .base import (
    MODEL_KINDS,
    Check,
    build,
    check,
    close,
    component_class,
    example_config,
    example_inputs,
    fail,
    requires_grad,
    same_values,
    seed_everything,
    tensors,
)

#: buffers a forward pass in train mode may update: the running statistics of normalisation layers
RUNNING_STATISTICS = ("running_*", "num_batches_tracked")


def scalar_objective(entry, module, inputs, batch):
    """A scalar to backpropagate: the loss for models/heads, a sum of means for backbones/necks."""
    outputs = module(inputs)
    if entry.kind in ("model", "head"):
        losses = module.loss(outputs, batch)
        if not isinstance(losses, dict) or not losses:
            fail(entry, "loss", f"loss() must return a non-empty dict, got {type(losses).__name__}")
        total = sum(v for k, v in losses.items() if "loss" in k)
        if not isinstance(total, torch.Tensor):
            fail(entry, "loss", f"no key containing 'loss' in {sorted(losses)}")
        return outputs, losses, total
    floats = [t for t in tensors(outputs) if t.is_floating_point()]
    return outputs, {}, sum(t.float().mean() for t in floats)


@check(*MODEL_KINDS, doc="builds from example_config() (the registered defaults scaled down)")
def check_build(entry):
    module = build(entry)
    if not isinstance(module, torch.nn.Module):
        fail(entry, "build", f"the factory returned {type(module).__name__}, not an nn.Module")


@check(*MODEL_KINDS, doc="every name in metadata_inputs is a constructor parameter (the engine fills only those)")
def check_metadata_inputs(entry):
    factory = entry.load()
    declared = getattr(factory, "metadata_inputs", ()) or ()
    if isinstance(declared, str) or not all(isinstance(name, str) for name in declared):
        fail(entry, "metadata_inputs", f"metadata_inputs must be a tuple of parameter names, got {declared!r}")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [name for name in declared if name not in params]
    if unknown:
        fail(entry, "metadata_inputs", f"declares {', '.join(unknown)}, which the constructor does not take")


@check(*MODEL_KINDS, doc="forward and backward on example_inputs(); loss finite")
def check_forward_backward(entry):
    module = build(entry)
    module.train()
    inputs, batch = example_inputs(entry, module)
    _, losses, total = scalar_objective(entry, module, requires_grad(inputs), batch)
    for key, value in losses.items():
        if not torch.isfinite(torch.as_tensor(value)).all():
            fail(entry, "forward_backward", f"loss '{key}' is not finite ({value})")
    if not torch.isfinite(total):
        fail(entry, "forward_backward", f"the objective is not finite ({total})")
    total.backward()


@check(*MODEL_KINDS, doc="every parameter gets a gradient (unless listed in frozen_parameters)")
def check_all_parameters_get_gradients(entry):
    module = build(entry)
    module.train()
    inputs, batch = example_inputs(entry, module)
    _, _, total = scalar_objective(entry, module, requires_grad(inputs), batch)
    total.backward()
    frozen = tuple(getattr(module, "frozen_parameters", ()))
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and p.grad is None and not n.startswith(frozen)]
    if missing:
        more = " ..." if len(missing) > 5 else ""
        fail(entry, "all_parameters_get_gradients",
             f"no gradient for {', '.join(missing[:5])}{more} (declare frozen_parameters if intended)")


@check(*MODEL_KINDS, doc="forward (eval and train mode) changes no parameter or buffer, except the running "
                         "statistics of normalisation layers in train mode (running_*, num_batches_tracked, "
                         "and the patterns in running_buffers)")
def check_forward_does_not_mutate(entry):
    module = build(entry)
    inputs, _ = example_inputs(entry, module)  # may prepare the instance (attach example data) first
    running = RUNNING_STATISTICS + tuple(getattr(module, "running_buffers", ()) or ())
    for train in (False, True):
        module.train(train)
        before = _state(module)
        with torch.no_grad():
            module(inputs)
        after = _state(module)
        changed = sorted(set(before) ^ set(after)) + [n for n in before if n in after
                                                        and not same_values(before[n], after[n])]
        if train:
            changed = [n for n in changed if not _is_running_statistic(n, running)]
        if changed:
            more = " ..." if len(changed) > 5 else ""
            fail(entry, "forward_does_not_mutate",
                 f"forward in {'train' if train else 'eval'} mode changed {', '.join(changed[:5])}{more}"
                 f"{'' if train else ' (in eval mode nothing may change)'}; declare running statistics "
                 f"in running_buffers")


def _state(module) -> dict[str, torch.Tensor]:
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return {name: tensor.detach().clone() for name, tensor in named if tensor is not None}


def _is_running_statistic(name: str, patterns) -> bool:
    last = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(last, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


@check("backbone", "neck", doc="feature_info matches the real outputs (count, channels, reduction)")
def check_feature_info(entry):
    module = build(entry)
    module.eval()
    inputs, _ = example_inputs(entry, module)
    with torch.no_grad():
        outputs = module(inputs)
    info = feature_info_of(module)
    if not isinstance(outputs, (list, tuple)):
        fail(entry, "feature_info", f"forward must return a list of tensors, got {type(outputs).__name__}")
    if len(outputs) != len(info):
        fail(entry, "feature_info", f"declares {len(info)} outputs, returns {len(outputs)}")
    reference = inputs if isinstance(inputs, torch.Tensor) else None
    for i, (tensor, fi) in enumerate(zip(outputs, info)):
        if tensor.dim() < 2 or tensor.shape[1] != fi.channels:
            fail(entry, "feature_info", f"output {i} has shape {tuple(tensor.shape)}, feature_info says "
                                        f"{fi.channels} channels")
        if reference is not None and tensor.dim() >= 3 and reference.dim() == tensor.dim():
            _check_reduction(entry, module, reference, i, tensor, fi)


def _check_reduction(entry, module, reference, i, tensor, fi):
    size_in, size_out = reference.shape[-1], tensor.shape[-1]
    if size_out in (math.ceil(size_in / fi.reduction), size_in // fi.reduction):
        return
    # unpadded ("valid") convolutions shrink more: then growing the input by 2 strides must
    # grow this output by exactly 2
    grown = torch.nn.functional.pad(reference, (fi.reduction, fi.reduction))
    try:
        with torch.no_grad():
            size_grown = module(grown)[i].shape[-1]
    except Exception:  # noqa: BLE001
        size_grown = None
    if size_grown != size_out + 2:
        fail(entry, "feature_info", f"output {i}: input size {size_in} -> {size_out}, but feature_info "
                                    f"says reduction {fi.reduction}")


@check("model", "head", doc="predict() gives one prediction per example")
def check_predict(entry):
    module = build(entry)
    module.eval()
    inputs, batch = example_inputs(entry, module, batch_size=3)
    with torch.no_grad():
        predictions = module.predict(module(inputs), batch)
    found = tensors(predictions)
    if isinstance(predictions, (list, tuple)) and not found:
        if len(predictions) != 3:
            fail(entry, "predict", f"expected 3 predictions for a batch of 3, got {len(predictions)}")
        return
    if not found:
        fail(entry, "predict", f"predict() returned {type(predictions).__name__} with no tensor")
    if found[0].shape[0] != 3:
        fail(entry, "predict", f"expected a leading batch dimension of 3, got shape {tuple(found[0].shape)}")


def _same_outputs(entry, a, b, atol: float = 1e-6) -> bool:
    """Eval-mode outputs of two instances on the same example input."""
    a.eval()
    b.eval()
    seed_everything(5)
    inputs, _ = example_inputs(entry, a)
    seed_everything(5)
    example_inputs(entry, b)  # example_inputs may prepare its instance (a graph model attaches its example data)
    with torch.no_grad():
        return close(a(inputs), b(inputs), atol=atol)


@check(*MODEL_KINDS, doc="state_dict save/load into a fresh instance gives identical outputs")
def check_state_dict_round_trip(entry):
    a, b = build(entry, seed=0), build(entry, seed=1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    if not _same_outputs(entry, a, b):
        fail(entry, "state_dict_round_trip", "outputs differ after loading the state dict")


@check(*MODEL_KINDS, doc="config round-trip: example_config() dumped to YAML and loaded builds a module with the "
                         "same parameter and buffer values (same seed) and the same outputs")
def check_config_round_trip(entry):
    config = example_config(entry.load())
    try:
        dumped = yaml.safe_dump({"type": entry.qualname, **config})
    except yaml.YAMLError as exc:
        fail(entry, "config_round_trip", f"example_config() is not YAML-serialisable: {exc}")
    loaded = yaml.safe_load(dumped)
    loaded.pop("type")
    a, b = build(entry, seed=0, config=config), build(entry, seed=0, config=loaded)
    sa, sb = a.state_dict(), b.state_dict()
    if sorted(sa) != sorted(sb):
        differ = sorted(set(sa) ^ set(sb))
        fail(entry, "config_round_trip", f"the rebuilt module has different entries: {', '.join(differ[:5])}")
    differ = [k for k in sa if not same_values(sa[k], sb[k])]
    if differ:
        fail(entry, "config_round_trip", f"the rebuilt module differs in {', '.join(differ[:5])} (shape, dtype "
                                         f"or values): a value does not survive YAML (a tuple read back as a "
                                         f"list, a float as an int?)")
    if not _same_outputs(entry, a, b):
        fail(entry, "config_round_trip", "the rebuilt module gives different outputs")


@check(*MODEL_KINDS, doc="same seed, same weights and same outputs")
def check_determinism(entry):
    outs = []
    for _ in range(2):
        module = build(entry, seed=0)
        module.eval()
        seed_everything(7)
        inputs, _ = example_inputs(entry, module)
        with torch.no_grad():
            outs.append(module(inputs))
    if not close(outs[0], outs[1], atol=0, rtol=0):
        fail(entry, "determinism", "two builds with the same seed give different outputs")


# --------------------------------------------------------------------------- size variants

def is_size_variant(entry) -> bool:
    """A registered variant (``args=dict(...)``), or a factory function without an ``example_config`` of its own."""
    target = entry.load()
    return isinstance(target, Variant) or (inspect.isfunction(target) and not hasattr(target, "example_config"))


def check_build_on_meta(entry):
    """The size variant builds (on the meta device: no memory, no time) into a registered class."""
    from ...plugins import get_manager

    try:
        with torch.device("meta"):
            module = entry.load()()
    except (NotImplementedError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(entry, "build_on_meta", f"does not build on the meta device ({first[:160]}): a constructor that "
                                     f"computes constant tables from their values (filterbanks, index tables) "
                                     f"does it on the CPU, inside `with torch.device('cpu'):`")
    if not isinstance(module, torch.nn.Module):
        fail(entry, "build_on_meta", f"the factory returned {type(module).__name__}, not an nn.Module")
    classes = {component_class(e) for e in get_manager().entries([entry.kind])
               if e.plugin == entry.plugin and not is_size_variant(e)}
    if type(module) not in classes:
        fail(entry, "build_on_meta", f"returns {type(module).__name__}, which {entry.plugin} does not register "
                                     f"as a {entry.kind}: the kit checks behaviour on the registered class")


SIZE_VARIANT_CHECKS = {"build_on_meta": Check(
    "build_on_meta", check_build_on_meta,
    "a size variant (registered with args=dict(...)) builds on the meta device into a class that is itself "
    "registered and fully checked")}
