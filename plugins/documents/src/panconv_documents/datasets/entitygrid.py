"""EntityGrid-QA (HiRes-LLaVA's benchmark of context fragmentation), generated: one question per image.

Construction, as the paper describes it (entity sampling, placement at nine predefined positions of a
blank image that the model cuts into 2 x 2 slices, question-answer generation from what was placed),
scaled down to ``size`` x ``size`` pixels (default 64: four 32 x 32 slices):

- 1 to ``max_entities`` entities, each a coloured shape (``SHAPES`` x ``COLOURS``, 16 kinds), at distinct
  positions of a 3 x 3 grid at 1/6, 1/2 and 5/6 of the side. The entity diameter is ``entity_scale`` of
  the side (default 0.3), so every entity in the middle row or column is cut by a slice boundary: five of
  the nine positions (the centre cut twice). Shapes repeat across entities (drawn from a pool of two or
  three per image), so counting questions have answers 0..3.
- Three tasks, cycling with the index: ``identify`` ("what shape/colour is at the top-left ?"),
  ``position`` ("where is the red circle ?", asked only of an entity whose kind is unique in the image)
  and ``count`` ("how many squares ?", over all colours; 0 is a valid answer).
- ``on_boundary``: whether an entity the question is about is cut by a slice boundary (for counting:
  any entity of that shape); the evaluator reports accuracy both ways.
- ``questions_per_image`` (training split only): several questions about each image (one per task, the
  first task cycling with the index), each answered on its own (the model encodes the image once); the
  loss covers every answer. Evaluation splits keep the benchmark's one question per image.
- ``tasks``: ask only these tasks (default all three; a curriculum's first stage asks fewer).

Every answer is one word of the vocabulary (``VOCAB``), so the model's decoder predicts one token.
Splits draw from disjoint seeds; images are drawn in memory per index (PIL), nothing is cached.
Batches: ``inputs`` ``(B, 3, size, size)`` in [0, 1], ``question`` ``(B, QUESTION_LENGTH)`` token ids
left-padded with ``PAD`` (= 0), ``answer`` ``(B,)``, ``task`` ``(B,)`` (index in ``TASKS``),
``on_boundary`` ``(B,)`` bool; with ``questions_per_image`` = Q > 1 ``question`` is ``(B, Q, QUESTION_LENGTH)`` and
the others ``(B, Q)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
POSITIONS = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right")
TASKS = ("identify", "position", "count")
COUNTS = ("0", "1", "2", "3")
WORDS = ("what", "shape", "colour", "is", "at", "the", "where", "how", "many", "?")
PAD = "<pad>"
VOCAB = (PAD, *WORDS, *SHAPES, *COLOURS, *POSITIONS, *COUNTS)
TOKEN = {w: i for i, w in enumerate(VOCAB)}
QUESTION_LENGTH = 8
_SPLIT_SEED = {"train": 21, "val": 22, "test": 23}


def tokenize(words: list[str]) -> list[int]:
    """Left-padded token ids of a question (at most ``QUESTION_LENGTH`` words)."""
    if len(words) > QUESTION_LENGTH:
        raise ValueError(f"question longer than {QUESTION_LENGTH} words: {' '.join(words)}")
    return [TOKEN[PAD]] * (QUESTION_LENGTH - len(words)) + [TOKEN[w] for w in words]


def cut_by_boundary(position: int) -> bool:
    """A 2 x 2 slicing cuts the entities of the middle row and the middle column."""
    row, col = divmod(position, 3)
    return row == 1 or col == 1


def draw_entity(draw, shape: str, colour: tuple, cx: float, cy: float, r: float) -> None:
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=colour)
    else:
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)


def make_scene(rng: random.Random, seed: int, size: int, max_entities: int, entity_scale: float):
    """(uint8 RGB image, entities ``[(position, shape, colour)]``, the image's shape pool), drawn with ``rng``."""
    from PIL import Image, ImageDraw

    k = rng.randint(1, max_entities)
    positions = rng.sample(range(9), k)
    pool = rng.sample(SHAPES, rng.randint(2, 3))
    entities = [(p, rng.choice(pool), rng.choice(list(COLOURS))) for p in positions]
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for p, shape, colour in entities:
        row, col = divmod(p, 3)
        draw_entity(draw, shape, COLOURS[colour], (2 * col + 1) * size / 6, (2 * row + 1) * size / 6,
                    entity_scale * size / 2)
    pixels = np.asarray(image).astype(np.float32)
    pixels += np.random.default_rng(seed).normal(0, 4, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8), entities, pool


def ask(rng: random.Random, entities: list, pool: list, task: str):
    """(question words, answer word, on_boundary) of one ``task`` question about a scene."""
    if task == "identify":
        p, shape, colour = rng.choice(entities)
        attribute = rng.choice(("shape", "colour"))
        question = ["what", attribute, "is", "at", "the", POSITIONS[p], "?"]
        return question, shape if attribute == "shape" else colour, cut_by_boundary(p)
    if task == "position":
        kinds = [(s, c) for _, s, c in entities]
        unique = [e for e in entities if kinds.count((e[1], e[2])) == 1]
        p, shape, colour = rng.choice(unique or entities)
        return ["where", "is", "the", colour, shape, "?"], POSITIONS[p], cut_by_boundary(p)
    shape = rng.choice(SHAPES if rng.random() < 0.2 else pool)
    counted = [p for p, s, _ in entities if s == shape]
    return ["how", "many", shape, "?"], COUNTS[len(counted)], any(cut_by_boundary(p) for p in counted)


def make_sample(seed: int, size: int, max_entities: int, entity_scale: float, task: str):
    """(uint8 RGB image, question words, answer word, on_boundary) of one seeded sample."""
    rng = random.Random(seed)
    pixels, entities, pool = make_scene(rng, seed, size, max_entities, entity_scale)
    return (pixels, *ask(rng, entities, pool, task))


def make_questions(seed: int, size: int, max_entities: int, entity_scale: float, tasks: list[str]):
    """(uint8 RGB image, ``[(question words, answer word, on_boundary)]`` one per task) about one seeded image;
    the first question is exactly :func:`make_sample`'s for ``tasks[0]``."""
    rng = random.Random(seed)
    pixels, entities, pool = make_scene(rng, seed, size, max_entities, entity_scale)
    return pixels, [ask(rng, entities, pool, task) for task in tasks]


class EntityGridQA(Dataset):
    """``n`` (training split) or ``n_eval`` (other splits) generated EntityGrid-QA samples of ``size`` x ``size``
    pixels (see the module docstring)."""

    metadata_keys = ("vocab_size", "question_length")
    conformance_skips = {"malformed_file": "generated in memory: there is no data file to be malformed"}

    def __init__(self, root=None, split: str = "train", n: Annotated[int, Ge(1)] = 2000,
                 n_eval: Annotated[int, Ge(1)] = 1000, size: Annotated[int, Interval(ge=32, le=1024)] = 64,
                 max_entities: Annotated[int, Interval(ge=1, le=9)] = 3,
                 entity_scale: Annotated[float, Interval(gt=0.05, le=0.33)] = 0.3, seed: Annotated[int, Ge(0)] = 0,
                 questions_per_image: Annotated[int, Interval(ge=1, le=len(TASKS))] = 1,
                 tasks: list[str] | None = None):
        super().__init__(root, split)
        if n < 1 or n_eval < 1 or not 32 <= size <= 1024 or size % 2 or not 1 <= max_entities <= 9:
            raise ValueError(f"n and n_eval must be >= 1, size an even number in 32..1024, max_entities in 1..9; "
                             f"got n={n}, n_eval={n_eval}, size={size}, max_entities={max_entities}")
        if not 0.05 < entity_scale <= 1 / 3:
            raise ValueError(f"entity_scale must be in (0.05, 1/3] (entities may not overlap), got {entity_scale}")
        self.n = n if split == "train" else n_eval
        self.size, self.max_entities, self.entity_scale = size, max_entities, float(entity_scale)
        if not 1 <= questions_per_image <= len(TASKS):
            raise ValueError(f"questions_per_image must be in 1..{len(TASKS)} (one per task), "
                             f"got {questions_per_image}")
        self.seed = seed * 1_000_003 + _SPLIT_SEED[split] * 100_000
        self.questions = questions_per_image if split == "train" else 1
        self.tasks = list(TASKS) if tasks is None else list(tasks)
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty list of {list(TASKS)}, got {tasks}")

    @property
    def metadata(self) -> dict:
        return {"vocab_size": len(VOCAB), "question_length": QUESTION_LENGTH, "tasks": list(TASKS),
                "vocab": list(VOCAB)}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if self.questions > 1:
            return self._questions(index)
        task = TASKS.index(self.tasks[index % len(self.tasks)])
        pixels, question, answer, boundary = make_sample(self.seed + index, self.size, self.max_entities,
                                                         self.entity_scale, TASKS[task])
        return {"inputs": torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255),
                "question": torch.tensor(tokenize(question)), "answer": TOKEN[answer], "task": task,
                "on_boundary": boundary}

    def _questions(self, index: int) -> dict:
        """``questions_per_image`` questions about one image, the tasks cycling from ``index`` (the first is
        the one-question sample of that index)."""
        tasks = [TASKS.index(self.tasks[(index + t) % len(self.tasks)]) for t in range(self.questions)]
        pixels, asked = make_questions(self.seed + index, self.size, self.max_entities, self.entity_scale,
                                       [TASKS[t] for t in tasks])
        return {"inputs": torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255),
                "question": torch.tensor([tokenize(q) for q, _, _ in asked]),
                "answer": torch.tensor([TOKEN[a] for _, a, _ in asked]), "task": torch.tensor(tasks),
                "on_boundary": torch.tensor([b for _, _, b in asked])}

    def collate(self, samples: list[dict]) -> dict:
        return {"inputs": torch.stack([s["inputs"] for s in samples]),
                "question": torch.stack([s["question"] for s in samples]),
                **{k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in ("answer", "task", "on_boundary")}}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        return {"n": 6, "size": 32}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        raise NotImplementedError("EntityGridQA reads no file")
