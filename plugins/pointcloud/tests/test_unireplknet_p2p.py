"""UniRepLKNetP2P against the official P2P point pathway of UniRepLKNet (AILab-CVC/UniRepLKNet, Point/).

The fixture (``fixtures/unireplknet_p2p_official.pt``) is the official code's output on seeded weights and inputs,
recorded by ``make_unireplknet_p2p_fixture.py`` (see its docstring); with ``PANCONV_P2P_OFFICIAL`` set to an extracted
checkout (and einops importable) the same comparison also runs live against the official modules.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_pointcloud.models.unireplknet_points import (
    P2P_UNUSED,
    P2P_VIEW_ANGLES,
    PoolingClsHead,
    UniRepLKNetP2P,
    map_official_p2p_state_dict,
)

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("make_unireplknet_p2p_fixture", HERE / "make_unireplknet_p2p_fixture.py")
recorder = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = recorder
_spec.loader.exec_module(recorder)

FIXTURE = torch.load(HERE / "fixtures" / "unireplknet_p2p_official.pt", weights_only=True)
SMALL = {k: v for k, v in recorder.SMALL.items() if k != "classes"}

def official_state() -> dict[str, torch.Tensor]:
    """The fixture's seeded official weights under the official names (``recorder.state_value``)."""
    return {name: recorder.state_value(i, name, shape)
            for i, (name, shape) in enumerate(zip(FIXTURE["state_names"], FIXTURE["state_shapes"]))}


def small_model_and_head() -> tuple[UniRepLKNetP2P, PoolingClsHead]:
    """Ours in the SMALL config loaded, through ``map_official_p2p_state_dict``, with the official weights."""
    model = UniRepLKNetP2P(**SMALL).eval()
    head = PoolingClsHead(SMALL["dims"][-1], SMALL["views"], recorder.SMALL["classes"]).eval()
    mapped = map_official_p2p_state_dict(official_state())
    for prefix, module in (("backbone.", model), ("head.", head)):
        state = module.state_dict()
        ours = {k[len(prefix):]: v.reshape(state[k[len(prefix):]].shape) for k, v in mapped.items()
                if k.startswith(prefix)}
        # every floating entry of ours comes from the official weights (BatchNorm's step counters stay ours)
        assert set(ours) == {k for k, v in state.items() if v.is_floating_point()}
        module.load_state_dict({**state, **ours})
    return model, head


def ours_on(clouds: torch.Tensor, mask: torch.Tensor | None = None):
    model, head = small_model_and_head()
    with torch.no_grad():
        img, final = model.image_and_final_map({"points": clouds, "mask": mask})
        return {"image": img, "final_map": final, "logits": head(final)}


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_official_weight_names_cover_ours_exactly():
    mapped = map_official_p2p_state_dict(official_state())
    dropped = set(FIXTURE["state_names"]) & set(P2P_UNUSED)  # the recording left out the view table
    assert dropped == set(P2P_UNUSED) - {"views"}
    assert len(mapped) == len(FIXTURE["state_names"]) - len(dropped)  # every other official entry is used
    with pytest.raises(KeyError, match="unexpected key in an official P2P state dict: enc.fusion.pool.weight"):
        map_official_p2p_state_dict({"enc.fusion.pool.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="unexpected key in an official P2P state dict: decoder.weight"):
        map_official_p2p_state_dict({"decoder.weight": torch.zeros(1)})


@pytest.mark.parametrize("output", ["image", "final_map", "logits"])
def test_matches_the_recorded_official_outputs(output):
    ours = ours_on(recorder.points())
    assert ours[output].shape == FIXTURE[output].shape
    diff = max_abs(ours[output], FIXTURE[output])
    print(f"UniRepLKNetP2P parity {output}: max abs diff {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.skipif(not os.environ.get("PANCONV_P2P_OFFICIAL"),
                    reason="set PANCONV_P2P_OFFICIAL to an extracted AILab-CVC/UniRepLKNet checkout (needs einops)")
def test_matches_the_official_code_live():
    official = recorder.load_official(Path(os.environ["PANCONV_P2P_OFFICIAL"]))
    model, names = recorder.build_small(official)
    clouds = recorder.points() * 3 + 1  # other inputs than the fixture's
    theirs = recorder.official_outputs(model, clouds)
    ours = ours_on(clouds)
    for key in ("image", "final_map", "logits"):
        print(f"UniRepLKNetP2P live parity {key}: max abs diff {max_abs(ours[key], theirs[key]):.2e}")
        assert max_abs(ours[key], theirs[key]) <= 1e-5, key


def test_parameter_count_equals_the_official_modelnet40_model():
    counts = FIXTURE["counts"]
    with torch.device("meta"):
        backbone = panconv.get_component("backbone", "pointcloud.unireplknet_s_p2p")()
        head = PoolingClsHead(768, 4, 40)
    ours = sum(p.numel() for p in backbone.parameters())
    # the official total also holds the fixed view table (an untrained nn.Parameter, ours a buffer) and the
    # UniRepLKNet's ImageNet LayerNorm + 1000-way linear, which P2P builds but never uses
    assert ours == counts["total"] - counts["views"] - counts["base_model_imagenet_norm_head"] - counts["cls_head"]
    assert sum(p.numel() for p in backbone.enc.parameters()) == counts["enc"]
    assert sum(p.numel() for p in head.parameters()) == counts["cls_head"]
    assert ours == 56_844_155


def test_padding_and_batching_do_not_change_a_sample():
    model, _ = small_model_and_head()
    clouds = recorder.points()
    padded = torch.cat([clouds, torch.randn(2, 40, 3) * 5], dim=1)  # far-away garbage in the padding
    mask = torch.zeros(2, 168, dtype=torch.bool)
    mask[:, :128] = True
    with torch.no_grad():
        plain = model({"points": clouds, "mask": None})[0]
        both = model({"points": padded, "mask": mask})[0]
        alone = model({"points": padded[1:, :150], "mask": mask[1:, :150]})[0]
        img_plain, _ = model.image_and_final_map({"points": clouds})
        img_padded, _ = model.image_and_final_map({"points": padded, "mask": mask})
    assert max_abs(both[:, :, :128], plain) <= 1e-5
    assert (both[:, :, 128:] == 0).all()
    assert max_abs(alone[:, :, :128], plain[1:]) <= 1e-5
    assert max_abs(img_padded, img_plain) <= 1e-5
    # and the recorded official image itself, through padding
    assert max_abs(img_padded, FIXTURE["image"]) <= 1e-5


def test_a_point_reads_its_own_pixel():
    """With the backbone replaced by a map of (row, column) indices, each point reads its pixel's indices."""
    model = UniRepLKNetP2P(views=1, local_size=2, trans_dim=4, graph_dim=8, obj_size=10, img_size=14,
                           depths=[1, 1, 1, 1], dims=[8, 8, 8, 8], kernel_sizes=[[3]] * 4).eval()
    size = 14
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    model.backbone.forward = lambda img: [torch.stack([rows, cols]).float()[None].expand(img.shape[0], -1, -1, -1)]
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.4, 0.0], [0.5, 0.7, 3.0]]])
    with torch.no_grad():
        out = model({"points": xyz, "mask": None})[0][0, 8:].T  # (N, 2) = (row, column) read back
    # view 1 turns the cloud by 90 degrees about z: (x, y) -> (-y, x), so the row comes from -y, the column from x.
    # cell = max range / (obj_size - 3) = 1.4 / 7; index from the minimum, + 1, then the official centring
    # obj_size / 2 - centre - 1 of the footprints' bounding box, then the padding (14 - 10) / 2 = 2
    u, v = -xyz[0, :, 1], xyz[0, :, 0]
    iu, iv = torch.floor((u - u.min()) / 0.2), torch.floor((v - v.min()) / 0.2)
    cu = (iu.max() + 2 + iu.min()) // 2
    cv = (iv.max() + 2 + iv.min()) // 2
    expected = torch.stack([iu + 1 + 10 // 2 - cu - 1 + 2, iv + 1 + 10 // 2 - cv - 1 + 2], dim=1)
    torch.testing.assert_close(out, expected)
    assert out[2, 0] == expected[:, 0].min()  # the largest y is the top row


def test_the_canvas_sums_each_point_into_its_3x3_footprint():
    model = UniRepLKNetP2P(views=1, local_size=1, trans_dim=4, graph_dim=8, obj_size=10, img_size=10,
                           atten_fusion=False, depths=[1, 1, 1, 1], dims=[8, 8, 8, 8], kernel_sizes=[[3]] * 4)
    seen = {}
    model.enc.img_block.register_forward_hook(lambda m, inp, out: seen.setdefault("canvas", inp[0]))
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.4, 0.0], [0.0, 0.9, 0.0]]])  # rows 6 or 7, 0 and 2
    with torch.no_grad():
        feats, _, pix = model.encode({"points": xyz})
    canvas, (r, c) = seen["canvas"][0], pix[0, 0]
    torch.testing.assert_close(canvas[:, r - 1:r + 2, c - 1:c + 2], feats[0, 0][:, None, None].expand(-1, 3, 3))
    assert (canvas.abs().sum(0) > 0).sum() == 9 + 9 + 6  # three footprints, two sharing a row of three pixels
    torch.testing.assert_close(canvas.sum((1, 2)), 9 * feats[0].sum(0))


def test_view_angles_are_the_official_ten_in_order():
    q = math.pi / 4
    assert P2P_VIEW_ANGLES[1] == (2 * q, 0.0, 2 * q) and P2P_VIEW_ANGLES[4] == (5 * q, -q, 2 * q)
    assert len(P2P_VIEW_ANGLES) == 10


@pytest.mark.parametrize(("args", "message"), [
    (dict(obj_size=70, img_size=56), "obj_size 70 must be <= img_size 56"),
    (dict(obj_size=50, img_size=63), "even difference"),
    (dict(obj_size=49, img_size=63), "obj_size 49 must be even"),
    (dict(obj_size=50, img_size=52), "img_size 52 must be a multiple of 7 with atten_fusion"),
    (dict(graph_dim=10), "multiple of 4"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    with pytest.raises(ValueError, match=message):
        UniRepLKNetP2P(**{**SMALL, **args})


def test_too_few_points_for_k_is_an_error():
    model = UniRepLKNetP2P(**SMALL)
    mask = torch.ones(2, 128, dtype=torch.bool)
    mask[1, 5:] = False
    with pytest.raises(ValueError, match="a sample has 5 points, fewer than local_size 8"):
        model({"points": recorder.points(), "mask": mask})
