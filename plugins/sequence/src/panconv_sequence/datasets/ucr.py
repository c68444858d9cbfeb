"""UCR/UEA time-series classification sets, read from the ``.ts`` files the ``aeon`` wheel ships.

The ``aeon`` wheel carries a few sets of the UCR (univariate) and UEA (multivariate) archives as
``aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts``: GunPoint, ItalyPowerDemand, ArrowHead, OSULeaf,
ACSF1 (univariate, equal length), BasicMotions (6 channels), JapaneseVowels (12 channels, unequal
length 7-29), PickupGestureWiimoteZ (unequal) and a few more. Installing aeon normally would replace the
pinned numpy, so it is installed ``--no-deps`` and **never imported**: this module finds its files through
``importlib.metadata`` and reads them with its own validating reader (:func:`read_ts`). A folder given as
``path`` (holding ``<Name>_TRAIN.ts`` / ``<Name>_TEST.ts``) or ``<root>/ucr/<Name>/`` is used first, so any
other set of the archives can be dropped in.

The ``.ts`` format (sktime/aeon): ``#`` comment lines; a header of ``@tag value`` lines (``@problemName``,
``@timeStamps false``, ``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
``@classLabel true <labels...>``), then ``@data`` and one case per line: the channels separated by
``:``, each a comma-separated series, the class label last. Timestamped series and missing values
(``?``) are refused with a one-line :class:`~panconv.errors.DataError` naming ``file:line``, as is every
other malformation (an unknown tag, a value that is not a finite number, a label not declared in
``@classLabel``, a channel count or length that disagrees with the header or within a case).

Splits: ``test`` is the archive's test file; ``train`` and ``val`` split its train file, ``val`` being a
seeded ``val_fraction`` of the cases (0 by default: the archive has no validation set and its train sets
are small). Items: ``{"inputs": (L, C) float32, "labels": int, "lengths": int}``; batches are right-padded
with zeros to the longest series of the batch (unequal-length sets; ``lengths`` holds the true lengths).
Metadata: ``num_classes``, ``in_channels`` (``series_length``, the longest series of the split, is an attribute).
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval

from panconv.api import Dataset
from panconv.errors import DataError

KNOWN_TAGS = {"problemname", "timestamps", "missing", "univariate", "dimensions", "equallength", "serieslength",
              "classlabel", "targetlabel", "data"}
MAX_SHOWN = 40


def _show(text: str) -> str:
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")


def _bool(path: Path, lineno: int, tag: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise DataError(f"{path}:{lineno}: @{tag} must be true or false, got {_show(value)}")
    return value.lower() == "true"


def _int(path: Path, lineno: int, tag: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{path}:{lineno}: @{tag} must be a positive integer, got {_show(value)}") from None
    if number < 1:
        raise DataError(f"{path}:{lineno}: @{tag} must be a positive integer, got {number}")
    return number


def read_ts(path: str | Path) -> tuple[list[np.ndarray], list[str], dict[str, Any]]:
    """Read one ``.ts`` file: ``(series, labels, header)``, each series ``(L_i, C)`` float32.

    ``header`` holds the parsed tags (``class_labels``: the declared labels in order). Raises
    :class:`~panconv.errors.DataError` naming ``file:line`` on any malformation.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is tolerated
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    header: dict[str, Any] = {}
    series, labels = [], []
    in_data = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{path}:{lineno}: expected a @tag header line or @data, got {_show(line)}")
            tag, _, value = line[1:].partition(" ")
            key, value = tag.lower(), value.strip()
            if key not in KNOWN_TAGS:
                raise DataError(f"{path}:{lineno}: unknown header tag @{tag}")
            if key == "data":
                if "class_labels" not in header:
                    raise DataError(f"{path}:{lineno}: @data before @classLabel (a classification file needs it)")
                in_data = True
            elif key in ("timestamps", "missing", "univariate", "equallength"):
                header[key] = _bool(path, lineno, tag, value)
                if key == "timestamps" and header[key]:
                    raise DataError(f"{path}:{lineno}: timestamped series (@timeStamps true) are not supported")
            elif key in ("dimensions", "serieslength"):
                header[key] = _int(path, lineno, tag, value)
            elif key == "classlabel":
                flag, _, names = value.partition(" ")
                if not _bool(path, lineno, tag, flag):
                    raise DataError(f"{path}:{lineno}: @classLabel false: not a classification file")
                names = names.split()
                if not names or len(set(names)) != len(names):
                    raise DataError(f"{path}:{lineno}: @classLabel true needs distinct labels, got {_show(value)}")
                header["class_labels"] = names
            elif key == "targetlabel":
                raise DataError(f"{path}:{lineno}: @targetLabel: a regression file, not classification")
            else:
                header[key] = value
            continue
        if line.startswith("@"):
            raise DataError(f"{path}:{lineno}: header tag {_show(line)} after @data")
        *channels, label = line.split(":")
        if not channels:
            raise DataError(f"{path}:{lineno}: expected '<series>:<label>' (channels separated by ':'), "
                            f"got {_show(line)}")
        label = label.strip()
        if label not in header["class_labels"]:
            raise DataError(f"{path}:{lineno}: class label {_show(label)} is not declared in @classLabel "
                            f"({' '.join(header['class_labels'])})")
        expected = header.get("dimensions", 1 if header.get("univariate", True) else None)
        if expected is not None and len(channels) != expected:
            raise DataError(f"{path}:{lineno}: {len(channels)} channel(s), the header declares {expected}")
        if series and len(channels) != series[0].shape[1]:
            raise DataError(f"{path}:{lineno}: {len(channels)} channel(s), the first case has {series[0].shape[1]}")
        values = []
        for c, channel in enumerate(channels):
            row = []
            for v, token in enumerate(channel.split(",")):
                token = token.strip()
                if token == "?" or token.lower() == "nan":
                    raise DataError(f"{path}:{lineno}: channel {c + 1}, value {v + 1}: missing values are not "
                                    "supported")
                try:
                    number = float(token)
                except ValueError:
                    raise DataError(f"{path}:{lineno}: channel {c + 1}, value {v + 1}: not a number: "
                                    f"{_show(token)}") from None
                if not math.isfinite(number):
                    raise DataError(f"{path}:{lineno}: channel {c + 1}, value {v + 1}: not finite: {_show(token)}")
                row.append(number)
            values.append(row)
        lengths = {len(row) for row in values}
        if len(lengths) != 1:
            raise DataError(f"{path}:{lineno}: the channels of one case have different lengths {sorted(lengths)}")
        length = lengths.pop()
        if header.get("equallength", False) and "serieslength" in header and length != header["serieslength"]:
            raise DataError(f"{path}:{lineno}: series of length {length}, @seriesLength declares "
                            f"{header['serieslength']}")
        series.append(np.asarray(values, dtype=np.float32).T.copy())  # (L, C)
        labels.append(label)
    if not in_data:
        raise DataError(f"{path}: no @data line")
    if not series:
        raise DataError(f"{path}: no cases after @data")
    return series, labels, header


def aeon_data_dir() -> Path | None:
    """``aeon/datasets/data`` inside the installed aeon wheel (found without importing aeon), if any."""
    try:
        dist = importlib.metadata.distribution("aeon")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file("aeon/datasets/data"))
    return path if path.is_dir() else None


class UCRArchive(Dataset):
    """A UCR/UEA classification set from ``.ts`` files: ``inputs (L, C)``, ``labels``, ``lengths``.

    ``name``: the set (``GunPoint``, ``ItalyPowerDemand``, ``ArrowHead``, ``BasicMotions``,
    ``JapaneseVowels``, ...); ``path``: a folder with ``<name>_TRAIN.ts`` / ``<name>_TEST.ts`` (default:
    ``<root>/ucr/<name>/``, else the aeon wheel); ``val_fraction``: share of the train cases held out as
    ``val`` (seeded by ``seed``); ``normalize``: z-normalise each series per channel (the UCR sets mostly
    are already).
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "in_channels")

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """The sets are read from ``<root>/ucr/`` or the aeon wheel (``panconv doctor``)."""
        if (Path(root) / "ucr").is_dir() or aeon_data_dir() is not None:
            return []
        return [f"neither {Path(root) / 'ucr'} nor the aeon wheel's data: pip install --no-deps aeon==1.6.0 "
                "(its .ts files are read, aeon itself is never imported)"]

    def __init__(self, root=None, split: str = "train", name: str = "GunPoint", path: str | None = None,
                 val_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0, normalize: bool = False):
        super().__init__(root, split)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"name must be a data-set name such as GunPoint, got {name!r}")
        self.name, self.folder = name, self._locate(name, path)
        file = self.folder / f"{name}_{'TEST' if split == 'test' else 'TRAIN'}.ts"
        series, labels, header = read_ts(file)
        # class indices follow the train file's declared labels, so that every split agrees
        train_file = self.folder / f"{name}_TRAIN.ts"
        self.class_labels = header["class_labels"] if split != "test" else read_ts(train_file)[2]["class_labels"]
        if split == "test" and set(header["class_labels"]) - set(self.class_labels):
            raise DataError(f"{file}: @classLabel declares labels the train file does not "
                            f"({sorted(set(header['class_labels']) - set(self.class_labels))})")
        index = {label: i for i, label in enumerate(self.class_labels)}
        targets = np.array([index[label] for label in labels], np.int64)
        if split != "test" and val_fraction > 0:
            order = np.random.default_rng(seed).permutation(len(series))
            n_val = max(1, round(val_fraction * len(series)))
            keep = np.sort(order[:n_val] if split == "val" else order[n_val:])
            series, targets = [series[i] for i in keep], targets[keep]
        elif split == "val":
            series, targets = [], targets[:0]
        if normalize:
            series = [(s - s.mean(0)) / np.where(s.std(0) > 0, s.std(0), 1) for s in series]
        self.series = [torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)) for s in series]
        self.labels = torch.from_numpy(targets)
        self.in_channels = header.get("dimensions", series[0].shape[1] if series else 1)
        self.series_length = max((len(s) for s in series), default=0)
        self.file = file

    def _locate(self, name: str, path: str | None) -> Path:
        """``path``, else ``<root>/ucr/<name>/``, else the aeon wheel's ``datasets/data/<name>/``."""
        if path is not None:
            folder = Path(path).expanduser()
            if not (folder / f"{name}_TRAIN.ts").is_file():
                raise DataError(f"{folder / f'{name}_TRAIN.ts'}: no such file (UCRArchive path=...)")
            return folder
        local = self.root / "ucr" / name
        if (local / f"{name}_TRAIN.ts").is_file():
            return local
        wheel = aeon_data_dir()
        if wheel is None:
            raise DataError(f"{local / f'{name}_TRAIN.ts'}: no such file and the aeon wheel is not installed: "
                            "pip install --no-deps aeon==1.6.0 (or pass path=...)")
        if not (wheel / name / f"{name}_TRAIN.ts").is_file():
            shipped = sorted(p.name for p in wheel.iterdir() if (p / f"{p.name}_TRAIN.ts").is_file())
            raise DataError(f"{wheel / name / f'{name}_TRAIN.ts'}: no such set in the aeon wheel; it ships "
                            f"{', '.join(shipped)}")
        return wheel / name

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, index: int) -> dict:
        s = self.series[index]
        return {"inputs": s, "labels": self.labels[index], "lengths": len(s)}

    def collate(self, samples: list[dict]) -> dict:
        """Right-pad ``inputs`` with zeros to the longest series of the batch: ``(N, L, C)``."""
        lengths = torch.tensor([s["lengths"] for s in samples], dtype=torch.long)
        inputs = torch.zeros(len(samples), int(lengths.max()), samples[0]["inputs"].shape[1])
        for i, s in enumerate(samples):
            inputs[i, : s["lengths"]] = s["inputs"]
        return {"inputs": inputs, "labels": torch.stack([torch.as_tensor(s["labels"]) for s in samples]),
                "lengths": lengths}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": len(self.class_labels), "in_channels": self.in_channels}

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        rng = np.random.default_rng(0)
        for split, n in (("TRAIN", 8), ("TEST", 4)):
            lines = ["# two channels, unequal lengths", "@problemName Toy", "@timeStamps false", "@missing false",
                     "@univariate false", "@dimensions 2", "@equalLength false", "@classLabel true a b", "@data"]
            for i in range(n):
                length = int(rng.integers(5, 12))
                chans = [",".join(f"{v:.4f}" for v in rng.standard_normal(length)) for _ in range(2)]
                lines.append(":".join(chans) + (":a" if i % 2 else ":b"))
            (Path(tmp_dir) / f"Toy_{split}.ts").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"name": "Toy", "path": str(tmp_dir), "val_fraction": 0.25}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        text = "@problemName Toy\n@univariate true\n@classLabel true 1 2\n@data\n1.0,2.0,3.0:1\n1.0,oops,3.0:2\n"
        for split in ("TRAIN", "TEST"):
            (Path(tmp_dir) / f"Toy_{split}.ts").write_text(text, encoding="utf-8")
        return {"name": "Toy", "path": str(tmp_dir)}


__all__ = ["UCRArchive", "aeon_data_dir", "read_ts"]
