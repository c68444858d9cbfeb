"""The interfaces every panconv component implements."""

from .data import Dataset, IterableDataset, default_data_root
from .evaluator import Evaluator
from .kernel import Implementation, Kernel, backend_available, triton_interpret
from .modules import Backbone, ComposedModel, FeatureInfo, Head, Model, Neck, feature_info_of

#: the built-in generic components, importable here for plugins that build on them
_BUILTIN = ("Accuracy", "GaussianBlobs", "GlobalAvgPool", "LinearClsHead", "MLP")


def __getattr__(name: str):
    if name in _BUILTIN:
        from ..builtin import components

        return getattr(components, name)
    raise AttributeError(f"module 'panconv.api' has no attribute {name!r}")


__all__ = [
    "Accuracy", "GaussianBlobs", "GlobalAvgPool", "LinearClsHead", "MLP",
    "Backbone", "ComposedModel", "Dataset", "Evaluator", "FeatureInfo", "Head", "Implementation",
    "IterableDataset", "Kernel", "Model", "Neck", "backend_available", "default_data_root",
    "feature_info_of", "triton_interpret",
]
