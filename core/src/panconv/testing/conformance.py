"""The conformance kit: checks that every registered component follows the panconv API.

Like scikit-learn's ``check_estimator``: each check builds a component from its declared
tiny example (``example_config()``, ``example_inputs()``, ``example()``) and asserts one
property of the contract. A component opts out of a check only by declaring a reason in
``conformance_skips = {"check_name": "reason"}``; the report shows it.

Size variants — registered factory *functions* such as ``convnext_tiny`` — are built on the
meta device (instant, no memory) and must return a class the plugin also registers: the
behavioural checks run on that class from its tiny ``example_config()``, not on every
paper-sized model. A factory that should be checked fully declares ``example_config``.

Use it from pytest (see :mod:`panconv.testing.pytest_plugin`) or directly::

    from panconv.testing import check_plugin
    report = check_plugin("graph")          # list of CheckResult
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml


class ConformanceError(AssertionError):
    """A component broke the contract; the message names the component and the check."""


class SkipCheck(Exception):
    """The check does not apply (declared opt-out, or a backend missing here)."""


@dataclass
class CheckResult:
    component: str
    check: str
    status: str  # passed | failed | skipped
    message: str = ""
    seconds: float = 0.0


CHECKS: dict[str, dict[str, tuple[Callable, str]]] = {}
MODEL_KINDS = ("model", "backbone", "neck", "head")


def check(*kinds: str, doc: str):
    def decorate(fn):
        for kind in kinds:
            CHECKS.setdefault(kind, {})[fn.__name__.removeprefix("check_")] = (fn, doc)
        return fn

    return decorate


# --------------------------------------------------------------------------- helpers

def _fail(entry, name: str, message: str):
    raise ConformanceError(f"{entry.qualname}: {name}: {message}")


def _seed(seed: int = 0) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _config(factory) -> dict:
    config = getattr(factory, "example_config", None)
    return dict(config()) if callable(config) else {}


def _build(entry, seed: int = 0, config: dict | None = None):
    """Build a model-kind component from its example config (necks/heads get example_in_features)."""
    factory = entry.load()
    config = _config(factory) if config is None else config
    _seed(seed)
    if entry.kind in ("neck", "head"):
        in_features = factory.example_in_features()
        return factory(in_features, **config)
    return factory(**config)


def _inputs(entry, module, batch_size: int = 2):
    """(forward input, batch for loss/predict) of a built component."""
    import torch

    if entry.kind == "backbone":
        return module.example_inputs(batch_size), None
    if entry.kind == "model":
        batch = module.example_inputs(batch_size)
        return batch, batch
    if entry.kind == "neck":
        if hasattr(module, "example_inputs"):
            return module.example_inputs(batch_size), None
        return [torch.randn(batch_size, f.channels, max(1, 64 // f.reduction), max(1, 64 // f.reduction))
                for f in module.in_features], None
    if entry.kind == "head":
        if not hasattr(module, "example_inputs"):
            raise ConformanceError(f"{entry.qualname}: example: declares no example_inputs(batch_size) -> "
                                   f"(features, batch)")
        features, batch = module.example_inputs(batch_size)
        return features, batch
    raise AssertionError(entry.kind)


def _forward(entry, module, inputs):
    return module(inputs)


def _requires_grad(inputs):
    """Float input tensors as gradient leaves, so parameter-free components can backpropagate too."""
    for tensor in _tensors(inputs):
        if tensor.is_floating_point() and tensor.is_leaf:
            tensor.requires_grad_(True)
    return inputs


def _tensors(value) -> list:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _scalar_objective(entry, module, inputs, batch):
    """A scalar to backpropagate: the loss for models/heads, a sum of means for backbones/necks."""
    outputs = _forward(entry, module, inputs)
    if entry.kind in ("model", "head"):
        losses = module.loss(outputs, batch)
        if not isinstance(losses, dict) or not losses:
            _fail(entry, "loss", f"loss() must return a non-empty dict, got {type(losses).__name__}")
        total = sum(v for k, v in losses.items() if "loss" in k)
        if not isinstance(total, __import__("torch").Tensor):
            _fail(entry, "loss", f"no key containing 'loss' in {sorted(losses)}")
        return outputs, losses, total
    tensors = [t for t in _tensors(outputs) if t.is_floating_point()]
    return outputs, {}, sum(t.float().mean() for t in tensors)


def _close(a, b, atol=1e-6, rtol=1e-5) -> bool:
    import torch

    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(x.shape == y.shape and torch.allclose(x.float(), y.float(), atol=atol, rtol=rtol,
                                                                           equal_nan=True) for x, y in zip(ta, tb))


# --------------------------------------------------------------------------- model checks

@check("model", "backbone", "neck", "head", doc="builds from example_config() (the registered defaults scaled down)")
def check_build(entry):
    module = _build(entry)
    import torch

    if not isinstance(module, torch.nn.Module):
        _fail(entry, "build", f"the factory returned {type(module).__name__}, not an nn.Module")


@check("model", "backbone", "neck", "head", doc="forward and backward on example_inputs(); loss finite")
def check_forward_backward(entry):
    import torch

    module = _build(entry)
    module.train()
    inputs, batch = _inputs(entry, module)
    outputs, losses, total = _scalar_objective(entry, module, _requires_grad(inputs), batch)
    for key, value in losses.items():
        if not torch.isfinite(torch.as_tensor(value)).all():
            _fail(entry, "forward_backward", f"loss '{key}' is not finite ({value})")
    if not torch.isfinite(total):
        _fail(entry, "forward_backward", f"the objective is not finite ({total})")
    total.backward()


@check("model", "backbone", "neck", "head", doc="every parameter gets a gradient (unless listed in frozen_parameters)")
def check_all_parameters_get_gradients(entry):
    module = _build(entry)
    module.train()
    inputs, batch = _inputs(entry, module)
    _, _, total = _scalar_objective(entry, module, _requires_grad(inputs), batch)
    total.backward()
    frozen = tuple(getattr(module, "frozen_parameters", ()))
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and p.grad is None and not n.startswith(frozen)]
    if missing:
        _fail(entry, "all_parameters_get_gradients", f"no gradient for {', '.join(missing[:5])}"
                                                     f"{' ...' if len(missing) > 5 else ''} (declare frozen_parameters "
                                                     f"if intended)")


@check("backbone", "neck", doc="feature_info matches the real outputs (count, channels, reduction)")
def check_feature_info(entry):
    import torch

    from ..api.modules import feature_info_of

    module = _build(entry)
    module.eval()
    inputs, _ = _inputs(entry, module)
    with torch.no_grad():
        outputs = module(inputs)
    info = feature_info_of(module)
    if not isinstance(outputs, (list, tuple)):
        _fail(entry, "feature_info", f"forward must return a list of tensors, got {type(outputs).__name__}")
    if len(outputs) != len(info):
        _fail(entry, "feature_info", f"declares {len(info)} outputs, returns {len(outputs)}")
    reference = inputs if isinstance(inputs, torch.Tensor) else None
    for i, (tensor, fi) in enumerate(zip(outputs, info)):
        if tensor.dim() < 2 or tensor.shape[1] != fi.channels:
            _fail(entry, "feature_info", f"output {i} has shape {tuple(tensor.shape)}, feature_info says "
                                         f"{fi.channels} channels")
        if reference is not None and tensor.dim() >= 3 and reference.dim() == tensor.dim():
            size_in, size_out = reference.shape[-1], tensor.shape[-1]
            if size_out in (math.ceil(size_in / fi.reduction), size_in // fi.reduction):
                continue
            # unpadded ("valid") convolutions shrink more: then growing the input by 2 strides
            # must grow this output by exactly 2
            grown = torch.nn.functional.pad(reference, (fi.reduction, fi.reduction))
            try:
                with torch.no_grad():
                    size_grown = module(grown)[i].shape[-1]
            except Exception:  # noqa: BLE001
                size_grown = None
            if size_grown != size_out + 2:
                _fail(entry, "feature_info", f"output {i}: input size {size_in} -> {size_out}, but feature_info "
                                             f"says reduction {fi.reduction}")


@check("model", "head", doc="predict() gives one prediction per example")
def check_predict(entry):
    import torch

    module = _build(entry)
    module.eval()
    inputs, batch = _inputs(entry, module, batch_size=3)
    with torch.no_grad():
        predictions = module.predict(_forward(entry, module, inputs), batch)
    tensors = _tensors(predictions)
    if isinstance(predictions, (list, tuple)) and not tensors:
        if len(predictions) != 3:
            _fail(entry, "predict", f"expected 3 predictions for a batch of 3, got {len(predictions)}")
        return
    if not tensors:
        _fail(entry, "predict", f"predict() returned {type(predictions).__name__} with no tensor")
    if tensors[0].shape[0] != 3:
        _fail(entry, "predict", f"expected a leading batch dimension of 3, got shape {tuple(tensors[0].shape)}")


@check("model", "backbone", "neck", "head", doc="state_dict save/load into a fresh instance gives identical outputs")
def check_state_dict_round_trip(entry):
    import io

    import torch

    a = _build(entry, seed=0)
    b = _build(entry, seed=1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    a.eval()
    b.eval()
    _seed(5)
    inputs, _ = _inputs(entry, a)
    _seed(5)
    _inputs(entry, b)  # example_inputs may prepare its instance (a graph model attaches its example data)
    with torch.no_grad():
        if not _close(_forward(entry, a, inputs), _forward(entry, b, inputs), atol=1e-6):
            _fail(entry, "state_dict_round_trip", "outputs differ after loading the state dict")


@check("model", "backbone", "neck", "head", doc="config round-trip: build -> dump YAML -> build gives the same module")
def check_config_round_trip(entry):
    factory = entry.load()
    config = _config(factory)
    try:
        dumped = yaml.safe_dump({"type": entry.qualname, **config})
    except yaml.YAMLError as exc:
        _fail(entry, "config_round_trip", f"example_config() is not YAML-serialisable: {exc}")
    loaded = yaml.safe_load(dumped)
    loaded.pop("type")
    a, b = _build(entry, seed=0, config=config), _build(entry, seed=0, config=loaded)
    sa, sb = a.state_dict(), b.state_dict()
    if {k: tuple(v.shape) for k, v in sa.items()} != {k: tuple(v.shape) for k, v in sb.items()}:
        _fail(entry, "config_round_trip", "the rebuilt module has different parameters")


@check("model", "backbone", "neck", "head", doc="same seed, same weights and same outputs")
def check_determinism(entry):
    import torch

    outs = []
    for _ in range(2):
        module = _build(entry, seed=0)
        module.eval()
        _seed(7)
        inputs, _ = _inputs(entry, module)
        with torch.no_grad():
            outs.append(_forward(entry, module, inputs))
    if not _close(outs[0], outs[1], atol=0, rtol=0):
        _fail(entry, "determinism", "two builds with the same seed give different outputs")


# --------------------------------------------------------------------------- dataset checks

@contextlib.contextmanager
def _dataset(entry, broken: bool = False):
    """Yield ``(factory, make, tmp)`` for the entry's (broken) example; ``tmp`` is removed afterwards."""
    factory = entry.load()
    with tempfile.TemporaryDirectory(prefix="panconv-kit-") as name:
        tmp = Path(name)
        method = "broken_example" if broken else "example"
        try:
            kwargs = getattr(factory, method)(tmp)
        except NotImplementedError as exc:
            _fail(entry, method, str(exc))
        split = kwargs.pop("split", factory.splits[0])
        root = kwargs.pop("root", tmp)
        yield factory, (lambda: factory(root=root, split=split, **kwargs)), tmp


@check("dataset", doc="the declared tiny example builds and is not empty")
def check_dataset_length(entry):
    with _dataset(entry) as (_, make, _):
        dataset = make()
        try:
            n = len(dataset)
        except TypeError:
            return  # iterable dataset
    if n <= 0:
        _fail(entry, "dataset_length", "the example dataset is empty")


@check("dataset", doc="items are dicts; collate keeps every field and batches them")
def check_collate(entry):
    import torch

    with _dataset(entry) as (_, make, _):  # items are read while the example files exist
        dataset = make()
        items = [dataset[i] for i in range(min(2, len(dataset)))] if hasattr(dataset, "__getitem__") else \
            [x for _, x in zip(range(2), iter(dataset))]
    if not all(isinstance(item, dict) for item in items):
        _fail(entry, "collate", f"items must be dicts, got {type(items[0]).__name__}")
    batch = dataset.collate(items)
    if not isinstance(batch, dict):
        _fail(entry, "collate", f"collate must return a dict, got {type(batch).__name__}")
    dropped = sorted(set(items[0]) - set(batch))
    if dropped:
        _fail(entry, "collate", f"collate drops field(s) {', '.join(dropped)}")
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] != len(items) \
                and isinstance(items[0].get(key), torch.Tensor) and items[0][key].dim() == 0:
            _fail(entry, "collate", f"field '{key}' has leading size {value.shape[0]} for {len(items)} items")


@check("dataset", doc="metadata provides every key declared in metadata_keys")
def check_metadata(entry):
    with _dataset(entry) as (factory, make, _):
        metadata = make().metadata
    if not isinstance(metadata, dict):
        _fail(entry, "metadata", f"metadata must be a dict, got {type(metadata).__name__}")
    missing = [k for k in getattr(factory, "metadata_keys", ()) if k not in metadata]
    if missing:
        _fail(entry, "metadata", f"metadata_keys declares {', '.join(missing)} but metadata lacks them")


@check("dataset", doc="a malformed file raises DataError naming the file")
def check_malformed_file(entry):
    from ..errors import DataError

    with _dataset(entry, broken=True) as (_, make, tmp):
        try:
            make()
        except DataError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001
            _fail(entry, "malformed_file", f"raised {type(exc).__name__} instead of DataError: {exc}")
        else:
            _fail(entry, "malformed_file", "building from broken_example() did not raise")
        names = [p.name for p in tmp.rglob("*")]
    if str(tmp) not in str(error) and not any(name in str(error) for name in names):
        _fail(entry, "malformed_file", f"the DataError does not name the file: {error}")
    if "\n" in str(error).strip():
        _fail(entry, "malformed_file", "the DataError message is not one line")


# --------------------------------------------------------------------------- evaluator checks

def _evaluator_example(entry):
    factory = entry.load()
    try:
        kwargs, batches, expected = factory.example()
    except NotImplementedError as exc:
        _fail(entry, "example", str(exc))
    return factory, kwargs, batches, expected


@check("evaluator", doc="known inputs give the declared metric values")
def check_known_values(entry):
    factory, kwargs, batches, expected = _evaluator_example(entry)
    evaluator = factory(**kwargs)
    for batch, outputs in batches:
        evaluator.process(batch, outputs)
    got = evaluator.compute()
    for key, value in expected.items():
        if key not in got:
            _fail(entry, "known_values", f"metric '{key}' missing; got {sorted(got)}")
        if not math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9):
            _fail(entry, "known_values", f"{key} = {got[key]!r}, expected {value!r}")


@check("evaluator", doc="merging partial results of two workers equals the whole (the DDP contract)")
def check_merge(entry):
    factory, kwargs, batches, _ = _evaluator_example(entry)
    if len(batches) < 2:
        _fail(entry, "merge", "example() must give at least two batches to test merging")
    whole = factory(**kwargs)
    for batch, outputs in batches:
        whole.process(batch, outputs)
    parts = [factory(**kwargs), factory(**kwargs)]
    for i, (batch, outputs) in enumerate(batches):
        parts[i % 2].process(batch, outputs)
    merged = whole.compute_metrics(copy.deepcopy(parts[1].results) + copy.deepcopy(parts[0].results))
    for key, value in whole.compute().items():
        if not math.isclose(float(merged[key]), value, rel_tol=1e-6, abs_tol=1e-9):
            _fail(entry, "merge", f"{key}: merged {merged[key]!r} != whole {value!r}")


# --------------------------------------------------------------------------- kernel checks

def _kernel(entry):
    from ..api.kernel import Kernel

    obj = entry.load()
    kernel = obj if isinstance(obj, Kernel) else obj()
    if not isinstance(kernel, Kernel):
        _fail(entry, "kernel", f"expected a panconv.api.Kernel, got {type(kernel).__name__}")
    return kernel


@check("kernel", doc="every accelerated implementation equals the reference within its tolerance")
def check_implementations_match_reference(entry):
    import torch

    from ..api.kernel import backend_available

    kernel = _kernel(entry)
    if kernel.make_inputs is None:
        _fail(entry, "implementations_match_reference", "declares no make_inputs(device, dtype, seed)")
    ran = 0
    for impl in kernel.implementations:
        for device in ("cuda", "cpu"):
            if device == "cuda" and not torch.cuda.is_available():
                continue
            if not backend_available(impl.backend, torch.device(device)):
                continue
            for dtype in impl.dtypes or (torch.float32,):
                for seed in (0, 1):
                    args, kwargs = kernel.make_inputs(torch.device(device), dtype, seed)
                    if impl.supports is not None and not impl.supports(*args, **kwargs):
                        continue
                    got, want = impl.fn(*args, **kwargs), kernel.reference(*args, **kwargs)
                    if not _close(got, want, atol=impl.atol, rtol=impl.rtol):
                        diff = max((a.float() - b.float()).abs().max().item()
                                   for a, b in zip(_tensors(got), _tensors(want)))
                        _fail(entry, "implementations_match_reference",
                              f"{impl.name} on {device}/{dtype}: max abs diff {diff:.3g} > atol {impl.atol}")
                    ran += 1
            break
    if kernel.implementations and not ran:
        raise SkipCheck("no accelerated backend can run here (Triton needs CUDA or TRITON_INTERPRET=1)")


# --------------------------------------------------------------------------- size variants

def is_size_variant(entry) -> bool:
    """A registered factory *function* (``convnext_tiny``) without an ``example_config`` of its own."""
    import inspect

    target = entry.load()
    return inspect.isfunction(target) and not hasattr(target, "example_config")


def check_build_on_meta(entry):
    """The size variant builds (on the meta device: no memory, no time) into a registered class."""
    import torch

    factory = entry.load()
    with torch.device("meta"):
        module = factory()
    if not isinstance(module, torch.nn.Module):
        _fail(entry, "build_on_meta", f"the factory returned {type(module).__name__}, not an nn.Module")
    import inspect

    from ..plugins import get_manager

    classes = {target for e in get_manager().entries([entry.kind]) if e.plugin == entry.plugin
               for target in [e.load()] if inspect.isclass(target)}
    if type(module) not in classes:
        _fail(entry, "build_on_meta", f"returns {type(module).__name__}, which {entry.plugin} does not register "
                                      f"as a {entry.kind}: the kit checks behaviour on the registered class")


SIZE_VARIANT_CHECKS = {"build_on_meta": (check_build_on_meta, "a size variant (a registered factory function) builds "
                                         "on the meta device into a class that is itself registered and fully checked")}


# --------------------------------------------------------------------------- running

def checks_for(entry) -> dict[str, tuple[Callable, str]]:
    if entry.kind in MODEL_KINDS and is_size_variant(entry):
        return SIZE_VARIANT_CHECKS
    return CHECKS.get(entry.kind, {})


def run_check(entry, name: str) -> CheckResult:
    fn, _ = checks_for(entry)[name]
    skips = getattr(entry.load(), "conformance_skips", {}) or {}
    start = time.perf_counter()
    if name in skips:
        return CheckResult(entry.qualname, name, "skipped", f"declared: {skips[name]}")
    try:
        fn(entry)
    except SkipCheck as exc:
        return CheckResult(entry.qualname, name, "skipped", str(exc), time.perf_counter() - start)
    except ConformanceError as exc:
        return CheckResult(entry.qualname, name, "failed", str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - any crash is a failure of that component's check
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"{entry.qualname}: {name}: {type(exc).__name__}: {first}"
        return CheckResult(entry.qualname, name, "failed", message, time.perf_counter() - start)
    return CheckResult(entry.qualname, name, "passed", "", time.perf_counter() - start)


def plugin_entries(plugin: str) -> list:
    from ..plugins import get_manager

    manager = get_manager()
    manager.collect()
    record = manager.records.get(plugin)
    if record is None:
        raise ConformanceError(f"plugin '{plugin}' is not installed (panconv plugins lists what is)")
    if record.status != "ok":
        raise ConformanceError(f"plugin '{plugin}' failed to load: {record.error}")
    return [e for e in manager.entries() if e.plugin == plugin and e.kind in CHECKS]


def check_plugin(plugin: str, *, only: str | None = None) -> list[CheckResult]:
    """Run every check on every component ``plugin`` registers (``only``: a glob on names)."""
    import fnmatch

    results = []
    for entry in plugin_entries(plugin):
        if only and not fnmatch.fnmatch(entry.qualname, only):
            continue
        for name in checks_for(entry):
            results.append(run_check(entry, name))
    return results


def describe_checks() -> str:
    """Markdown table of every check and what it proves (used by the docs)."""
    rows = {}
    for kind, checks in CHECKS.items():
        for name, (_, doc) in checks.items():
            rows.setdefault((name, doc), []).append(kind)
    lines = ["| check | applies to | proves |", "|---|---|---|"]
    for (name, doc), kinds in rows.items():
        lines.append(f"| `{name}` | {', '.join(kinds)} | {doc} |")
    for name, (_, doc) in SIZE_VARIANT_CHECKS.items():
        lines.append(f"| `{name}` | size variants (instead of the checks above) | {doc} |")
    return "\n".join(lines)

