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

def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from an engine checkpoint (``{"state_dict": {"model.*": ...}}``) or a bare state dict.

    Loaded with ``torch.load(weights_only=True)`` plus the engine's allow-list of safe globals
    (``panconv.engine.io.load_checkpoint``) when the core provides it.
    """
    from panconv.errors import CheckpointError

    try:
        from panconv.engine.io import load_checkpoint
    except ImportError:
        load_checkpoint = None
    if load_checkpoint is not None:
        checkpoint = load_checkpoint(path)
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such checkpoint file") from None
        except Exception as exc:  # unpickling errors come in many types
            raise CheckpointError(f"{path}: cannot load with weights_only=True: {str(exc).splitlines()[0]}") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' of tensors (an engine checkpoint)")
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    return state


def _load_config(path: str) -> dict:
    try:
        from panconv.config import load_config
    except ImportError:  # an older core: plain YAML
        import yaml

        with open(path) as fh:
            return yaml.safe_load(fh)
    return dict(load_config(path))


def _build_dataset(cfg: dict, data_root: str | None):
    """The config's data set (its test split, else its first) — for metadata and preprocessing."""
    from panconv.plugins import get

    data = dict(cfg.get("data") or {})
    if "type" not in data:
        return None
    reserved = ("type", "batch_size", "eval_batch_size", "num_workers", "shuffle", "drop_last", "pin_memory", "splits")
    kwargs = {k: v for k, v in data.items() if k not in reserved}
    cls = get("dataset", data["type"]).load()
    splits = data.get("splits") or {}
    split = splits.get("test") or ("test" if "test" in cls.splits else cls.splits[0])
    return cls(root=data_root, split=split, **kwargs)


def _read_image(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def _imagenet_preprocess(image: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    x = F.interpolate(image[None].float() / 255.0, size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x if channels == 3 else x.mean(1, keepdim=True).expand(-1, channels, -1, -1)


def main(args: argparse.Namespace) -> int:
    from torchvision.io import write_png

    from panconv.builder import build_model

    cfg = _load_config(args.config)
    dataset = _build_dataset(cfg, getattr(args, "data_root", None))
    metadata = dataset.metadata if dataset is not None else {}
    model = build_model(cfg["model"], metadata)
    missing, unexpected = model.load_state_dict(load_state_dict(args.checkpoint), strict=False)
    if missing or unexpected:
        from panconv.errors import CheckpointError

        raise CheckpointError(f"{args.checkpoint}: weights do not fit the model of {args.config}: "
                              f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
    model.to(args.device).eval()
    image = _read_image(args.image)
    if dataset is not None and hasattr(dataset, "preprocess") and args.size is None:
        x = dataset.preprocess(image)
    else:
        x = _imagenet_preprocess(image, args.size or 224, metadata.get("in_channels", 3))
    backbone = model.backbone if hasattr(model, "backbone") else model
    cam = eigen_cam(backbone, x.to(args.device), size=tuple(image.shape[-2:]))[0].cpu()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_png(overlay(image, cam, alpha=args.alpha), str(args.output))
    print(f"wrote {args.output} (Eigen-CAM of {type(backbone).__name__}'s last stage, "
          f"{tuple(x.shape[-2:])} input)")
    return 0
