"""Parameter counts of the SGConv size variants registered from the official LRA configs.

``OURS``: the whole model (backbone + ``sequence.SequenceClsHead`` on the task's classes, the task's input),
built on the meta device. ``OFFICIAL_LAYER``: the parameter count of one official ``GConv`` layer
(``gconv_standalone.py`` of ctlllll/SGConv at 97862df, run here with each config's ``d_model``,
``kernel_dim``, ``l_max``, ``mode`` (``cat_randn``; LRA-Image ``cat_randn_learnable_fixed``; Path-X
``cat_cos`` with ``init_scale=1``), ``bidirectional=True``, ``postact="glu"``); ours must equal it
exactly, which checks the layer's structure (scales, sub-kernels, ``D``, the GLU output map). The SGConv
paper's tables give no parameter counts, so no paper figure is compared. Norms: ours LayerNorm where the
configs use BatchNorm (same count); the configs with ``prenorm: false`` (ListOps) have no final norm in the
official model, ours does (``2 * d_model`` more).
"""

from __future__ import annotations

import functools

import pytest
import torch

import panconv
from panconv_sequence.models.layers import SequenceClsHead

INPUTS = {  # metadata the dataset injects, classes
    "sequence.SGConv_listops": (dict(vocab_size=16), 10),   # our ListOps vocabulary
    "sequence.SGConv_imdb": (dict(vocab_size=256), 2),      # bytes
    "sequence.SGConv_aan": (dict(vocab_size=256), 2),
    "sequence.SGConv_pathfinder": (dict(in_channels=1), 2),
    "sequence.SGConv_lra_cifar": (dict(in_channels=1), 10),  # grayscale
    "sequence.SGConv_pathx": (dict(in_channels=1), 2),
}
OURS = {
    "sequence.SGConv_listops": 295_434,
    "sequence.SGConv_imdb": 934_402,
    "sequence.SGConv_aan": 900_610,
    "sequence.SGConv_pathfinder": 1_385_474,
    "sequence.SGConv_lra_cifar": 4_350_986,
    "sequence.SGConv_pathx": 2_368_514,
}
OFFICIAL_LAYER = {  # (scales, parameters of one official GConv layer)
    "sequence.SGConv_listops": (12, 36_224),
    "sequence.SGConv_imdb": (12, 144_128),
    "sequence.SGConv_aan": (13, 138_496),
    "sequence.SGConv_pathfinder": (6, 230_144),
    "sequence.SGConv_lra_cifar": (6, 722_944),   # mode cat_randn_learnable_fixed: + the frozen per-feature decay
    "sequence.SGConv_pathx": (8, 393_984),       # mode cat_cos, init_scale 1
}


@functools.cache
def build(name: str):
    inputs, classes = INPUTS[name]
    with torch.device("meta"):
        backbone = panconv.get_component("backbone", name)(**inputs)
        head = SequenceClsHead(backbone.feature_info, num_classes=classes)
    return backbone, head


@pytest.mark.parametrize("name", sorted(OURS))
def test_whole_model_count(name):
    backbone, head = build(name)
    assert sum(p.numel() for m in (backbone, head) for p in m.parameters()) == OURS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_LAYER))
def test_each_layer_equals_the_official_layer(name):
    backbone, _ = build(name)
    scales, official = OFFICIAL_LAYER[name]
    for block in backbone.blocks:
        assert block.mixer.n_scales == scales
        assert sum(p.numel() for p in block.mixer.parameters()) == official
    # layers + per-layer norm + final norm + input map: nothing else in the backbone (no MLP in these configs)
    d = backbone.d_model
    embed = sum(p.numel() for p in backbone.input.parameters())
    assert sum(p.numel() for p in backbone.parameters()) == embed + len(backbone.blocks) * (official + 2 * d) + 2 * d


def test_variants_are_the_official_configs():
    """The registered arguments are the configs' (d_model, layers, kernel_dim, GLU, bidirectional)."""
    expected = {"sequence.SGConv_listops": (128, 8, 1), "sequence.SGConv_imdb": (256, 6, 2),
                "sequence.SGConv_aan": (256, 6, 1), "sequence.SGConv_pathfinder": (256, 6, 32),
                "sequence.SGConv_lra_cifar": (512, 6, 32), "sequence.SGConv_pathx": (256, 6, 64)}
    for name, (d, layers, kernel_dim) in expected.items():
        backbone, _ = build(name)
        mixer = backbone.blocks[0].mixer
        assert (backbone.d_model, len(backbone.blocks), mixer.kernel_dim) == (d, layers, kernel_dim)
        assert mixer.bidirectional and mixer.postact == "glu"
    cifar = build("sequence.SGConv_lra_cifar")[0].blocks[0].mixer
    assert cifar.power_decay == "fixed" and not cifar.decay.requires_grad
    assert build("sequence.SGConv_pathx")[0].blocks[0].mixer.init_scale == 1
