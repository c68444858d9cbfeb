"""RotNet (Gidaris, Singh, Komodakis, ICLR 2018, "Unsupervised Representation Learning by Predicting
Image Rotations"): the Network-In-Network (NIN) of the paper's CIFAR-10 study, trained to tell which of
four rotations (0/90/180/270 degrees) was applied to an image, and the classifiers the paper trains on
the features of each conv block to measure what it learned.

- :class:`NetworkInNetwork` (backbone): ``num_blocks`` conv blocks of three conv-BN-ReLU layers each
  (official ``architectures/NetworkInNetwork.py``): block 1 = 5x5 conv to 192, 1x1 to 160, 1x1 to 96,
  3x3/2 max-pool; block 2 = 5x5 conv to 192, two 1x1 192, 3x3/2 average-pool; blocks 3.. = 3x3 conv 192,
  two 1x1 192 (an average pool after block 3 only with ``pool_after_block3``; the paper's CIFAR RotNets
  have none). Convs have no bias and "same" padding. Returns the map of every block
  (``feature_info``: 96 channels at reduction 2, then 192 at 4, 4, 4, ...).
- :class:`RotNet` (whole model): the NIN under ``backbone.`` and the official classifier block (global
  average pooling + linear to 4 rotations) under ``classifier.``. ``forward`` rotates every image of the
  batch four times (:func:`~panconv_vision.models.ssl.rotate4`, the paper's "all four rotations in the
  same mini-batch") and predicts the rotation; ``predict`` gives the un-rotated images' block features
  for the probes (``features`` = block ``feature_block``, ``block1``.. every block, average-pooled to
  ``feature_pool`` x ``feature_pool`` and flattened) and the rotation logits ``(B, 4, 4)`` (image,
  applied rotation, predicted rotation) for :class:`~panconv_vision.evaluators.representation.RotationAccuracy`.
- :class:`NINClassifier` (whole model): the first ``block`` blocks of the NIN under ``backbone.`` (so
  ``run.init_from: PATH`` loads a RotNet's blocks), frozen or not, and one of the paper's classifiers:
  ``mlp`` (official ``MultLayer``: three fully connected layers, ``min(20 * classes, 2048)`` hidden units,
  BatchNorm + ReLU, on the flattened map; the paper's "non-linear classifier", Table 1), ``conv``
  (official ``NIN_ConvBlock3``: a third NIN block + global pooling + linear; Table 2's "conv. classifier")
  ``pool_linear`` (global average pooling + linear: the supervised NIN's own classifier) or ``linear`` (a
  linear probe: the map average-pooled to ``probe_pool`` x ``probe_pool``, flattened, one linear layer; the
  README's few-label study).

Parameter counts (3-channel input; CIFAR-10's 32x32 in the paper, but the NIN's count does not depend on
the resolution), with the 4-way rotation classifier: 3/4/5 blocks 1,004,484 / 1,411,140 / 1,817,796, equal
to the official ``NetworkInNetwork`` (``num_stages`` 3/4/5, ``use_avg_on_conv3=False``; tests/test_rotnet.py).
The paper gives no parameter counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from panconv.api import Backbone, FeatureInfo, Model

from .ssl import rotate4

__all__ = ["NINClassifier", "NetworkInNetwork", "RotNet"]


class ConvBNReLU(nn.Sequential):
    """The official ``BasicBlock``: conv (no bias, same padding) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=(kernel - 1) // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def nin_block(cin: int, widths: Sequence[int], kernel: int, pool: nn.Module | None) -> nn.Sequential:
    """A NIN block: a ``kernel`` x ``kernel`` conv-BN-ReLU, two 1x1 conv-BN-ReLU, an optional pool."""
    layers = [ConvBNReLU(cin, widths[0], kernel), ConvBNReLU(widths[0], widths[1], 1),
              ConvBNReLU(widths[1], widths[2], 1)]
    return nn.Sequential(*layers, *([pool] if pool is not None else []))


def _check_widths(channels: Sequence[int]) -> tuple[int, int, int]:
    channels = tuple(int(c) for c in channels)
    if len(channels) != 3 or min(channels) < 1:
        raise ValueError(f"channels must be three widths >= 1 (paper: 192, 160, 96), got {channels}")
    return channels


def nin_init(module: nn.Module) -> None:
    """The official ``weight_initialization``: conv ~ N(0, 2 / (k^2 c_out)), BN weight 1 bias 0, linear bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class NetworkInNetwork(Backbone):
    """RotNet's NIN: ``num_blocks`` (>= 3) blocks; returns every block's map (see the module docstring).

    ``channels`` = (main width, block-1 second width, block-1 output width), the paper's (192, 160, 96).
    ``paper_head`` is the official NIN's own classifier (global average pooling + linear), here 1000-way.
    """

    metadata_inputs = ("in_channels",)
    paper_head = {"neck": {"type": "core.GlobalAvgPool"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 3, num_blocks: Annotated[int, Ge(3)] = 4,
                 channels: Sequence[Annotated[int, Ge(1)]] = (192, 160, 96), pool_after_block3: bool = False):
        super().__init__()
        if in_channels < 1 or num_blocks < 3:
            raise ValueError(f"NetworkInNetwork: in_channels >= 1 and num_blocks >= 3 (got {in_channels}, "
                             f"{num_blocks})")
        c, c2, c3 = _check_widths(channels)
        pool3 = nn.AvgPool2d(3, 2, 1) if pool_after_block3 and num_blocks > 3 else None
        self.blocks = nn.ModuleList([
            nin_block(in_channels, (c, c2, c3), 5, nn.MaxPool2d(3, 2, 1)),
            nin_block(c3, (c, c, c), 5, nn.AvgPool2d(3, 2, 1)),
            nin_block(c, (c, c, c), 3, pool3),
            *[nin_block(c, (c, c, c), 3, None) for _ in range(3, num_blocks)]])
        reductions = [2, 4] + [8 if pool3 is not None else 4] * (num_blocks - 2)
        self.feature_info = [FeatureInfo(c3 if i == 0 else c, r, f"blocks.{i}") for i, r in enumerate(reductions)]
        self.in_channels = in_channels
        nin_init(self)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Maps of blocks 1..``upto`` (all blocks by default)."""
        out = []
        for block in self.blocks[:upto]:
            x = block(x)
            out.append(x)
        return out

    @classmethod
    def example_config(cls) -> dict:
        return {"num_blocks": 4, "channels": [8, 6, 4]}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, 16, 16)


def _pool_flat(x: torch.Tensor, side: int) -> torch.Tensor:
    return (F.adaptive_avg_pool2d(x, side) if side > 0 else x).flatten(1)


class RotNet(Model):
    """Rotation-prediction pre-training of a NIN (see the module docstring). Encoder under ``backbone.``."""

    metadata_inputs = ("in_channels",)

    def __init__(self, in_channels: Annotated[int, Ge(1)] = 3, num_blocks: Annotated[int, Ge(3)] = 4,
                 channels: Sequence[Annotated[int, Ge(1)]] = (192, 160, 96), pool_after_block3: bool = False,
                 feature_block: Annotated[int, Ge(1)] = 2, feature_pool: Annotated[int, Ge(0)] = 1):
        super().__init__()
        if not 1 <= feature_block <= num_blocks:
            raise ValueError(f"RotNet: feature_block must be in 1..{num_blocks}, got {feature_block}")
        if feature_pool < 0:
            raise ValueError(f"RotNet: feature_pool must be >= 0 (0: the whole map), got {feature_pool}")
        self.backbone = NetworkInNetwork(in_channels, num_blocks, channels, pool_after_block3)
        self.classifier = nn.Linear(self.backbone.feature_info[-1].channels, 4)   # official: GAP + Linear
        nn.init.zeros_(self.classifier.bias)
        self.feature_block, self.feature_pool = feature_block, feature_pool

    def forward(self, batch: dict) -> dict:
        images = batch["inputs"] if isinstance(batch, dict) else batch
        rotated, labels = rotate4(images)
        maps = self.backbone(rotated)
        logits = self.classifier(maps[-1].mean((-2, -1)))
        return {"rotation_logits": logits, "rotation_labels": labels, "maps": maps}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        logits, labels = outputs["rotation_logits"], outputs["rotation_labels"]
        return {"loss": F.cross_entropy(logits, labels),
                "rotation_accuracy": (logits.argmax(1) == labels).float().mean().detach()}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        blocks = {f"block{i + 1}": _pool_flat(m[0::4], self.feature_pool) for i, m in enumerate(outputs["maps"])}
        logits = outputs["rotation_logits"]
        return {"features": blocks[f"block{self.feature_block}"], **blocks,
                "rotation_logits": logits.reshape(-1, 4, logits.shape[-1])}

    @classmethod
    def example_config(cls) -> dict:
        return {"in_channels": 1, "num_blocks": 3, "channels": [8, 6, 4]}

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.randn(batch_size, self.backbone.in_channels, 16, 16),
                "labels": torch.arange(batch_size) % 10}


class NINClassifier(Model):
    """A classifier on the map of NIN block ``block`` (see the module docstring). Encoder under ``backbone.``.

    ``img_size`` sizes the ``mlp`` head (it flattens the map). ``freeze_backbone``: the blocks get no
    gradient and stay in eval mode (BatchNorm statistics frozen), as in the paper's probes. ``probe_pool``:
    the side the ``linear`` head average-pools the map to (0: the whole map, flattened).
    """

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, num_classes: Annotated[int, Ge(2)], in_channels: Annotated[int, Ge(1)] = 3,
                 block: Annotated[int, Ge(1)] = 2, head: Literal["mlp", "conv", "pool_linear", "linear"] = "mlp",
                 freeze_backbone: bool = True, img_size: Annotated[int, Ge(1)] = 32,
                 channels: Sequence[Annotated[int, Ge(1)]] = (192, 160, 96), pool_after_block3: bool = False,
                 probe_pool: Annotated[int, Ge(0)] = 3):
        super().__init__()
        if num_classes < 2 or block < 1 or img_size < 1:
            raise ValueError(f"NINClassifier: num_classes >= 2, block >= 1, img_size >= 1 (got {num_classes}, "
                             f"{block}, {img_size})")
        if head not in ("mlp", "conv", "pool_linear", "linear"):
            raise ValueError(f"NINClassifier: head must be 'mlp', 'conv', 'pool_linear' or 'linear', got {head!r}")
        if probe_pool < 0:
            raise ValueError(f"NINClassifier: probe_pool must be >= 0 (0: the whole map), got {probe_pool}")
        self.backbone = NetworkInNetwork(in_channels, max(block, 3), channels, pool_after_block3)
        self.backbone.blocks = self.backbone.blocks[:block]                # keep blocks 1..block
        self.backbone.feature_info = self.backbone.feature_info[:block]
        info = self.backbone.feature_info[-1]
        side, c = _map_side(img_size, self.backbone), _check_widths(channels)[0]
        if head == "mlp":
            hidden = min(20 * num_classes, 2048)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(info.channels * side * side, hidden, bias=False),
                                      nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden),
                                      nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
            _classifier_init(self.head)
        elif head == "conv":
            self.head = nn.Sequential(nin_block(info.channels, (c, c, c), 3, None), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(c, num_classes))
            _classifier_init(self.head)
        elif head == "linear":
            pool, n = (nn.AdaptiveAvgPool2d(probe_pool), probe_pool) if probe_pool > 0 else (nn.Identity(), side)
            self.head = nn.Sequential(pool, nn.Flatten(), nn.Linear(info.channels * n * n, num_classes))
            nn.init.zeros_(self.head[-1].bias)
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(info.channels, num_classes))
            nn.init.zeros_(self.head[-1].bias)
        self.img_size = img_size
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
            self.frozen_parameters = ("backbone.",)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, batch: dict) -> torch.Tensor:
        images = batch["inputs"] if isinstance(batch, dict) else batch
        if self.freeze_backbone:
            with torch.no_grad():
                feature = self.backbone(images)[-1]
        else:
            feature = self.backbone(images)[-1]
        return self.head(feature)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["labels"])}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs.softmax(-1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "in_channels": 1, "block": 2, "img_size": 16, "channels": [8, 6, 4],
                "freeze_backbone": False}

    def example_inputs(self, batch_size: int = 2) -> dict:
        size = self.img_size
        return {"inputs": torch.randn(batch_size, self.backbone.in_channels, size, size),
                "labels": torch.arange(batch_size) % self.head[-1].out_features}


def _classifier_init(module: nn.Module) -> None:
    """The official probe ``Classifier.initilize``: convs and BN as :func:`nin_init`, linear ~ N(0, 2 / fan_out)."""
    nin_init(module)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.out_features))


def _map_side(img_size: int, backbone: NetworkInNetwork) -> int:
    """Side of the last kept block's map for a square ``img_size`` input (each pool: 3x3, stride 2, pad 1)."""
    side = img_size
    for block in backbone.blocks:
        if isinstance(block[-1], (nn.MaxPool2d, nn.AvgPool2d)):
            side = (side + 2 - 3) // 2 + 1
    return side
