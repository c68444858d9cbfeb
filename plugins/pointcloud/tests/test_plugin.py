"""What panconv-pointcloud registers: every registration imports; listing imports neither torch nor open3d."""

import subprocess
import sys

import panconv


def test_every_registration_imports():
    for kind in ("model", "backbone", "neck", "head", "dataset", "evaluator", "kernel", "transform", "loss"):
        for name in panconv.list_components(kind, "pointcloud.*"):
            assert panconv.get_component(kind, name) is not None, name


def test_listing_imports_no_torch_and_no_open3d():
    code = "import sys, panconv_pointcloud.plugin; print('torch' in sys.modules, 'open3d' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False False", out.stderr


def test_waymo_variant_parameter_count():
    """flatformer_waymo: VFE 11->64, 128->128 (BN) + 2 blocks x 4 layers of 128 channels, FFN 256."""
    model = panconv.get_component("backbone", "pointcloud.flatformer_waymo")()
    vfe = 11 * 64 + 2 * 64 + 128 * 128 + 2 * 128
    layer = (128 * 384 + 384) + (128 * 128 + 128) + (128 * 256 + 256) + (256 * 128 + 128) + 4 * 128
    assert sum(p.numel() for p in model.parameters()) == vfe + 8 * layer
