"""The interfaces every panconv component implements."""

from .data import Dataset, IterableDataset, default_data_root
from .evaluator import Evaluator
from .kernel import Implementation, Kernel, backend_available, triton_interpret
from .modules import Backbone, ComposedModel, FeatureInfo, Head, Model, Neck, feature_info_of

__all__ = [
    "Backbone", "ComposedModel", "Dataset", "Evaluator", "FeatureInfo", "Head", "Implementation",
    "IterableDataset", "Kernel", "Model", "Neck", "backend_available", "default_data_root",
    "feature_info_of", "triton_interpret",
]
