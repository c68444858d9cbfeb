"""Dataset interface: splits, metadata and ``collate``.

A dataset is built as ``Cls(root=<data root>, split=<name>, **config)``. ``root`` is the
resolved data root (``--data-root``, else ``$PANCONV_DATA``, else ``~/.cache/panconv``);
``split`` one of ``cls.splits``. ``metadata`` carries what models need to size themselves
(``num_classes``, ``n_users``/``n_items``, a vocabulary); the engine fills constructor
arguments of the model, backbone, neck and head whose names match metadata keys declared
in ``metadata_keys`` and that the config leaves unset.

Parsing errors raise :class:`panconv.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.utils.data

from ..errors import DataError


def default_data_root() -> Path:
    """``$PANCONV_DATA`` if set, else ``~/.cache/panconv``."""
    env = os.environ.get("PANCONV_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "panconv"


class Dataset(torch.utils.data.Dataset):
    """Map-style dataset. Subclasses implement ``__len__``, ``__getitem__`` and ``metadata``."""

    #: the splits this dataset can load
    splits: Sequence[str] = ("train", "val", "test")
    #: metadata keys the engine may pass to model constructors (declared statically so that
    #: configs can be validated before any data is loaded)
    metadata_keys: Sequence[str] = ()
    #: ``panconv.testing`` opt-outs: check name -> declared reason
    conformance_skips: dict[str, str] = {}

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train"):
        if split not in self.splits:
            raise DataError(
                f"{type(self).__name__}: unknown split '{split}'; choose one of {', '.join(self.splits)}"
            )
        self.root = Path(root) if root is not None else default_data_root()
        self.split = split

    @property
    def metadata(self) -> dict[str, Any]:
        return {}

    def collate(self, samples: list) -> Any:
        """Merge samples into a batch (default: ``torch.utils.data.default_collate``)."""
        return torch.utils.data.default_collate(samples)

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """What stops this dataset from loading under ``root`` (missing files, packages), each with
        what to do; empty when it can load. ``panconv doctor`` reports it; no data is read."""
        return []

    # ---- conformance-kit examples (see panconv.testing) ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        """Write a tiny valid copy of the data under ``tmp_dir``; return constructor kwargs."""
        raise NotImplementedError(f"{cls.__name__} declares no example()")

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        """Write a tiny *malformed* copy; constructing from the returned kwargs must raise DataError."""
        raise NotImplementedError(f"{cls.__name__} declares no broken_example()")


class IterableDataset(torch.utils.data.IterableDataset):
    """Streaming variant with the same ``splits``/``metadata``/``collate`` contract."""

    splits: Sequence[str] = ("train", "val", "test")
    metadata_keys: Sequence[str] = ()
    conformance_skips: dict[str, str] = {}
    metadata = Dataset.metadata
    collate = Dataset.collate
    check_prerequisites = Dataset.check_prerequisites
    example = Dataset.example
    broken_example = Dataset.broken_example

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train"):
        Dataset.__init__(self, root, split)  # type: ignore[arg-type]
