"""Public I/O helpers for plugins and users: atomic writes, checksummed downloads, safe checkpoints.

This module is part of panconv's public surface (plugins import it; see ``docs/plugin-authoring.md``).

Every file the engine writes goes to a temporary file in the same directory, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX): a kill at any
moment leaves either the old file or the new one, never a torn one.

Checkpoints are loaded with ``torch.load(weights_only=True)`` and the explicit allow-list
``ALLOWED_GLOBALS`` (empty: the engine writes mmengine's logging state as tensors and plain
containers, see :func:`to_plain`). Anything else — a pickled callable, an arbitrary object —
is refused with a :class:`~panconv.errors.CheckpointError` naming the offending global.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CheckpointError, DataError


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clean_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` files an interrupted :func:`atomic_write` left in ``directory``."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str | None = None,
             opener: Callable[[str], Any] | None = None) -> Path:
    """Fetch ``url`` to ``dest`` atomically: temp file in the same folder, checksum, then rename.

    A checksum mismatch raises :class:`~panconv.errors.DataError` and leaves ``dest`` untouched.
    ``opener`` (default :func:`urllib.request.urlopen`) lets tests serve bytes without a network.
    """
    import urllib.request

    opener = opener or urllib.request.urlopen
    dest = Path(dest)

    def fetch(out) -> None:
        h = hashlib.sha256()
        with opener(url) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if sha256 is not None and h.hexdigest() != sha256.lower():
            raise DataError(f"{url}: sha256 {h.hexdigest()} does not match the expected {sha256}; "
                            f"the download was discarded, check the source URL")

    atomic_write(dest, fetch)
    return dest


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and scalars inside builtin containers, nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_array_pickle(path: str | os.PathLike, what: str = "pickle of numpy arrays") -> Any:
    """A (gzipped when ``.gz``) pickle holding only numpy arrays in builtin containers (mnist.pkl.gz).

    Any other global is refused, so a data file runs no code. An unreadable, corrupt or refused
    file raises a one-line :class:`~panconv.errors.DataError` naming it (``what`` says what it
    should have been).
    """
    import gzip
    import zlib

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, AttributeError, ImportError,
            IndexError, TypeError, MemoryError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable {what}: {type(exc).__name__}: {detail}") from None


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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True`` + the allow-list above).

    Raises :class:`~panconv.errors.CheckpointError` (one line, naming the file) when the file is
    missing, unreadable, holds pickled objects outside the allow-list, or is not a dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, or not a torch checkpoint): "
                                  f"{_unpickling_problem(str(exc))}") from None
        raise CheckpointError(
            f"{path}: refused to load: it contains objects outside the allow-list (a pickled reference to "
            f"{refused}); panconv loads checkpoints as data (tensors and plain containers) because unpickling "
            f"an object can run arbitrary code. Re-save a checkpoint you trust as a plain state dict") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated): "
                              f"{type(exc).__name__}: {_first_line(str(exc))}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    return checkpoint


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _refused_global(detail: str) -> str | None:
    """The global torch's weights-only unpickler refused (without torch's advice on bypassing it)."""
    import re

    match = re.search(r"GLOBAL\s+([\w.<>]+)", detail)
    return match.group(1)[:120] if match else None


def _unpickling_problem(detail: str) -> str:
    import re

    match = re.search(r"Unsupported operand\s+(\S+)", detail)
    if match:
        return f"its pickle stream has operation {match.group(1)}, which safe loading does not accept"
    return "its pickle stream is not one safe loading accepts"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def check_checkpoint(checkpoint: dict, path: str | os.PathLike, *, resume: bool = False) -> dict:
    """Check the structure of an engine checkpoint; return it, or raise a one-line CheckpointError.

    Always: ``state_dict`` (when present; else the checkpoint itself is the weights) maps names
    to tensors, ``meta`` (when present) is a dict whose ``epoch``/``iter`` are non-negative
    ints with ``epoch <= iter`` (every epoch has at least one iteration). With ``resume=True``
    (restoring a training run, not only its weights) ``meta`` with ``epoch`` and ``iter`` is
    required, ``optimizer`` is a dict with a ``state`` dict and a ``param_groups`` list of dicts,
    ``message_hub`` a dict of dicts and ``param_schedulers`` a list of dicts.
    """
    import torch

    def fail(field: str, message: str) -> None:
        raise CheckpointError(f"{path}: {field}: {message}")

    weights = checkpoint.get("state_dict", checkpoint)
    field = "state_dict" if "state_dict" in checkpoint else "(weights)"
    if not isinstance(weights, dict):
        fail(field, f"expected a dict of tensors, got {_type_name(weights)}")
    if "state_dict" in checkpoint:
        for key, value in weights.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                fail(f"state_dict[{str(key)[:80]!r}]", f"expected a tensor under a string key, got "
                     f"{_type_name(value)}")
    meta = checkpoint.get("meta")
    if meta is None and resume:
        fail("meta", "missing: this file holds weights only and cannot resume training "
             "(use it with run.load_from, or --eval-only)")
    if meta is not None:
        if not isinstance(meta, dict):
            fail("meta", f"expected a dict, got {_type_name(meta)}")
        for key in ("epoch", "iter"):
            if key not in meta:
                if resume:
                    fail(f"meta.{key}", "missing")
                continue
            if not _is_int(meta[key]) or meta[key] < 0:
                fail(f"meta.{key}", f"expected a non-negative int, got {meta[key]!r:.60}")
        if _is_int(meta.get("epoch")) and _is_int(meta.get("iter")) and meta["epoch"] > meta["iter"]:
            fail("meta.epoch", f"{meta['epoch']} epochs in {meta['iter']} iterations is impossible")
    if not resume:
        return checkpoint
    optimizer = checkpoint.get("optimizer")
    if optimizer is not None:
        if not isinstance(optimizer, dict):
            fail("optimizer", f"expected a dict, got {_type_name(optimizer)}")
        if not isinstance(optimizer.get("state"), dict):
            fail("optimizer.state", f"expected a dict, got {_type_name(optimizer.get('state'))}")
        groups = optimizer.get("param_groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            fail("optimizer.param_groups", f"expected a list of dicts, got {_type_name(groups)}")
    hub = checkpoint.get("message_hub")
    if hub is not None:
        if not isinstance(hub, dict):
            fail("message_hub", f"expected a dict, got {_type_name(hub)}")
        for key, value in hub.items():
            if not isinstance(value, dict):
                fail(f"message_hub.{key}", f"expected a dict, got {_type_name(value)}")
    schedulers = checkpoint.get("param_schedulers")
    if schedulers is not None:
        if not isinstance(schedulers, list):
            fail("param_schedulers", f"expected a list of dicts, got {_type_name(schedulers)}")
        for i, state in enumerate(schedulers):
            if not isinstance(state, dict):
                fail(f"param_schedulers[{i}]", f"expected a dict, got {_type_name(state)}")
    return checkpoint


def model_state_dict(checkpoint: dict) -> dict:
    """The model weights of an engine checkpoint (``state_dict`` with the ``model.`` prefix removed)."""
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "model."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state
