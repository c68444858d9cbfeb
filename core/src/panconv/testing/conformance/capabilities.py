"""Checks chosen by declared capability, as scikit-learn's ``check_estimator`` chooses by estimator tags.

A component (model, backbone, neck or head) declares a capability by implementing its
protocol; the kit then adds the capability's checks to that component's checks, so a new
plugin gets them without asking. The protocols:

* ``reparameterize`` (structural re-parameterisation: RepLKNet, UniRepLKNet, DEA-Net).
  ``reparameterize(self) -> self``: switch the module *in place* to its deploy form (fold the
  parallel branches and their BatchNorms into one convolution) and return ``self``. Call in
  eval mode after training. The kit builds the tiny example, randomises the running statistics
  and affine parameters of every BatchNorm (so folding them is really tested), and checks
  (check ``reparameterize``): eval-mode outputs before == after (fp32, atol 1e-4, rtol 1e-4);
  the method returns ``self``; and the module really changed: the parameter count differs
  or some branch modules disappeared.
* ``recurrent`` (convolution mode == recurrent mode: S4, Hyena, state-space and causal conv models).
  ``initial_state(self, batch_size) -> state`` and ``step(self, x_t, state) -> (y_t, state)``;
  optional class attribute ``time_dim`` (default ``-1``): the time axis of the forward input
  and outputs (``N, C, L`` layout by default). ``x_t`` is the forward input with the time axis
  removed; ``y_t`` has the structure of the forward output (a tensor, or a list of tensors
  for a backbone) with the time axis removed. The kit checks (check ``recurrent_mode``), in
  eval mode on ``example_inputs()``: stepping through the sequence from ``initial_state``
  and stacking the ``y_t`` along ``time_dim`` equals ``forward`` over the whole sequence
  (fp32, atol 1e-4, rtol 1e-4).

Declarations every model-kind component may make (not capabilities: they refine the checks
every component gets): ``frozen_parameters`` (name prefixes left without gradient),
``running_buffers`` (fnmatch patterns of buffers a train-mode forward may update besides
``running_*`` and ``num_batches_tracked``), ``metadata_inputs`` (constructor arguments the
engine fills from the dataset's metadata), ``conformance_skips`` (check -> reason).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    MODEL_KINDS,
    build,
    check,
    close,
    component_class,
    example_inputs,
    fail,
    max_abs_diff,
    seed_everything,
    tensors,
)


@dataclass(frozen=True)
class Capability:
    name: str
    #: methods a component must have to declare it
    methods: tuple[str, ...]
    doc: str


CAPABILITIES: dict[str, Capability] = {
    "reparameterize": Capability(
        "reparameterize", ("reparameterize",),
        "`reparameterize() -> self`: in-place switch to the deploy form (parallel branches and BatchNorms "
        "folded into one convolution)"),
    "recurrent": Capability(
        "recurrent", ("initial_state", "step"),
        "`initial_state(batch_size) -> state` and `step(x_t, state) -> (y_t, state)`; optional `time_dim` "
        "(default -1): the same computation as `forward`, one time step at a time"),
}

#: tolerance of the capability checks (fp32)
ATOL = RTOL = 1e-4


def capabilities_of(entry) -> tuple[str, ...]:
    """The capabilities a model-kind entry declares (by the methods its class implements)."""
    if entry.kind not in MODEL_KINDS:
        return ()
    cls = component_class(entry)
    if cls is None:  # a plain factory function: look at what it builds
        cls = type(build(entry))
    return tuple(name for name, cap in CAPABILITIES.items()
                 if all(callable(getattr(cls, method, None)) for method in cap.methods))


@torch.no_grad()
def randomize_batchnorm_(module: torch.nn.Module, seed: int = 0) -> None:
    """Random running statistics and affine parameters for every BatchNorm-like layer."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
        if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
            continue
        mean.copy_(torch.randn(mean.shape, generator=g) * 0.1)
        var.copy_(torch.rand(var.shape, generator=g) + 0.5)
        for name, scale, shift in (("weight", 0.5, 1.0), ("bias", 0.2, 0.0)):
            p = getattr(m, name, None)
            if isinstance(p, torch.Tensor) and p.shape == mean.shape:
                p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 2 * scale + shift)


@check(*MODEL_KINDS, capability="reparameterize",
       doc="reparameterize() switches in place and returns self; eval-mode outputs before == after "
           "(atol 1e-4, rtol 1e-4, BatchNorm statistics randomised); the parameter count changes or branch "
           "modules disappear")
def check_reparameterize(entry):
    module = build(entry)
    module.eval()
    randomize_batchnorm_(module)
    seed_everything(3)
    inputs, _ = example_inputs(entry, module)
    with torch.no_grad():
        before = module(inputs)
    params_before = sum(p.numel() for p in module.parameters())
    modules_before = {(name, type(m)) for name, m in module.named_modules()}
    result = module.reparameterize()
    if result is not module:
        fail(entry, "reparameterize", f"reparameterize() must convert in place and return self, returned "
                                      f"{type(result).__name__}")
    module.eval()
    with torch.no_grad():
        after = module(inputs)
    if not close(before, after, atol=ATOL, rtol=RTOL):
        fail(entry, "reparameterize", f"outputs differ after reparameterize(): max abs diff "
                                      f"{max_abs_diff(before, after):.3g} > atol {ATOL}")
    params_after = sum(p.numel() for p in module.parameters())
    gone = modules_before - {(name, type(m)) for name, m in module.named_modules()}
    if params_after == params_before and not gone:
        fail(entry, "reparameterize", "reparameterize() changed nothing: the parameter count is the same and no "
                                      "branch module disappeared")


@check(*MODEL_KINDS, capability="recurrent",
       doc="stepping through example_inputs() with initial_state/step equals forward over the whole sequence "
           "(eval mode, atol 1e-4, rtol 1e-4)")
def check_recurrent_mode(entry):
    module = build(entry)
    module.eval()
    seed_everything(3)
    inputs, _ = example_inputs(entry, module)
    if not isinstance(inputs, torch.Tensor):
        fail(entry, "recurrent_mode", f"the recurrent protocol needs example_inputs() to be a tensor, got "
                                      f"{type(inputs).__name__}")
    time_dim = getattr(module, "time_dim", -1)
    axis = time_dim % inputs.dim()
    with torch.no_grad():
        whole = module(inputs)
        state = module.initial_state(inputs.shape[0])
        steps = []
        for t in range(inputs.shape[axis]):
            y_t, state = module.step(inputs.select(axis, t), state)
            steps.append(tensors(y_t))
    expected = tensors(whole)
    if any(len(s) != len(expected) for s in steps):
        fail(entry, "recurrent_mode", f"step() returns {len(steps[0])} tensor(s) per step, forward "
                                      f"{len(expected)}")
    stepped = [torch.stack([s[i] for s in steps], dim=time_dim % (steps[0][i].dim() + 1))
               for i in range(len(expected))]
    for i, (a, b) in enumerate(zip(expected, stepped)):
        if a.shape != b.shape:
            fail(entry, "recurrent_mode", f"output {i}: forward gives shape {tuple(a.shape)}, the stacked steps "
                                          f"{tuple(b.shape)} (time_dim={time_dim})")
    if not close(expected, stepped, atol=ATOL, rtol=RTOL):
        fail(entry, "recurrent_mode", f"recurrent mode differs from convolution mode: max abs diff "
                                      f"{max_abs_diff(expected, stepped):.3g} > atol {ATOL}")
