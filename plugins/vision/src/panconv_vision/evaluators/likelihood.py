"""``vision.BitsPerDim``: the exact log-likelihood of a likelihood model (PixelCNN) over a split.

The model's ``predict`` gives, per image, ``nll``: ``-log p(x)`` in nats, and ``dims``: its number of
discrete dimensions ``D`` (pixels x channels). Reported over the split:

* ``nll_nats``: the mean NLL per image in nats (the unit of the binarised-MNIST tables);
* ``bits_per_dim``: ``sum NLL / (sum D * ln 2)`` (the unit of the CIFAR/ImageNet tables).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from panconv.api import Evaluator


def bits_per_dim(nll_nats: torch.Tensor, dims: torch.Tensor | int) -> torch.Tensor:
    """``NLL / (D ln 2)``: nats per image -> bits per dimension (elementwise)."""
    return nll_nats / (torch.as_tensor(dims, dtype=nll_nats.dtype) * math.log(2))


class BitsPerDim(Evaluator):
    """Mean NLL per image (nats) and bits per dimension over everything processed."""

    lower_is_better = ("nll", "bits")

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or "nll" not in outputs or "dims" not in outputs:
            raise ValueError("BitsPerDim: the model's predict() must return a dict with 'nll' (nats per image) "
                             "and 'dims' (dimensions per image)")
        nll = torch.as_tensor(outputs["nll"]).detach().double().flatten().cpu()
        dims = torch.as_tensor(outputs["dims"]).detach().double().flatten().cpu()
        if dims.numel() == 1 and nll.numel() > 1:
            dims = dims.expand_as(nll)
        if nll.shape != dims.shape:
            raise ValueError(f"BitsPerDim: 'nll' and 'dims' differ in size ({nll.numel()} vs {dims.numel()})")
        self.results.append((float(nll.sum()), float(dims.sum()), nll.numel()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        total = sum(r[0] for r in results)
        dims = sum(r[1] for r in results)
        count = sum(r[2] for r in results)
        if count == 0:
            return {"nll_nats": float("nan"), "bits_per_dim": float("nan")}
        return {"nll_nats": total / count, "bits_per_dim": total / (dims * math.log(2))}

    @classmethod
    def example(cls):
        # two images of 4 binary pixels each at 1 bit/dim (uniform): 4 ln 2 nats; one at 0.5 bit/dim
        nll = torch.tensor([4 * math.log(2), 4 * math.log(2), 2 * math.log(2)])
        dims = torch.tensor([4.0, 4.0, 4.0])
        batches = [({}, {"nll": nll[:2], "dims": dims[:2]}), ({}, {"nll": nll[2:], "dims": dims[2:]})]
        return {}, batches, {"nll_nats": float(10 * math.log(2) / 3), "bits_per_dim": 10 / 12}


__all__ = ["BitsPerDim", "bits_per_dim"]
