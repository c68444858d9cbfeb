"""Test helpers of panconv-genomics (importable by other packages' tests)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fill_deterministic(module: nn.Module, amplitude: float = 0.2) -> nn.Module:
    """Give every parameter of ``module`` values that depend on nothing but its name order and shape.

    Parameter ``k`` (in ``named_parameters`` order) gets ``amplitude * sin(0.37 i + k)`` over its flattened
    index ``i``; LayerNorm weights ``1 +`` that and the sine frequencies of Hyena filters ``10 +`` that. No
    random generator is involved, so a recorded output stays valid across torch versions and machines.
    """
    for k, (name, p) in enumerate(module.named_parameters()):
        i = torch.arange(p.numel(), dtype=torch.float64)
        values = amplitude * torch.sin(0.37 * i + k)
        if name.endswith("freq"):
            values = values + 10.0
        elif ".norm" in f".{name}" and name.endswith("weight"):
            values = values + 1.0
        p.copy_(values.view_as(p).to(p.dtype))
    return module


__all__ = ["fill_deterministic"]
