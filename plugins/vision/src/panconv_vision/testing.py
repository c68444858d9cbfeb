"""Helpers for tests and parity checks against reference implementations."""

from __future__ import annotations

import torch


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every floating-point tensor of ``module.state_dict()`` (in sorted key order) with
    seeded ``N(0, std)`` values, so that layer scales, norms and biases all matter when two
    implementations are compared. Returns ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in sorted(module.state_dict().items()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=g) * std)
    return module
