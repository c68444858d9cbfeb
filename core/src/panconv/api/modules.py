"""Composition interfaces: Backbone -> Neck -> Head, composed into a Model.

A :class:`Backbone` returns a list of feature maps and declares them in ``feature_info``
(channels and reduction of each output) so that necks and heads size themselves from it:
nobody copies ``in_channels`` by hand. A :class:`Head` owns its loss and its ``predict``.
A whole model (LightGCN, CAKT) implements :class:`Model` directly, with the same
``forward``/``loss``/``predict`` contract as a composed one.

Batches are ``dict``s; a composed model reads its input from ``batch["inputs"]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One output of a backbone or neck.

    ``channels``: size of the feature (channel) dimension. ``reduction``: the stride of this
    output relative to the input along its spatial/temporal axes (1 for none, 4 for the
    first ConvNeXt stage, 32 for its last). ``name``: the module it comes from.
    """

    channels: int
    reduction: int = 1
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class _ExampleMixin:
    """The example convention used by ``panconv.testing`` (the conformance kit).

    ``example_config()`` returns constructor keyword arguments for a *tiny* instance;
    ``example_inputs()`` returns an input the instance accepts; it may prepare the instance
    first (a graph model attaches its tiny example graph), and the kit calls it on every
    instance it compares. ``conformance_skips`` maps
    a check name to the declared reason for opting out of it (shown in the report).
    """

    conformance_skips: dict[str, str] = {}
    #: parameters that are deliberately left without gradient (frozen); name prefixes
    frozen_parameters: tuple[str, ...] = ()
    #: constructor arguments the engine fills from the dataset's ``metadata`` when the config
    #: leaves them unset (``("num_classes",)``); the dataset declares what it provides in
    #: ``Dataset.metadata_keys`` and the config validator reports a mismatch before data loads
    metadata_inputs: tuple[str, ...] = ()

    @classmethod
    def example_config(cls) -> dict:
        return {}


class Backbone(_ExampleMixin, nn.Module):
    """Input -> ``list[Tensor]``, one tensor per entry of ``self.feature_info``.

    Subclasses set ``self.feature_info`` in ``__init__`` (after ``out_indices`` selection)
    and return features channel-first (``N, C, ...``) unless they document otherwise.
    """

    feature_info: list[FeatureInfo]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        """A small input tensor this backbone accepts (images: ``N, 3, 64, 64``)."""
        return torch.randn(batch_size, 3, 64, 64)

    @property
    def out_channels(self) -> list[int]:
        return [f.channels for f in self.feature_info]


class Neck(_ExampleMixin, nn.Module):
    """``list[Tensor]`` -> ``list[Tensor]``; built from the previous stage's ``feature_info``.

    Subclasses take ``in_features: list[FeatureInfo]`` as their first argument and set
    ``self.feature_info`` for what they return.
    """

    feature_info: list[FeatureInfo]

    def __init__(self, in_features: list[FeatureInfo]):
        super().__init__()
        self.in_features = list(in_features)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(8, 4), FeatureInfo(16, 8), FeatureInfo(32, 16), FeatureInfo(64, 32)]


class Head(_ExampleMixin, nn.Module):
    """Features -> outputs; owns ``loss(outputs, batch) -> dict`` and ``predict``.

    Subclasses take ``in_features: list[FeatureInfo]`` as their first argument.
    """

    def __init__(self, in_features: list[FeatureInfo]):
        super().__init__()
        self.in_features = list(in_features)

    def forward(self, features: list[torch.Tensor]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def loss(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Return a dict of scalar tensors; every key containing ``loss`` is summed for backward."""
        raise NotImplementedError

    def predict(self, outputs: Any, batch: dict | None = None) -> Any:
        """Turn raw outputs into predictions (probabilities, labels, decoded text)."""
        return outputs

    @classmethod
    def example_in_features(cls) -> list[FeatureInfo]:
        return [FeatureInfo(16, 32)]


class Model(_ExampleMixin, nn.Module):
    """The trainable unit: ``forward(batch) -> outputs``, ``loss``, ``predict``.

    ``attach_data(dataset)`` is called by the engine with the training dataset before
    training and evaluation, for models that are tied to their data (a graph's adjacency,
    a vocabulary); the default does nothing.
    """

    def forward(self, batch: dict) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def predict(self, outputs: Any, batch: dict | None = None) -> Any:
        return outputs

    def attach_data(self, dataset: Any) -> None:
        """Receive the training dataset (its graph, vocabulary, ...). Default: nothing."""

    def example_inputs(self, batch_size: int = 2) -> dict:  # pragma: no cover - per model
        raise NotImplementedError(f"{type(self).__name__} declares no example_inputs()")


class ComposedModel(Model):
    """``backbone`` -> optional ``neck`` -> ``head``; each sized from the previous ``feature_info``."""

    def __init__(self, backbone: Backbone, head: Head, neck: Neck | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head

    def forward(self, batch: dict) -> Any:
        inputs = batch["inputs"] if isinstance(batch, dict) else batch
        features = self.backbone(inputs)
        if self.neck is not None:
            features = self.neck(features)
        return self.head(features)

    def loss(self, outputs: Any, batch: dict) -> dict[str, torch.Tensor]:
        return self.head.loss(outputs, batch)

    def predict(self, outputs: Any, batch: dict | None = None) -> Any:
        return self.head.predict(outputs, batch)

    def attach_data(self, dataset: Any) -> None:
        for part in (self.backbone, self.neck, self.head):
            if part is not None and hasattr(part, "attach_data"):
                part.attach_data(dataset)

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": self.backbone.example_inputs(batch_size)}

    @torch.no_grad()
    def predict_one(self, x: torch.Tensor) -> Any:
        """The prediction for one raw input without a batch axis (an image ``C, H, W``, a
        feature vector): for a classifier, its class probabilities. Runs in eval mode and
        restores the previous mode."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"predict_one expects a tensor, got {type(x).__name__}")
        example = self.backbone.example_inputs(1)
        if isinstance(example, torch.Tensor) and x.dim() != example.dim() - 1:
            raise ValueError(f"predict_one expects one input of {example.dim() - 1} dimensions "
                             f"(like {tuple(example.shape[1:])}), got shape {tuple(x.shape)}")
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            batch = {"inputs": x.unsqueeze(0).to(device)}
            return self.predict(self(batch), batch)[0]
        finally:
            self.train(was_training)


def feature_info_of(module: nn.Module) -> list[FeatureInfo]:
    """``module.feature_info`` as a list of :class:`FeatureInfo` (accepts dicts too)."""
    info = getattr(module, "feature_info", None)
    if info is None:
        raise TypeError(f"{type(module).__name__} declares no feature_info")
    return [f if isinstance(f, FeatureInfo) else FeatureInfo(**f) for f in info]
