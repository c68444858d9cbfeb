"""Labelled LiDAR tiles: CGAL's classification training set (Debian ``libcgal-demo``) or any labelled file.

``source: b9_training`` reads ``data/points_3/b9_training.ply`` from the data archive the Debian
package installs (``/usr/share/doc/libcgal-dev/data.tar.gz``): an airborne LiDAR scan of an urban
block (22,300 points, 90 x 112 m, RGB) of which 2,447 points carry a class: ground (1,567),
vegetation (314), roof (566); the others are ``-1`` (unlabelled, ignored by the loss and the
metric). The member is copied once to ``<root>/cgal/`` (atomic write; the temp dir when the root
is read-only) so open3d can read it from a path; nothing is extracted into the repository.
``path:`` reads another ``.ply``/``.pcd``/``.las`` file instead (relative to the data root or
absolute), its label values mapped to 0..K-1 in order.

The scan is cut into square tiles of ``tile_size`` metres; tiles with at least ``min_labelled``
labelled points are split ``split_fractions`` into train/val/test, shuffled with ``seed`` and
stratified by the rarest class each tile holds (the labelled points cluster in a few patches). An
item is one tile: points ``(x, y, z)`` (with ``use_colors`` also ``r, g, b``), ``x, y`` relative to
the tile centre, ``z`` above the whole scan's 1st-percentile height (its ground level, so a tile
lying on a roof keeps its height). Training tiles are augmented (rotation about z, mirror, scale)
and repeated ``repeat`` times per epoch.

Colours are off by default: in ``b9_training.ply`` they *are* the labels (CGAL colours each labelled
point with its class colour and unlabelled ones black), so a model given them would read the answer.
"""

from __future__ import annotations

import math
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Gt

from panconv.api import Dataset
from panconv.errors import DataError
from panconv.io import atomic_write

from .batching import collate_point_clouds
from .io import read_point_cloud

ARCHIVES = ("/usr/share/doc/libcgal-dev/data.tar.gz", "/usr/share/doc/libcgal-demo/data.tar.gz")
SOURCES = {"b9_training": ("data/points_3/b9_training.ply", ("ground", "vegetation", "roof"))}


def cgal_archive() -> Path | None:
    return next((Path(p) for p in ARCHIVES if Path(p).is_file()), None)


def _writable(directory: Path) -> bool:
    """Whether to cache under ``directory``: it (or its nearest existing parent) is writable and not marked
    read-only (a shared data root with mode r-x stays untouched, even for root)."""
    while not directory.exists():
        directory = directory.parent
    return os.access(directory, os.W_OK) and bool(directory.stat().st_mode & 0o222)


def cached_member(root: Path, member: str) -> Path:
    """The archive member copied once (atomically) to ``<root>/cgal/`` (the temp dir when the root is read-only)."""
    name = Path(member).name
    candidates = [Path(root) / "cgal", Path(tempfile.gettempdir()) / "panconv-cgal"]
    for directory in candidates:
        if (directory / name).is_file():
            return directory / name
    archive = cgal_archive()
    if archive is None:
        raise DataError(f"CGAL data archive not found ({' or '.join(ARCHIVES)}): apt-get install libcgal-demo")
    try:
        with tarfile.open(archive) as tar:
            data = tar.extractfile(member).read()
    except (KeyError, AttributeError, tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive}: cannot read member {member} ({type(exc).__name__}: {exc})") from None
    directory = next(d for d in candidates if _writable(d) or d == candidates[-1])
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / name, lambda fh: fh.write(data))
    return directory / name


def tile_split(tile_ids: np.ndarray, tile_classes: list[np.ndarray], fractions: Sequence[float],
               seed: int) -> dict[str, np.ndarray]:
    """Seeded split of tiles into train/val/test by ``fractions``, stratified by each tile's rarest class.

    Labelled points cluster in a few patches (CGAL's training set), so a plain shuffle can leave a
    class out of val or test. Each tile joins the stratum of the rarest class (over all tiles) it
    contains; every stratum is shuffled with ``seed`` and cut by ``fractions`` (a stratum of at least
    three tiles gives val and test one tile each at least).
    """
    rng = np.random.default_rng(seed)
    totals = np.sum([np.bincount(c, minlength=1 + max((int(x.max(initial=0)) for x in tile_classes), default=0))
                     for c in tile_classes], axis=0) if tile_classes else np.zeros(1)
    strata: dict[int, list] = {}
    for tile, classes in zip(tile_ids, tile_classes):
        present = np.unique(classes)
        strata.setdefault(int(present[np.argmin(totals[present])]), []).append(tile)
    out = {"train": [], "val": [], "test": []}
    for key in sorted(strata):
        order = rng.permutation(np.array(strata[key]))
        n = len(order)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 and fractions[1] > 0 else round(fractions[1] * n)
        n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else round(fractions[2] * n)
        n_train = n - n_val - n_test
        out["train"] += list(order[:n_train])
        out["val"] += list(order[n_train:n_train + n_val])
        out["test"] += list(order[n_train + n_val:])
    return {k: np.array(v, dtype=np.int64) for k, v in out.items()}


class CGALLiDAR(Dataset):
    """Per-point segmentation tiles of a labelled LiDAR scan (see the module docstring)."""

    metadata_keys = ("num_classes", "in_channels")

    def __init__(self, root=None, split: str = "train", source: str = "b9_training", path: str | None = None,
                 tile_size: Annotated[float, Gt(0)] = 12.5, split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
                 seed: int = 0, min_labelled: Annotated[int, Ge(1)] = 20, augment: bool = True,
                 repeat: Annotated[int, Ge(1)] = 1, reader: str = "auto", use_colors: bool = False):
        super().__init__(root, split)
        if len(split_fractions) != 3 or abs(sum(split_fractions) - 1) > 1e-6 or min(split_fractions) < 0:
            raise ValueError(f"CGALLiDAR: split_fractions must be three non-negative numbers summing to 1, "
                             f"got {list(split_fractions)}")
        if reader not in ("auto", "open3d", "plyfile"):
            raise ValueError(f"CGALLiDAR: reader must be auto, open3d or plyfile, got {reader!r}")
        if path is None:
            if source not in SOURCES:
                raise ValueError(f"CGALLiDAR: unknown source {source!r}; choose {', '.join(SOURCES)} or give path")
            member, self.class_names = SOURCES[source]
            file = cached_member(self.root, member)
        else:
            file = Path(path) if Path(path).is_absolute() else self.root / path
            self.class_names = None
        cloud = read_point_cloud(file, reader)
        if "labels" not in cloud:
            raise DataError(f"{file}: no per-point label field (label, class, classification)")
        labels = cloud["labels"]
        if self.class_names is None:
            values = np.unique(labels[labels >= 0])
            self.class_names = tuple(str(v) for v in values)
            lookup = {v: i for i, v in enumerate(values)}
            labels = np.array([lookup.get(v, -1) for v in labels], dtype=np.int64)
        elif labels.max(initial=-1) >= len(self.class_names):
            raise DataError(f"{file}: label {labels.max()} outside the {len(self.class_names)} classes of {source}")
        xyz = cloud["xyz"]
        colors = cloud.get("colors", np.zeros((len(xyz), 3)))
        self.use_colors = use_colors
        self.file, self.tile_size, self.augment, self.repeat = file, float(tile_size), augment, repeat
        origin = xyz[:, :2].min(0)
        floor = float(np.percentile(xyz[:, 2], 1)) if len(xyz) else 0.0  # the scan's ground level (robust)
        cells = np.floor((xyz[:, :2] - origin) / tile_size).astype(np.int64)
        width = int(cells[:, 0].max()) + 1 if len(cells) else 1
        tile_of = cells[:, 1] * width + cells[:, 0]
        counts = np.bincount(tile_of[labels >= 0], minlength=int(tile_of.max(initial=0)) + 1)
        kept = np.flatnonzero(counts >= min_labelled)
        if len(kept) == 0:
            raise DataError(f"{file}: no {tile_size} m tile has {min_labelled} labelled points")
        tile_classes = [labels[(tile_of == t) & (labels >= 0)] for t in kept]
        chosen = np.sort(tile_split(kept, tile_classes, split_fractions, seed)[split])
        self.tiles = []
        for tile in chosen:
            idx = np.flatnonzero(tile_of == tile)
            centre = origin + (np.array([tile % width, tile // width]) + 0.5) * tile_size
            local = xyz[idx] - np.array([centre[0], centre[1], floor])
            feats = (np.concatenate([local, colors[idx]], axis=1) if use_colors else local).astype(np.float32)
            self.tiles.append((torch.from_numpy(feats), torch.from_numpy(labels[idx])))
        self.training = split == "train"

    def __len__(self) -> int:
        return len(self.tiles) * (self.repeat if self.training else 1)

    def __getitem__(self, index: int) -> dict:
        points, labels = self.tiles[index % len(self.tiles)]
        if self.training and self.augment:
            points = points.clone()
            angle = float(torch.rand(()) * 2 * math.pi)
            c, s = math.cos(angle), math.sin(angle)
            rotation = torch.tensor([[c, -s], [s, c]], dtype=points.dtype)
            points[:, :2] = points[:, :2] @ rotation.T
            if torch.rand(()) < 0.5:
                points[:, 0] = -points[:, 0]
            points[:, :3] *= float(0.95 + 0.1 * torch.rand(()))
        return {"inputs": {"points": points}, "labels": labels}

    @property
    def metadata(self) -> dict:
        return {"num_classes": len(self.class_names), "in_channels": 6 if self.use_colors else 3,
                "class_names": list(self.class_names),
                "tile_size": self.tile_size}

    def collate(self, samples: list) -> dict:
        return collate_point_clouds(samples)

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        problems = []
        if cgal_archive() is None and not (Path(root) / "cgal" / "b9_training.ply").is_file():
            problems.append(f"CGAL data archive not found ({ARCHIVES[0]}): apt-get install libcgal-demo")
        import importlib.util

        if importlib.util.find_spec("plyfile") is None:
            problems.append("plyfile is not installed: pip install plyfile")
        return problems

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        rng = np.random.default_rng(0)
        n = 400
        xyz = rng.uniform(0, 40, (n, 3)) * np.array([1, 1, 0.25])
        rgb = rng.integers(0, 256, (n, 3))
        labels = rng.integers(-1, 3, n)
        lines = ["ply", "format ascii 1.0", f"element vertex {n}", "property double x", "property double y",
                 "property double z", "property uchar red", "property uchar green", "property uchar blue",
                 "property int label", "end_header"]
        lines += [f"{x:.3f} {y:.3f} {z:.3f} {r} {g} {b} {lab}" for (x, y, z), (r, g, b), lab in zip(xyz, rgb, labels)]
        (tmp_dir / "tiny.ply").write_text("\n".join(lines) + "\n")
        return {"path": "tiny.ply", "tile_size": 10.0, "min_labelled": 5, "split": "train"}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        (tmp_dir / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                            "property float y\nproperty float z\nend_header\n1 2 3\n4 five 6\n")
        return {"path": "broken.ply"}


__all__ = ["ARCHIVES", "CGALLiDAR", "SOURCES", "cached_member", "cgal_archive", "tile_split"]
