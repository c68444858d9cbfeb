import torch

import panconv


def test_lenet5_shapes_and_parameter_count():
    backbone = panconv.build("backbone", "lenet.LeNet5")
    s4, c5 = backbone(torch.randn(2, 1, 28, 28))
    assert s4.shape == (2, 16, 5, 5) and c5.shape == (2, 120, 1, 1)
    # C1 156 + C3 2,416 + C5 48,120 (LeCun et al. 1998, fully connected C3)
    assert sum(p.numel() for p in backbone.parameters()) == 156 + 2416 + 48120
