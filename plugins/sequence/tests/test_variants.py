"""Every registered size variant of the sequence plugin: parameter counts, built on the meta device.

``OURS`` is our exact count with ``sequence.SequenceClsHead`` on the task's classes (``sequence.LMHead``
for the density-estimation variants) and the input the task gives (``INPUTS``); a change to a model's
structure shows here. ``PUBLISHED`` holds the counts the authors report for the same configuration, which ours
must match within 1 %. The S4 paper's tables list no parameter
counts; the four LRA-Image sizes are the counts the official repository reports for its ablation configs
(state-spaces/s4, ``configs/experiment/mega/lra-image/README.md``), so they check our S4/S4D layer structure
(kernel parameters, ``D``, the GLU output projection, norms, encoder and decoder) against the official one.
"""

from __future__ import annotations

import pytest
import torch

import panconv
from panconv_sequence.models.layers import LMHead, SequenceClsHead

# task inputs (metadata the dataset would inject) and classes of each variant
INPUTS = {
    "sequence.S4D_smnist": (dict(in_channels=1), 10),
    "sequence.S4_listops": (dict(vocab_size=16), 10),       # our ListOps vocabulary (datasets/listops.py)
    "sequence.S4_imdb": (dict(vocab_size=256), 2),          # bytes
    "sequence.S4_aan": (dict(vocab_size=256), 2),
    "sequence.S4_lra_cifar": (dict(in_channels=1), 10),     # grayscale
    "sequence.S4_pathfinder": (dict(in_channels=1), 2),
    "sequence.S4_pathx": (dict(in_channels=1), 2),
    "sequence.S4_scifar": (dict(in_channels=3), 10),        # colour
    "sequence.S4_sc": (dict(in_channels=1), 10),            # raw waveform, SC10
    "sequence.S4D_lra_image_small": (dict(), 10),
    "sequence.S4D_lra_image_large": (dict(), 10),
    "sequence.S4_lra_image_small": (dict(), 10),
    "sequence.S4_lra_image_large": (dict(), 10),
    "sequence.Combiner_cifar10": (dict(vocab_size=256), "lm"),   # pixels as 256-way tokens, next-pixel head
    "sequence.Combiner_cifar10_12l": (dict(vocab_size=256), "lm"),
}

OURS = {
    "sequence.S4D_smnist": 730_634,
    "sequence.S4_listops": 815_186,
    "sequence.S4_imdb": 874_570,
    "sequence.S4_aan": 874_570,
    "sequence.S4_lra_cifar": 3_565_706,
    "sequence.S4_pathfinder": 1_288_706,
    "sequence.S4_pathx": 1_288_706,
    "sequence.S4_scifar": 3_567_882,
    "sequence.S4_sc": 303_626,
    "sequence.S4D_lra_image_small": 267_018,
    "sequence.S4D_lra_image_large": 3_957_770,
    "sequence.S4_lra_image_small": 299_786,
    "sequence.S4_lra_image_large": 4_154_378,
    "sequence.Combiner_cifar10": 19_180_800,
    "sequence.Combiner_cifar10_12l": 38_098_176,
}

PUBLISHED = {  # official README of state-spaces/s4, LRA-Image ablations (10-class head, grayscale input)
    "sequence.S4D_lra_image_small": 267_000,
    "sequence.S4D_lra_image_large": 3_960_000,
    "sequence.S4_lra_image_small": 300_000,
    "sequence.S4_lra_image_large": 4_150_000,
}

VARIANTS = [name for name in panconv.list_models("sequence.*") if name not in {
    f"sequence.{base}" for base in ("S4", "S4D", "Hyena", "SGConv", "Orchid", "TCNCA", "Combiner", "FIT",
                                    "Transformer", "UniRepLKNetSeries")}
            and not name.startswith(("sequence.SGConv_", "sequence.unireplknet_"))]
# (the SGConv LRA variants are counted in test_param_counts.py, the UniRepLKNet one in test_unireplknet_series.py)


def count(name: str) -> int:
    inputs, classes = INPUTS[name]
    with torch.device("meta"):
        backbone = panconv.get_component("backbone", name)(**inputs)
        head = (LMHead(backbone.feature_info, vocab_size=inputs["vocab_size"]) if classes == "lm"
                else SequenceClsHead(backbone.feature_info, num_classes=classes))
    return sum(p.numel() for p in backbone.parameters()) + sum(p.numel() for p in head.parameters())


def test_every_variant_has_a_count():
    assert sorted(VARIANTS) == sorted(OURS)


@pytest.mark.parametrize("name", sorted(OURS))
def test_parameter_count(name):
    n = count(name)
    assert n == OURS[name]
    if name in PUBLISHED:
        assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < 0.01


def test_n_ssm_ties_the_state_matrices_across_channels():
    from panconv_sequence.models.s4 import S4DKernel, S4Kernel

    for kernel in (S4Kernel(8, d_state=4, n_ssm=2, l_max=16), S4DKernel(8, d_state=4, n_ssm=2)):
        assert kernel.A_real.shape == (2, 2) and kernel.B.shape[:2] == (2, 2)
        with torch.no_grad():
            kernel.A_real[1] += 1.0  # SSM 1 decays faster: channels 1, 3, 5, 7 share it
        lam = kernel.continuous()[1]
        assert torch.equal(lam[0], lam[2]) and torch.equal(lam[1], lam[7]) and not torch.equal(lam[0], lam[1])
    with pytest.raises(ValueError, match="n_ssm must divide d_model"):
        S4DKernel(8, d_state=4, n_ssm=3)
