"""Adversarial training (Madry et al. 2018) of any image classifier: PGD in the L-infinity or L2 ball.

``vision.AdversarialTraining`` wraps a config's ``model`` section (a composed classifier or a whole
model whose ``loss`` is a classification loss on ``batch["labels"]``): in training mode every batch's
inputs are replaced by PGD adversarial examples against the current weights (random start in the
ball, ``steps`` signed-gradient (L-inf) or normalised-gradient (L2) ascent steps of size ``step_size``
on the model's own loss, projection onto the ball and onto the valid pixel range); evaluation sees the
clean inputs. The attack runs with the model in eval mode (``attack_mode: eval``: running BatchNorm
statistics) or in training mode (``train``: batch statistics, the running statistics restored afterwards);
either way the attack's forwards change no state and leave no gradient on the parameters.

The ball lives in pixel space: data sets that normalise (``vision.MNIST``: ``(x - 0.1307) / 0.3081``)
give ``mean``/``std`` so ``epsilon`` is in [0, 1] pixel units, as papers state it (the CUDA paper,
Sadasivan et al. CVPR 2023, trains with L-inf 8/255 and L2 0.5 on CIFAR-10 against its unlearnable data).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn as nn
from annotated_types import Ge, Gt, Interval

from panconv import create_model

__all__ = ["AdversarialTraining", "pgd_attack"]


def _is_running_statistic(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("running_") or leaf == "num_batches_tracked"


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def pgd_attack(loss_fn, images: torch.Tensor, epsilon: float, step_size: float, steps: int,
               norm: Literal["linf", "l2"] = "linf", random_start: bool = True, lower: float = 0.0,
               upper: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD on ``images`` (pixel space, in ``[lower, upper]``): maximise ``loss_fn(x)`` within the
    ``norm`` ball of radius ``epsilon`` around ``images``; returns the detached adversarial images."""
    x0 = images.detach()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) * 2 - 1
        if norm == "linf":
            delta = noise * epsilon
        else:  # uniform direction, radius uniform in [0, epsilon]
            radius = torch.rand(len(x0), generator=generator, dtype=x0.dtype).to(x0.device)
            delta = noise / _per_sample_norm(noise) * radius.view(-1, *([1] * (x0.dim() - 1))) * epsilon
    else:
        delta = torch.zeros_like(x0)
    x = (x0 + delta).clamp(lower, upper)
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(loss_fn(x), x)
        with torch.no_grad():
            if norm == "linf":
                x = x + step_size * grad.sign()
                x = x0 + (x - x0).clamp(-epsilon, epsilon)
            else:
                x = x + step_size * grad / _per_sample_norm(grad)
                delta = x - x0
                x = x0 + delta * (epsilon / _per_sample_norm(delta)).clamp(max=1.0)
            x = x.clamp(lower, upper)
    return x.detach()


_Mean = Annotated[float, Interval(ge=-1e3, le=1e3)]
_Std = Annotated[float, Gt(0)]


class AdversarialTraining(nn.Module):
    """PGD adversarial training of the classifier ``model`` (a config ``model`` section).

    Args:
        model: the wrapped model's config section (``{backbone, neck, head}`` or ``{type: ...}``).
        norm: ``linf`` or ``l2``; epsilon / step_size / steps: the PGD attack (pixel units).
        mean / std: the data set's input normalisation (per channel or one value), to attack in pixel space.
        attack_mode: ``eval`` attacks the model in eval mode (running BatchNorm statistics); ``train`` with
            batch statistics, as the training forward sees it (Madry et al.'s setting), restoring the running
            statistics the attack's forwards moved.
        num_classes / in_channels: filled from the data set and passed to the wrapped model.
    """

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, model: dict, norm: Literal["linf", "l2"] = "linf", epsilon: Annotated[float, Ge(0)] = 8 / 255,
                 step_size: Annotated[float, Gt(0)] = 2 / 255, steps: Annotated[int, Ge(1)] = 10,
                 mean: _Mean | list[_Mean] = 0.0, std: _Std | list[_Std] = 1.0, random_start: bool = True,
                 attack_mode: Literal["eval", "train"] = "eval",
                 num_classes: Annotated[int, Ge(1)] | None = None,
                 in_channels: Annotated[int, Ge(1)] | None = None):
        super().__init__()
        if not isinstance(model, dict):
            raise ValueError(f"model must be a model config section (a mapping), got {type(model).__name__}")
        if attack_mode not in ("eval", "train"):
            raise ValueError(f"attack_mode must be 'eval' or 'train', got {attack_mode!r}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if epsilon < 0 or step_size <= 0 or steps < 1:
            raise ValueError(f"need epsilon >= 0, step_size > 0, steps >= 1; got {epsilon}, {step_size}, {steps}")
        stds = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std])]
        if any(v <= 0 for v in stds):
            raise ValueError(f"std must be > 0, got {std}")
        metadata = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
        self.model = create_model(model, metadata=metadata)
        self.norm, self.epsilon, self.step_size, self.steps = norm, float(epsilon), float(step_size), int(steps)
        self.random_start, self.attack_mode = bool(random_start), attack_mode
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1), persistent=False)
        self.register_buffer("std", torch.tensor(stds), persistent=False)

    def adversarial(self, batch: dict) -> torch.Tensor:
        """The PGD adversarial version of ``batch["inputs"]`` (normalised like the inputs)."""
        model, was_training, inputs = self.model, self.model.training, batch["inputs"]
        shape = (1, -1, *([1] * (inputs.dim() - 2)))  # per channel (dim 1)
        mean, std = self.mean.reshape(shape), self.std.reshape(shape)

        def loss_fn(x):
            losses = model.loss(model({**batch, "inputs": (x - mean) / std}), batch)
            return sum(v for k, v in losses.items() if "loss" in k)

        saved = None
        if self.attack_mode == "eval":
            model.eval()
        else:  # batch statistics, as the training forward uses; the running statistics are put back after
            saved = {k: v.clone() for k, v in model.state_dict().items() if _is_running_statistic(k)}
        try:
            adv = pgd_attack(loss_fn, inputs * std + mean, self.epsilon, self.step_size, self.steps, self.norm,
                             self.random_start)
        finally:
            model.train(was_training)
            if saved:
                model.load_state_dict(saved, strict=False)
        return (adv - mean) / std

    def forward(self, batch: dict) -> Any:
        if self.training and self.epsilon > 0:
            batch = {**batch, "inputs": self.adversarial(batch)}
        return self.model(batch)

    def loss(self, outputs: Any, batch: dict) -> dict:
        return self.model.loss(outputs, batch)

    def predict(self, outputs: Any, batch: dict | None = None) -> Any:
        return self.model.predict(outputs, batch)

    # ------------------------------------------------------------------ conformance kit
    @classmethod
    def example_config(cls) -> dict:
        return {"model": {"backbone": {"type": "vision.ConvNeXt", "depths": [1], "dims": [8], "patch_size": 2},
                          "neck": {"type": "vision.PoolNorm"}, "head": {"type": "core.LinearClsHead"}},
                "epsilon": 0.1, "step_size": 0.05, "steps": 2, "mean": 0.5, "std": 0.25, "num_classes": 3,
                "in_channels": 1}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        return {"inputs": torch.randn(batch_size, 1, 8, 8, generator=g), "labels": torch.arange(batch_size) % 3}
