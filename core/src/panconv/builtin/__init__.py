"""The built-in ``core`` plugin: generic pieces that many domains share.

Registered like any other plugin (``core.LinearClsHead``), so configs and the conformance
kit treat them the same way.
"""

from ..hookspecs import hookimpl


@hookimpl
def panconv_register_models(register):
    register("MLP", "panconv.builtin.components:MLP", kind="backbone",
             doc="Multi-layer perceptron on vectors (a toy backbone for tests and tabular data)")
    register("GlobalAvgPool", "panconv.builtin.components:GlobalAvgPool", kind="neck",
             doc="Average every feature map over its spatial/temporal axes")
    register("LinearClsHead", "panconv.builtin.components:LinearClsHead", kind="head",
             doc="Linear classifier with cross-entropy (label smoothing optional)")


@hookimpl
def panconv_register_datasets(register):
    register("GaussianBlobs", "panconv.builtin.components:GaussianBlobs",
             doc="Seeded Gaussian clusters in R^d: a generated classification set for smoke tests")


@hookimpl
def panconv_register_evaluators(register):
    register("Accuracy", "panconv.builtin.components:Accuracy", doc="Top-k classification accuracy")


@hookimpl
def panconv_register_losses(register):
    register("CrossEntropyLoss", "torch.nn:CrossEntropyLoss", doc="torch.nn.CrossEntropyLoss")
