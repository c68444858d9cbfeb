"""FlatFormer: the sort/group invariants, parity with the official code, the backbone's outputs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from panconv_pointcloud.kernels.flat_group_attention import flat_group_attention_reference
from panconv_pointcloud.models.flatformer import (
    ORDERS,
    FlatFormer,
    equal_size_groups,
    sinusoidal_position,
    window_sort_key,
)
from panconv_pointcloud.models.layers import example_point_batch

FIXTURE = Path(__file__).parent / "fixtures" / "flatformer_parity.json"


def random_pillars(counts, grid=(30, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(counts):
        cells = torch.randperm(grid[0] * grid[1], generator=g)[:n]
        rows.append(torch.stack([torch.full((n,), b), cells // grid[0], cells % grid[0]], 1))
    return torch.cat(rows)


@pytest.mark.parametrize("counts,group", [((50, 17, 144), 16), ((5, 40), 8), ((0, 33), 11), ((8,), 8)])
def test_groups_have_equal_size_and_cover_every_token_once(counts, group):
    coords = random_pillars(counts)
    counts_t = torch.tensor(counts)
    for axis, shifted in ORDERS:
        order = torch.sort(window_sort_key(coords, (5, 4), axis, shifted, (30, 20)))[1]
        slots, slot_of = equal_size_groups(order, counts_t, group)
        assert slots.numel() % group == 0
        groups = slots.view(-1, group)  # every group exactly `group` slots
        assert groups.shape[0] == sum(-(-n // group) for n in counts)
        # the permutation and its inverse round-trip
        assert torch.equal(slots[slot_of], torch.arange(coords.shape[0]))
        # every token is attended exactly once: exactly one slot is its own
        own = slot_of[slots] == torch.arange(slots.numel())
        assert torch.equal(torch.bincount(slots[own], minlength=coords.shape[0]), torch.ones(coords.shape[0]).long())
        # a group never mixes samples
        assert all(len(set(coords[grp, 0].tolist())) == 1 for grp in groups)


def test_sort_is_a_snake_over_windows():
    """Along x: window rows in order, windows alternate direction; consecutive pillars stay in one window
    or step to a neighbouring window."""
    grid = (12, 8)
    iy, ix = torch.meshgrid(torch.arange(grid[1]), torch.arange(grid[0]), indexing="ij")
    coords = torch.stack([torch.zeros(ix.numel(), dtype=torch.long), iy.flatten(), ix.flatten()], 1)
    order = torch.sort(window_sort_key(coords, (4, 4), "x", False, grid))[1]
    c = coords[order]
    windows = (c[:, 1] // 4) * 10 + c[:, 2] // 4
    assert windows[:16].unique().numel() == 1 and windows.unique_consecutive().tolist() == [0, 1, 2, 12, 11, 10]
    steps = (c[1:, 1:] - c[:-1, 1:]).abs().sum(1)
    assert (steps[windows[1:] == windows[:-1]] == 1).all()  # inside a window: one cell at a time (a snake)


def test_attention_stays_within_groups():
    """Changing a token changes the outputs of its group only."""
    coords = random_pillars((40,), seed=3)
    order = torch.sort(window_sort_key(coords, (5, 4), "y", True, (30, 20)))[1]
    slots, slot_of = equal_size_groups(order, torch.tensor([40]), 8)
    q, k, v = (torch.randn(40, 2, 8, dtype=torch.float64) for _ in range(3))
    base = flat_group_attention_reference(q, k, v, slots, slot_of, 8)
    k2 = k.clone()
    k2[order[3]] += 1.0  # slot 3, group 0
    changed = (flat_group_attention_reference(q, k2, v, slots, slot_of, 8) - base).abs().sum((1, 2)) > 0
    group_of = slot_of // 8
    assert changed.any() and (group_of[changed] == 0).all()


def _official_parameter_name(ours: str) -> str:
    name = ours.replace("blocks.", "block_list.").replace(".layers.", ".block.")
    return (name.replace("in_proj.weight", "attn.attn.in_proj_weight").replace("in_proj.bias", "attn.attn.in_proj_bias")
            .replace("out_proj.", "attn.attn.out_proj."))


def test_parity_with_official_flatformer():
    """Our orders, groups, position encoding and blocks on the official code's weights and inputs
    (tests/fixtures/flatformer_parity.json, made by tests/make_parity_fixture.py)."""
    recorder_file = FIXTURE.parent.parent / "make_parity_fixture.py"
    spec = importlib.util.spec_from_file_location("make_parity_fixture", recorder_file)
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    CONFIG, COUNTS, inputs, parameter_value = (recorder.CONFIG, recorder.COUNTS, recorder.inputs,
                                               recorder.parameter_value)
    record = json.loads(FIXTURE.read_text())
    coords4, x = inputs()
    coords = coords4[:, [0, 2, 3]]
    assert coords.tolist() == record["coords"]
    grid = tuple(CONFIG["sparse_shape"][:2])
    window = tuple(CONFIG["window_shape"][:2])
    counts = torch.tensor(COUNTS)
    for (axis, shifted), name in zip(ORDERS, ("x", "x_shift", "y", "y_shift")):
        order = torch.sort(window_sort_key(coords, window, axis, shifted, grid))[1]
        assert order.tolist() == record["orders"][name], name
        slots, slot_of = equal_size_groups(order, counts, CONFIG["group_size"])
        official = torch.tensor(record["orders"][name])
        assert torch.equal(slots, official[torch.tensor(record["flat2win"])])
        inverse = torch.empty_like(slot_of)
        inverse[official] = torch.tensor(record["win2flat"])
        assert torch.equal(slot_of, inverse)
    pe = sinusoidal_position(coords, CONFIG["in_channels"], CONFIG["pos_temperature"])
    torch.testing.assert_close(pe[5], torch.tensor(record["pe_row_5"]), atol=1e-6, rtol=0)
    side = float(grid[0])
    model = FlatFormer(in_channels=3, point_cloud_range=(0, 0, 0, side, side, 1), voxel_size=(1, 1, 1),
                       vfe_channels=(8, CONFIG["in_channels"]), num_heads=CONFIG["num_heads"],
                       num_blocks=CONFIG["num_blocks"], window_shape=window, group_size=CONFIG["group_size"]).eval()
    ours = dict(model.blocks.named_parameters(prefix="blocks"))
    assert sorted(_official_parameter_name(n) for n in ours) == sorted(record["parameter_names"])
    index = {name: i for i, name in enumerate(record["parameter_names"])}
    with torch.no_grad():
        for name, p in ours.items():
            p.copy_(parameter_value(index[_official_parameter_name(name)], p.shape))
        y = model.encode(x, coords, len(COUNTS))
    torch.testing.assert_close(y, torch.tensor(record["output"]), atol=1e-5, rtol=0)  # measured 6.0e-7


def test_backbone_outputs_and_padding():
    model = FlatFormer(**FlatFormer.example_config()).eval()
    batch = example_point_batch(2, channels=4)
    points, bev = model(batch["inputs"])
    assert points.shape == (2, 24, 60) and bev.shape == (2, 16, 24, 24)
    # padded points are zeros; real points do not depend on the padding's values
    assert (points[1, :, 40:] == 0).all()
    noisy = {"points": batch["inputs"]["points"].clone(), "mask": batch["inputs"]["mask"]}
    noisy["points"][1, 40:] = 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(noisy)[0][:, :, :40], points[:, :, :40])


def test_batching_is_per_sample():
    """A sample's features do not depend on the other samples of the batch."""
    model = FlatFormer(**FlatFormer.example_config()).eval()
    batch = example_point_batch(2, channels=4)["inputs"]
    with torch.no_grad():
        both = model(batch)
        alone = model({"points": batch["points"][:1], "mask": batch["mask"][:1]})
    torch.testing.assert_close(both[0][:1], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1][:1], alone[1], atol=1e-5, rtol=1e-5)


def test_waymo_variant_matches_the_official_config():
    model = FlatFormer()  # the defaults are flatformer_waymo_D1_2x_3class.py
    assert model.grid == (468, 468)
    assert model.mapping.group_size == 144 and model.mapping.window_shape == (13, 13)
    assert len(model.blocks) == 2 and len(model.blocks[0].layers) == 4
    assert model.blocks[0].layers[0].num_heads == 8 and model.channels == 128


@pytest.mark.parametrize("bad", [dict(num_heads=3), dict(voxel_size=(0.32, 0.32, 1.0)), dict(outputs=[]),
                                 dict(point_cloud_range=(0, 0, 0, -1, 1, 1))])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        FlatFormer(**bad)
