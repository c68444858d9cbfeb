"""Checks of datasets: built from the declared tiny ``example(tmp_dir)`` and ``broken_example(tmp_dir)``."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch

from ...errors import DataError
from .base import check, fail


@contextlib.contextmanager
def example_dataset(entry, broken: bool = False):
    """Yield ``(factory, make, tmp)`` for the entry's (broken) example; ``tmp`` is removed afterwards."""
    factory = entry.load()
    with tempfile.TemporaryDirectory(prefix="panconv-kit-") as name:
        tmp = Path(name)
        method = "broken_example" if broken else "example"
        try:
            kwargs = getattr(factory, method)(tmp)
        except NotImplementedError as exc:
            fail(entry, method, str(exc))
        split = kwargs.pop("split", factory.splits[0])
        root = kwargs.pop("root", tmp)
        yield factory, (lambda: factory(root=root, split=split, **kwargs)), tmp


@check("dataset", doc="the declared tiny example builds and is not empty")
def check_dataset_length(entry):
    with example_dataset(entry) as (_, make, _):
        dataset = make()
        try:
            n = len(dataset)
        except TypeError:
            return  # iterable dataset
    if n <= 0:
        fail(entry, "dataset_length", "the example dataset is empty")


@check("dataset", doc="items are dicts; collate keeps every field and batches them")
def check_collate(entry):
    with example_dataset(entry) as (_, make, _):  # items are read while the example files exist
        dataset = make()
        if hasattr(dataset, "__getitem__"):
            items = [dataset[i] for i in range(min(2, len(dataset)))]
        else:
            items = [x for _, x in zip(range(2), iter(dataset))]
    if not all(isinstance(item, dict) for item in items):
        fail(entry, "collate", f"items must be dicts, got {type(items[0]).__name__}")
    batch = dataset.collate(items)
    if not isinstance(batch, dict):
        fail(entry, "collate", f"collate must return a dict, got {type(batch).__name__}")
    dropped = sorted(set(items[0]) - set(batch))
    if dropped:
        fail(entry, "collate", f"collate drops field(s) {', '.join(dropped)}")
    for key, value in batch.items():
        scalar_items = isinstance(items[0].get(key), torch.Tensor) and items[0][key].dim() == 0
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] != len(items) and scalar_items:
            fail(entry, "collate", f"field '{key}' has leading size {value.shape[0]} for {len(items)} items")


@check("dataset", doc="metadata provides every key declared in metadata_keys")
def check_metadata(entry):
    with example_dataset(entry) as (factory, make, _):
        metadata = make().metadata
    if not isinstance(metadata, dict):
        fail(entry, "metadata", f"metadata must be a dict, got {type(metadata).__name__}")
    missing = [k for k in getattr(factory, "metadata_keys", ()) if k not in metadata]
    if missing:
        fail(entry, "metadata", f"metadata_keys declares {', '.join(missing)} but metadata lacks them")


@check("dataset", doc="a malformed file raises DataError naming the file, in one line")
def check_malformed_file(entry):
    with example_dataset(entry, broken=True) as (_, make, tmp):
        try:
            make()
        except DataError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001
            fail(entry, "malformed_file", f"raised {type(exc).__name__} instead of DataError: {exc}")
        else:
            fail(entry, "malformed_file", "building from broken_example() did not raise")
        names = [p.name for p in tmp.rglob("*")]
    if str(tmp) not in str(error) and not any(name in str(error) for name in names):
        fail(entry, "malformed_file", f"the DataError does not name the file: {error}")
    if "\n" in str(error).strip():
        fail(entry, "malformed_file", "the DataError message is not one line")
