"""Implicit-feedback recommendation data in the LightGCN / NGCF release format.

Layout under the data root: ``<root>/recsys/<name>/{train,valid,test}.txt``; every line is
``user_id item_id item_id ...`` with 0-based integer ids (see ``shared/data/recsys/README.md``).

* ``split="train"`` yields BPR triples ``(user, positive, negative)``. As in the reference code
  (``UniformSample_original``) an epoch has as many samples as training interactions; by default
  each sample draws a user uniformly, then one of the user's items, then a negative uniformly
  among the items the user has not interacted with (``sampling="interaction"`` walks the
  interactions in a random order instead). Sampling is vectorised (rejection by a sorted-key
  lookup) and reproducible: epoch ``e`` uses ``numpy.random.default_rng((seed, e))``; the engine
  calls :meth:`RecSysData.set_epoch` before each epoch.
* ``split="val"`` / ``"test"`` yield one user each: the held-out items of ``valid.txt`` /
  ``test.txt`` and the items to mask when ranking (the training items; for ``test`` also the
  validation items when ``valid.txt`` exists).

Parsing rules (anything else is a one-line ``DataError "file:line: ..."``, tokens cut to 40
characters): files are UTF-8 text (a byte-order mark and ``\\r\\n`` / ``\\r`` line ends are accepted;
UTF-16, other encodings and binary data are refused); ids are ASCII digits separated by spaces or
tabs; blank lines at the end of a file are ignored, a blank line between records is an error; a
user may appear once per file; a line with a user id and no items is a user without
interactions, but the training file must hold at least one interaction. A training user who has
interacted with every item is refused (BPR could never sample a negative for them). Evaluation
users with no training interaction (cold-start: LightGCN cannot score them) are skipped, counted
in ``self.skipped["cold_users"]`` and reported with a warning; an evaluation file left with no
user to rank is an error.

``n_users`` / ``n_items`` are ``1 + max id`` over every file of the data set (as the reference
code does), so every split reports the same metadata. Since they size the embedding tables, ids
are bounded by what the data justifies (:func:`id_limit`: ``max(2^20, 16 x the number of ids in
the data set's files)``, never above ``2^31 - 1``): a three-line file cannot ask for a 7 TiB table.

Download (users with internet): pass ``source=<base URL>`` (files are fetched from
``<source>/<file>``) and optionally ``checksums={"train.txt": "<sha256>", ...}``; missing files are
downloaded to a temporary file in the target folder, verified, then renamed into place.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from annotated_types import Interval

from panconv.api import Dataset
from panconv.errors import DataError
from panconv.io import download

#: the LightGCN reference release of Gowalla (sha256 of the copy the paper's numbers come from)
KNOWN_SOURCES: dict[str, dict[str, Any]] = {
    "gowalla": {
        "source": "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data/gowalla",
        "checksums": {
            "test.txt": "63099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57b",
        },
    },
}

_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}


# ----------------------------------------------------------------------------- file handling
def download_file(url: str, dest: Path, sha256: str | None = None,
                  opener: Callable[[str], Any] | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (core's checksummed atomic download)."""
    return download(url, dest, sha256, opener)


class _Records:
    """One parsed file: CSR of items per user (users in file order), with where each record is."""

    __slots__ = ("path", "users", "offsets", "items", "lines", "n_ids", "max_user", "max_item",
                 "max_user_line", "max_item_line")

    def __init__(self, path, users, offsets, items, lines, max_user_line=0, max_item_line=0):
        self.path = path
        self.users, self.offsets, self.items, self.lines = users, offsets, items, lines
        self.n_ids = len(users) + len(items)
        self.max_user = int(users.max()) if len(users) else -1
        self.max_item = int(items.max()) if len(items) else -1
        self.max_user_line, self.max_item_line = max_user_line, max_item_line


_CACHE: dict[tuple, _Records] = {}

#: what a line may hold: ASCII digits separated by spaces or tabs (anything else is reported)
_BAD_CHAR = re.compile(r"[^0-9 \t\n]")
_NEGATIVE = re.compile(r"-[0-9]+")
#: ids have at most this many digits when read (int64 holds 18); larger ones are refused by value
_MAX_DIGITS = 18
#: the id range a data set may use: ids are row indices of the embedding tables (``1 + max id``
#: rows each), so an id may exceed the number of ids in the data set's files by a bounded factor
#: only; any id up to ``ID_FLOOR`` is accepted, and no id may exceed ``ID_CEILING``
ID_FLOOR = 1 << 20
ID_SLACK = 16
ID_CEILING = (1 << 31) - 1


def id_limit(n_ids: int) -> int:
    """The largest id accepted in a data set whose files hold ``n_ids`` ids in total."""
    return min(ID_CEILING, max(ID_FLOOR, ID_SLACK * n_ids))


def _show(text: str, limit: int = 40) -> str:
    """``repr`` of a token cut to a readable length (one line, whatever the token holds)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _cut(digits: str, limit: int = 40) -> str:
    """A (sign and) digits token cut to a readable length."""
    return digits if len(digits) <= limit else f"{digits[:limit]}... ({len(digits)} digits)"


def _decode(path: Path, data: bytes) -> str:
    """The file's text (UTF-8, optional BOM); DataError naming file:line for anything else."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}:1: UTF-16 text (byte-order mark {data[:2].hex()}); save the file as UTF-8 "
                        f"('user_id item_id item_id ...' lines)")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: binary data (NUL byte at offset {nul}); "
                        f"expected UTF-8 text lines 'user_id item_id item_id ...'")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset}); "
                        f"save the file as UTF-8 ('user_id item_id item_id ...' lines)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _bad_token(path: Path, lineno: int, line: str, pos: int) -> DataError:
    """The error for the token of ``line`` holding the unexpected character at ``pos``."""
    start = max((line.rfind(c, 0, pos) for c in " \t"), default=-1) + 1
    ends = [e for e in (line.find(" ", pos), line.find("\t", pos)) if e >= 0]
    token = line[start:min(ends) if ends else len(line)]
    if _NEGATIVE.fullmatch(token):
        return DataError(f"{path}:{lineno}: negative id {_cut(token)}; ids must be 0-based integers")
    return DataError(f"{path}:{lineno}: {_show(token)} is not an integer id; expected 'user_id item_id item_id ...' "
                     f"(ASCII digits separated by spaces)")


def read_interactions(path: Path) -> _Records:
    """Parse ``user item item ...`` lines; raise ``DataError("file:line: ...")`` on bad input.

    The file must be UTF-8 text whose lines hold ASCII-digit ids separated by spaces or tabs
    (``\\n``, ``\\r\\n`` or ``\\r`` line ends); ids longer than 18 digits are refused here, ids out of
    the data set's range (:func:`id_limit`) by :class:`RecSysData`.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _CACHE:
        return _CACHE[key]
    text = _decode(path, path.read_bytes())
    users: list[int] = []
    lengths: list[int] = []
    lines: list[int] = []
    chunks: list[list[int]] = []
    seen: dict[int, int] = {}
    blank_at = None
    max_user = max_item = -1
    max_user_line = max_item_line = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        bad = _BAD_CHAR.search(line)
        if bad is not None:
            raise _bad_token(path, lineno, line, bad.start())
        parts = line.split()
        if not parts:
            blank_at = blank_at or lineno
            continue
        if blank_at is not None:
            raise DataError(f"{path}:{blank_at}: empty line between records; "
                            f"remove it (only trailing blank lines are allowed)")
        if max(map(len, parts)) > _MAX_DIGITS:  # (leading zeros aside) more digits than int64 holds
            parts = [p.lstrip("0") or "0" for p in parts]
            token = next((p for p in parts if len(p) > _MAX_DIGITS), None)
            if token is not None:
                raise DataError(f"{path}:{lineno}: id {_cut(token)} is too large; ids are 0-based row "
                                f"indices up to {ID_CEILING} (renumber users and items 0..N-1)")
        ids = [int(p) for p in parts]
        user = ids[0]
        if user in seen:
            raise DataError(f"{path}:{lineno}: user {user} already listed at line {seen[user]}; "
                            f"merge the two lines")
        seen[user] = lineno
        if user > max_user:
            max_user, max_user_line = user, lineno
        if len(ids) > 1 and max(ids[1:]) > max_item:
            max_item, max_item_line = max(ids[1:]), lineno
        users.append(user)
        lengths.append(len(ids) - 1)
        lines.append(lineno)
        chunks.append(ids[1:])
    if not users:
        raise DataError(f"{path}:1: file has no records; expected lines 'user_id item_id item_id ...'")
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.fromiter((i for c in chunks for i in c), dtype=np.int64, count=int(offsets[-1]))
    records = _Records(path, np.asarray(users, dtype=np.int64), offsets, items,
                       np.asarray(lines, dtype=np.int64), max_user_line, max_item_line)
    _CACHE[key] = records
    return records


def _check_id_range(parsed: dict[str, _Records]) -> None:
    """Refuse ids the data set cannot justify (they would size the embedding tables)."""
    n_ids = sum(r.n_ids for r in parsed.values())
    limit = id_limit(n_ids)
    for r in parsed.values():
        for what, value, line in (("user", r.max_user, r.max_user_line), ("item", r.max_item, r.max_item_line)):
            if value > limit:
                raise DataError(f"{r.path}:{line}: {what} id {value} is out of range: the data set's {n_ids} ids "
                                f"justify ids up to {limit} (ids are rows of the embedding tables, which get "
                                f"1 + max id rows); renumber users and items 0..N-1")


def _csr_by_user(records: _Records, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets[n_users+1], sorted unique items) per user id from a parsed file."""
    lengths = np.diff(records.offsets)
    u = np.repeat(records.users, lengths)
    key = np.unique(u * (records.max_item + 1) + records.items) if len(u) else u
    width = records.max_item + 1
    u, i = key // width, key % width
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=offsets[1:])
    return offsets, i


# ----------------------------------------------------------------------------- the dataset
class RecSysData(Dataset):
    """Implicit-feedback data (gowalla, ml-1m, lastfm, ...): BPR triples / ranking users.

    Args:
        root: the data root (folder holding ``recsys/``), as the core resolves it (``--data-root``,
            ``data.root``, ``$PANCONV_DATA``, ``~/.cache/panconv``); a relative path resolves
            against the working directory.
        split: ``train`` (BPR triples), ``val`` (``valid.txt``) or ``test`` (``test.txt``).
        name: data-set folder under ``<root>/recsys/``.
        seed: base seed of the negative sampling (epoch ``e`` uses ``(seed, e)``), 0 ... 2**32 - 1.
        sampling: ``"user"`` (the reference's uniform user then item) or ``"interaction"``.
        source / checksums / download: fetch missing files from ``<source>/<file>``;
            ``download=True`` uses the known source of ``name`` (gowalla).
        train_fraction: keep this fraction of the training interactions (seeded; training split only),
            for data-scaling studies (``panconv sweep``).
    """

    splits = ("train", "val", "test")
    metadata_keys = ("n_users", "n_items")

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """Which data sets are present under ``<root>/recsys/`` (``panconv doctor``)."""
        folder = Path(root) / "recsys"
        present = sorted(p.name for p in folder.glob("*") if (p / "train.txt").is_file()) if folder.is_dir() else []
        if not present:
            return [f"no data set under {folder} (each needs <name>/train.txt; gowalla, ml-1m, lastfm are the "
                    f"papers'): point --data-root or $PANCONV_DATA at a folder holding recsys/"]
        return []

    def __init__(self, root=None, split: str = "train", name: str = "gowalla",
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 2020,
                 sampling: Literal["user", "interaction"] = "user", source: str | None = None,
                 checksums: dict[str, str] | None = None, download: bool = False,
                 train_fraction: Annotated[float, Interval(gt=0, le=1)] = 1.0):
        super().__init__(root, split)
        if not 0 < train_fraction <= 1:
            raise ValueError(f"RecSysData: train_fraction must be in (0, 1], got {train_fraction}")
        if sampling not in ("user", "interaction"):
            raise ValueError(f"RecSysData: sampling must be 'user' or 'interaction', got {sampling!r}")
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"RecSysData: name must be a folder name under <root>/recsys/, got {name!r}")
        self.name, self.seed, self.sampling = name, int(seed), sampling
        self.folder = self.root / "recsys" / name
        if download and source is None and name in KNOWN_SOURCES:
            source = KNOWN_SOURCES[name]["source"]
            checksums = {**KNOWN_SOURCES[name]["checksums"], **(checksums or {})}
        self._fetch_missing(source, checksums or {})

        train_path = self.folder / "train.txt"
        if not train_path.is_file():
            raise DataError(f"{train_path}: missing; put the '{name}' data under {self.folder} "
                            f"(or point --data-root / data.root / $PANCONV_DATA at a folder holding "
                            f"recsys/{name}, or pass source=URL)")
        split_path = self.folder / _FILES[split]
        if not split_path.is_file():
            raise DataError(f"{split_path}: missing; split '{split}' of '{name}' reads {_FILES[split]} "
                            f"(map the stage to another split in data.splits)")
        parsed = {s: read_interactions(self.folder / f) for s, f in _FILES.items() if (self.folder / f).is_file()}
        _check_id_range(parsed)
        if not len(parsed["train"].items):
            raise DataError(f"{train_path}:1: no training interactions (every line lists a user without "
                            f"items); the model and its graph are built from them")
        self.n_users = 1 + max(r.max_user for r in parsed.values())
        self.n_items = 1 + max(r.max_item for r in parsed.values())
        self.train_offsets, self.train_items = _csr_by_user(parsed["train"], self.n_users)
        self.train_fraction = float(train_fraction)
        if split == "train" and train_fraction < 1:
            self._subsample_train()
        self.skipped = {"cold_users": 0, "empty_users": 0}
        if split == "train":
            self._init_train()
        else:
            self._init_eval(parsed, split)

    # ---- files
    def _fetch_missing(self, source, checksums):
        if source is None:
            return
        for fname in ("train.txt", "valid.txt", "test.txt"):
            dest = self.folder / fname
            if dest.is_file():
                continue
            if fname == "valid.txt" and fname not in checksums:
                continue  # optional file: only fetched when declared
            download_file(f"{source.rstrip('/')}/{fname}", dest, checksums.get(fname))

    def _subsample_train(self) -> None:
        """Keep ``round(train_fraction * n)`` training interactions, drawn uniformly under ``seed`` (a
        data-scaling study: ``panconv sweep``). Only the training split changes: the graph and the BPR
        triples come from the kept interactions; evaluation splits still exclude every training item."""
        n = len(self.train_items)
        keep = np.zeros(n, dtype=bool)
        rng = np.random.default_rng((self.seed, 0x5B5E7))
        keep[rng.choice(n, max(1, int(round(self.train_fraction * n))), replace=False)] = True
        users = np.repeat(np.arange(self.n_users), np.diff(self.train_offsets))[keep]
        self.train_items = self.train_items[keep]
        self.train_offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=self.train_offsets[1:])

    # ---- training split: BPR triples
    def _init_train(self):
        deg = np.diff(self.train_offsets)
        full = np.nonzero(deg >= self.n_items)[0]
        if len(full):  # no negative exists for them: sampling one would never end
            records = read_interactions(self.folder / _FILES["train"])
            user = int(full[0])
            line = int(records.lines[np.nonzero(records.users == user)[0][0]])
            more = f" (and {len(full) - 1} more users)" if len(full) > 1 else ""
            raise DataError(f"{records.path}:{line}: user {user} has interacted with every one of the "
                            f"{self.n_items} items{more}, so BPR cannot sample a negative item for it; "
                            f"remove the user from the training data")
        self.n_interactions = int(deg.sum())
        self._train_users = np.nonzero(deg)[0]
        self._train_keys = np.repeat(np.arange(self.n_users), deg) * self.n_items + self.train_items  # sorted
        self._epoch = 0
        self._samples: np.ndarray | None = None

    def set_epoch(self, epoch: int) -> None:
        """Draw the triples of ``epoch`` (reproducible under ``seed``)."""
        if self.split == "train" and (self._samples is None or epoch != self._epoch):
            self._epoch = int(epoch)
            self._samples = None

    def sample_epoch(self, epoch: int) -> np.ndarray:
        """``(n_interactions, 3)`` int64 triples (user, positive, negative) of ``epoch``."""
        rng = np.random.default_rng((self.seed, int(epoch)))
        n = self.n_interactions
        deg = np.diff(self.train_offsets)
        if self.sampling == "user":
            users = self._train_users[rng.integers(0, len(self._train_users), n)]
            pos = self.train_items[self.train_offsets[users] + (rng.random(n) * deg[users]).astype(np.int64)]
        else:
            order = rng.permutation(n)
            users = np.repeat(np.arange(self.n_users), deg)[order]
            pos = self.train_items[order]
        neg = self.sample_negatives(users, rng)
        return np.stack([users, pos, neg], axis=1)

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per user, uniform over the items the user has not interacted with."""
        neg = rng.integers(0, self.n_items, len(users))
        todo = np.arange(len(users))
        while len(todo):
            keys = users[todo] * self.n_items + neg[todo]
            pos = np.searchsorted(self._train_keys, keys).clip(max=len(self._train_keys) - 1)
            todo = todo[self._train_keys[pos] == keys]
            neg[todo] = rng.integers(0, self.n_items, len(todo))
        return neg

    def device_sampler(self, device: torch.device | str) -> DeviceSampler:
        """The epoch's BPR triples drawn on ``device`` (the GPU training loop's sampler)."""
        if self.split != "train":
            raise ValueError(f"RecSysData.device_sampler: BPR triples come from the train split, not {self.split!r}")
        return DeviceSampler(self, device)

    @property
    def samples(self) -> np.ndarray:
        if self._samples is None:
            self._samples = self.sample_epoch(self._epoch)
        return self._samples

    # ---- evaluation splits: users with held-out items
    def _init_eval(self, parsed, split):
        held = parsed[split]
        n = self.n_users
        held_offsets, held_items = _csr_by_user(held, n)
        mask_offsets, mask_items = self.train_offsets, self.train_items
        if split == "test" and "val" in parsed:  # items seen in validation are not test candidates
            v_off, v_items = _csr_by_user(parsed["val"], n)
            mask_offsets, mask_items = _merge_csr(mask_offsets, mask_items, v_off, v_items, self.n_items)
        held_deg = np.diff(held_offsets)
        train_deg = np.diff(self.train_offsets)
        listed = np.zeros(n, dtype=bool)
        listed[held.users] = True
        self.skipped["empty_users"] = int((listed & (held_deg == 0)).sum())
        cold = (held_deg > 0) & (train_deg == 0)
        self.skipped["cold_users"] = int(cold.sum())
        self.eval_users = np.nonzero((held_deg > 0) & ~cold)[0]
        if not len(self.eval_users):
            raise DataError(f"{self.folder / _FILES[split]}:1: no user to evaluate ({self.skipped['empty_users']} "
                            f"listed without held-out items, {self.skipped['cold_users']} without training "
                            f"interactions); expected lines 'user_id held_out_item ...' of users in train.txt")
        if self.skipped["cold_users"]:
            warnings.warn(f"{self.folder / _FILES[split]}: skipped {self.skipped['cold_users']} users "
                          f"without training interactions (cold-start users cannot be ranked)", stacklevel=3)
        self.held_offsets, self.held_items = held_offsets, held_items
        self.mask_offsets, self.mask_items = mask_offsets, mask_items

    # ---- Dataset protocol
    def __len__(self) -> int:
        return self.n_interactions if self.split == "train" else len(self.eval_users)

    def __getitem__(self, index: int) -> dict[str, int]:
        if self.split == "train":
            u, p, n = self.samples[index].tolist()
            return {"users": u, "pos": p, "neg": n}
        return {"users": int(self.eval_users[index])}

    def __getitems__(self, indices: list[int]) -> dict[str, np.ndarray]:
        """Batched fetch (``torch.utils.data.DataLoader`` uses it): one vectorised gather."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.split == "train":
            s = self.samples[idx]
            return {"users": s[:, 0], "pos": s[:, 1], "neg": s[:, 2]}
        return {"users": self.eval_users[idx]}

    def collate(self, samples) -> dict[str, torch.Tensor]:
        """Samples (a list of item dicts, or the dict of arrays of ``__getitems__``) -> batch.

        Train: ``users``, ``pos``, ``neg`` (int64). Eval: ``users`` and two compact CSR lists:
        ``held_items`` / ``held_offsets`` (the targets) and ``seen_items`` / ``seen_offsets``
        (items to exclude from the ranking), offsets relative to the batch."""
        if not isinstance(samples, dict):
            samples = {k: np.asarray([s[k] for s in samples], dtype=np.int64) for k in samples[0]}
        batch = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in samples.items()}
        if self.split == "train":
            return batch
        users = batch["users"].numpy()
        held_items, held_offsets = _gather_csr(self.held_offsets, self.held_items, users)
        seen_items, seen_offsets = _gather_csr(self.mask_offsets, self.mask_items, users)
        batch.update(held_items=torch.from_numpy(held_items), held_offsets=torch.from_numpy(held_offsets),
                     seen_items=torch.from_numpy(seen_items), seen_offsets=torch.from_numpy(seen_offsets))
        return batch

    @property
    def metadata(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "n_items": self.n_items}

    def interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """All training (user, item) pairs (unique), the graph a model is built on."""
        users = np.repeat(np.arange(self.n_users), np.diff(self.train_offsets))
        return users, self.train_items

    def __repr__(self) -> str:
        return (f"RecSysData(name={self.name!r}, split={self.split!r}, n_users={self.n_users}, "
                f"n_items={self.n_items}, len={len(self)})")

    # ---- conformance-kit examples
    @classmethod
    def example(cls, tmp_dir) -> dict:
        folder = Path(tmp_dir) / "recsys" / "tiny"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.txt").write_text("0 0 1 2\n1 2 3\n2 0 4 5\n3 1 5\n")
        (folder / "valid.txt").write_text("0 3\n1 4\n")
        (folder / "test.txt").write_text("0 4 5\n1 0\n2 1\n")
        return {"root": str(tmp_dir), "name": "tiny"}

    @classmethod
    def broken_example(cls, tmp_dir) -> dict:
        folder = Path(tmp_dir) / "recsys" / "broken"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.txt").write_text("0 0 1 2\n1 2 x\n")
        (folder / "test.txt").write_text("0 3\n")
        return {"root": str(tmp_dir), "name": "broken"}


class DeviceSampler:
    """BPR triples of a whole epoch drawn on the device (``RecSysData.device_sampler(device)``).

    The same distribution as :meth:`RecSysData.sample_epoch` (``sampling="user"``: a uniform user
    with training items, one of its items, a negative uniform over its unseen items;
    ``"interaction"``: the interactions in a random order), drawn with a ``torch.Generator`` on the
    device seeded from ``(seed, epoch)`` (a different stream from the numpy one of the CPU loader,
    reproducible on the same device). Negatives are redrawn where they hit a training item
    (binary search in the sorted ``user * n_items + item`` keys) for ``rounds`` passes with no
    host synchronisation, then until none is left (one read of a flag per epoch), so the result
    is exact. A training step then only slices the epoch's tensors: nothing crosses to the host.
    """

    def __init__(self, dataset: RecSysData, device: torch.device | str, rounds: int = 4):
        self.device = torch.device(device)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64)).to(self.device)
        self.n_items, self.n, self.seed = dataset.n_items, dataset.n_interactions, dataset.seed
        self.sampling, self.rounds = dataset.sampling, int(rounds)
        self.offsets, self.items = as_t(dataset.train_offsets), as_t(dataset.train_items)
        self.deg = self.offsets.diff()
        self.keys = as_t(dataset._train_keys)
        self.users_with_items = as_t(dataset._train_users)
        self.interaction_users = as_t(np.repeat(np.arange(dataset.n_users), np.diff(dataset.train_offsets)))

    def generator(self, epoch: int) -> torch.Generator:
        mixed = (self.seed * 0x9E3779B1 + int(epoch) * 0x85EBCA77 + 1) % (1 << 63)
        return torch.Generator(device=self.device).manual_seed(mixed)

    def seen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is a training interaction (bool, on the device)."""
        keys = users * self.n_items + items
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == keys

    def sample_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(users, pos, neg)``: ``n_interactions`` int64 triples of ``epoch`` on the device."""
        g, n, dev = self.generator(epoch), self.n, self.device
        if self.sampling == "user":
            users = self.users_with_items[torch.randint(0, len(self.users_with_items), (n,), generator=g, device=dev)]
            deg = self.deg[users]
            pick = (torch.rand(n, generator=g, device=dev, dtype=torch.float64) * deg).long()
            pos = self.items[self.offsets[users] + torch.minimum(pick, deg - 1)]
        else:
            order = torch.randperm(n, generator=g, device=dev)
            users, pos = self.interaction_users[order], self.items[order]
        neg = torch.randint(0, self.n_items, (n,), generator=g, device=dev)
        for _ in range(self.rounds):  # redraw the hits, no synchronisation
            redraw = torch.randint(0, self.n_items, (n,), generator=g, device=dev)
            neg = torch.where(self.seen(users, neg), redraw, neg)
        hit = self.seen(users, neg)
        while bool(hit.any()):  # rare after the rounds; one flag read per epoch
            redraw = torch.randint(0, self.n_items, (n,), generator=g, device=dev)
            neg = torch.where(hit, redraw, neg)
            hit = self.seen(users, neg)
        return users, pos, neg


def _gather_csr(offsets: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start, end = offsets[rows], offsets[rows + 1]
    counts = end - start
    out_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=out_offsets[1:])
    pos = np.repeat(start - out_offsets[:-1], counts) + np.arange(out_offsets[-1])
    return items[pos], out_offsets


def _merge_csr(off_a, items_a, off_b, items_b, n_items):
    n = len(off_a) - 1
    ua = np.repeat(np.arange(n), np.diff(off_a))
    ub = np.repeat(np.arange(n), np.diff(off_b))
    key = np.unique(np.concatenate([ua * n_items + items_a, ub * n_items + items_b]))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(key // n_items, minlength=n), out=offsets[1:])
    return offsets, key % n_items
