"""Still MNIST digits as one-frame videos with captions: the image side of Frozen in Time's evaluation.

Frozen in Time (Bain et al. 2021) treats an image as a one-frame video; this data set gives the still-image
counterpart of :class:`panconv_vision.datasets.video.MovingMNIST`: item ``i`` of a split is one MNIST digit
(28x28) pasted at a seeded position on a black ``size`` x ``size`` canvas (the position drawn uniformly over the
canvas, as a Moving-MNIST clip's frames cover it), shaped ``(1, 1, S, S)`` (one frame), with the caption of a
still ("the digit seven") tokenised with Moving-MNIST's vocabulary and padded to Moving-MNIST's one-digit caption
length, so a model trained on Moving-MNIST clips reads these items as they are (the same token ids and text
positions). Sample ``i`` is a pure function of ``(seed, split, i)``; digits come from the vision plugin's MNIST
loader (the test split: unseen digits).

Items: ``inputs`` ``(1, 1, S, S)`` float in [0, 1], ``labels`` (the digit), ``captions``
``(max_caption_length,)`` token ids, ``digits`` ``(1,)``. Ten distinct captions: ``vision.Retrieval`` counts
identical captions as the same text, so a text query is answered by any still of its digit.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Annotated, Any

import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

from .video import DIGIT_WORDS, DIRECTIONS, VOCAB, tokenize

__all__ = ["StillDigits", "still_caption"]

#: Moving-MNIST's caption length for one digit: <bos> "the digit <word> moves <direction>" <eos>
MOVING_MNIST_CAPTION_LENGTH = 4 + max(len(d.split()) for d in DIRECTIONS) + 2


def still_caption(digit: int) -> str:
    """The caption of a still digit: "the digit <word>"."""
    return f"the digit {DIGIT_WORDS[digit]}"


class StillDigits(Dataset):
    """Still MNIST digits, one frame each, with captions (see the module docstring).

    Args:
        length: stills in the split (``eval_length``: in val/test, if given); ``size``: canvas side.
        max_caption_length: caption positions (default: Moving-MNIST's for one digit, 11).
        file: an MNIST ``mnist.pkl.gz`` (default: the MNIST data set's own lookup); ``digits_limit``: draw digits
            from the first ``digits_limit`` MNIST images of the split only.
        seed: still ``i`` of a split is a function of ``(seed, split, i)``.
    """

    metadata_keys = ("num_classes", "in_channels", "vocab_size", "num_frames", "max_caption_length")
    num_classes = len(DIGIT_WORDS)

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        from .digits import MNIST

        return MNIST.check_prerequisites(root)

    def __init__(self, root=None, split: str = "train", length: Annotated[int, Ge(1)] = 1000,
                 size: Annotated[int, Ge(28)] = 48,
                 max_caption_length: Annotated[int, Ge(5)] = MOVING_MNIST_CAPTION_LENGTH,
                 file: str | None = None, digits_limit: Annotated[int, Ge(1)] | None = None,
                 eval_length: Annotated[int, Ge(1)] | None = None,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if split != "train" and eval_length is not None:
            length = eval_length
        if length < 1 or size < 28 or max_caption_length < 5:
            raise ValueError(f"StillDigits: length >= 1, size >= 28 (an MNIST digit) and max_caption_length >= 5 "
                             f"(<bos> the digit <word> <eos>); got {length}, {size}, {max_caption_length}")
        from .digits import MNIST

        mnist = MNIST(self.root, split=split, file=file, normalize=False, limit=digits_limit)
        self.digit_images, self.digit_labels = mnist.inputs[:, 0], mnist.labels
        self.length, self.size, self.max_caption_length, self.seed = length, size, max_caption_length, seed

    def __len__(self) -> int:
        return self.length

    def draw(self, index: int) -> tuple[int, int, int]:
        """The seeded draw of still ``index``: (MNIST image index, top, left)."""
        if not 0 <= index < self.length:
            raise IndexError(f"StillDigits: index {index} out of range for {self.length} stills")
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/still/{self.split}/{index}".encode()))
        which = int(torch.randint(0, len(self.digit_labels), (1,), generator=g))
        top, left = torch.randint(0, self.size - 28 + 1, (2,), generator=g).tolist()
        return which, top, left

    def __getitem__(self, index: int) -> dict:
        which, top, left = self.draw(index)
        canvas = torch.zeros(1, 1, self.size, self.size)
        canvas[0, 0, top:top + 28, left:left + 28] = self.digit_images[which]
        digit = int(self.digit_labels[which])
        return {"inputs": canvas, "labels": torch.tensor(digit),
                "captions": tokenize(still_caption(digit), self.max_caption_length), "digits": torch.tensor([digit])}

    def caption(self, index: int) -> str:
        return still_caption(int(self.digit_labels[self.draw(index)[0]]))

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": 1, "vocab_size": len(VOCAB), "num_frames": 1,
                "max_caption_length": self.max_caption_length}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        from .digits import MNIST

        return {**MNIST.example(tmp_dir), "length": 4, "size": 32}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        from .digits import MNIST

        return {**MNIST.broken_example(tmp_dir), "length": 4, "size": 32}
