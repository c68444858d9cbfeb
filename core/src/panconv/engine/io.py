"""Atomic writes and safe checkpoint loading.

Every file the engine writes goes to a temporary file in the same directory, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX): a kill at any
moment leaves either the old file or the new one, never a torn one.

Checkpoints are loaded with ``torch.load(weights_only=True)`` and the explicit allow-list
``ALLOWED_GLOBALS`` (empty: the engine writes mmengine's logging state as tensors and plain
containers, see :func:`to_plain`). Anything else — a pickled callable, an arbitrary object —
is refused with a :class:`~panconv.errors.CheckpointError` naming the offending global.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CheckpointError


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path`` and atomically rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` with an atomic rename."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


#: Globals (besides tensors and plain containers) a checkpoint may contain. Deliberately empty:
#: the engine stores everything as tensors and builtin containers (see ``to_plain``), so
#: ``weights_only=True`` needs no exception. Extend only with specific, reviewed classes.
ALLOWED_GLOBALS: list = []


def to_plain(value: Any) -> Any:
    """mmengine's logging state as tensors and builtin containers (``weights_only``-loadable).

    ``HistoryBuffer`` objects (which pickle bound methods) become a tagged dict; numpy arrays
    and scalars become tensors and Python numbers. :func:`from_plain` reverses it.
    """
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    if isinstance(value, HistoryBuffer):
        logs, counts = value.data
        return {"__history_buffer__": True, "log": torch.from_numpy(np.asarray(logs, dtype=np.float64)),
                "count": torch.from_numpy(np.asarray(counts, dtype=np.float64)), "max_length": int(value.max_length)}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    from mmengine.logging.history_buffer import HistoryBuffer

    if isinstance(value, dict):
        if value.get("__history_buffer__"):
            return HistoryBuffer(value["log"].tolist(), value["count"].tolist(), value["max_length"])
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True`` + the allow-list above)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        culprit = None
        for line in detail.splitlines():
            if "GLOBAL" in line or "Unsupported global" in line:
                culprit = line.strip()
                break
        raise CheckpointError(
            f"{path}: refused to load: it contains objects outside the allow-list "
            f"({culprit or detail.splitlines()[0][:200]}); only load checkpoints you trust, "
            f"and re-save them as plain state dicts") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    return checkpoint


def model_state_dict(checkpoint: dict) -> dict:
    """The model weights of an engine checkpoint (``state_dict`` with the ``model.`` prefix removed)."""
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "model."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state
