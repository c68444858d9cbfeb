"""Point-cloud files (PLY / PCD / LAS), the CGAL tiles and the generated detection scenes."""

import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_pointcloud.datasets.batching import collate_point_clouds
from panconv_pointcloud.datasets.cgal import CGALLiDAR, cgal_archive, tile_split
from panconv_pointcloud.datasets.io import open3d_available, read_point_cloud
from panconv_pointcloud.datasets.scenes import DetectionScenes, generate_scene, ray_box_distance

PLY = """ply
format ascii 1.0
element vertex 3
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
property int label
end_header
0 0 0 255 0 0 2
1 0 0 0 255 0 -1
0 1 0.5 0 0 255 0
"""


def write_las(path, xyz, classes, point_format=3, truncate=0):
    record = {0: 20, 3: 34}[point_format]
    header = bytearray(227)
    header[:4] = b"LASF"
    header[24:26] = bytes([1, 2])
    struct.pack_into("<I", header, 96, 227)
    header[104] = point_format
    struct.pack_into("<H", header, 105, record)
    struct.pack_into("<I", header, 107, len(xyz))
    struct.pack_into("<3d", header, 131, 0.01, 0.01, 0.01)
    struct.pack_into("<3d", header, 155, 100.0, 200.0, 0.0)
    body = bytearray()
    for p, c in zip(xyz, classes):
        row = bytearray(record)
        struct.pack_into("<3i", row, 0, *[round((v - o) / 0.01) for v, o in zip(p, (100.0, 200.0, 0.0))])
        struct.pack_into("<H", row, 12, 77)
        row[15] = c
        body += row
    path.write_bytes(bytes(header) + bytes(body[:len(body) - truncate]))


@pytest.mark.parametrize("reader", ["plyfile", "open3d"])
def test_ply_positions_colours_and_labels(tmp_path, reader):
    if reader == "open3d" and not open3d_available():
        pytest.skip("open3d extra not installed")
    (tmp_path / "a.ply").write_text(PLY)
    cloud = read_point_cloud(tmp_path / "a.ply", reader)
    np.testing.assert_allclose(cloud["xyz"], [[0, 0, 0], [1, 0, 0], [0, 1, 0.5]], atol=1e-6)
    np.testing.assert_allclose(cloud["colors"][0], [1, 0, 0], atol=1e-6)
    assert cloud["labels"].tolist() == [2, -1, 0]


def test_las_reader(tmp_path):
    xyz = [(100.5, 200.25, 3.0), (101.0, 201.0, 4.5)]
    write_las(tmp_path / "a.las", xyz, [2, 4])
    cloud = read_point_cloud(tmp_path / "a.las")
    np.testing.assert_allclose(cloud["xyz"], xyz, atol=1e-9)
    assert cloud["labels"].tolist() == [2, 4] and cloud["intensity"].tolist() == [77, 77]


@pytest.mark.skipif(not open3d_available(), reason="open3d extra not installed")
def test_pcd_reader(tmp_path):
    (tmp_path / "a.pcd").write_text("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\n"
                                    "HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n1 2 3\n4 5 6\n")
    np.testing.assert_allclose(read_point_cloud(tmp_path / "a.pcd")["xyz"], [[1, 2, 3], [4, 5, 6]])


def _broken_files(tmp_path):
    (tmp_path / "bad_body.ply").write_text(PLY.replace("0 1 0.5 0 0 255 0", "0 one 0.5"))
    (tmp_path / "no_xyz.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n")
    (tmp_path / "not_ply.ply").write_text("hello\n")
    (tmp_path / "short.pcd").write_text("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\n"
                                        "HEIGHT 1\nPOINTS 3\nDATA ascii\n1 2 3\n")
    (tmp_path / "nofields.pcd").write_text("VERSION .7\nPOINTS 1\nDATA ascii\n1 2 3\n")
    write_las(tmp_path / "truncated.las", [(100, 200, 0)] * 3, [2] * 3, truncate=5)
    (tmp_path / "garbage.las").write_bytes(b"NOTLAS" + bytes(300))
    return sorted(p for p in tmp_path.iterdir())


def test_malformed_files_give_one_line_errors_naming_the_file(tmp_path):
    for path in _broken_files(tmp_path):
        if path.suffix == ".pcd" and not open3d_available():
            continue
        with pytest.raises(DataError) as info:
            read_point_cloud(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message, message


def test_split_is_seeded_disjoint_and_stratified():
    ids = np.arange(12)
    classes = [np.array([0, 0, 1])] * 4 + [np.array([0])] * 8  # class 1 only in tiles 0-3
    a, b = tile_split(ids, classes, (0.5, 0.25, 0.25), 0), tile_split(ids, classes, (0.5, 0.25, 0.25), 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    together = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(together.tolist()) == ids.tolist()
    assert all(np.isin(a[k], [0, 1, 2, 3]).any() for k in ("train", "val", "test"))  # the rare class everywhere


def test_tiles_from_a_file(tmp_path):
    kwargs = CGALLiDAR.example(tmp_path)
    kwargs.pop("split")
    sizes = {s: len(CGALLiDAR(tmp_path, s, augment=False, **kwargs)) for s in ("train", "val", "test")}
    assert sizes["train"] > 0 and sizes["val"] > 0 and sizes["test"] > 0
    d = CGALLiDAR(tmp_path, "train", augment=False, **kwargs)
    item = d[0]
    assert item["inputs"]["points"].shape[1] == 3 and item["labels"].dim() == 1
    assert CGALLiDAR(tmp_path, "train", use_colors=True, **kwargs)[0]["inputs"]["points"].shape[1] == 6
    assert item["inputs"]["points"][:, :2].abs().max() <= 5.0 + 1e-4  # relative to the 10 m tile's centre
    batch = d.collate([d[0], d[1]])
    assert batch["inputs"]["points"].shape[0] == 2 and batch["labels"].shape == batch["inputs"]["mask"].shape
    assert (batch["labels"][~batch["inputs"]["mask"]] == -1).all()


@pytest.mark.skipif(cgal_archive() is None, reason="libcgal-demo is not installed")
def test_cgal_b9_tiles(tmp_path):
    splits = {s: CGALLiDAR(tmp_path, s, reader="plyfile") for s in ("train", "val", "test")}
    labelled = {s: torch.cat([t[1] for t in d.tiles]) for s, d in splits.items()}
    counts = {s: torch.bincount(v[v >= 0], minlength=3) for s, v in labelled.items()}
    assert sum(c.sum().item() for c in counts.values()) <= 2447
    assert all((c > 0).all() for c in counts.values()), counts  # every class in every split
    assert splits["train"].metadata["num_classes"] == 3


def test_scene_rays_and_boxes():
    box = np.array([10.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0])
    d = ray_box_distance(np.array([0.0, 0.0, 1.0]), np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]]), box)
    assert d[0] == pytest.approx(8.0) and np.isinf(d[1]) and np.isinf(d[2])
    rotated = box.copy()
    rotated[6] = np.pi / 2  # now 2 m long along x
    assert ray_box_distance(np.array([0.0, 0.0, 1.0]), np.array([[1.0, 0, 0]]), rotated)[0] == pytest.approx(9.0)


def test_scene_points_lie_on_the_ground_or_on_boxes():
    points, boxes, labels = generate_scene(np.random.default_rng(0), extent=16.0, beams=16, azimuths=256, noise=0.0)
    assert len(boxes) == len(labels) >= 1 and set(labels.tolist()) <= {0, 1, 2}
    xyz = points[:, :3].astype(np.float64)
    inside = np.zeros(len(xyz), bool)
    for b in boxes:
        c, s = np.cos(b[6]), np.sin(b[6])
        rel = xyz - b[:3]
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
        on = (np.abs(local) <= b[3:6] / 2 + 1e-3).all(1)
        assert on.sum() >= 5  # every kept box is seen by at least min_points rays
        inside |= on
    assert (np.abs(xyz[~inside, 2]) < 16.0 * np.tan(np.radians(1.0)) + 1e-3).all()  # the rest is ground


def test_scenes_are_seeded_and_splits_differ():
    a, b = DetectionScenes(split="train", num_scenes=2, extent=10.0, beams=8, azimuths=64), \
        DetectionScenes(split="train", num_scenes=2, extent=10.0, beams=8, azimuths=64)
    assert torch.equal(a[1]["inputs"]["points"], b[1]["inputs"]["points"])
    c = DetectionScenes(split="test", num_scenes=2, extent=10.0, beams=8, azimuths=64)
    assert not torch.equal(a[0]["gt_boxes"], c[0]["gt_boxes"])
    batch = collate_point_clouds([a[0], a[1]])
    assert batch["gt_boxes"].shape[:2] == batch["gt_labels"].shape


def test_listing_and_reading_do_not_import_open3d_unless_asked():
    code = ("import sys, panconv; panconv.list_models(); from panconv_pointcloud.datasets import io, cgal; "
            "print('open3d' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
