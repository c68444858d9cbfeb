"""Regenerate tests/fixtures/unireplknet_p2p_official.pt from UniRepLKNet's official point code (AILab-CVC/UniRepLKNet).

    git -C /work/.mirror/AILab-CVC+UniRepLKNet/repo archive HEAD | tar -x -C /tmp/unirep_official
    pip install --target /tmp/p2p_deps einops      # the official fusion's only missing dependency
    PYTHONPATH=/tmp/p2p_deps PANCONV_P2P_OFFICIAL=/tmp/unirep_official \
        .venv/bin/python plugins/pointcloud/tests/make_unireplknet_p2p_fixture.py

Imports the official modules from the extracted repository (never copied here): ``Point/models/p2p_adaptor_lk.py``
(``P2P``: the view transform and ``euler2mat``), ``Point/models/layers/{encoder,fusion,transformer,head,utils}.py``
(``ProjEnc``, ``MultiViewFusionV2``, ``PoolingClsHead``, ``knn_point``) and the repository root's ``unireplknet.py``.
Stand-ins, only for what cannot be installed here (CPU, no CUDA build):

* ``torch_scatter.scatter(src, index, dim, reduce="sum")``: a pure-torch ``index_add`` into ``index.max() + 1``
  rows (what torch_scatter does for ``reduce="sum"`` without ``dim_size``);
* ``pointnet2_ops``: an empty stub module (``knn_point`` does not use it; only ``fps`` would);
* the ``models`` package: an empty package over ``Point/models`` (its ``__init__`` patches timm 0.5.4's
  ConvNeXt / Swin registries, unrelated to P2P, and fails on timm 1.0);
* timm 0.5.4's ``BasicBlock``: the installed timm 1.0.31's, which has the same layers and maths for
  ``BasicBlock(c, c)`` (conv3x3 - BN - ReLU - conv3x3 - BN, + x, ReLU).

The official ``P2P.forward`` cannot run as written: its UniRepLKNet is built in "logits" mode (ImageNet norm + 1000-way
head, ``(B*V, 1000)``) and ``PoolingClsHead`` expects a ``(B*V, C, H, W)`` map. The recorded path is the one it
intends: ``point_transform`` -> ``ProjEnc`` -> the UniRepLKNet's downsample layers and stages -> ``PoolingClsHead``.

The forward parity uses a SMALL config (:data:`SMALL`: UniRepLKNet depths 1/1/1/1, dims 16/32/48/64, 2 views,
obj_size 50 padded to img_size 56, fusion on, 2 clouds of 128 points, k = 8); weights come from
:func:`state_value` in the official ``state_dict`` order and inputs from :func:`points`, which the test reproduces.
The parameter count is the full official ModelNet40 config (``Point/config/ModelNet40/multiview_UniRepLKNet-S.yaml``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import types
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "unireplknet_p2p_official.pt"
SMALL = dict(views=2, local_size=8, trans_dim=8, graph_dim=16, obj_size=50, img_size=56, atten_fusion=True,
             depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), kernel_sizes=((3,), (7,), (13,), (5,)), classes=5)
MODELNET40 = dict(views=4, local_size=32, trans_dim=8, graph_dim=64, obj_size=224, img_size=224, atten_fusion=True,
                  classes=40)
CLOUDS, POINTS = 2, 128


def state_value(index: int, name: str, shape) -> torch.Tensor:
    """The value of the ``index``-th float entry ``name`` of the official state_dict."""
    g = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(*shape, generator=g)
    if name.endswith("running_var"):
        return x.abs() + 0.5
    if len(shape) >= 2:
        return x / (torch.Size(shape).numel() / shape[0]) ** 0.5
    return 1 + 0.1 * x if name.endswith("weight") else 0.1 * x


def points() -> torch.Tensor:
    """``(CLOUDS, POINTS, 3)`` clouds in the unit cube (ModelNet-like), the last one flattened in z."""
    x = torch.rand(CLOUDS, POINTS, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[-1, :, 2] *= 0.2
    return x


def cfg(config: dict) -> types.SimpleNamespace:
    """The official config namespace (the keys ``P2P``, ``ProjEnc``, the fusion and the head read)."""
    return types.SimpleNamespace(
        num_views=config["views"], local_size=config["local_size"], trans_dim=config["trans_dim"],
        graph_dim=config["graph_dim"], imgblock_dim=config["graph_dim"], img_size=config["img_size"],
        obj_size=config["obj_size"], atten_fusion=config["atten_fusion"],
        imagenet_default_mean=[0.485, 0.456, 0.406], imagenet_default_std=[0.229, 0.224, 0.225],
        base_model_variant="unireplknet_small", head_type="pooling_mlp", view_feature=768,
        classes=config["classes"], update_type=None)


def _scatter(src, index, dim=-1, reduce="sum"):
    assert reduce == "sum" and dim == 1
    index = index[..., None].expand_as(src) if index.dim() < src.dim() else index
    out = src.new_zeros(src.shape[0], int(index.max()) + 1, src.shape[2])
    return out.scatter_add_(1, index, src)


def load_official(root: Path):
    """Import the official P2P modules from an extracted repository (stand-ins: module docstring)."""
    scatter = types.ModuleType("torch_scatter")
    scatter.scatter = _scatter
    p2 = types.ModuleType("pointnet2_ops")
    p2.pointnet2_utils = types.ModuleType("pointnet2_ops.pointnet2_utils")
    models = types.ModuleType("models")
    models.__path__ = [str(root / "Point" / "models")]
    sys.modules.update({"torch_scatter": scatter, "pointnet2_ops": p2,
                        "pointnet2_ops.pointnet2_utils": p2.pointnet2_utils, "models": models})
    for path in (str(root), str(root / "Point")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import importlib

    with contextlib.redirect_stdout(io.StringIO()):
        p2p = importlib.import_module("models.p2p_adaptor_lk")
        head = importlib.import_module("models.layers.head")
        unireplknet = importlib.import_module("unireplknet")
    return types.SimpleNamespace(P2P=p2p.P2P, UniRepLKNet=unireplknet.UniRepLKNet,
                                 PoolingClsHead=head.PoolingClsHead)


def build_small(official):
    """The official P2P with the SMALL UniRepLKNet in place of UniRepLKNet-S, seeded weights, eval mode."""
    with contextlib.redirect_stdout(io.StringIO()):
        model = official.P2P(cfg(SMALL))
        model.base_model = official.UniRepLKNet(depths=SMALL["depths"], dims=SMALL["dims"],
                                                kernel_sizes=SMALL["kernel_sizes"], attempt_use_lk_impl=False)
        model.cls_head = official.PoolingClsHead(types.SimpleNamespace(
            num_views=SMALL["views"], view_feature=SMALL["dims"][-1], classes=SMALL["classes"]))
    names = [k for k, v in model.state_dict().items() if v.is_floating_point() and k != "views"]
    state = {k: state_value(i, k, model.state_dict()[k].shape) for i, k in enumerate(names)}
    model.load_state_dict(state, strict=False)
    return model.eval(), names


def official_outputs(model, clouds: torch.Tensor) -> dict:
    """The intended classification path (module docstring): image, final stage map, logits."""
    with torch.no_grad():
        original = torch.repeat_interleave(clouds, model.num_views, dim=0)
        img = model.enc(original, model.point_transform(clouds))
        x = img
        for down, stage in zip(model.base_model.downsample_layers, model.base_model.stages):
            x = stage(down(x))
        return {"image": img, "final_map": x, "logits": model.cls_head(x)}


def official_counts(official) -> dict:
    """Parameter counts of the official P2P for the ModelNet40 UniRepLKNet-S config, by part."""
    with contextlib.redirect_stdout(io.StringIO()):
        model = official.P2P(cfg(MODELNET40))

    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    return {"total": count(""), "views": count("views"), "enc": count("enc."), "cls_head": count("cls_head."),
            "base_model": count("base_model."),
            "base_model_imagenet_norm_head": count("base_model.norm.") + count("base_model.head.")}


def main() -> None:
    if not os.environ.get("PANCONV_P2P_OFFICIAL"):
        sys.exit("set PANCONV_P2P_OFFICIAL to an extracted AILab-CVC/UniRepLKNet checkout (module docstring)")
    official = load_official(Path(os.environ["PANCONV_P2P_OFFICIAL"]))
    model, names = build_small(official)
    shapes = [list(model.state_dict()[k].shape) for k in names]
    record = {"small": dict(SMALL), "state_names": names, "state_shapes": shapes,
              **official_outputs(model, points()), "counts": official_counts(official)}
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save(record, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes); counts {record['counts']}")


if __name__ == "__main__":
    main()
