"""Point-cloud files: PLY, PCD (open3d) and LAS (read here), with one-line errors naming the file.

:func:`read_point_cloud` returns a dict of numpy arrays: ``xyz`` (N, 3) float64, and where the
file has them ``colors`` (N, 3) in [0, 1], ``intensity`` (N,), ``labels`` (N,) int64 (PLY
``label`` / ``class`` / ``classification`` / ``segment_index``; LAS classification).

* PLY: open3d (the optional ``open3d`` extra, imported here only) reads positions and colours;
  ``plyfile`` (light, required) reads the header first (a malformed header or body is a
  :class:`DataError` naming the file and what is wrong) and the per-point fields open3d's legacy
  reader drops (labels). ``reader="plyfile"`` reads everything with plyfile (no open3d).
* PCD: open3d; the header is validated here first (open3d only warns and returns an empty cloud).
* LAS 1.0-1.4, point formats 0-10 (uncompressed; LAZ is refused with its name): header and
  records parsed here with numpy (scaled integer coordinates, intensity, classification).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from panconv.errors import DataError

LABEL_FIELDS = ("label", "class", "classification", "scalar_label", "segment_index")


def open3d_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("open3d") is not None


def _open3d():
    try:
        import open3d
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(f"reading point clouds with open3d needs the open3d extra: pip install "
                        f"'panconv-pointcloud[open3d]' ({type(exc).__name__}: {exc})") from None
    open3d.utility.set_verbosity_level(open3d.utility.VerbosityLevel.Error)
    return open3d


def read_point_cloud(path: str | Path, reader: str = "auto") -> dict[str, np.ndarray]:
    """Read a ``.ply``, ``.pcd`` or ``.las`` file (see the module docstring); ``reader``: auto, open3d, plyfile."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such point-cloud file")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path, reader)
    if suffix == ".pcd":
        return read_pcd(path)
    if suffix == ".las":
        return read_las(path)
    if suffix == ".laz":
        raise DataError(f"{path}: compressed LAZ is not supported; decompress it to .las (laszip)")
    raise DataError(f"{path}: unknown point-cloud format '{suffix}' (expected .ply, .pcd or .las)")


def read_ply(path: Path, reader: str = "auto") -> dict[str, np.ndarray]:
    import plyfile

    try:
        ply = plyfile.PlyData.read(str(path))
        vertex = ply["vertex"].data
    except KeyError:
        raise DataError(f"{path}: malformed PLY: no 'vertex' element") from None
    except Exception as exc:  # noqa: BLE001 - plyfile raises PlyParseError, ValueError, struct/IO errors
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: malformed PLY: {detail}") from None
    names = vertex.dtype.names or ()
    if not all(axis in names for axis in "xyz"):
        raise DataError(f"{path}: malformed PLY: the vertex element has no x, y, z properties ({', '.join(names)})")
    out: dict[str, np.ndarray] = {}
    use_open3d = reader == "open3d" or (reader == "auto" and open3d_available())
    if use_open3d:
        o3d = _open3d()
        cloud = o3d.io.read_point_cloud(str(path), format="ply")
        xyz = np.asarray(cloud.points, dtype=np.float64)
        if xyz.shape[0] != len(vertex):
            raise DataError(f"{path}: malformed PLY: open3d read {xyz.shape[0]} of the {len(vertex)} points the "
                            f"header declares")
        out["xyz"] = xyz
        if cloud.has_colors():
            out["colors"] = np.asarray(cloud.colors, dtype=np.float64)
    else:
        out["xyz"] = np.stack([np.asarray(vertex[a], dtype=np.float64) for a in "xyz"], axis=1)
        if all(c in names for c in ("red", "green", "blue")):
            rgb = np.stack([np.asarray(vertex[c], dtype=np.float64) for c in ("red", "green", "blue")], axis=1)
            out["colors"] = rgb / (255.0 if vertex["red"].dtype.itemsize == 1 else 65535.0)
    for name in LABEL_FIELDS:
        if name in names:
            out["labels"] = np.asarray(vertex[name], dtype=np.int64)
            break
    for name in ("intensity", "scalar_intensity"):
        if name in names:
            out["intensity"] = np.asarray(vertex[name], dtype=np.float64)
            break
    if not np.isfinite(out["xyz"]).all():
        raise DataError(f"{path}: malformed PLY: non-finite coordinates")
    return out


def read_pcd(path: Path) -> dict[str, np.ndarray]:
    header, declared = {}, None
    with open(path, "rb") as fh:
        for _ in range(20):
            line = fh.readline().decode("ascii", "replace").strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            header[key.upper()] = value
            if key.upper() == "DATA":
                break
        else:
            raise DataError(f"{path}: malformed PCD: no DATA line in the first 20 header lines")
        body = fh.read()
    for key in ("FIELDS", "POINTS", "DATA"):
        if key not in header:
            raise DataError(f"{path}: malformed PCD: the header has no {key} line")
    try:
        declared = int(header["POINTS"])
    except ValueError:
        raise DataError(f"{path}: malformed PCD: POINTS is not an integer ({header['POINTS']!r})") from None
    fields = header["FIELDS"].split()
    if not all(a in fields for a in "xyz"):
        raise DataError(f"{path}: malformed PCD: FIELDS has no x, y, z ({header['FIELDS']})")
    data = header["DATA"].strip().lower()
    if data == "ascii":
        rows = sum(1 for row in body.splitlines() if row.strip())
        if rows != declared:
            raise DataError(f"{path}: malformed PCD: {rows} data rows, the header declares POINTS {declared}")
    elif data == "binary":
        try:
            record = sum(int(a) * int(b) for a, b in zip(header.get("SIZE", "").split(), header.get("COUNT", "").split()
                                                          or ["1"] * len(fields)))
        except ValueError:
            raise DataError(f"{path}: malformed PCD: SIZE / COUNT are not integers") from None
        if len(body) < record * declared:
            raise DataError(f"{path}: malformed PCD: {len(body)} data bytes for {declared} points of {record} bytes")
    o3d = _open3d()
    cloud = o3d.t.io.read_point_cloud(str(path), format="pcd")
    xyz = cloud.point.positions.numpy().astype(np.float64) if "positions" in cloud.point else np.zeros((0, 3))
    if xyz.shape[0] != declared:
        raise DataError(f"{path}: malformed PCD: read {xyz.shape[0]} of the {declared} points the header declares")
    out = {"xyz": xyz}
    for key, name in (("colors", "colors"), ("intensity", "intensity"), ("label", "labels")):
        if key in cloud.point:
            value = cloud.point[key].numpy()
            out[name] = value.reshape(len(xyz), -1).squeeze(-1) if key != "colors" else value.astype(np.float64)
    if "labels" in out:
        out["labels"] = out["labels"].astype(np.int64)
    if "colors" in out and out["colors"].max(initial=0) > 1:
        out["colors"] = out["colors"] / 255.0
    return out


#: LAS point record layout: byte offset of classification and the minimum record length per format
_LAS_CLASS_OFFSET = {**{f: 15 for f in range(6)}, **{f: 16 for f in range(6, 11)}}
_LAS_MIN_LENGTH = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}


def read_las(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    if len(data) < 227 or data[:4] != b"LASF":
        raise DataError(f"{path}: malformed LAS: no 'LASF' signature / header too short ({len(data)} bytes)")
    offset, = struct.unpack_from("<I", data, 96)
    point_format = data[104] & 0x3F
    compressed = data[104] & 0x80
    record, = struct.unpack_from("<H", data, 105)
    count, = struct.unpack_from("<I", data, 107)
    scale = np.array(struct.unpack_from("<3d", data, 131))
    origin = np.array(struct.unpack_from("<3d", data, 155))
    if data[25] >= 4 and count == 0 and len(data) >= 255:
        count, = struct.unpack_from("<Q", data, 247)
    if compressed:
        raise DataError(f"{path}: compressed LAZ data is not supported; decompress it to .las (laszip)")
    if point_format not in _LAS_MIN_LENGTH or record < _LAS_MIN_LENGTH[point_format]:
        raise DataError(f"{path}: malformed LAS: point format {point_format} with {record}-byte records")
    if offset + count * record > len(data):
        raise DataError(f"{path}: malformed LAS: the header declares {count} points of {record} bytes from byte "
                        f"{offset}, the file has {len(data)} bytes")
    rows = np.frombuffer(data, dtype=np.uint8, count=count * record, offset=offset).reshape(count, record)
    xyz = rows[:, :12].copy().view("<i4").astype(np.float64) * scale + origin
    intensity = rows[:, 12:14].copy().view("<u2")[:, 0].astype(np.float64)
    cls = rows[:, _LAS_CLASS_OFFSET[point_format]].astype(np.int64)
    if point_format < 6:
        cls &= 31
    return {"xyz": xyz, "intensity": intensity, "labels": cls}


__all__ = ["LABEL_FIELDS", "open3d_available", "read_las", "read_pcd", "read_ply", "read_point_cloud"]
