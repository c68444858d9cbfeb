"""SparK (Tian et al., ICLR 2023, "Designing BERT for Convolutional Networks: Sparse and Hierarchical
Masked Modeling"): masked image modelling for any hierarchical ConvNet of this plugin.

The pipeline (paper Fig. 3, official ``pretrain/spark.py``):

1. **Mask.** The image is cut into ``R x R`` patches, ``R`` the encoder's total stride (its last
   ``feature_info`` reduction); a random ``mask_ratio`` of them is dropped (official: 60 %).
2. **Sparse encoding.** The visible patches are encoded as a *sparse* image: masked positions are zero
   at the input and are set back to zero after every convolution, pooling, normalisation and (on
   channels-last maps) linear layer, at every resolution, so nothing leaks from empty positions into
   visible ones other than through zeros, like a submanifold sparse convolution. BatchNorm takes its
   statistics over the visible positions only (official ``SparseBatchNorm2d``); LayerNorm is
   per-position (``SparseConvNeXtLayerNorm``). Other spatial mixing (attention, squeeze-excitation, GRN,
   global filters) sees zeros at masked positions -- no masked content reaches it -- but is not
   re-normalised over the visible ones. This is done with forward hooks on the encoder's own
   modules, active only while :class:`SparK` runs its masked pass: the encoder stays the plain dense
   backbone (same module, same ``state_dict`` keys), which is what fine-tuning loads.
3. **Densifying.** Each encoder level (from the smallest map) goes through a sparse norm (BN for
   ResNets, LN for ConvNeXt, as the official ``densify_norm``), its empty positions are filled with a
   learned per-level mask token, and a projection (1x1 on the smallest level, 3x3 after) maps it to the
   decoder's width at that level.
4. **Light U-Net decoder** (official ``LightDecoder``): ``log2(R)`` blocks of [2x transposed conv ->
   3x3 conv -> BN -> ReLU6 -> 3x3 conv -> BN], width halving each block, the densified level added
   before each block; a 1x1 conv to the image channels.
5. **Loss**: mean squared error on the *masked* patches only, against the per-patch normalised pixels
   (each ``R x R x C`` patch minus its mean over its unbiased std, eps 1e-6).

The pre-trained encoder sits under the prefix ``encoder.`` (its keys are those of the backbone alone),
so a classifier fine-tunes from it with ``run.init_from: {path: ..., map: {"backbone.": "encoder."}}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Model, feature_info_of

from .layers import LayerNorm2d
from .ssl import random_patch_mask

#: normalisations whose statistics span positions: the sparse encoder cannot keep masked positions out of them
_UNSUPPORTED_NORMS = (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)


# --------------------------------------------------------------------------- the sparse encoder


class ActiveMask:
    """The visible ("active") patches of the batch being encoded, read by the sparse hooks.

    ``active``: ``(B, 1, h, w)`` bool on the patch grid (True = visible), or ``None`` outside SparK's
    masked pass (then every hook does nothing and the encoder is the dense backbone).
    """

    def __init__(self) -> None:
        self.active: torch.Tensor | None = None

    def at(self, height: int, width: int) -> torch.Tensor | None:
        """The mask at a map of ``height x width`` (``(B, 1, height, width)``), the grid repeated; ``None``
        when the map is not a multiple of the grid (a globally pooled ``1 x 1`` map: left dense)."""
        h, w = self.active.shape[-2:]
        if height % h or width % w:
            return None
        return self.active.repeat_interleave(height // h, dim=2).repeat_interleave(width // w, dim=3)


class _ZeroMaskedChannelsFirst:
    """Forward hook: the output ``(B, C, H, W)`` zeroed at masked positions (official ``sp_conv_forward``)."""

    def __init__(self, mask: ActiveMask):
        self.mask = mask

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self.mask.active is None or output.dim() != 4:
            return None
        keep = self.mask.at(output.shape[2], output.shape[3])
        return None if keep is None else output * keep


class _ZeroMaskedChannelsLast:
    """Forward hook: a channels-last output ``(B, H, W, C)`` zeroed at masked positions (LayerNorm and
    Linear layers on ConvNeXt's permuted maps)."""

    def __init__(self, mask: ActiveMask):
        self.mask = mask

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self.mask.active is None or output.dim() != 4:
            return None
        keep = self.mask.at(output.shape[1], output.shape[2])
        return None if keep is None else output * keep.permute(0, 2, 3, 1)


class _SparseBatchNorm:
    """Pre- and post-hook pair making a ``BatchNorm2d`` sparse (official ``SparseBatchNorm2d``).

    The pre-hook gathers the visible positions into ``(N_visible, C, 1, 1)``, so the layer's own forward
    normalises them with statistics (and updates its running statistics) over visible positions only;
    the post-hook scatters the result back into a zero ``(B, C, H, W)`` map.
    """

    def __init__(self, mask: ActiveMask):
        self.mask = mask
        self.index: tuple[torch.Tensor, ...] | None = None
        self.shape: tuple[int, ...] | None = None

    def gather(self, module: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        keep = None if self.mask.active is None or x.dim() != 4 else self.mask.at(x.shape[2], x.shape[3])
        if keep is None:
            self.index = None
            return None
        self.index, self.shape = keep[:, 0].nonzero(as_tuple=True), x.shape
        return (x.permute(0, 2, 3, 1)[self.index][:, :, None, None],)

    def scatter(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self.index is None:
            return None
        b, c, h, w = self.shape
        out = output.new_zeros(b, h, w, c)
        out[self.index] = output[:, :, 0, 0]
        self.index = None
        return out.permute(0, 3, 1, 2)


def sparsify(module: nn.Module, mask: ActiveMask) -> list:
    """Hook every layer of ``module`` so that, while ``mask.active`` is set, masked positions stay zero
    and normalisation statistics come from visible positions. Returns the hook handles.

    Convolutions and poolings (channels-first) and ``LayerNorm2d`` are zeroed after; BatchNorm is made
    sparse; ``LayerNorm`` and ``Linear`` applied to a 4-D (channels-last) map are zeroed after. Other
    layers are position-wise (activations of 0 are 0 for ReLU/GELU; a residual sum of zeros is zero).
    Raises ``ValueError`` for normalisations whose statistics mix positions (GroupNorm, InstanceNorm).
    """
    handles = []
    for name, layer in module.named_modules():
        if isinstance(layer, _UNSUPPORTED_NORMS):
            raise ValueError(f"SparK: {name} is a {type(layer).__name__}, whose statistics mix masked and visible "
                             f"positions; supported encoders use BatchNorm or LayerNorm")
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, LayerNorm2d)):
            handles.append(layer.register_forward_hook(_ZeroMaskedChannelsFirst(mask)))
        elif isinstance(layer, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            hook = _SparseBatchNorm(mask)
            handles += [layer.register_forward_pre_hook(hook.gather), layer.register_forward_hook(hook.scatter)]
        elif isinstance(layer, (nn.LayerNorm, nn.Linear)):
            handles.append(layer.register_forward_hook(_ZeroMaskedChannelsLast(mask)))
    return handles


# --------------------------------------------------------------------------- the light decoder


class UNetBlock(nn.Module):
    """2x up-sampling (4x4 stride-2 transposed conv) -> [3x3 conv, BN, ReLU6, 3x3 conv, BN] (official)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up_sample(x))


class LightDecoder(nn.Module):
    """``log2(up_sample_ratio)`` U-Net blocks, widths ``width, width/2, ...``; ``forward(levels)`` adds
    ``levels[i]`` (smallest first, ``None`` = none) before block ``i``; a 1x1 conv to ``out_channels``."""

    def __init__(self, up_sample_ratio: int, width: int = 768, out_channels: int = 3):
        super().__init__()
        n = round(math.log2(up_sample_ratio))
        if 2 ** n != up_sample_ratio:
            raise ValueError(f"LightDecoder: up_sample_ratio must be a power of 2, got {up_sample_ratio}")
        if width // 2 ** n < 1:
            raise ValueError(f"LightDecoder: width {width} cannot halve {n} times (up-sampling x{up_sample_ratio})")
        self.width = width
        channels = [width // 2 ** i for i in range(n + 1)]
        self.dec = nn.ModuleList(UNetBlock(cin, cout) for cin, cout in zip(channels[:-1], channels[1:]))
        self.proj = nn.Conv2d(channels[-1], out_channels, kernel_size=1, bias=True)
        self._init_weights()

    def _init_weights(self) -> None:  # official LightDecoder.initialize
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, levels: list[torch.Tensor | None]) -> torch.Tensor:
        x: Any = 0
        for i, block in enumerate(self.dec):
            if i < len(levels) and levels[i] is not None:
                x = x + levels[i]
            x = block(x)
        return self.proj(x)


# --------------------------------------------------------------------------- SparK


def build_encoder(backbone: Mapping | nn.Module, in_channels: int) -> nn.Module:
    """A backbone from a ``{type: ..., **kwargs}`` spec (``in_channels`` filled in when the backbone
    declares it a metadata input and the spec leaves it unset), or the module itself."""
    if isinstance(backbone, nn.Module):
        return backbone
    if not isinstance(backbone, Mapping) or "type" not in backbone:
        raise ValueError(f"SparK: backbone must be a {{type: ..., ...}} backbone spec, got {backbone!r}")
    import panconv

    spec = dict(backbone)
    name = spec.pop("type")
    factory = panconv.get_component("backbone", name)
    if "in_channels" in (getattr(factory, "metadata_inputs", ()) or ()) and "in_channels" not in spec:
        spec["in_channels"] = in_channels
    return panconv.build("backbone", name, **spec)


class SparK(Model):
    """SparK masked image modelling on a hierarchical backbone; the encoder is ``self.encoder``
    (prefix ``encoder.``).

    Args:
        backbone: the encoder, a backbone spec ``{type: vision.ConvNeXt, ...}`` (any backbone whose
            ``feature_info`` reductions double level by level: ConvNeXt, ResNeXt/ResNet, HorNet, ...).
            All its outputs are used (select levels with its ``out_indices``).
        in_channels: image channels (from the data set), reconstructed by the decoder.
        mask_ratio: fraction of patches masked (official 0.6); ``round(L * (1 - ratio))`` stay visible.
        decoder_width: width of the decoder's first block (official 768), halved each block.
        densify_norm: the sparse norm before the mask tokens: ``"bn"`` (official for ResNets), ``"ln"``
            (official for ConvNeXt) or ``"identity"``.
        eval_mask_seed: in eval mode the masks come from a generator with this seed (reproducible
            validation losses); in train mode from the global RNG. ``batch["mask"]`` (``(B, h, w)`` bool,
            True = masked) overrides both.

    ``forward(batch)`` -> ``{"reconstruction": (B, C, H, W) in per-patch normalised units, "visible":
    (B, 1, h, w)}``, plus in eval mode ``"features"``: the global average of the last map of the
    *dense* (unmasked) encoder pass, for the linear-probe and k-NN evaluators. ``predict`` -> ``{"features",
    "reconstruction"}``, the latter in pixel units with the visible patches pasted back (with a batch).
    """

    metadata_inputs = ("in_channels",)

    def __init__(self, backbone: dict | nn.Module,
                 in_channels: Annotated[int, Ge(1)] = 3,
                 mask_ratio: Annotated[float, Interval(gt=0, lt=1)] = 0.6,
                 decoder_width: Annotated[int, Ge(1)] = 768,
                 densify_norm: Literal["bn", "ln", "identity"] = "bn",
                 eval_mask_seed: Annotated[int, Ge(0)] = 0):
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"SparK: mask_ratio must be in (0, 1), got {mask_ratio}")
        if densify_norm not in ("bn", "ln", "identity"):
            raise ValueError(f"SparK: densify_norm must be 'bn', 'ln' or 'identity', got {densify_norm!r}")
        self.in_channels, self.mask_ratio, self.eval_mask_seed = in_channels, mask_ratio, eval_mask_seed
        self.encoder = build_encoder(backbone, in_channels)
        info = feature_info_of(self.encoder)
        reductions = [f.reduction for f in info]
        self.downsample_ratio = reductions[-1]
        expected = [self.downsample_ratio // 2 ** (len(info) - 1 - i) for i in range(len(info))]
        if reductions != expected or 2 ** round(math.log2(self.downsample_ratio)) != self.downsample_ratio:
            raise ValueError(f"SparK: the encoder's feature_info reductions must be powers of 2 doubling level by "
                             f"level (like 4, 8, 16, 32), got {reductions}")
        self.decoder = LightDecoder(self.downsample_ratio, decoder_width, in_channels)
        self.densify_norms, self.densify_projs = nn.ModuleList(), nn.ModuleList()
        self.mask_tokens = nn.ParameterList()
        width = decoder_width
        for i, f in enumerate(reversed(info)):  # from the smallest map to the largest
            token = nn.Parameter(torch.zeros(1, f.channels, 1, 1))
            nn.init.trunc_normal_(token, mean=0, std=0.02, a=-0.02, b=0.02)
            self.mask_tokens.append(token)
            self.densify_norms.append({"bn": lambda c: nn.BatchNorm2d(c), "ln": lambda c: LayerNorm2d(c, eps=1e-6),
                                       "identity": lambda c: nn.Identity()}[densify_norm](f.channels))
            if i == 0 and f.channels == width:
                self.densify_projs.append(nn.Identity())
            else:
                k = 1 if i == 0 else 3
                self.densify_projs.append(nn.Conv2d(f.channels, width, k, padding=k // 2, bias=True))
            width //= 2
        self.active = ActiveMask()
        sparsify(self.encoder, self.active)
        sparsify(self.densify_norms, self.active)

    @classmethod
    def example_config(cls) -> dict:
        return {"backbone": {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16], "patch_size": 2},
                "in_channels": 1, "decoder_width": 16, "densify_norm": "ln"}

    def example_inputs(self, batch_size: int = 2) -> dict:
        side = 4 * self.downsample_ratio
        return {"inputs": torch.randn(batch_size, self.in_channels, side, side),
                "labels": torch.arange(batch_size) % 2}

    # ---- masking
    def visible_patches(self, batch: dict | None, size: tuple[int, int, int], device) -> torch.Tensor:
        """``(B, 1, h, w)`` bool, True = visible: ``batch["mask"]`` negated, else random (see the class)."""
        b, h, w = size
        given = batch.get("mask") if isinstance(batch, dict) else None
        if given is not None:
            if tuple(given.shape) != (b, h, w):
                raise ValueError(f"SparK: batch['mask'] must be (B, h, w) = {(b, h, w)} (True = masked), "
                                 f"got {tuple(given.shape)}")
            return given.logical_not().view(b, 1, h, w).to(device)
        keep = min(max(round(h * w * (1 - self.mask_ratio)), 1), h * w - 1)  # official len_keep, >= 1 masked
        generator = None if self.training else torch.Generator().manual_seed(self.eval_mask_seed)
        masked = random_patch_mask(b, (h, w), (h * w - keep) / (h * w), generator, device)
        return masked.logical_not().view(b, 1, h, w)

    # ---- the model
    def forward(self, batch: dict | torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        r = self.downsample_ratio
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % r or x.shape[3] % r:
            raise ValueError(f"SparK: expected inputs (N, {self.in_channels}, H, W) with H and W multiples of the "
                             f"encoder's stride {r}, got shape {tuple(x.shape)}")
        visible = self.visible_patches(batch, (x.shape[0], x.shape[2] // r, x.shape[3] // r), x.device)
        self.active.active = visible
        try:
            features = self.encoder(x * self.active.at(x.shape[2], x.shape[3]))
            levels = []
            for i, feature in enumerate(reversed(features)):  # densify, from the smallest map
                keep = self.active.at(feature.shape[2], feature.shape[3])
                if keep is None or feature.shape[2] != x.shape[2] // r * 2 ** i:
                    raise ValueError(f"SparK: encoder level {len(features) - 1 - i} has shape "
                                     f"{tuple(feature.shape)}, expected spatial size {x.shape[2] // r * 2 ** i} "
                                     f"for input {tuple(x.shape)} (feature_info says stride {r // 2 ** i})")
                feature = self.densify_norms[i](feature)
                feature = torch.where(keep, feature, self.mask_tokens[i].expand_as(feature))
                levels.append(self.densify_projs[i](feature))
        finally:
            self.active.active = None
        out = {"reconstruction": self.decoder(levels), "visible": visible}
        if not self.training:
            out["features"] = self.features(x)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: the global average of the last map of the dense encoder."""
        return self.encoder(x)[-1].mean((-2, -1))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, L, R*R*C)``, patches row-major, pixels ``(p, q, c)`` (official order)."""
        r, (b, c, h, w) = self.downsample_ratio, x.shape
        x = x.reshape(b, c, h // r, r, w // r, r)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // r) * (w // r), r * r * c)

    def unpatchify(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        r, b = self.downsample_ratio, x.shape[0]
        c = x.shape[-1] // (r * r)
        x = x.reshape(b, height // r, width // r, r, r, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, height, width)

    def normalised_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-patch normalised target ``(B, L, N)`` and each patch's mean and std (unbiased, eps 1e-6)."""
        patches = self.patchify(x)
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        return (patches - mean) / std, mean, std

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        target, _, _ = self.normalised_patches(batch["inputs"])
        per_patch = ((self.patchify(outputs["reconstruction"]) - target) ** 2).mean(dim=2)  # (B, L)
        masked = outputs["visible"].logical_not().flatten(1).to(per_patch.dtype)
        return {"loss": (per_patch * masked).sum() / (masked.sum() + 1e-8)}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        out = {k: outputs[k] for k in ("features",) if k in outputs}
        if isinstance(batch, dict) and "inputs" in batch:
            x = batch["inputs"]
            _, mean, std = self.normalised_patches(x)
            pixels = self.unpatchify(self.patchify(outputs["reconstruction"]) * std + mean, x.shape[2], x.shape[3])
            keep = outputs["visible"].repeat_interleave(self.downsample_ratio, 2).repeat_interleave(
                self.downsample_ratio, 3)
            out["reconstruction"] = torch.where(keep, x, pixels)
        return out


# ---- weights from the official code -------------------------------------------------------------
#: official (keyu-tian/SparK ``pretrain/spark.py`` ``SparK``) keys without a counterpart in :class:`SparK`: the
#: ImageNet mean / std and the black image the official model keeps for visualisation only, and the ``config``
#: entry ``state_dict(with_config=True)`` adds (not a tensor)
OFFICIAL_DROPPED: tuple[str, ...] = ("imn_m", "imn_s", "norm_black", "config")
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
#: official names of the densifying / decoder parts (the same names here, ``dense_decoder`` -> ``decoder``): the
#: per-level norms, projections and mask tokens; the decoder's UNet blocks (transposed conv, then conv / BN / ReLU6
#: / conv / BN) and last 1x1 conv
_OFFICIAL_HEAD = re.compile(r"densify_norms\.\d+\." + _BN + r"|densify_projs\.\d+\.(weight|bias)|mask_tokens\.\d+|"
                            r"dense_decoder\.(dec\.\d+\.(up_sample\.(weight|bias)|conv\.[03]\.weight|conv\.[14]\."
                            + _BN + r")|proj\.(weight|bias))")
#: timm ``ResNet`` (the official ResNet encoders): ``conv1`` / ``bn1`` -> ``stem.0`` / ``stem.1``, ``layer{n}``
#: -> ``stages.{n-1}`` (:class:`~panconv_vision.models.e2gc.ResNeXt`); block parts keep their names
_OFFICIAL_RESNET_STEM = {"conv1.weight": "stem.0.weight"} | {f"bn1.{p}": f"stem.1.{p}" for p in
                        ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
_OFFICIAL_RESNET_BLOCK = re.compile(r"layer([1-9])\.(\d+\.(conv[123]\.weight|bn[123]\." + _BN
                                    + r"|downsample\.0\.weight|downsample\.1\." + _BN + r"))")
#: the official ``models/convnext.py`` (facebook ConvNeXt names): ``downsample_layers.0.{0,1}`` -> ``stem.{conv,
#: norm}``, ``downsample_layers.{i}.{0,1}`` -> ``stages.{i}.downsample.{norm,conv}``, ``stages.{i}.{j}`` ->
#: ``stages.{i}.blocks.{j}`` (:class:`~panconv_vision.models.convnext.ConvNeXt`); block parts keep their names
_OFFICIAL_CONVNEXT_DOWN = re.compile(r"downsample_layers\.(\d+)\.([01])\.(weight|bias)")
_OFFICIAL_CONVNEXT_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.((dwconv|norm|pwconv1|pwconv2)\.(weight|bias)|gamma)")


def _official_encoder_key(name: str, convnext: bool) -> str | None:
    if convnext:
        if m := _OFFICIAL_CONVNEXT_DOWN.fullmatch(name):
            i, part, kind = m.groups()
            if i == "0":
                return f"stem.{'conv' if part == '0' else 'norm'}.{kind}"
            return f"stages.{i}.downsample.{'norm' if part == '0' else 'conv'}.{kind}"
        if m := _OFFICIAL_CONVNEXT_BLOCK.fullmatch(name):
            return f"stages.{m.group(1)}.blocks.{m.group(2)}.{m.group(3)}"
        return None
    if name in _OFFICIAL_RESNET_STEM:
        return _OFFICIAL_RESNET_STEM[name]
    if m := _OFFICIAL_RESNET_BLOCK.fullmatch(name):
        return f"stages.{int(m.group(1)) - 1}.{m.group(2)}"
    return None


def map_official_state_dict(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Official SparK weights (keyu-tian/SparK ``pretrain/spark.py`` ``SparK``) -> :class:`SparK`'s keys.

    Takes the official ``SparK`` state dict: the released ``*_withdecoder_1kpretrained_spark_style.pth`` files hold
    it under ``"module"`` (``utils/misc.py``; with a ``config`` entry, dropped); pass ``checkpoint["module"]``. A
    ``module.`` prefix (DataParallel) is stripped. The encoder is recognised from its names: the official ConvNeXt
    (``pretrain/models/convnext.py``, facebook names) into a :class:`~panconv_vision.models.convnext.ConvNeXt`
    encoder (``downsample_layers.0.{0,1}`` -> ``stem.{conv,norm}``, ``downsample_layers.{i}.{0,1}`` ->
    ``stages.{i}.downsample.{norm,conv}``, ``stages.{i}.{j}`` -> ``stages.{i}.blocks.{j}``), else timm's ResNet into
    a :class:`~panconv_vision.models.e2gc.ResNeXt` one (``conv1`` / ``bn1`` -> ``stem.0`` / ``stem.1``,
    ``layer{n}`` -> ``stages.{n-1}``); ``sparse_encoder.sp_cnn.`` becomes ``encoder.``, ``dense_decoder.``
    ``decoder.``, and the densifying norms / projections / mask tokens keep their names. Build ours as the
    registered ``vision.spark_*`` size of the same encoder (the official decoder width is 768 and
    ``densify_norm`` ``"bn"`` for ResNets, ``"ln"`` for ConvNeXt). The encoder-only files
    (``*_1kpretrained_timm_style.pth`` / ``*_official_style.pth``: the ``sp_cnn`` state dict alone) map after
    prefixing their keys with ``sparse_encoder.sp_cnn.``; load the ``encoder.``-stripped result into
    ``model.encoder``. Shapes are the same on both sides. :data:`OFFICIAL_DROPPED` entries are left out; any other
    key the official model does not have raises a KeyError naming it.
    """
    names = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    convnext = any(n.startswith("sparse_encoder.sp_cnn.downsample_layers.") for n in names)
    out = {}
    for key, name in zip(state_dict, names):
        if name in OFFICIAL_DROPPED:
            continue
        new = None
        if name.startswith("sparse_encoder.sp_cnn."):
            inner = _official_encoder_key(name[len("sparse_encoder.sp_cnn."):], convnext)
            new = None if inner is None else f"encoder.{inner}"
        elif _OFFICIAL_HEAD.fullmatch(name):
            new = "decoder." + name[len("dense_decoder."):] if name.startswith("dense_decoder.") else name
        if new is None:
            raise KeyError(f"unexpected key in an official SparK state dict: {key}")
        out[new] = state_dict[key]
    return out


__all__ = ["ActiveMask", "LightDecoder", "OFFICIAL_DROPPED", "SparK", "UNetBlock", "map_official_state_dict",
           "sparsify"]

