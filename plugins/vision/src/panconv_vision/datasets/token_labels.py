"""MNIST with an annotator's dense label maps (VOLO's token labelling, Jiang et al. 2021).

The recipe labels every token with the score map of a stronger CNN applied densely (NFNet-F6 on ImageNet:
its classifier on every location of the last feature map, computed once and stored per image). The maps
are written by ``python -m panconv_vision.tools.token_labels`` into a ``.npz`` file:

- ``logits``: ``(N, C, h, w)`` float16, the annotator's per-location class scores for the first ``N`` images
  of ``split`` (in the split's file order);
- ``labels``: ``(N,)`` int64, those images' labels (checked against the data set's, so a file made for
  other images is refused);
- ``split``: the split's name (``train``).

``vision.MNISTTokenLabels(token_labels=FILE, token_grid=[h, w], ...)`` is ``vision.MNIST`` (every other option
the same) whose samples of that split also carry ``token_labels`` ``(C, h, w)``: the logits area-averaged to
``token_grid`` over the whole image (the reference's RoIAlign of the map over the crop, here the whole image),
then a softmax over the classes, as the reference does (resample the raw scores, then softmax); without
``token_grid`` the softmax of the stored maps, which ``vision.VOLOClsHead`` (``token_labeling: true``) then
area-averages to its grid. The other splits carry none. The maps are not moved with the ``shift``
augmentation (at most 1 px against 4-px annotator cells).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, Len

from panconv.errors import DataError
from panconv.io import load_array_pickle

from .digits import MNIST, MNIST_PICKLE

TOKEN_LABEL_KEYS = ("logits", "labels", "split")


def read_token_labels(path: str | Path) -> dict[str, np.ndarray | str]:
    """The arrays of a token-label file, validated (a malformed file raises ``DataError`` naming it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file (token_labels=...; write it with "
                        f"python -m panconv_vision.tools.token_labels)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in TOKEN_LABEL_KEYS if k not in data.files]
            if missing:
                raise DataError(f"{path}: not a token-label file: missing {', '.join(missing)} "
                                f"(expected {', '.join(TOKEN_LABEL_KEYS)})")
            logits, labels, split = data["logits"], data["labels"], str(data["split"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: unreadable token-label file ({err})") from None
    if logits.ndim != 4 or labels.shape != (logits.shape[0],):
        raise DataError(f"{path}: expected logits (N, C, h, w) and labels (N,), got {logits.shape} and {labels.shape}")
    if not np.all(np.isfinite(logits)):
        raise DataError(f"{path}: logits contain NaN or inf")
    return {"logits": logits, "labels": labels, "split": split}


class MNISTTokenLabels(MNIST):
    """``vision.MNIST`` plus an annotator's dense label maps (``token_labels``: a file written by
    ``panconv_vision.tools.token_labels``; see the module doc) and ``token_grid`` (the token grid the maps are
    resampled to before the softmax; null: as stored). ``train_per_class``/``train_limit`` are not supported with
    it (the file covers the split's first images in file order)."""

    def __init__(self, root=None, split: str = "train", token_labels: str | None = None,
                 token_grid: Annotated[Sequence[Annotated[int, Ge(1)]], Len(2, 2)] | None = None,
                 file: str | None = None,
                 size: Annotated[int, Ge(1)] = 28, channels: Literal[1, 3] = 1, normalize: bool = True,
                 shift: Annotated[int, Ge(0)] = 0, limit: Annotated[int, Ge(1)] | None = None,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split, file=file, size=size, channels=channels, normalize=normalize, shift=shift,
                         limit=limit, seed=seed)
        if token_grid is not None and (len(token_grid) != 2 or min(token_grid) < 1):
            raise ValueError(f"MNISTTokenLabels: token_grid must be two positive ints [h, w], got {token_grid}")
        self.token_labels = None
        if token_labels is None:
            return
        data = read_token_labels(token_labels)
        if data["split"] != split:
            return  # the maps label another split (training): this one carries none
        n = len(self.labels)
        if data["logits"].shape[0] < n:
            raise DataError(f"{token_labels}: holds maps for {data['logits'].shape[0]} {split} images, the data set "
                            f"has {n} (lower data.limit or regenerate the file)")
        if data["logits"].shape[1] != self.num_classes:
            raise DataError(f"{token_labels}: maps have {data['logits'].shape[1]} classes, MNIST has "
                            f"{self.num_classes}")
        if not np.array_equal(data["labels"][:n], self.labels.numpy()):
            first = int(np.nonzero(data["labels"][:n] != self.labels.numpy())[0][0])
            raise DataError(f"{token_labels}: label of {split} image {first} is {int(data['labels'][first])}, the "
                            f"data set's is {int(self.labels[first])}: the file was made for other images")
        logits = torch.from_numpy(data["logits"][:n].astype(np.float32))
        if token_grid is not None:
            logits = F.adaptive_avg_pool2d(logits, tuple(token_grid))
        self.token_labels = logits.softmax(1)

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        if self.token_labels is not None:
            sample["token_labels"] = self.token_labels[index]
        return sample

    def collate(self, samples: list[dict]) -> dict:
        batch = super().collate(samples)
        if self.token_labels is not None:
            batch["token_labels"] = torch.stack([s["token_labels"] for s in samples])
        return batch

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        kwargs = MNIST.example(tmp_dir)
        labels = np.asarray(load_array_pickle(Path(kwargs["file"]), MNIST_PICKLE)[0][1], dtype=np.int64)
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(len(labels), 10, 3, 3)).astype(np.float16)
        path = Path(tmp_dir) / "token_labels.npz"
        np.savez(path, logits=logits, labels=labels, split=np.array("train"))
        return {**kwargs, "token_labels": str(path)}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        kwargs = MNIST.example(tmp_dir)
        path = Path(tmp_dir) / "broken_token_labels.npz"
        np.savez(path, logits=np.zeros((8, 10, 3), np.float16), labels=np.zeros(8, np.int64), split=np.array("train"))
        return {**kwargs, "token_labels": str(path)}
