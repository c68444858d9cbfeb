"""Eigen-CAM (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020).

The class activation map is the projection of the last stage's activations on their first
principal component: for one image with activations ``A`` (C, H, W), reshape to ``(H*W, C)``,
centre every channel over the positions, take the first right-singular vector ``v1`` of the
centred matrix and project: ``cam = A_c v1`` (H*W values). No gradients, no class needed.
The map is then rectified, scaled to [0, 1] and upsampled to the input size. Any backbone works:
the last entry of its ``feature_info`` names the activations used.

Sign convention. A singular vector is defined up to sign; ``pytorch-grad-cam`` keeps whatever
sign numpy's SVD returns. We orient ``v1`` so that the map correlates positively with the
channel-summed (centred) activation, ``<A_c v1, A_c 1> >= 0``: the heat is where the features
are strong. Our raw projection therefore equals pytorch-grad-cam's up to a factor +-1, and the
final maps are identical whenever the two signs agree (see tests/test_cam.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import panconv

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def principal_projection(activations: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)``: the centred activations projected on their first principal axis."""
    n, c, h, w = activations.shape
    a = activations.detach().float().flatten(2).transpose(1, 2)  # (N, HW, C)
    a = a - a.mean(dim=1, keepdim=True)  # centre each channel over the positions
    _, _, vh = torch.linalg.svd(a.double(), full_matrices=False)
    v1 = vh[:, 0, :]  # (N, C)
    projection = torch.einsum("npc,nc->np", a.double(), v1)
    sign = torch.sign(torch.einsum("np,np->n", projection, a.double().sum(-1)))
    sign[sign == 0] = 1
    return (projection * sign[:, None]).float().view(n, h, w)


def _min_max(x: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] (same epsilon as pytorch-grad-cam)."""
    flat = x.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    return (flat / (1e-7 + flat.max(dim=1, keepdim=True).values)).view_as(x)


def eigen_cam(backbone: nn.Module, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Eigen-CAM heatmaps ``(N, H, W)`` in [0, 1] of ``backbone``'s last feature map for ``images``.

    ``size``: output resolution (default: the input's). ``backbone`` returns a list of feature
    maps (panconv ``Backbone``); the last one is used.
    """
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        features = backbone(images)
    backbone.train(was_training)
    cam = _min_max(principal_projection(features[-1]).clamp_min(0))
    cam = F.interpolate(cam[:, None], size=size or tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return _min_max(cam[:, 0])


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.5, colormap: str = "jet") -> torch.Tensor:
    """Blend a ``(H, W)`` heatmap in [0, 1] (coloured with a matplotlib colormap) over a ``(3, H, W)``
    uint8 image; returns uint8 ``(3, H, W)``."""
    from matplotlib import colormaps

    colours = torch.from_numpy(colormaps[colormap](cam.clamp(0, 1).numpy())[..., :3]).permute(2, 0, 1).float()
    base = image.float() / 255.0
    if base.shape[0] == 1:
        base = base.expand(3, -1, -1)
    return ((1 - alpha) * base + alpha * colours).mul(255).round().clamp(0, 255).to(torch.uint8)


# ---- the `panconv cam` command ------------------------------------------------------------------
# Everything about the config goes through the core's public API: the config is read by
# panconv.load_config, the model (with its weights, metadata-filled arguments and eval mode) comes
# from panconv.load_model, the data set from panconv.build_datasets (which resolves the data root:
# --data-root > data.root > $PANCONV_DATA > default). Nothing here interprets the data or model
# sections a second time.

def _preprocessing_dataset(cfg, data_root: str | None):
    """The config's data set whose ``preprocess`` turns an image into a model input: its test
    split, else its val split, else its train split; ``None`` if the config has no data set."""
    if not (cfg.get("data") or {}).get("type"):
        return None
    for stage in ("test", "val", "train"):
        dataset = panconv.build_datasets(cfg, stages=(stage,), data_root=data_root).get(stage)
        if dataset is not None:
            return dataset
    return None


#: the largest image ``panconv cam`` decodes (a header may claim 100000x100000: 30 GB)
MAX_IMAGE_PIXELS = 40_000_000


def _read_image(path: str) -> torch.Tensor:
    """The image as uint8 ``(3, H, W)``; its header's size is checked before anything is decoded."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.io import ImageReadMode, decode_image, read_file

    from panconv.errors import DataError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit, below
    try:
        with Image.open(path) as header:  # reads the header only
            width, height = header.size
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image: {' '.join(str(exc).split())[:200]}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: the image claims {width}x{height} pixels, more than panconv cam decodes "
                        f"({MAX_IMAGE_PIXELS:,}); resize it first")
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise DataError(f"{path}: not a readable image: {str(exc).splitlines()[0][:200]}") from None


def _imagenet_preprocess(image: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    x = F.interpolate(image[None].float() / 255.0, size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x if channels == 3 else x.mean(1, keepdim=True).expand(-1, channels, -1, -1)


def _input_channels(backbone: nn.Module) -> int:
    """Channels the backbone takes: those of its first convolution (3 if it has none)."""
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def main(args: argparse.Namespace) -> int:
    from torchvision.io import write_png

    data_root = getattr(args, "data_root", None)
    cfg = panconv.load_config(args.config)
    model = panconv.load_model(args.checkpoint, config=args.config, device=args.device)
    image = _read_image(args.image)
    dataset = _preprocessing_dataset(cfg, data_root) if args.size is None else None
    backbone = model.backbone if hasattr(model, "backbone") else model
    if dataset is not None and hasattr(dataset, "preprocess"):
        x = dataset.preprocess(image)
    else:
        x = _imagenet_preprocess(image, args.size or 224, _input_channels(backbone))
    cam = eigen_cam(backbone, x.to(args.device), size=tuple(image.shape[-2:]))[0].cpu()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_png(overlay(image, cam, alpha=args.alpha), str(args.output))
    print(f"wrote {args.output} (Eigen-CAM of {type(backbone).__name__}'s last stage, "
          f"{tuple(x.shape[-2:])} input)")
    return 0
