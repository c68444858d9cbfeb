"""MNIST digits with generated captions, noisy in the training split as web alt-text is (ALIGN, image-text matching).

Images are the real MNIST digits of :class:`panconv_vision.datasets.digits.MNIST` (same splits: train 50k,
val 10k, test 10k). Each image gets one templated English caption built from its label and from
properties measured on the image itself (on the raw 28x28 ink in [0, 1]):

* **thickness** (``thin`` / ``regular`` / ``thick``): the ink mass ``sum(pixels)``, ranked within the
  image's class in its split as loaded (after ``limit``; lowest third thin, highest third thick) — a 1
  has less ink than an 8 at the same stroke width, so the rank is per class;
* **width** (``narrow`` / ``regular`` / ``wide``): the width of the ink's bounding box (pixels > 0.2),
  ranked the same way;
* **slant** (``leaning left`` / ``upright`` / ``leaning right``): the shear ``-mu11 / mu02`` of the ink's
  second-order central moments (x per y, y pointing down, so a top leaning right gives a positive
  shear); below -0.05 leaning left, above 0.25 leaning right (MNIST's median is 0.11: most digits
  lean right a little).

The template (:data:`TEMPLATES`, six of them, e.g. "a scan of a wide thick seven leaning right") is a
seeded draw per image. Words come from a fixed vocabulary (:data:`VOCAB`, ids 0/1/2 = ``<pad>``,
``<bos>``, ``<eos>``; ``<bos>`` doubles as BERT's ``[CLS]``): ``<bos> words <eos>`` padded to
``max_caption_length`` = 16.

**Noise** (ALIGN's web data is "noisy alt-text": wrong, partial and unrelated captions). In the splits
named in ``noisy_splits`` (default: the training split only; val/test captions are clean) a fraction
``noise`` of the images gets a corrupted caption, each kind drawn with the weights ``noise_mix``
(default equal):

* ``wrong_digit``: the digit word replaced by another digit's;
* ``drop``: each word dropped with probability 0.3 (at least one word kept);
* ``replace``: each word replaced with probability 0.3 by a random vocabulary word;
* ``irrelevant``: an unrelated alt-text (:data:`IRRELEVANT`: "click here to enlarge", "stock photo of a
  business meeting", ...).

Everything about item ``i`` (template, whether it is noisy, how) is a pure function of
``(seed, split, i)``: the same caption every epoch, as a web crawl's. Items: ``inputs`` ``(C, S, S)``
(MNIST-normalised), ``labels`` (the digit), ``captions`` ``(16,)`` token ids, ``noisy`` (0/1). The
zero-shot prompts ("a photo of the digit {k}", ...) are :meth:`MNISTCaptions.class_prompts`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from panconv.api import Dataset

from .digits import MNIST, MNIST_MEAN, MNIST_STD
from .vocabulary import SPECIAL_TOKENS, Vocabulary

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "regular", "thick")
WIDTH = ("narrow", "regular", "wide")
SLANT = ("leaning left", "upright", "leaning right")
SLANT_LEFT, SLANT_RIGHT = -0.05, 0.25
#: caption templates: {d} digit word, {t} thickness, {w} width, {s} slant
TEMPLATES = ("a photo of the digit {d}", "a {t} handwritten {d}", "the digit {d} {s}", "a {w} {d} with {t} strokes",
             "handwritten number {d} {t} and {s}", "a scan of a {w} {t} {d} {s}")
#: zero-shot prompt ensemble ({d}: the class's digit word)
PROMPTS = ("a photo of the digit {d}", "a handwritten {d}", "the digit {d}", "handwritten number {d}",
           "a scan of a {d}")
#: unrelated "alt-text" of the irrelevant-caption noise
IRRELEVANT = ("click here to enlarge", "free shipping on all orders", "image may contain text",
              "sunset over the ocean", "my cat sleeping on the sofa", "logo", "stock photo of a business meeting",
              "thumbnail", "untitled")
NOISE_KINDS = ("wrong_digit", "drop", "replace", "irrelevant")
_VOCABULARY = Vocabulary(w for text in (*TEMPLATES, *PROMPTS, *IRRELEVANT, *DIGIT_WORDS, *THICKNESS, *WIDTH, *SLANT)
                         for w in text.replace("{d}", "").replace("{t}", "").replace("{w}", "")
                         .replace("{s}", "").split())
VOCAB = _VOCABULARY.tokens
TOKEN_ID = _VOCABULARY.token_id
MAX_CAPTION_LENGTH = 16
WORD_IDS = tuple(range(len(SPECIAL_TOKENS), len(VOCAB)))


def tokenize(text: str, length: int = MAX_CAPTION_LENGTH) -> torch.Tensor:
    """``<bos> words <eos>`` as vocabulary ids padded with ``<pad>`` (ValueError for an unknown word or overflow)."""
    return _VOCABULARY.tokenize(text, length)


detokenize = _VOCABULARY.detokenize


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ink mass, bounding-box width and moment shear of raw ``(N, H, W)`` images in [0, 1]."""
    n, h, w = images.shape
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    mass = images.sum((1, 2))
    safe = mass.clamp_min(1e-6)
    cy = (images * ys).sum((1, 2)) / safe
    cx = (images * xs).sum((1, 2)) / safe
    dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
    mu02 = (images * dy * dy).sum((1, 2)) / safe
    mu11 = (images * dy * dx).sum((1, 2)) / safe
    shear = -mu11 / mu02.clamp_min(1e-6)
    columns = (images > 0.2).any(1)                               # (N, W): columns holding ink
    idx = torch.arange(w)
    first = torch.where(columns, idx, w).min(1).values
    last = torch.where(columns, idx, -1).max(1).values
    width = (last - first + 1).clamp_min(0).float()
    return {"mass": mass, "width": width, "shear": shear}


def _class_tercile(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0/1/2 = lowest/middle/highest third of ``values`` among the items of the same label (ties by index)."""
    out = torch.ones_like(labels)
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        order = values[where].argsort(stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        out[where] = (rank * 3 // max(len(order), 1)).clamp(0, 2)
    return out


def attributes_of(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: ``thickness``, ``width`` (class terciles 0/1/2) and ``slant`` (0 left, 1 upright, 2 right)."""
    m = measure(images)
    slant = torch.ones_like(labels)
    slant[m["shear"] < SLANT_LEFT] = 0
    slant[m["shear"] > SLANT_RIGHT] = 2
    return {"thickness": _class_tercile(m["mass"], labels), "width": _class_tercile(m["width"], labels),
            "slant": slant}


def caption_text(template: int, digit: int, thickness: int, width: int, slant: int) -> str:
    return TEMPLATES[template].format(d=DIGIT_WORDS[digit], t=THICKNESS[thickness], w=WIDTH[width], s=SLANT[slant])


def corrupt(text: str, digit: int, kind: str, generator: torch.Generator) -> str:
    """One kind of web-caption noise applied to a clean caption (see the module docstring)."""
    words = text.split()
    if kind == "wrong_digit":
        other = (digit + 1 + int(torch.randint(0, 9, (), generator=generator))) % 10
        return " ".join(DIGIT_WORDS[other] if w == DIGIT_WORDS[digit] else w for w in words)
    if kind == "drop":
        keep = torch.rand(len(words), generator=generator) >= 0.3
        if not bool(keep.any()):
            keep[int(torch.randint(0, len(words), (), generator=generator))] = True
        return " ".join(w for w, k in zip(words, keep.tolist()) if k)
    if kind == "replace":
        swap = (torch.rand(len(words), generator=generator) < 0.3).tolist()
        picks = torch.randint(0, len(WORD_IDS), (len(words),), generator=generator).tolist()
        return " ".join(VOCAB[WORD_IDS[p]] if s else w for w, s, p in zip(words, swap, picks))
    if kind == "irrelevant":
        return IRRELEVANT[int(torch.randint(0, len(IRRELEVANT), (), generator=generator))]
    raise ValueError(f"corrupt: unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")


class MNISTCaptions(Dataset):
    """MNIST images with generated, optionally noisy captions (see the module docstring).

    Args:
        noise: fraction of the images of a noisy split whose caption is corrupted, in [0, 1].
        noise_mix: relative weights of ``wrong_digit``, ``drop``, ``replace``, ``irrelevant`` (4 numbers >= 0).
        noisy_splits: the splits that get noise (default: ``("train",)``; val/test stay clean).
        file / size / channels / normalize / limit: as :class:`panconv_vision.datasets.digits.MNIST`;
            ``eval_limit``: the ``limit`` of the val/test splits (default: ``limit``).
        seed: item ``i``'s template and noise are a function of ``(seed, split, i)``.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "in_channels", "vocab_size", "max_caption_length")
    num_classes = 10

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        return MNIST.check_prerequisites(root)

    def __init__(self, root=None, split: str = "train", noise: Annotated[float, Interval(ge=0, le=1)] = 0.0,
                 noise_mix: Sequence[Annotated[float, Ge(0)]] = (1.0, 1.0, 1.0, 1.0),
                 noisy_splits: Sequence[Literal["train", "val", "test"]] = ("train",), file: str | None = None,
                 size: Annotated[int, Ge(1)] = 28, channels: Literal[1, 3] = 1, normalize: bool = True,
                 limit: Annotated[int, Ge(1)] | None = None, eval_limit: Annotated[int, Ge(1)] | None = None,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if split != "train" and eval_limit is not None:
            limit = eval_limit
        if not 0.0 <= float(noise) <= 1.0:
            raise ValueError(f"MNISTCaptions: noise must be a fraction in [0, 1], got {noise}")
        mix = [float(v) for v in noise_mix]
        if len(mix) != len(NOISE_KINDS) or min(mix) < 0 or sum(mix) <= 0:
            raise ValueError(f"MNISTCaptions: noise_mix must be {len(NOISE_KINDS)} weights >= 0 (not all 0) for "
                             f"{', '.join(NOISE_KINDS)}, got {list(noise_mix)}")
        bad = [s for s in noisy_splits if s not in self.splits]
        if bad or isinstance(noisy_splits, str):
            raise ValueError(f"MNISTCaptions: noisy_splits must be a list of {', '.join(self.splits)}, "
                             f"got {noisy_splits!r}")
        if channels not in (1, 3):
            raise ValueError(f"MNISTCaptions: channels must be 1 or 3, got {channels}")
        digits = MNIST(self.root, split=split, file=file, normalize=False, limit=limit)
        raw, self.labels = digits.inputs[:, 0], digits.labels
        self.attributes = attributes_of(raw, self.labels)
        x = raw[:, None]
        if size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
        self.inputs = (x - MNIST_MEAN) / MNIST_STD if normalize else x
        self.noise = float(noise) if split in noisy_splits else 0.0
        self.noise_mix = torch.tensor(mix)
        self.channels, self.seed, self.max_caption_length = channels, seed, MAX_CAPTION_LENGTH

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, index: int) -> dict:
        """The seeded draw of item ``index``: template, noise kind (or None) and the caption text."""
        if not 0 <= index < len(self):
            raise IndexError(f"MNISTCaptions: index {index} out of range for {len(self)} images")
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/{self.split}/{index}".encode()))
        template = int(torch.randint(0, len(TEMPLATES), (), generator=g))
        noisy = bool(torch.rand((), generator=g) < self.noise)
        kind_index = int(torch.multinomial(self.noise_mix, 1, generator=g))   # drawn always: stable streams
        digit = int(self.labels[index])
        a = {k: int(v[index]) for k, v in self.attributes.items()}
        text = caption_text(template, digit, a["thickness"], a["width"], a["slant"])
        kind = NOISE_KINDS[kind_index] if noisy else None
        if kind is not None:
            text = corrupt(text, digit, kind, g)
        return {"template": template, "noise_kind": kind, "text": text}

    def caption(self, index: int) -> str:
        return self.draw(index)["text"]

    def __getitem__(self, index: int) -> dict:
        d = self.draw(index)
        return {"inputs": self.inputs[index], "labels": self.labels[index],
                "captions": tokenize(d["text"], self.max_caption_length),
                "noisy": torch.tensor(int(d["noise_kind"] is not None))}

    def collate(self, samples: list[dict]) -> dict:
        batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
        if self.channels == 3:
            batch["inputs"] = batch["inputs"].expand(-1, 3, -1, -1).contiguous()
        return batch

    @staticmethod
    def class_prompts(prompts: Sequence[str] = PROMPTS, length: int = MAX_CAPTION_LENGTH) -> torch.Tensor:
        """Zero-shot prompt ensemble: ``(10 classes, len(prompts), length)`` token ids."""
        return torch.stack([torch.stack([tokenize(p.format(d=word), length) for p in prompts])
                            for word in DIGIT_WORDS])

    @property
    def metadata(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.channels, "vocab_size": len(VOCAB),
                "max_caption_length": self.max_caption_length}

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {**MNIST.example(tmp_dir), "noise": 0.5}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        return {**MNIST.broken_example(tmp_dir), "noise": 0.5}


__all__ = ["DIGIT_WORDS", "IRRELEVANT", "MNISTCaptions", "NOISE_KINDS", "PROMPTS", "TEMPLATES", "VOCAB",
           "attributes_of", "caption_text", "corrupt", "detokenize", "measure", "tokenize"]
