"""BT^2: backward-compatible training with basis transformation (Zhou et al., ICCV 2023; official code
YifeiZhou02/BT-2), with the plain baselines it is compared with: independent training and BCT's
influence loss (Shen et al. 2020).

Backward compatibility: a new embedding model must be usable against the *old* model's gallery (new
queries vs old gallery features: no re-indexing) while being better on its own (new vs new).

* :class:`EmbeddingNet`: encoder -> linear -> L2-normalised embedding -> linear classifier (no bias),
  cross-entropy. With an ``old_model`` and ``influence_weight > 0`` it is BCT: the old model's
  classifier (here, as the official code, the *pseudo classifier*: the class means of the old model's
  training-set embeddings) must also classify the new embedding, ``lambda * CE(phi_new W_old^T, y)``;
  with ``influence_weight = 0`` it is independent training (the old model is only evaluated against).
* :class:`BT2`: the encoder gives ``d_new + d_old`` features ``f``. The official ``ResNet_ortho`` head
  (:class:`BasisTransformation`): ``phi_old' = fc3(relu(f))`` (``d_old``) and ``phi_new' = f[:, :d_new]``,
  both normalised; the concatenation ``[norm(phi_old'[:, :to_add]); P (C phi_new')]`` (``P`` orthogonal)
  has its first ``d_old`` dimensions turned by a second orthogonal ``R`` into ``phi_bct`` (compatible with
  the old model), and the final new embedding is ``[phi_bct; remaining to_add + d_new - d_old dims]``:
  the extra dimensions. Orthogonal maps keep distances, so the new space holds ``phi_new'`` intact (a
  basis transformation), while its first ``d_old`` coordinates live in the old space. Loss (official
  ``TransferTrainer``): ``CE(fc_out(phi_new'), y) + lambda_2 CE(norm(phi_bct) W_old^T, y)
  + lambda_3 (1 - cos(norm(phi_bct), phi_old(x))) [+ lambda_1 (1 - cos(phi_new', phi_ind(x)))]`` where
  ``phi_old(x)`` is the old model's embedding of the same image and ``phi_ind`` an optional independently
  trained new model (``new_model``; the official recipe uses one).

Old (and independent) models are given as a work dir / checkpoint of an earlier ``panconv run``
(``panconv.load_model``; frozen, in eval mode, and *not* part of this model's state dict), or as a model
config dict (random weights, seeded: for tests). A sequence of upgrades is a chain of runs, each naming the
previous one's work dir as its ``old_model`` (examples/vision_bt2_*.yaml; README: the table).

Encoders (``arch``): ``cnn`` (conv-BN-ReLU stages with max pooling, ``width`` channels doubling per stage:
AlexNet/VGG-like at digit scale), ``vit`` (the ViT of :mod:`panconv_vision.models.cca`, class token) or
``resnet50``: the official code's ResNet-50 (``models/resnet.py``, from apple/ml-fct; :class:`ResNetEncoder`)
whose last bottleneck outputs the embedding itself (``embed_dim``, or ``embed_dim + d_old`` for BT^2) through
a projection shortcut, average-pooled; there is then no separate embedding layer (``width`` and ``stages``
are unused). Registered at the official ImageNet sizes (``configs/imagenet_*.yaml``: 128-d old and new
embeddings, 32 extra dimensions): ``embedding_resnet50`` (the old / independent / BCT model, official
``ResNet50``) and ``bt2_resnet50`` (official ``ResNet50_ortho``); counts in plugin.py, tests/test_bt2.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from panconv.api import Model
from panconv.errors import CheckpointError

from .cca import ViTTrunk

__all__ = ["BT2", "BasisTransformation", "ConvEncoder", "EmbeddingNet", "ResNetEncoder", "ViTEncoder", "bt2_loss",
           "pseudo_classifier"]


class ConvEncoder(nn.Module):
    """``stages`` x (3x3 conv-BN-ReLU, 2x2 max pool), widths ``width * 2^i``, then global average pooling."""

    def __init__(self, in_channels: int, width: int, stages: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(stages):
            layers += [nn.Conv2d(c, width * 2 ** i, 3, padding=1, bias=False), nn.BatchNorm2d(width * 2 ** i),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = width * 2 ** i
        self.features = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))


class ViTEncoder(nn.Module):
    """A ViT (:class:`~panconv_vision.models.cca.ViTTrunk`, 4x4 patches, ``width`` wide, 4 heads, ``stages``
    blocks) -> final LayerNorm of the class token."""

    def __init__(self, in_channels: int, width: int, stages: int, img_size: int, patch_size: int = 4):
        super().__init__()
        self.trunk = ViTTrunk(in_channels, img_size, patch_size, width, stages, 4, 4.0, [0.0] * stages)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.trunk(x)[:, 0])


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 (stride), 1x1, BN after each, ReLU; projection ``downsample`` shortcut);
    ``out_dim`` may differ from ``4 * planes`` (the official embedding block) and ``nonlin=False`` drops the
    final ReLU (official ``last_nonlin``). Submodules in the official order."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 nonlin: bool = True, out_dim: int | None = None):
        super().__init__()
        out_dim = 4 * planes if out_dim is None else out_dim
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.nonlin = nonlin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out) if self.nonlin else out


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class ResNetEncoder(nn.Module):
    """The official BT^2 / ml-fct ResNet-50 trunk: 7x7/2 conv-BN-ReLU, 3x3/2 max pool, bottleneck stages
    ``depths`` (64/128/256/512 planes), the last block of the last stage giving ``out_dim`` channels (a
    projection shortcut when ``out_dim != 2048``; ReLU unless ``last_nonlin=False``), global average pooling.
    ``forward(x) -> (N, out_dim)``. Needs at least two blocks per stage (the official ResNet-50: 3/4/6/3)."""

    def __init__(self, in_channels: int, out_dim: int, depths: tuple[int, ...] = (3, 4, 6, 3),
                 last_nonlin: bool = True):
        super().__init__()
        if len(depths) != 4 or min(depths) < 2:
            raise ValueError(f"ResNetEncoder: depths must be 4 stages of >= 2 blocks, got {tuple(depths)}")
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            stride, last = (1 if i == 0 else 2), (out_dim if i == 3 else 4 * planes)
            blocks = [Bottleneck(inplanes, planes, stride,
                                 _projection(inplanes, 4 * planes, stride) if stride != 1 or inplanes != 4 * planes
                                 else None)]
            blocks += [Bottleneck(4 * planes, planes) for _ in range(depth - 2)]
            blocks.append(Bottleneck(4 * planes, planes, 1, _projection(4 * planes, last, 1) if last != 4 * planes
                                     else None, nonlin=last_nonlin or i < 3, out_dim=last))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = 4 * planes
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))


def _encoder(arch: str, in_channels: int, width: int, stages: int, img_size: int, out_dim: int = 0) -> nn.Module:
    if arch == "cnn":
        return ConvEncoder(in_channels, width, stages)
    if arch == "vit":
        return ViTEncoder(in_channels, width, stages, img_size)
    if arch == "resnet50":
        return ResNetEncoder(in_channels, out_dim)
    raise ValueError(f"arch must be 'cnn', 'vit' or 'resnet50', got {arch!r}")


def _embedding_layer(encoder: nn.Module, arch: str, dim: int) -> nn.Module:
    """The linear map from the encoder's feature to the embedding; none for the ResNet-50 (its last block
    gives the embedding, as the official code)."""
    return nn.Identity() if arch == "resnet50" else nn.Linear(encoder.out_dim, dim)


def _frozen_model(spec: str | dict | None, role: str) -> nn.Module | None:
    """``spec``: a work dir / checkpoint (``panconv.load_model``) or a model config (built with seed 0)."""
    if spec is None:
        return None
    import panconv

    # on the CPU even when this model is built on the meta device (the engine sizes models that way): the
    # old model's weights are real data
    if isinstance(spec, dict):
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(0)
            model = panconv.create_model(dict(spec))
    elif isinstance(spec, str):
        if not Path(spec).exists():   # a ValueError: config validation names the key and the file
            raise ValueError(f"{role}: {spec} does not exist (the work dir or checkpoint of the earlier stage: run "
                             f"it first, from the directory this path is relative to)")
        try:
            with torch.device("cpu"):
                model = panconv.load_model(spec, attach_data=False)
        except CheckpointError as error:
            raise ValueError(f"{role}: {error}") from None
    else:
        raise ValueError(f"{role} must be a work dir / checkpoint path or a model config, got {type(spec).__name__}")
    if not hasattr(model, "embed"):
        raise ValueError(f"{role} ({type(model).__name__}) has no embed(x): use a vision.EmbeddingNet or vision.BT2")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def pseudo_classifier(model: nn.Module, dataset: Any, num_classes: int, batch_size: int = 500) -> torch.Tensor:
    """Class means of ``model.embed`` over ``dataset`` (the official code's ``pseudo_classifier``: the old
    model's embeddings averaged per class, not re-normalised). ``(num_classes, D)``; absent classes are 0."""
    device = next(model.parameters()).device
    sums, counts = None, torch.zeros(num_classes)
    for start in range(0, len(dataset), batch_size):
        batch = dataset.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        emb = model.embed(batch["inputs"].to(device)).float().cpu()
        labels = batch["labels"].long().cpu()
        sums = torch.zeros(num_classes, emb.shape[1]) if sums is None else sums
        sums.index_add_(0, labels, emb)
        counts += torch.bincount(labels, minlength=num_classes).float()
    return sums / counts.clamp_min(1)[:, None]


class _Compatible(Model):
    """What the new models share: the frozen old model, its pseudo classifier, ``predict``/``example_inputs``."""

    metadata_inputs = ("num_classes", "in_channels")
    in_channels: int
    img_size: int
    num_classes: int

    def _setup_old(self, old_model, new_model=None) -> None:
        # kept out of the module tree (not trained, not in the state dict, loaded from their own runs)
        object.__setattr__(self, "_old", _frozen_model(old_model, "old_model"))
        object.__setattr__(self, "_independent", _frozen_model(new_model, "new_model"))
        d_old = self._old_dim() if self._old is not None else 1
        self.register_buffer("pseudo_classifier", torch.zeros(self.num_classes, d_old))
        self.register_buffer("pseudo_ready", torch.zeros((), dtype=torch.bool))

    def _old_dim(self) -> int:
        with torch.no_grad(), torch.device("cpu"):
            return int(self._old.embed(torch.zeros(1, self.in_channels, self.img_size, self.img_size)).shape[1])

    @staticmethod
    def _run(model: nn.Module | None, x: torch.Tensor) -> torch.Tensor | None:
        if model is None:
            return None
        if next(model.parameters()).device != x.device:
            model.to(x.device)
        with torch.no_grad():
            return model.embed(x)

    def attach_data(self, dataset: Any) -> None:
        """The old model's pseudo classifier from the training split (once; kept in the state dict)."""
        if self._old is not None and not bool(self.pseudo_ready) and hasattr(dataset, "collate"):
            self.pseudo_classifier.copy_(pseudo_classifier(self._old, dataset, self.num_classes))
            self.pseudo_ready.fill_(True)

    def predict(self, outputs: dict, batch: dict | None = None) -> dict:
        out = {"features": outputs["embedding"], "logits": outputs["logits"]}
        if outputs.get("old_features") is not None:
            out["old_features"] = outputs["old_features"]
        return out

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(batch_size)
        batch = {"inputs": torch.randn(batch_size, self.in_channels, self.img_size, self.img_size, generator=g),
                 "labels": torch.arange(batch_size) % self.num_classes}
        if self._old is not None and not bool(self.pseudo_ready):   # what attach_data does on a real split
            with torch.no_grad():
                emb = self._old.embed(batch["inputs"])
            self.pseudo_classifier.zero_().index_add_(0, batch["labels"], emb)
        return batch


def _check(name: str, **values) -> None:
    bad = [f"{k}={v}" for k, v in values.items() if v is not None and v < (0 if k.startswith("lambda") else 1)]
    if bad:
        raise ValueError(f"{name}: {', '.join(bad)} out of range (lambdas >= 0, sizes >= 1)")


class EmbeddingNet(_Compatible):
    """Independent training (``influence_weight = 0``) or BCT (``> 0``, needs ``old_model`` of the same
    embedding size); see the module docstring.

    Args:
        num_classes / in_channels: filled from the data set. img_size: the input side (ViT positions).
        arch / width / stages: the encoder. embed_dim: the embedding size.
        old_model: the previous model (work dir, checkpoint or model config), for BCT and for evaluation.
        influence_weight: BCT's lambda. label_smoothing: of the cross-entropy.
        logit_scale: multiplies the classifier's logits (1 = the official code; the normalised embedding bounds
            them, so short runs use a cosine-classifier scale such as 16). The influence logits are not scaled.
    """

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 10, in_channels: Annotated[int, Ge(1)] = 1,
                 img_size: Annotated[int, Ge(4)] = 28, arch: Literal["cnn", "vit", "resnet50"] = "cnn",
                 width: Annotated[int, Ge(1)] = 16, stages: Annotated[int, Ge(1)] = 3,
                 embed_dim: Annotated[int, Ge(1)] = 32, old_model: str | dict | None = None,
                 influence_weight: Annotated[float, Ge(0)] = 0.0,
                 label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0,
                 logit_scale: Annotated[float, Gt(0)] = 1.0):
        super().__init__()
        if not logit_scale > 0:
            raise ValueError(f"EmbeddingNet: logit_scale must be > 0, got {logit_scale}")
        self.logit_scale = logit_scale
        _check("EmbeddingNet", num_classes=num_classes - 1, width=width, stages=stages, embed_dim=embed_dim,
               lambda_influence=influence_weight)
        self.num_classes, self.in_channels, self.img_size = num_classes, in_channels, img_size
        self.encoder = _encoder(arch, in_channels, width, stages, img_size, embed_dim)
        self.embedding = _embedding_layer(self.encoder, arch, embed_dim)
        self.fc = nn.Linear(embed_dim, num_classes, bias=False)
        self.influence_weight, self.label_smoothing = influence_weight, label_smoothing
        self._setup_old(old_model)
        if influence_weight > 0:
            if self._old is None:
                raise ValueError("EmbeddingNet: influence_weight > 0 (BCT) needs an old_model")
            if self._old_dim() != embed_dim:
                raise ValueError(f"EmbeddingNet: BCT needs embed_dim == the old model's ({self._old_dim()}), got "
                                 f"{embed_dim}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embedding(self.encoder(x)), dim=1)

    def forward(self, batch: dict) -> dict:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        emb = self.embed(x)
        return {"embedding": emb, "logits": self.logit_scale * self.fc(emb), "old_features": self._run(self._old, x)}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        y = batch["labels"]
        out = {"loss_ce": F.cross_entropy(outputs["logits"], y, label_smoothing=self.label_smoothing)}
        if self.influence_weight > 0:
            logits = outputs["embedding"] @ self.pseudo_classifier.T
            out["loss_influence"] = self.influence_weight * F.cross_entropy(logits, y)
        return out

    @classmethod
    def example_config(cls) -> dict:
        old = {"type": "vision.EmbeddingNet", "num_classes": 3, "img_size": 8, "width": 4, "stages": 1,
               "embed_dim": 8}
        return {"num_classes": 3, "img_size": 8, "width": 4, "stages": 2, "embed_dim": 8, "old_model": old,
                "influence_weight": 1.0}


class BasisTransformation(nn.Module):
    """The official ``ResNet_ortho`` head on encoder features ``f`` (``d_new + d_old``): returns
    ``(logits, phi_bct, phi_new', new_embedding)`` as the official forward (module docstring; the
    official 1x1 ``fc3`` convolution is the linear layer ``fc3`` here)."""

    def __init__(self, d_new: int, d_old: int, to_add: int, num_classes: int, C: float = 2.0,
                 normalize: bool = True):
        super().__init__()
        if not 1 <= to_add <= d_old or d_old > d_new + to_add:
            raise ValueError(f"BasisTransformation: needs 1 <= to_add <= d_old and d_old <= d_new + to_add, got "
                             f"d_new={d_new}, d_old={d_old}, to_add={to_add}")
        self.d_new, self.d_old, self.to_add, self.C, self.normalize = d_new, d_old, to_add, C, normalize
        self.fc3 = nn.Linear(d_new + d_old, d_old)
        self.fc_out = nn.Linear(d_new, num_classes, bias=False)
        with torch.device("cpu"):   # torch's orthogonal parametrisation inspects values when it registers
            self.ortholinear_p = orthogonal(nn.Linear(d_new, d_new, bias=False))     # P
            self.ortholinear_old2 = orthogonal(nn.Linear(d_old, d_old, bias=False))  # R

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        old = self.fc3(F.relu(f))
        new = f[:, :self.d_new]
        if self.normalize:
            old, new = F.normalize(old, dim=1), F.normalize(new, dim=1)
        joint = torch.cat([F.normalize(old[:, :self.to_add], dim=1), self.ortholinear_p(self.C * new)], dim=1)
        bct = self.ortholinear_old2(joint[:, :self.d_old])
        extra = joint[:, self.d_old:]                      # the last d_new + to_add - d_old dimensions
        return self.fc_out(new), bct, new, torch.cat([bct, extra], dim=1)


def bt2_loss(logits: torch.Tensor, bct: torch.Tensor, new: torch.Tensor, labels: torch.Tensor,
             phi_old: torch.Tensor, pseudo: torch.Tensor, phi_independent: torch.Tensor | None = None,
             lambdas: tuple[float, float, float] = (1.0, 10.0, 5.0), label_smoothing: float = 0.0
             ) -> dict[str, torch.Tensor]:
    """The official ``TransferTrainer.train`` objective, term by term: ``CE(logits, y)``,
    ``lambda_2 CE(norm(bct) pseudo^T, y)`` (influence), ``lambda_3 (1 - mean cos(phi_old, bct))`` and, with an
    independent new model, ``lambda_1 (1 - mean cos(phi_ind, new))``."""
    lambda_1, lambda_2, lambda_3 = lambdas
    bct, new = F.normalize(bct, dim=1), F.normalize(new, dim=1)
    phi_old = F.normalize(phi_old, dim=1)
    out = {"loss_ce": F.cross_entropy(logits, labels, label_smoothing=label_smoothing),
           "loss_influence": lambda_2 * F.cross_entropy(bct @ pseudo.T, labels),
           "loss_old": lambda_3 * (1 - (phi_old * bct).sum(1).mean())}
    if phi_independent is not None and lambda_1 > 0:
        out["loss_new"] = lambda_1 * (1 - (F.normalize(phi_independent, dim=1) * new).sum(1).mean())
    return out


class BT2(_Compatible):
    """BT^2 (module docstring): an encoder + :class:`BasisTransformation` trained against ``old_model``.

    Args:
        num_classes / in_channels / img_size / arch / width / stages: as :class:`EmbeddingNet`.
        embed_dim: ``d_new``, the size of ``phi_new'``; the new embedding has ``embed_dim + to_add`` dims.
        to_add: the extra dimensions (official ``to_add_dim``). C: the official scale of ``phi_new'``.
        old_model: the previous model (required). new_model: an optional independently trained new model
            whose embedding ``phi_new'`` is pulled to (``lambda_1``; 0 without one).
        lambda_1 / lambda_2 / lambda_3: the official weights (new' matching, influence, old matching).
        label_smoothing / logit_scale: as :class:`EmbeddingNet` (``fc_out``'s logits only).
    """

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 10, in_channels: Annotated[int, Ge(1)] = 1,
                 img_size: Annotated[int, Ge(4)] = 28, arch: Literal["cnn", "vit", "resnet50"] = "cnn",
                 width: Annotated[int, Ge(1)] = 16, stages: Annotated[int, Ge(1)] = 3,
                 embed_dim: Annotated[int, Ge(1)] = 32, to_add: Annotated[int, Ge(1)] = 8,
                 C: Annotated[float, Gt(0)] = 2.0, old_model: str | dict | None = None,
                 new_model: str | dict | None = None, lambda_1: Annotated[float, Ge(0)] = 1.0,
                 lambda_2: Annotated[float, Ge(0)] = 10.0, lambda_3: Annotated[float, Ge(0)] = 5.0,
                 label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0,
                 logit_scale: Annotated[float, Gt(0)] = 1.0):
        super().__init__()
        if not logit_scale > 0:
            raise ValueError(f"BT2: logit_scale must be > 0, got {logit_scale}")
        self.logit_scale = logit_scale
        _check("BT2", num_classes=num_classes - 1, width=width, stages=stages, embed_dim=embed_dim, to_add=to_add,
               lambda_1=lambda_1, lambda_2=lambda_2, lambda_3=lambda_3)
        if not C > 0:
            raise ValueError(f"BT2: C must be > 0, got {C}")
        if old_model is None:
            raise ValueError("BT2: old_model is required (the work dir of the model to stay compatible with)")
        self.num_classes, self.in_channels, self.img_size = num_classes, in_channels, img_size
        self._setup_old(old_model, new_model)
        d_old = self._old_dim()
        self.encoder = _encoder(arch, in_channels, width, stages, img_size, embed_dim + d_old)
        self.embedding = _embedding_layer(self.encoder, arch, embed_dim + d_old)
        self.transform = BasisTransformation(embed_dim, d_old, to_add, num_classes, C)
        self.lambdas, self.label_smoothing = (lambda_1, lambda_2, lambda_3), label_smoothing

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The new embedding (``embed_dim + to_add``), normalised (the official features are normalised
        before retrieval)."""
        return F.normalize(self.transform(self.embedding(self.encoder(x)))[3], dim=1)

    def forward(self, batch: dict) -> dict:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        logits, bct, new, joint = self.transform(self.embedding(self.encoder(x)))
        return {"logits": self.logit_scale * logits, "bct": bct, "new": new, "embedding": F.normalize(joint, dim=1),
                "old_features": self._run(self._old, x), "independent": self._run(self._independent, x)}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        """The official ``TransferTrainer`` objective (:func:`bt2_loss`)."""
        return bt2_loss(outputs["logits"], outputs["bct"], outputs["new"], batch["labels"], outputs["old_features"],
                        self.pseudo_classifier, outputs.get("independent"), self.lambdas, self.label_smoothing)

    @classmethod
    def example_config(cls) -> dict:
        old = {"type": "vision.EmbeddingNet", "num_classes": 3, "img_size": 8, "width": 4, "stages": 1,
               "embed_dim": 8}
        return {"num_classes": 3, "img_size": 8, "width": 4, "stages": 2, "embed_dim": 8, "to_add": 4,
                "old_model": old, "new_model": old}
