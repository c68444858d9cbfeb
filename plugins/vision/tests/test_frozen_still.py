"""Frozen in Time's still-image evaluation: still MNIST digits as one-frame videos with captions
(``vision.StillDigits``), read by models trained on Moving-MNIST clips without retraining."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from panconv.errors import DataError
from panconv_vision.datasets.digits import MNIST
from panconv_vision.datasets.still_digits import StillDigits, still_caption
from panconv_vision.datasets.video import MovingMNIST, detokenize
from panconv_vision.evaluators.retrieval import Retrieval
from panconv_vision.models.frozen_in_time import FrozenInTime

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def mnist_file(tmp_path):
    return MNIST.example(tmp_path)["file"]


def test_items_are_one_frame_stills_of_the_captioned_digit(mnist_file):
    data = StillDigits(split="test", file=mnist_file, length=6, size=40)
    mnist = MNIST(split="test", file=mnist_file, normalize=False)
    for i in range(len(data)):
        item = data[i]
        assert item["inputs"].shape == (1, 1, 40, 40)
        which, top, left = data.draw(i)
        digit = int(mnist.labels[which])
        torch.testing.assert_close(item["inputs"][0, 0, top:top + 28, left:left + 28], mnist.inputs[which, 0])
        assert float(item["inputs"].sum()) == pytest.approx(float(mnist.inputs[which].sum()), rel=1e-6)  # one digit
        assert int(item["labels"]) == digit and item["digits"].tolist() == [digit]
        assert detokenize(item["captions"]) == still_caption(digit) == data.caption(i)
    assert still_caption(7) == "the digit seven"


def test_stills_are_seeded_and_spread_over_the_canvas(mnist_file):
    a = StillDigits(split="test", file=mnist_file, length=40, size=48)
    b = StillDigits(split="test", file=mnist_file, length=40, size=48)
    c = StillDigits(split="test", file=mnist_file, length=40, size=48, seed=1)
    assert all(torch.equal(a[i]["inputs"], b[i]["inputs"]) for i in range(5))
    assert [a.draw(i) for i in range(40)] != [c.draw(i) for i in range(40)]
    tops = {a.draw(i)[1] for i in range(40)} | {a.draw(i)[2] for i in range(40)}
    assert min(tops) >= 0 and max(tops) <= 48 - 28 and len(tops) > 5
    with pytest.raises(IndexError):
        a.draw(40)


def test_captions_share_moving_mnist_vocabulary_and_length(mnist_file):
    still = StillDigits(split="test", file=mnist_file, length=2, size=48).metadata
    clips = MovingMNIST(split="test", file=mnist_file, length=2, frames=8, size=48, speed_min=1.5,
                        speed_max=2.5).metadata
    assert still["vocab_size"] == clips["vocab_size"]
    assert still["max_caption_length"] == clips["max_caption_length"] == 11
    assert still["num_frames"] == 1 and still["in_channels"] == 1


def test_the_still_config_loads_the_moving_mnist_checkpoints():
    still = yaml.safe_load((EXAMPLES / "vision_frozen_stilldigits.yaml").read_text())
    clips = yaml.safe_load((EXAMPLES / "vision_frozen_movingmnist.yaml").read_text())
    assert still["model"] == clips["model"]
    assert still["data"]["size"] == clips["data"]["size"]


def test_a_one_frame_video_is_encoded_as_the_image(mnist_file, single_thread):
    data = StillDigits(split="test", file=mnist_file, length=4, size=32)
    meta = data.metadata
    for temporal in ("divided", "mean_pool"):
        torch.manual_seed(0)
        model = FrozenInTime(vocab_size=meta["vocab_size"], max_caption_length=meta["max_caption_length"],
                             in_channels=1, img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2, num_frames=8,
                             temporal=temporal, time_init="random", text_hidden=16, text_layers=1, text_heads=2,
                             text_intermediate=32, projection_dim=8, eval_frames=8).eval()
        batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in ("inputs", "captions")}
        with torch.no_grad():
            out = model.predict(model(batch))                 # eval asks for 8 frames; a still has one
            image = model.encode_video(batch["inputs"][:, 0])
        torch.testing.assert_close(out["video_embeddings"], torch.nn.functional.normalize(image, dim=-1))
        evaluator = Retrieval()
        evaluator.process(batch, out)
        metrics = evaluator.compute()
        assert set(metrics) >= {"t2v_r1", "v2t_r1", "t2v_medr", "rsum"}


def test_bad_arguments_and_broken_files_are_rejected(mnist_file, tmp_path):
    with pytest.raises(ValueError, match="size >= 28"):
        StillDigits(split="test", file=mnist_file, size=20)
    broken = MNIST.broken_example(tmp_path)["file"]
    with pytest.raises(DataError):
        StillDigits(split="test", file=broken, length=2)
