"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) and the SR saliency map
("Beyond saliency: understanding convolutional neural networks from saliency prediction on layer-wise
relevance propagation", Li et al. 2019), over any panconv model.

The explained quantity is one output logit ``f_c(x)``. Relevance starts as ``R = f_c(x)`` on that
logit and is redistributed layer by layer down to the input pixels:

* linear layers (``Conv1d/2d/3d``, ``Linear``) with

  - the epsilon rule: ``R_i = x_i sum_j w_ij R_j / (z_j + eps sign(z_j))``,
  - the alpha-beta rule: ``R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j`` with
    ``alpha - beta = 1`` (positive and negative contributions ``x_i w_ij`` kept apart),
  - the z+ rule: alpha-beta with ``alpha = 1, beta = 0``;

* normalisation: every ``BatchNorm`` that directly follows a convolution or linear layer is folded
  into it first (the deployed network is the same function); a BatchNorm left over gets the epsilon
  rule on its (eval-mode) affine map; LayerNorm, GroupNorm and InstanceNorm get the LN-rule (Ali et
  al. 2022, "XAI for Transformers: Better Explanations through Conservative Propagation"): the
  standard deviation is held constant, which leaves a linear map, and that map gets the epsilon rule;
* attention: the AH-rule (Ali et al. 2022): attention weights are constants (softmax outputs are
  detached; ``F.scaled_dot_product_attention`` is ``A v`` with ``A`` fixed), so relevance reaches the
  values only, through the epsilon rule of ``v -> A v``; queries and keys get none;
* pooling: average pooling (modules, and ``mean``/``sum`` inside a forward, e.g. a global average
  pool neck) redistributes in proportion to the inputs (the epsilon rule on a parameter-free linear
  map), as do functional ``interpolate`` and ``fold``; max pooling passes the relevance to the winner
  (its gradient);
* element-wise activations: ReLU and friends, dropout, flattening pass the relevance through as their
  gradient; GELU, SiLU, Hardswish and Mish (``x * gate(x)``) pass it unchanged (``R_in = R_out``, the
  gate held constant: what the gradient does for ReLU; our choice, it keeps conservation exact);
* a sum of two tensors (a residual connection) splits the relevance in proportion to the addends; a
  constant addend (a bias, a position embedding) keeps its share; a product with a constant (layer
  scale, ``attention @ v``, ``x / c``) is the epsilon rule of that linear map;
* maps without a rule (gates: a product of two input-dependent tensors, ``sigmoid``, ``tanh``;
  complex-valued maps) pass the gradient and are reported in ``Explanation.unsupported``.

Conservation: with ``bias=False`` (biases are not credited any relevance), z+ and alpha-beta hand
on exactly the relevance they receive, layer by layer (``sum_i R_i = sum_j R_j``), and so does the
epsilon rule on a network without biases as ``eps -> 0``; tests/test_tool_lrp.py checks it.
With ``bias=True`` (zennit's and captum's convention) the biases keep their share.

Implementation: every rule is an ``autograd.Function`` wrapped around the layer's output by a
forward hook, whose backward returns the rule's input relevance instead of the gradient; a
``TorchFunctionMode`` does the same for what happens in functions (``_FunctionalRules``). Parameters are
constants during the explanation (``requires_grad`` off), so "input-dependent" means "requires grad".
Relevance then flows through the unchanged network by ``torch.autograd`` (branches and all).

SR maps: the saliency-prediction step turns the relevance map into a saliency map: positive
relevance summed over channels, Gaussian-smoothed and scaled to [0, 1] (our reading of the paper's
step; the paper then fits a saliency predictor on such maps, which needs eye-tracking data we do
not have). ``compare_with_cam`` reports its correlation with Eigen-CAM's map.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from . import _common

LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: normalisation with fixed statistics (eval-mode BatchNorm not folded): the epsilon rule on its affine map
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: normalisation with per-sample statistics: the LN-rule on their functional form (``F.layer_norm`` ...)
SAMPLE_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
             nn.AdaptiveAvgPool3d)
#: layers whose gradient is the right relevance flow (element-wise gates, winner-take-all, reshapes)
PASS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)
#: ``x * gate(x)`` activations: relevance passes through unchanged (``R_in = R_out``), as for ReLU
GATED = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Softmax)
#: non-linear maps without an LRP rule here (the relevance passes as their gradient: not conserved)
NONLINEAR = (nn.Sigmoid, nn.Tanh, nn.MultiheadAttention)
GATED_FUNCTIONS = (F.gelu, F.silu, F.hardswish, F.mish)
SOFTMAX_FUNCTIONS = (F.softmax, torch.softmax, torch.Tensor.softmax)
#: maps linear in each tensor argument: with one input-dependent argument, the epsilon rule of that linear map
PRODUCTS = (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.matmul,
            torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.bmm, torch.Tensor.bmm,
            torch.einsum)
DIVISIONS = (torch.div, torch.Tensor.div, torch.Tensor.__truediv__)
#: parameter-free linear maps called as functions (resampling, pooling, overlap-add): the epsilon rule of the map
LINEAR_FUNCTIONS = (F.interpolate, F.fold, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
ADDS = (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__)
SUBS = (torch.sub, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__rsub__)
RULES = ("epsilon", "alphabeta", "zplus")


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)`` with ``sign(0) = +1`` (zennit's convention)."""
    return z + eps * ((z == 0).to(z) + z.sign())


@dataclass
class Rule:
    """``name`` in RULES; ``epsilon`` (the epsilon rule's, else the stabiliser); ``alpha`` (beta = alpha - 1);
    ``bias``: whether biases enter the denominators (and keep their share of relevance)."""

    name: str = "epsilon"
    epsilon: float = 1e-6
    alpha: float = 1.0
    bias: bool = True
    #: the LN-rule (normalisation statistics held constant); False: the gradient through them (for comparison)
    ln_rule: bool = True
    #: the AH-rule (attention weights held constant); False: the gradient through them (for comparison)
    ah_rule: bool = True
    #: per explained layer: (name, relevance in at the output, relevance handed to the input)
    trace: list = field(default_factory=list)
    recomputing: bool = False
    #: maps without a rule that relevance reached (filled during the backward pass)
    unsupported_seen: set = field(default_factory=set)

    def __post_init__(self):
        if self.name not in RULES:
            raise ValueError(f"lrp: unknown rule {self.name!r}; choose from {', '.join(RULES)}")
        if self.name == "zplus":
            self.alpha = 1.0
        if self.alpha < 1:
            raise ValueError(f"lrp: alpha must be >= 1 (beta = alpha - 1 >= 0), got {self.alpha}")

    def linear(self, module: nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Input relevance of a layer with ``weight`` (and maybe ``bias``) for output relevance ``relevance``."""
        params = dict(module.named_parameters(recurse=False))
        weight, bias = params["weight"], params.get("bias")
        if bias is not None and not self.bias:
            bias = torch.zeros_like(bias)

        def f(inp, w, b):
            return functional_call(module, {"weight": w, **({"bias": b} if b is not None else {})}, (inp,))

        if self.name == "epsilon" or isinstance(module, NORMS):
            return _norm_rule(lambda inp: f(inp, weight, bias), x, relevance, self.epsilon)
        beta = self.alpha - 1.0
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        wp, wn = weight.clamp(min=0), weight.clamp(max=0)
        bp = bn = None
        if bias is not None:
            bp, bn = bias.clamp(min=0), bias.clamp(max=0)
        zero = None if bias is None else torch.zeros_like(bias)
        out = _part(f, relevance, self.epsilon, ((xp, wp, bp), (xn, wn, zero))) * self.alpha
        if beta:
            out = out - beta * _part(f, relevance, self.epsilon, ((xp, wn, bn), (xn, wp, zero)))
        return out


def _norm_rule(fn, x: torch.Tensor, relevance: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * J^T (R / stab(fn(x)))``: the epsilon rule of a linear map ``fn``."""
    x = x.detach().requires_grad_(True)
    z = fn(x)
    (grad,) = torch.autograd.grad(z, x, relevance / stabilize(z.detach(), eps))
    return x.detach() * grad


def _part(f, relevance, eps, terms) -> torch.Tensor:
    """The share of ``relevance`` of the contributions ``sum_k f(x_k, w_k, b_k)`` (one sign of z_ij)."""
    inputs = [x.detach().requires_grad_(True) for x, _, _ in terms]
    z = sum(f(x, w.detach(), None if b is None else b.detach()) for x, (_, w, b) in zip(inputs, terms))
    grads = torch.autograd.grad(z, inputs, relevance / stabilize(z.detach(), eps))
    return sum(x.detach() * g for x, g in zip(inputs, grads))


class _Relevance(torch.autograd.Function):
    """Identity on ``y`` (the layer's output); backward: the rule's relevance for ``x`` (the layer's input)."""

    @staticmethod
    def forward(ctx, x, y, backward):
        ctx.save_for_backward(x)
        ctx.rule_backward = backward
        return y.clone()

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            return ctx.rule_backward(x, relevance), None, None


class _Shares(torch.autograd.Function):
    """Identity on ``y``; backward: the rule's relevance for each of the inputs ``xs`` (a tuple)."""

    @staticmethod
    def forward(ctx, y, backward, *xs):
        ctx.save_for_backward(*xs)
        ctx.rule_backward = backward
        return y.clone()

    @staticmethod
    def backward(ctx, relevance):
        with torch.enable_grad():
            return (None, None, *ctx.rule_backward(ctx.saved_tensors, relevance))


class _Watch(torch.autograd.Function):
    """Identity (forward and backward) that notes when relevance reaches a map without an LRP rule."""

    @staticmethod
    def forward(ctx, y, note):
        ctx.note = note
        return y.clone()

    @staticmethod
    def backward(ctx, relevance):
        ctx.note()
        return relevance, None


def _shares(fn, xs, relevance, eps):
    """``x_k * d fn / d x_k^T (R / stab(fn(xs)))`` for each ``x_k``: the epsilon rule of a map linear in each."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    z = fn(*xs)
    grads = torch.autograd.grad(z, xs, relevance / stabilize(z.detach(), eps), allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else x.detach() * g for x, g in zip(xs, grads))


def _frozen_norm(x0: torch.Tensor, dims: tuple[int, ...], eps: float):
    """``t -> (t - mean(t)) / std(x0)``: the normalisation with its standard deviation held constant (LN-rule)."""
    std = torch.sqrt(x0.detach().var(dims, unbiased=False, keepdim=True) + eps)
    return lambda t: (t - t.mean(dims, keepdim=True)) / std


def _affine(y, weight, bias, channel_axis):
    shape = [1] * y.dim()
    if weight is not None:
        shape[channel_axis:channel_axis + weight.dim()] = weight.shape
        y = y * weight.detach().reshape(shape)
    if bias is not None:
        shape[channel_axis:channel_axis + bias.dim()] = bias.shape
        y = y + bias.detach().reshape(shape)
    return y


def _bind(func, args, kwargs) -> dict:
    import inspect

    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _attention_weights(q, k, mask=None, is_causal=False, scale=None):
    """``softmax(q k^T * scale + mask)`` as ``F.scaled_dot_product_attention`` forms it, as a constant."""
    q, k = q.detach(), k.detach()
    if k.shape[-3] != q.shape[-3] and q.dim() > 3:  # grouped-query attention: heads share keys
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(-1)


class _FunctionalRules(TorchFunctionMode):
    """Rules for what a forward does with functions rather than modules:

    * ``mean``/``sum`` (pooling) and ``a + b``, ``a - b`` (residuals; a constant addend is a bias): the
      epsilon rule of the linear map, i.e. relevance split in proportion to the contributions;
    * products ``x * c``, ``x @ W``, ``einsum``, ``x / c`` with one input-dependent factor, and
      parameter-free linear functions (``interpolate``, ``fold``, functional average pooling): the epsilon
      rule of that linear map (layer scales, ``attention @ v``, resampled inputs);
    * ``F.layer_norm`` / ``F.group_norm`` / ``F.instance_norm``: the LN-rule (Ali et al. 2022): the
      standard deviation is a constant, the centring and the affine map are linear; the epsilon rule of
      that linear map;
    * softmax and ``F.scaled_dot_product_attention``: the AH-rule (Ali et al. 2022): attention weights are
      constants; relevance flows to the values only (``out = A v``: the epsilon rule of ``v -> A v``),
      none to queries and keys;
    * ``F.gelu``, ``F.silu``, ``F.hardswish``, ``F.mish`` (``x * gate(x)``): relevance passes through
      unchanged, the gate taken as a constant, as the gradient does for ReLU;
    * a product or quotient of two input-dependent tensors (a gate), ``sigmoid``, ``tanh``, complex-valued
      (Fourier-domain) maps: no rule; the
      gradient passes and, when relevance actually reaches it, the map is reported as unsupported.
    """

    def __init__(self, rule: Rule):
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not torch.is_grad_enabled() or not isinstance(out, torch.Tensor) or not out.requires_grad:
            return out
        rule, eps = self.rule, self.rule.epsilon
        if out.is_complex() or any(isinstance(a, torch.Tensor) and a.is_complex() for a in args):
            return self._watch(out, "complex-valued (Fourier) map")
        if func in SOFTMAX_FUNCTIONS:
            return out.detach() if rule.ah_rule else self._watch(out, "softmax")
        if func is F.scaled_dot_product_attention:
            return self._attention(out, args, kwargs) if rule.ah_rule else self._watch(out, "attention")
        if func in (F.layer_norm, F.group_norm, F.instance_norm):
            return self._normalization(func, out, args, kwargs)
        if func in GATED_FUNCTIONS:
            return _Relevance.apply(args[0], out.detach(), lambda x_, r: r)
        if func in (torch.sigmoid, torch.Tensor.sigmoid, torch.tanh, torch.Tensor.tanh, F.sigmoid, F.tanh):
            return self._watch(out, func.__name__)
        if func in (torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum) and isinstance(args[0], torch.Tensor):
            x = args[0]
            fn = (lambda inp: func(inp, *args[1:], **kwargs))  # noqa: E731
            return _Relevance.apply(x, out.detach(),
                                    lambda x_, r: self._traced(func.__name__, _norm_rule(fn, x_, r, eps), r))
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
        if func in LINEAR_FUNCTIONS and tensors == [0]:
            return self._linear_in(func, out, args, kwargs, tensors, func.__name__)
        if func in PRODUCTS or func in DIVISIONS:
            if len(tensors) != 1 or (func in DIVISIONS and tensors != [0]):
                return self._watch(out, "product of input-dependent tensors")
            return self._linear_in(func, out, args, kwargs, tensors, "product")
        if func in ADDS or func in SUBS:
            if kwargs or len(args) != 2:
                return out
            if len(tensors) == 1:  # x + c: c is a bias (keeps its share when rule.bias)
                if not rule.bias:
                    c = args[1 - tensors[0]]
                    args = list(args)
                    args[1 - tensors[0]] = torch.zeros_like(c) if isinstance(c, torch.Tensor) else 0
                return self._linear_in(func, out, args, kwargs, tensors, "add")
            return _Shares.apply(out.detach(),
                                 lambda xs, r: self._traced_shares("add", _shares(func, xs, r, eps), r), *args)
        return out

    def _linear_in(self, func, out, args, kwargs, tensors, name):
        (i,) = tensors
        args = list(args)

        def fn(t):
            return func(*args[:i], t, *args[i + 1:], **kwargs)

        return _Relevance.apply(args[i], out.detach(),
                                lambda x_, r: self._traced(name, _norm_rule(fn, x_, r, self.rule.epsilon), r))

    def _attention(self, out, args, kwargs):
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        p = {**dict(zip(names, args)), **kwargs}
        weights = _attention_weights(p["query"], p["key"], p.get("attn_mask"), p.get("is_causal", False),
                                     p.get("scale"))
        v = p["value"]

        def fn(t):
            if t.dim() > 3 and t.shape[-3] != weights.shape[-3]:
                t = t.repeat_interleave(weights.shape[-3] // t.shape[-3], dim=-3)
            return weights @ t

        return _Relevance.apply(v, out.detach(),
                                lambda x_, r: self._traced("attention", _norm_rule(fn, x_, r, self.rule.epsilon), r))

    def _normalization(self, func, out, args, kwargs):
        p = _bind(func, args, kwargs)
        x = p["input"]
        weight, bias = p.get("weight"), p.get("bias")
        if not self.rule.bias:
            bias = None
        if func is F.instance_norm and not p["use_input_stats"]:  # running statistics: an affine map
            def fn(t):
                return func(t, p["running_mean"], p["running_var"], p["weight"], bias, False, 0.0, p["eps"])
        elif not self.rule.ln_rule:  # the plain gradient through the statistics (not conservative)
            def fn(t):
                return func(**{**p, "input": t, "bias": bias})
        elif func is F.layer_norm:
            dims = tuple(range(-len(p["normalized_shape"]), 0))
            norm = _frozen_norm(x, dims, p["eps"])

            def fn(t):
                return _affine(norm(t), weight, bias, t.dim() - len(dims))
        else:
            groups = p["num_groups"] if func is F.group_norm else x.shape[1]
            grouped = x.reshape(x.shape[0], groups, -1)
            norm = _frozen_norm(grouped, (-1,), p["eps"])

            def fn(t):
                return _affine(norm(t.reshape(grouped.shape)).reshape(t.shape), weight, bias, 1)

        return _Relevance.apply(x, out.detach(),
                                lambda x_, r: self._traced(func.__name__, _norm_rule(fn, x_, r, self.rule.epsilon), r))

    def _watch(self, out, name):
        return _Watch.apply(out, lambda: self.rule.unsupported_seen.add(name))

    def _traced(self, name, r_in, r_out):
        self.rule.trace.append((name, float(r_out.sum()), float(r_in.sum())))
        return r_in

    def _traced_shares(self, name, r_ins, r_out):
        self.rule.trace.append((name, float(r_out.sum()), float(sum(r.sum() for r in r_ins))))
        return r_ins


# ---- canonisation: BatchNorm folded into the layer before it ----------------------------------------

def fold_batchnorm(model: nn.Module, forward, example) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (eval) where every BatchNorm fed directly by a conv/linear layer's output is
    folded into that layer and replaced by ``Identity``; returns the copy and the folded BN names."""
    model = copy.deepcopy(model).eval()
    producers, pairs, hooks = {}, [], []
    modules = dict(model.named_modules())

    def record(name):
        def hook(module, inputs, output):
            if isinstance(module, LINEAR):
                producers[id(output)] = name
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and inputs \
                    and id(inputs[0]) in producers:
                pairs.append((producers[id(inputs[0])], name))
        return hook

    for name, module in modules.items():
        if isinstance(module, (*LINEAR, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            hooks.append(module.register_forward_hook(record(name)))
    with torch.no_grad():
        forward(model, example)
    for h in hooks:
        h.remove()
    folded = []
    for layer_name, bn_name in dict.fromkeys(pairs):
        layer, bn = modules[layer_name], modules[bn_name]
        if bn_name in folded or layer.weight.shape[0] != bn.num_features:
            continue
        with torch.no_grad():
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
            layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.dim() - 1))))
            new_bias = (bias - bn.running_mean) * scale + shift
            if layer.bias is None:
                layer.bias = nn.Parameter(new_bias)
            else:
                layer.bias.copy_(new_bias)
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, attr, nn.Identity())
        folded.append(bn_name)
    return model, folded


# ---- the explanation --------------------------------------------------------------------------------

def model_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a panconv model (a ``{"inputs": x}`` batch) or of a plain module."""
    from panconv.api import Model

    return model({"inputs": x}) if isinstance(model, Model) else model(x)


@dataclass
class Explanation:
    relevance: torch.Tensor  # (N, C, H, W): the input relevance
    logits: torch.Tensor  # (N, classes)
    target: torch.Tensor  # (N,) the explained classes
    trace: list  # per explained layer: (name, relevance at its output, relevance at its input)
    folded: list  # BatchNorm layers folded
    unsupported: list  # module types that were passed through without a rule (conservation not guaranteed)


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int | None = None, rule: Rule | str = "epsilon",
        forward=model_forward, fold: bool = True, **rule_args) -> Explanation:
    """LRP relevance of ``x`` for the ``target`` logit (default: the predicted class) of ``model``."""
    rule = rule if isinstance(rule, Rule) else Rule(rule, **rule_args)
    rule.trace, rule.unsupported_seen = [], set()
    model = model.eval()
    folded: list[str] = []
    if fold:
        model, folded = fold_batchnorm(model, forward, x[:1])
    # parameters are constants of the explanation: only input-dependent tensors require grad in the forward,
    # which is how the functional rules tell a bias from a residual and a layer scale from a gate
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    hooks, unsupported = [], set()
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        if isinstance(module, (*LINEAR, *NORMS)) and getattr(module, "weight", None) is not None:
            hooks.append(module.register_forward_hook(_hook(name, lambda m, x_, r: rule.linear(m, x_, r), rule)))
        elif isinstance(module, AVG_POOLS):
            hooks.append(module.register_forward_hook(
                _hook(name, lambda m, x_, r: _norm_rule(m, x_, r, rule.epsilon), rule)))
        elif isinstance(module, (*SAMPLE_NORMS, *GATED, nn.ParameterList, nn.ParameterDict)):
            continue  # rules on their functional form (_FunctionalRules)
        elif isinstance(module, NONLINEAR) or (list(module.parameters(recurse=False)) and not isinstance(module, PASS)):
            unsupported.add(type(module).__name__)
    inp = x.detach().clone().requires_grad_(True)
    try:
        with _FunctionalRules(rule):
            logits = forward(model, inp)
        if target is None:
            target = logits.argmax(1)
        target = torch.as_tensor(target).expand(len(x)) if torch.as_tensor(target).dim() == 0 else \
            torch.as_tensor(target)
        start = torch.zeros_like(logits).scatter(1, target.view(-1, 1), logits.gather(1, target.view(-1, 1)))
        (relevance,) = torch.autograd.grad(logits, inp, start.detach())
    finally:
        for h in hooks:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    return Explanation(relevance.detach(), logits.detach(), target, list(rule.trace), folded,
                       sorted(unsupported | rule.unsupported_seen))


def _hook(name: str, backward, rule: Rule):
    def hook(module, inputs, output):
        if rule.recomputing or not isinstance(output, torch.Tensor) or not inputs \
                or not isinstance(inputs[0], torch.Tensor):
            return output

        def relevance_in(x, r):
            rule.recomputing = True
            try:
                r_in = backward(module, x, r)
            finally:
                rule.recomputing = False
            rule.trace.append((name, float(r.sum()), float(r_in.sum())))
            return r_in

        return _Relevance.apply(inputs[0], output.detach(), relevance_in)
    return hook


# ---- the saliency step and the comparison with Eigen-CAM --------------------------------------------

def saliency(relevance: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """SR map ``(N, H, W)`` in [0, 1]: positive relevance summed over channels, Gaussian-smoothed, scaled."""
    r = relevance.sum(1, keepdim=True).clamp_min(0)
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=r.dtype)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    r = F.conv2d(F.pad(r, (radius,) * 4, mode="replicate"), g.view(1, 1, 1, -1))
    r = F.conv2d(r, g.view(1, 1, -1, 1))[:, 0]
    flat = r.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    top = flat.max(1, keepdim=True).values
    return torch.where(top > 0, flat / torch.where(top > 0, top, torch.ones_like(top)), flat).view_as(r)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation (the saliency literature's CC) of each pair of maps ``(N, H, W)``."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


class _UpTo(nn.Module):
    """The backbone's outputs up to ``level`` (Eigen-CAM reads the last of them)."""

    def __init__(self, backbone: nn.Module, level: int):
        super().__init__()
        self.backbone, self.level = backbone, level

    def forward(self, x):
        return self.backbone(x)[:self.level + 1]


def compare_with_cam(model: nn.Module, x: torch.Tensor, explanation: Explanation) -> torch.Tensor:
    """CC between each SR map and the Eigen-CAM map of the model's backbone (same inputs), taken on the
    deepest feature map with at least 2x2 positions (a 1x1 map has no spatial principal component)."""
    from .cam import eigen_cam

    backbone = _common.backbone_of(model)
    with torch.no_grad():
        features = backbone(x[:1])
    level = max([i for i, f in enumerate(features) if f.dim() == 4 and f.shape[-1] * f.shape[-2] >= 4] or [-1])
    cam = eigen_cam(_UpTo(backbone, level) if level >= 0 else backbone, x)
    return correlation(saliency(explanation.relevance), cam)


# ---- the `panconv lrp` command ----------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    cfg, model = _common.load(args.config, args.checkpoint, args.device, args.data_root)
    dataset = _common.build_data(cfg, "test", args.data_root) or _common.build_data(cfg, "val", args.data_root)
    if dataset is None:
        raise SystemExit("panconv lrp: the config has no test or val split to take inputs from")
    batch = _common.take(dataset, args.count, offset=args.index)
    x = batch["inputs"].to(args.device)
    rule = Rule(args.rule, epsilon=args.epsilon, alpha=args.alpha)
    result = lrp(model, x, args.target, rule)
    sr = saliency(result.relevance.cpu())
    cc = compare_with_cam(model, x, result).tolist()
    conserved = result.relevance.flatten(1).sum(1).cpu()
    top = result.logits.gather(1, result.target.view(-1, 1))[:, 0].cpu()
    out = Path(args.output)
    _common.write_json(out / "lrp.json", {
        "rule": args.rule, "epsilon": args.epsilon, "alpha": rule.alpha, "folded_batchnorm": result.folded,
        "unsupported_layers": result.unsupported, "targets": result.target.tolist(),
        "labels": batch.get("labels", torch.tensor([])).tolist(), "logit": top.tolist(),
        "input_relevance": conserved.tolist(), "cc_sr_vs_eigencam": cc})
    _plot(x.cpu(), result.relevance.cpu(), sr, out / "lrp.png")
    print(f"relevance sum / explained logit: {(conserved / top).tolist()}")
    print(f"CC(SR map, Eigen-CAM) mean {sum(cc) / len(cc):.3f}; wrote {out / 'lrp.json'} and {out / 'lrp.png'}")
    if result.unsupported:
        print(f"note: no LRP rule for {', '.join(result.unsupported)}: relevance passed as gradient there")
    return 0


def _plot(x, relevance, sr, path):
    n = len(x)
    fig, axes = _common.figure(3, n, figsize=(1.4 * n, 4.4), squeeze=False)
    r, x, sr = relevance.sum(1).numpy(), x.mean(1).numpy(), sr.numpy()
    for i in range(n):
        lim = float(abs(r[i]).max()) or 1.0
        axes[0, i].imshow(x[i], cmap="gray")
        axes[1, i].imshow(r[i], cmap="bwr", vmin=-lim, vmax=lim)
        axes[2, i].imshow(sr[i], cmap="jet", vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    axes[1, 0].set_title("relevance", fontsize=8, loc="left")
    axes[2, 0].set_title("SR map", fontsize=8, loc="left")
    _common.save_figure(fig, path)
