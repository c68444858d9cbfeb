"""OBoW (Gidaris et al., CVPR 2021, "OBoW: Online Bag-of-Visual-Words Generation for Self-Supervised
Learning"): a student learns to predict, from perturbed crops of an image, the bag of visual words that a
momentum teacher extracts from the whole image.

One training step (paper Sec. 3, official ``obow/builder_obow.py``):

1. **Views.** The teacher sees the image; the student sees ``num_crops`` random resized crops
   (official: 2 of 160 px from 224, area 8-60 %) and ``num_patches`` small patches (official: 5 of 96 px).
2. **BoW targets (teacher).** For each BoW level (official: the last two ResNet stages) the teacher's
   feature map, its border removed, is soft-assigned to the level's vocabulary of ``num_words`` visual
   words: ``codes = softmax_k(-inv_delta / mu * ||f_u - w_k||^2)`` with ``mu`` an exponential moving
   average (0.99) of the mean distance of each local feature to its nearest word; the codes are max-pooled
   over positions and L1-normalised into the BoW ``y``.
3. **Online vocabulary.** Each level's vocabulary is a queue: every step, each image contributes one
   random local feature of its 3x3-averaged teacher map ("local_average"), replacing the oldest words.
4. **Dynamic BoW prediction (student).** A weight generator per level (L2-norm -> linear -> BN -> ReLU ->
   linear -> L2-norm) turns the current vocabulary into classifier weights ``W``; the student's global
   feature ``g`` (average-pooled last map) gives ``logits = kappa * g W^T`` (kappa 5, fixed).
5. **Loss**: cross-entropy between each view's predicted distribution and the teacher's BoW (the official
   KL divergence, batch mean), averaged over levels, summed over the two view types.
6. **Momentum teacher**: ``theta_t <- alpha theta_t + (1 - alpha) theta_s`` before the targets are made,
   alpha following a cosine schedule from 0.99 to 1 (official ``alpha_cosine``).

The student (the network that is kept) sits under the prefix ``backbone.`` (so ``run.init_from: PATH``
fine-tunes it as it is); the teacher under ``teacher.module.``. A train-mode forward moves the teacher,
the vocabularies and the distance average (declared in ``running_buffers``), as the official forward does.

:class:`ResNetTrunk` is the official feature extractor (``obow/feature_extractor.py`` ``ResNet``): a
torchvision ResNet (``resnet18`` for the paper's ImageNet-20% study, ``resnet50`` for full ImageNet) cut
into stem, block1..block4, without its pooling and fc; the registered ``obow_resnet18`` and
``obow_resnet18_vanilla`` are the official ``config/ImageNet20/ResNet18_OBoW_{full,vanilla}.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen
from torch import nn

from panconv.api import Backbone, FeatureInfo, Model, feature_info_of

from .layers import check_out_indices
from .spark import build_encoder
from .ssl import EMATeacher, cosine_momentum, multi_crop

_Fraction = Annotated[float, Interval(gt=0, le=1)]  # an area fraction of the image


class L2Normalize(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=self.dim)


class ResNetTrunk(Backbone):
    """The official OBoW feature extractor: torchvision's ``arch`` without average pooling and fc, returning
    the maps of its four blocks (``feature_info``: reductions 4/8/16/32; block3/block4 are the "conv4"/"conv5"
    BoW levels of the paper). Weights initialised as torchvision's (He normal); ``in_channels != 3`` replaces
    the stem convolution (same shape rule). Keys: ``stem.{0,1}`` = torchvision's ``conv1``/``bn1``,
    ``stages.i`` = ``layer{i+1}`` (same order as torchvision's state dict)."""

    metadata_inputs = ("in_channels",)
    paper_head = {"neck": {"type": "core.GlobalAvgPool"}, "head": {"type": "core.LinearClsHead", "num_classes": 1000}}

    def __init__(self, arch: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] = "resnet18",
                 in_channels: Annotated[int, Ge(1)] = 3, out_indices: tuple[int, ...] | None = None):
        super().__init__()
        import torchvision

        if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            raise ValueError(f"ResNetTrunk: arch must be resnet18/34/50/101/152, got {arch!r}")
        if in_channels < 1:
            raise ValueError(f"ResNetTrunk: in_channels must be >= 1, got {in_channels}")
        self.out_indices = check_out_indices(out_indices, 4)
        net = getattr(torchvision.models, arch)(weights=None)
        conv1 = net.conv1
        if in_channels != 3:
            conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        self.in_channels = in_channels
        self.stem = nn.Sequential(conv1, net.bn1, net.relu, net.maxpool)
        layers = (net.layer1, net.layer2, net.layer3, net.layer4)
        self.stages = nn.ModuleList(layers[:max(self.out_indices) + 1])   # stages past the last output: not built
        dims = [layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels
                for layer in layers]
        self.feature_info = [FeatureInfo(dims[i], 4 * 2 ** i, f"stages.{i}") for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                out.append(x)
        return out

    @classmethod
    def example_config(cls) -> dict:
        return {"arch": "resnet18", "out_indices": (2, 3)}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.in_channels, 64, 64)


class BoWExtractor(nn.Module):
    """The teacher's bag-of-words for one feature level, with its online (queue) vocabulary.

    ``forward(features (B, C, H, W)) -> (bow (B, K), codes (B, K, H-2, W-2))``. In train mode it first
    updates the distance average and the vocabulary (the codes use the distances to the vocabulary as it
    was). ``inv_delta=None``: hard assignment. ``update_type``: "local_average" (3x3 average, one random
    position per image; official default), "no_averaging" or "global_average". A batch that does not
    divide ``num_words`` wraps around the queue (the official code requires a divisor).
    """

    def __init__(self, num_words: int, num_channels: int, inv_delta: float | None = 15.0,
                 bow_pool: Literal["max", "avg"] = "max",
                 update_type: Literal["local_average", "no_averaging", "global_average"] = "local_average",
                 decay: float = 0.99):
        super().__init__()
        if inv_delta is not None and inv_delta <= 0:
            raise ValueError(f"BoWExtractor: inv_delta must be > 0 (or None), got {inv_delta}")
        if bow_pool not in ("max", "avg") or update_type not in ("local_average", "no_averaging", "global_average"):
            raise ValueError(f"BoWExtractor: bow_pool {bow_pool!r} / update_type {update_type!r} not supported")
        self.num_words, self.inv_delta, self.bow_pool = num_words, inv_delta, bow_pool
        self.update_type, self.decay = update_type, decay
        self.register_buffer("embedding", torch.randn(num_words, num_channels).clamp(min=0))
        self.register_buffer("embedding_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("num_batches", torch.zeros(1))
        self.register_buffer("min_distance_mean", torch.full((1,), 0.5))

    @torch.no_grad()
    def update_vocabulary(self, features: torch.Tensor) -> None:
        """Replace the oldest words with one local feature per image (see ``update_type``)."""
        if self.update_type == "global_average":
            selected = features.mean((2, 3))
        else:
            if self.update_type == "local_average":
                features = F.avg_pool2d(features, kernel_size=3, stride=1, padding=0)
            features = features.flatten(2)
            b, _, n = features.shape
            index = torch.randint(0, n, (b,), device=features.device)
            index += torch.arange(b, device=features.device) * n
            selected = features.permute(0, 2, 1).reshape(b * n, -1)[index]
        rows = (int(self.embedding_ptr) + torch.arange(selected.shape[0], device=selected.device)) % self.num_words
        self.embedding[rows[-self.num_words:]] = selected[-self.num_words:]
        self.embedding_ptr[0] = (int(self.embedding_ptr) + selected.shape[0]) % self.num_words

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.dim() != 4 or features.shape[2] < 3 or features.shape[3] < 3:
            raise ValueError(f"BoWExtractor: expected a feature map (B, C, H>=3, W>=3), got {tuple(features.shape)}")
        features = features[:, :, 1:-1, 1:-1].contiguous()  # the border is left out
        if self.update_type == "local_average" and min(features.shape[2:]) < 3:
            raise ValueError(f"BoWExtractor: local_average needs maps of at least 5x5 (3x3 without the border), "
                             f"got {tuple(features.shape[2:])} without the border")
        # ||f||^2 + ||w||^2 - 2 <f, w> as a 1x1 convolution with the words
        dist = (features.pow(2).sum(1, keepdim=True)
                + F.conv2d(features, weight=-2 * self.embedding[:, :, None, None], bias=self.embedding.pow(2).sum(1)))
        min_dist = dist.min(dim=1)
        if self.training:
            with torch.no_grad():
                self.min_distance_mean.mul_(self.decay).add_(min_dist.values.mean(), alpha=1.0 - self.decay)
                self.update_vocabulary(features)
                self.num_batches += 1
        if self.inv_delta is None:
            codes = torch.zeros_like(dist).scatter_(1, min_dist.indices.unsqueeze(1), 1.0)
        else:
            codes = F.softmax(-(self.inv_delta / self.min_distance_mean) * dist, dim=1)
        bow = codes.amax((2, 3)) if self.bow_pool == "max" else codes.mean((2, 3))
        return F.normalize(bow, p=1, dim=1), codes


class BoWPredictor(nn.Module):
    """The student's dynamic BoW head: per level, a weight generator maps the vocabulary ``(K, C_l)`` to
    unit classifier weights ``(K, C_out)``; ``forward(features, vocabularies)`` -> ``logits[view][level]``
    ``= kappa_l * features[view] @ W_l^T``."""

    def __init__(self, num_channels_out: int, num_channels_in: Sequence[int], num_channels_hidden: int,
                 kappa: float = 8.0, learn_kappa: bool = False):
        super().__init__()
        self.generators = nn.ModuleList(
            nn.Sequential(L2Normalize(1), nn.Linear(c, num_channels_hidden, bias=False),
                          nn.BatchNorm1d(num_channels_hidden), nn.ReLU(inplace=True),
                          nn.Linear(num_channels_hidden, num_channels_out), L2Normalize(1))
            for c in num_channels_in)
        self.scale = nn.Parameter(torch.full((len(num_channels_in),), float(kappa)), requires_grad=learn_kappa)

    def forward(self, features: Sequence[torch.Tensor], vocabularies: Sequence[torch.Tensor]) -> list[list]:
        weights = [gen(v) for gen, v in zip(self.generators, vocabularies)]
        return [[(f.flatten(1) * self.scale[i]) @ w.t() for i, w in enumerate(weights)] for f in features]


def bow_perplexity(bow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch perplexity, mean per-image perplexity) of BoW targets ``(B, K)`` (official monitoring)."""
    p = F.normalize(bow, p=1, dim=1)
    image = torch.exp(-(p * torch.log(p + 1e-5)).sum(1)).mean()
    q = F.normalize(bow.sum(0), p=1, dim=0)
    return torch.exp(-(q * torch.log(q + 1e-5)).sum()), image


class OBoW(Model):
    """OBoW self-supervised pre-training of a backbone (student ``backbone.``, teacher ``teacher.module.``).

    Args:
        backbone: the network, a backbone spec ``{type: vision.ConvNeXt, ...}`` or a module (any backbone
            returning maps; the student's feature is its last map average-pooled).
        in_channels: image channels (from the data set).
        bow_levels: which backbone outputs the teacher turns into BoW targets (official: the last two).
        num_words: vocabulary size per level (official 8192).
        inv_delta: base inverse temperature of the soft assignment (official 10 for ImageNet-20 / ResNet-18,
            15 by default); ``None``: hard assignment.
        kappa: scale of the predicted logits (official 5 in the configs), learned when ``learn_kappa``.
        momentum: the teacher's initial EMA coefficient (official 0.99); with ``momentum_steps`` it rises to
            1 along a cosine over that many steps (official ``alpha_cosine``), else stays constant.
        num_crops, crop_size, crop_scale: the student's random resized crops (official 2, 160 px of 224,
            area 8-60 %); ``num_patches``, ``patch_size``, ``patch_scale``: the small patches (official 5 of
            96 px, each about 1/9 of a 60-100 % crop: area 6.7-11 %).
        feature_norm: a LayerNorm on the student's pooled feature (ConvNeXt's final norm, under
            ``feature_norm.``): for backbones without a normalised output (ConvNeXt ends in a residual sum, the
            official ResNets in BN + ReLU), whose unbounded feature norm makes the logits ``kappa g W^T``
            explode. Off by default (official).

    ``forward`` -> in train mode ``{"logits": [per view type: [per level: (B * n, K)]], "targets": [per level:
    (B, K)], ...}``; in eval mode the student predicts from the whole image and ``"features"`` (B, C) is
    the student's pooled last map (the linear-probe / k-NN evaluators read it).
    """

    metadata_inputs = ("in_channels",)
    running_buffers = ("teacher.*", "bow.*", "momentum_step")

    def __init__(self, backbone: dict | nn.Module,
                 in_channels: Annotated[int, Ge(1)] = 3,
                 bow_levels: Annotated[Sequence[int], MinLen(1)] = (-2, -1),
                 num_words: Annotated[int, Ge(2)] = 8192,
                 inv_delta: Annotated[float, Gt(0)] | None = 10.0,
                 kappa: Annotated[float, Gt(0)] = 5.0,
                 learn_kappa: bool = False,
                 bow_pool: Literal["max", "avg"] = "max",
                 update_type: Literal["local_average", "no_averaging", "global_average"] = "local_average",
                 momentum: Annotated[float, Interval(ge=0, le=1)] = 0.99,
                 momentum_steps: Annotated[int, Ge(1)] | None = None,
                 num_crops: Annotated[int, Ge(0)] = 2,
                 crop_size: Annotated[int, Ge(1)] = 160,
                 crop_scale: tuple[_Fraction, _Fraction] = (0.08, 0.6),
                 num_patches: Annotated[int, Ge(0)] = 5,
                 patch_size: Annotated[int, Ge(1)] = 96,
                 patch_scale: tuple[_Fraction, _Fraction] = (0.067, 0.111),
                 feature_norm: bool = False):
        super().__init__()
        if num_crops + num_patches == 0:
            raise ValueError("OBoW: num_crops + num_patches must be >= 1 (the student needs views)")
        for name, (lo, hi) in (("crop_scale", crop_scale), ("patch_scale", patch_scale)):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"OBoW: {name} must be 0 < low <= high <= 1, got {(lo, hi)}")
        self.in_channels = in_channels
        self.backbone = build_encoder(backbone, in_channels)
        info = feature_info_of(self.backbone)
        n = len(info)
        levels = [int(i) % n for i in bow_levels if -n <= int(i) < n]
        if len(levels) != len(bow_levels) or len(set(levels)) != len(levels):
            raise ValueError(f"OBoW: bow_levels must name distinct backbone outputs in {-n}..{n - 1}, got "
                             f"{tuple(bow_levels)}")
        self.bow_levels = tuple(levels)
        self.momentum, self.momentum_steps = momentum, momentum_steps
        self.views = (num_crops, crop_size, tuple(crop_scale), num_patches, patch_size, tuple(patch_scale))
        channels = info[-1].channels
        self.feature_norm = nn.LayerNorm(channels, eps=1e-6) if feature_norm else None
        self.predictor = BoWPredictor(channels, [info[i].channels for i in levels], 2 * channels, kappa, learn_kappa)
        # as the official teacher: only the parameters follow the student; its batch-norm statistics are its own
        self.teacher = EMATeacher(self.backbone, momentum, copy_buffers=False)
        self.bow = nn.ModuleList(BoWExtractor(num_words, info[i].channels, inv_delta, bow_pool, update_type)
                                 for i in levels)
        self.register_buffer("momentum_step", torch.zeros((), dtype=torch.long))

    @classmethod
    def example_config(cls) -> dict:
        return {"backbone": {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16], "patch_size": 2},
                "in_channels": 1, "num_words": 8, "crop_size": 12, "patch_size": 8, "num_patches": 2,
                "momentum_steps": 10}

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.randn(batch_size, self.in_channels, 20, 20), "labels": torch.arange(batch_size) % 2}

    # ---- the pieces of one step
    def student_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C)``: the student's last map, average-pooled (then LayerNorm with ``feature_norm``)."""
        g = self.backbone(x)[-1].mean((2, 3))
        return g if self.feature_norm is None else self.feature_norm(g)

    @torch.no_grad()
    def update_teacher(self) -> float:
        """One EMA step of the teacher (official: before the targets); returns the momentum used."""
        if self.momentum_steps is None:
            alpha = self.momentum
        else:
            alpha = cosine_momentum(int(self.momentum_step), self.momentum_steps, self.momentum, 1.0)
            self.momentum_step += 1
        if alpha < 1.0:
            self.teacher.update(self.backbone, alpha)
        return alpha

    def bow_targets(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's BoW of ``x`` at every level (updates the vocabularies in train mode)."""
        with torch.no_grad():
            maps = self.teacher(x)
            return [extractor(maps[i])[0] for extractor, i in zip(self.bow, self.bow_levels)]

    def bow_step(self, image: torch.Tensor, views: Sequence[torch.Tensor]) -> dict:
        """Predictions from each view tensor ``(B * n, C, h, w)`` (image-major: row ``b * n + j`` is view
        ``j`` of image ``b``) and the teacher's targets for ``image`` (official ``OBoW.forward``)."""
        vocabularies = [extractor.embedding.detach().clone() for extractor in self.bow]
        logits = self.predictor([self.student_features(v) for v in views], vocabularies)
        if self.training:
            self.update_teacher()
        return {"logits": logits, "targets": self.bow_targets(image)}

    def make_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The student's crops and patches, each type stacked image-major ``(B * n, C, size, size)``."""
        num_crops, crop_size, crop_scale, num_patches, patch_size, patch_scale = self.views
        out = []
        for n, size, scale in ((num_crops, crop_size, crop_scale), (num_patches, patch_size, patch_scale)):
            if n:
                views = multi_crop(x, n, 0, size, size, global_scale=scale)
                out.append(torch.stack(views, dim=1).flatten(0, 1))
        return out

    # ---- the model
    def forward(self, batch: dict | torch.Tensor) -> dict:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"OBoW: expected inputs (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if self.training:
            return self.bow_step(x, self.make_views(x))
        out = self.bow_step(x, [x])
        out["features"] = self.student_features(x)
        return out

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        targets = outputs["targets"]
        total = 0.0
        for view_logits in outputs["logits"]:
            per_level = []
            for logits, target in zip(view_logits, targets):
                n = logits.shape[0] // target.shape[0]
                per_level.append(F.kl_div(F.log_softmax(logits, dim=1), target.repeat_interleave(n, dim=0),
                                          reduction="batchmean"))
            total = total + torch.stack(per_level).mean()
        perplexity = [bow_perplexity(t) for t in targets]
        return {"loss": total, "perplexity_batch": torch.stack([p[0] for p in perplexity]).mean().detach(),
                "perplexity_image": torch.stack([p[1] for p in perplexity]).mean().detach()}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        out = {"bow": outputs["targets"][-1]}
        if "features" in outputs:
            out["features"] = outputs["features"]
        return out


# --------------------------------------------------------------------------- weights from the official code

#: official (valeoai/obow) keys without a counterpart in :class:`OBoW`: ``_alpha`` (the teacher's current momentum, a
#: function of ``_iteration``), ``linear_classifier.*`` (the monitoring linear classifier on the teacher's features)
#: and, in the torchvision-format student, ``fc.*`` (the last level's BoW classifier, computed from the vocabulary)
OFFICIAL_DROPPED = ("_alpha", "linear_classifier.", "fc.")
_OFFICIAL_BOW_BUFFERS = {"_embedding": "embedding", "_embedding_ptr": "embedding_ptr",
                         "_track_num_batches": "num_batches", "_min_distance_mean": "min_distance_mean"}
_OFFICIAL_GENERATOR = {"fc": "1", "bn": "2", "last_layer": "4"}  # b{i}_<name> -> index in BoWPredictor.generators[i]
_OFFICIAL_BLOCKS = re.compile(r"_feature_blocks\.(\d+)\.(.+)")
_OFFICIAL_PREDICTOR = re.compile(r"bow_predictor\.layers_w\.(\d+)\.b(\d+)_(fc|bn|last_layer)\.(.+)")
_OFFICIAL_BOW = re.compile(r"bow_extractor\.bow_extractor\.(\d+)\.(_\w+)")
_TORCHVISION = re.compile(r"(conv1|bn1|layer[1-4])\.(.+)")


def _official_resnet_key(key: str) -> str | None:
    """The official feature extractor's key (``obow/feature_extractor.py`` ``ResNet``: ``_feature_blocks.0`` =
    conv1, bn, relu, maxpool; ``_feature_blocks.1-4`` = torchvision's layer1-4) -> :class:`ResNetTrunk`'s."""
    m = _OFFICIAL_BLOCKS.fullmatch(key)
    if not m:
        return None
    block, rest = int(m.group(1)), m.group(2)
    if block == 0:
        for official, ours in (("Conv.", "stem.0."), ("bn.", "stem.1.")):
            if rest.startswith(official):
                return ours + rest[len(official):]
        return None
    if 1 <= block <= 4 and rest.split(".")[0].isdigit():  # a torchvision residual layer (not the WRN's "Block")
        return f"stages.{block - 1}.{rest}"
    return None


def map_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official OBoW weights (valeoai/obow ``obow/builder_obow.py``, ResNet feature extractors) -> :class:`OBoW`'s keys.

    Takes the whole model (the ``network`` of a training checkpoint or of the released "entire model";
    a ``module.`` prefix of the DDP wrapper is stripped) and returns the keys of an :class:`OBoW` with a
    :class:`ResNetTrunk` of the same ``arch`` and the same BoW levels, words and ``momentum_steps`` (the official
    ``alpha_cosine`` iterations): the student ``feature_extractor`` -> ``backbone`` and the teacher
    ``feature_extractor_teacher`` -> ``teacher.module`` (``_feature_blocks.0.{Conv,bn}`` -> ``stem.{0,1}``,
    ``_feature_blocks.{k}`` -> ``stages.{k-1}``), ``bow_predictor.layers_w.{i}.b{i}_{fc,bn,last_layer}`` ->
    ``predictor.generators.{i}.{1,2,4}``, ``bow_predictor.scale`` -> ``predictor.scale``,
    ``bow_extractor.bow_extractor.{i}._{embedding,embedding_ptr,track_num_batches,min_distance_mean}`` ->
    ``bow.{i}.{embedding,embedding_ptr,num_batches,min_distance_mean}`` and the cosine schedule's ``_iteration``
    (float, shape ``(1,)``) -> ``momentum_step`` (long scalar); a run with a constant ``alpha`` has no
    ``_iteration``, so load that one with ``strict=False`` (``momentum_step`` unused without ``momentum_steps``).
    The torchvision-format student (the released "only feature extractor", ``conv1`` / ``bn1`` / ``layer1-4``)
    gives ``backbone.*`` alone (for ``run.init_from``). One form (nothing is re-parameterised); every other shape
    is the same on both sides. Keys in :data:`OFFICIAL_DROPPED` are left out; any other key the official model
    does not have (a WideResNet extractor's, for one) raises a KeyError naming it.
    """
    out = {}
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name.startswith(OFFICIAL_DROPPED):
            continue
        new, tv = None, _TORCHVISION.fullmatch(name)
        if name.startswith("feature_extractor."):
            rest = _official_resnet_key(name[len("feature_extractor."):])
            new = rest and "backbone." + rest
        elif name.startswith("feature_extractor_teacher."):
            rest = _official_resnet_key(name[len("feature_extractor_teacher."):])
            new = rest and "teacher.module." + rest
        elif m := _OFFICIAL_PREDICTOR.fullmatch(name):
            if m.group(1) == m.group(2):
                new = f"predictor.generators.{m.group(1)}.{_OFFICIAL_GENERATOR[m.group(3)]}.{m.group(4)}"
        elif name == "bow_predictor.scale":
            new = "predictor.scale"
        elif (m := _OFFICIAL_BOW.fullmatch(name)) and m.group(2) in _OFFICIAL_BOW_BUFFERS:
            new = f"bow.{m.group(1)}.{_OFFICIAL_BOW_BUFFERS[m.group(2)]}"
        elif name == "_iteration":
            new, value = "momentum_step", value.reshape(()).round().long()
        elif tv:  # the torchvision-format student
            module, rest = tv.groups()
            prefix = {"conv1": "stem.0", "bn1": "stem.1"}.get(module) or f"stages.{int(module[-1]) - 1}"
            new = f"backbone.{prefix}.{rest}"
        if new is None:
            raise KeyError(f"unexpected key in an official OBoW state dict: {key}")
        out[new] = value
    return out


__all__ = ["BoWExtractor", "BoWPredictor", "L2Normalize", "OBoW", "ResNetTrunk", "bow_perplexity",
           "map_official_state_dict"]
