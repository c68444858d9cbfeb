"""Helpers for tests and parity checks against reference implementations."""

from __future__ import annotations

import copy

import torch

import panconv


def paper_classifier(name: str, *, deploy: bool = True) -> torch.nn.Module:
    """The classifier the paper of a registered backbone counts in its tables: backbone ``name``
    (``"vision.convnext_tiny"``) composed with its class's ``paper_head`` (neck and 1000-class head)
    by ``panconv.create_model``. When the backbone has ``reparameterize()`` and ``deploy`` is true it
    is converted to the deploy form the papers count (UniRepLKNet, RepLKNet). Build paper sizes
    under ``torch.device("meta")`` to count parameters without memory."""
    head = copy.deepcopy(panconv.get_component("backbone", name).paper_head)
    model = panconv.create_model({"backbone": {"type": name}, **head})
    if deploy and hasattr(model.backbone, "reparameterize"):
        model.eval()
        model.backbone.reparameterize()
    return model


def num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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


def fill_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded values for every parameter and buffer, in ``state_dict`` order: ``N(0, 0.2)``, but
    ``running_var`` drawn from ``U(0.5, 1.5)`` so that BatchNorm stays well defined. The fill behind
    the recorded official-implementation outputs of the RepLKNet/UniRepLKNet parity tests (changing it
    invalidates them). Returns ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return module


def max_diff(ours, theirs) -> tuple[float, float]:
    """Max absolute difference over paired output tensors, and that relative to the largest
    absolute value of ``theirs`` (the reference)."""
    d = max((p - q).abs().max().item() for p, q in zip(ours, theirs))
    return d, d / max(q.abs().max().item() for q in theirs)
