"""Convolution-based mixture of experts (CMoE; Xie, Ren & Xu, "Unraveling complex data diversity in
underwater acoustic target recognition through convolution-based mixture of experts", Expert
Systems with Applications, 2024).

Structure (paper Sec. 3; the authors' code uses a ResNet-18 on one-channel spectrograms):

* a convolutional feature extractor (ResNet with basic blocks, global average pooling) maps the
  spectrogram to a high-level representation ``r``;
* a **routing layer** (linear, with a ``linear``/``softmax``/``sigmoid`` activation) scores the
  experts; each input is assigned to the arg-max expert (top-1, hard routing);
* the **expert layers** are independent classifiers (linear, or a two-layer MLP with
  ``expert_hidden``); the assigned expert's output is the prediction;
* **balancing regularisation**: ``w * E * sum_i f_i * p_i`` with ``f_i`` the fraction of the batch
  routed to expert ``i`` and ``p_i`` its mean routing score (keeps experts in use; as in the
  authors' code, it is also what trains the routing layer);
* the optional **residual module**: a shared classifier whose output is added to the expert's.

The paper's underwater data sets (Shipsear, DeepShip, DTIG) are not available here; this plugin
evaluates CMoE on spoken-digit and speaker classification from real recordings (``audio.SpokenDigits``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, MinLen
from torch import nn

from panconv.api import Model

from ..transforms import SpecAugment, build_frontend
from .layers import waveforms_or_features


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNetExtractor(nn.Module):
    """ResNet (basic blocks) on one-channel spectrograms -> ``(N, widths[-1])`` (ResNet-18:
    ``widths=(64, 128, 256, 512)``, ``depths=(2, 2, 2, 2)``)."""

    def __init__(self, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x):
        return self.layers(self.stem(x)).mean(dim=(2, 3))


class CMoE(Model):
    """Spectrogram -> ResNet features -> top-1 routed expert classifiers (+ residual classifier).

    ``inputs``: waveforms (N, T), turned into log-mel features by ``frontend``, or features
    (N, frames, n_mels) computed by a ``data.transforms`` front-end (``frontend=None``: features only).
    ``spec_augment``: 2 frequency masks of up to ``n_mels // 8`` bins and 2 time masks of up to 5% of
    the utterance, in training mode.
    """

    #: filled from the data set's metadata unless the config sets them
    metadata_inputs = ("num_classes", "sample_rate")

    def __init__(self, num_classes: Annotated[int, Ge(1)], num_experts: Annotated[int, Ge(1)] = 4,
                 routing_activation: str = "sigmoid", balance_weight: Annotated[float, Ge(0)] = 0.01,
                 residual: bool = True, expert_hidden: Annotated[int, Ge(0)] = 0,
                 widths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (64, 128, 256, 512),
                 depths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1)] = (2, 2, 2, 2),
                 sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000,
                 n_mels: Annotated[int, Ge(8)] = 64,
                 frontend: str | None = "logmel", spec_augment: bool = True):
        super().__init__()
        if routing_activation not in ("linear", "softmax", "sigmoid"):
            raise ValueError(f"CMoE: routing_activation must be linear, softmax or sigmoid, got {routing_activation!r}")
        if num_classes < 1 or num_experts < 1 or not 0 <= balance_weight < math.inf or expert_hidden < 0:
            raise ValueError(f"CMoE: need num_classes >= 1, num_experts >= 1, a finite balance_weight >= 0 and "
                             f"expert_hidden >= 0, got {num_classes}, {num_experts}, {balance_weight}, {expert_hidden}")
        if not widths or len(widths) != len(depths) or min(widths) < 1 or min(depths) < 1:
            raise ValueError(f"CMoE: widths {tuple(widths)} and depths {tuple(depths)} must be non-empty, of equal "
                             f"length and positive")
        if n_mels < 8:
            raise ValueError(f"CMoE: n_mels must be >= 8, got {n_mels}")
        self.frontend = build_frontend(frontend, sample_rate, n_mels) if frontend is not None else None
        self.specaug = SpecAugment(2, n_mels // 8, 2, 0.05) if spec_augment else None
        self.extractor = ResNetExtractor(tuple(widths), tuple(depths))
        d = self.extractor.out_dim
        self.routing = nn.Linear(d, num_experts)
        self.experts = nn.ModuleList(self._expert(d, num_classes, expert_hidden) for _ in range(num_experts))
        self.residual = nn.Linear(d, num_classes) if residual else None
        self.num_experts, self.num_classes = num_experts, num_classes
        self.routing_activation, self.balance_weight = routing_activation, balance_weight
        self.sample_rate, self.n_mels = sample_rate, n_mels

    @staticmethod
    def _expert(d: int, c: int, hidden: int) -> nn.Module:
        if hidden <= 0:
            return nn.Linear(d, c)
        return nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c))

    def features(self, batch: dict) -> torch.Tensor:
        x, lengths = batch["inputs"], batch.get("input_lengths")
        if waveforms_or_features(x, self.frontend, self.n_mels, "CMoE"):  # waveforms -> log-mel (N, T, F)
            with torch.no_grad():
                x, lengths = self.frontend(x, lengths)
        if self.specaug is not None:
            x, _ = self.specaug(x, lengths)
        return self.extractor(x.unsqueeze(1))

    def route(self, r: torch.Tensor) -> torch.Tensor:
        scores = self.routing(r)
        if self.routing_activation == "softmax":
            return scores.softmax(-1)
        if self.routing_activation == "sigmoid":
            return scores.sigmoid()
        return scores

    def forward(self, batch: dict) -> dict:
        r = self.features(batch)
        scores = self.route(r)
        expert_id = scores.argmax(-1)
        all_logits = torch.stack([e(r) for e in self.experts], 1)  # (N, E, C)
        logits = all_logits.gather(1, expert_id[:, None, None].expand(-1, 1, self.num_classes)).squeeze(1)
        if self.residual is not None:
            logits = logits + self.residual(r)
        return {"logits": logits, "routing_scores": scores, "expert_id": expert_id}

    def balance_loss(self, scores: torch.Tensor, expert_id: torch.Tensor) -> torch.Tensor:
        """``w * E * sum_i f_i p_i``: fraction routed to each expert times its mean routing score."""
        f = F.one_hot(expert_id, self.num_experts).float().mean(0)
        p = scores.mean(0)
        return self.balance_weight * self.num_experts * (f * p).sum()

    def loss(self, outputs: dict, batch: dict) -> dict:
        return {"loss_cls": F.cross_entropy(outputs["logits"], batch["labels"]),
                "loss_balance": self.balance_loss(outputs["routing_scores"], outputs["expert_id"])}

    def predict(self, outputs: dict, batch: dict | None = None) -> torch.Tensor:
        return outputs["logits"].softmax(-1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "num_experts": 3, "widths": (8, 16), "depths": (1, 1), "sample_rate": 8000,
                "n_mels": 32}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        batch = {"inputs": torch.randn(batch_size, self.sample_rate // 2, generator=g) * 0.1,
                 "input_lengths": torch.full((batch_size,), self.sample_rate // 2),
                 "labels": torch.arange(batch_size) % self.num_classes}
        if self.frontend is None:  # features, as a data.transforms front-end would give them
            from ..transforms import LogMel

            batch = LogMel(self.sample_rate, self.n_mels)(batch)
        return batch
