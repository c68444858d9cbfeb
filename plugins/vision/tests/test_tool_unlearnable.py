"""The CUDA unlearnable wrapper: deterministic under its key, the identity without it, train split only."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.datasets.digits import MNIST, MNIST_MEAN, MNIST_STD
from panconv_vision.datasets.unlearnable import ClasswiseConvolution, Unlearnable


@pytest.fixture
def mnist_file(tmp_path):
    return MNIST.example(tmp_path)["file"]


def build(file, split="train", **kwargs):
    return Unlearnable(root=None, split=split, dataset={"type": "vision.MNIST", "file": file},
                       mean=MNIST_MEAN, std=MNIST_STD, **kwargs)


def test_filters_follow_the_paper():
    conv = ClasswiseConvolution(key=7, num_classes=10, blur=0.3)
    f = conv.filters.view(10, -1)
    assert f.shape == (10, 9)
    assert torch.equal((f == 1.0).sum(1), torch.ones(10, dtype=torch.long))  # one centre tap per class
    others = f[f != 1.0]
    assert float(others.min()) >= 0 and float(others.max()) <= 0.3
    assert len({tuple(row.tolist()) for row in f}) == 10  # class-wise: all different


def test_deterministic_under_the_key_and_different_across_keys(mnist_file):
    a, b, c = build(mnist_file, key=123), build(mnist_file, key=123), build(mnist_file, key=124)
    for i in range(len(a)):
        assert torch.equal(a[i]["inputs"], b[i]["inputs"])
    assert not torch.equal(torch.stack([a[i]["inputs"] for i in range(len(a))]),
                           torch.stack([c[i]["inputs"] for i in range(len(c))]))


def test_identity_without_a_key_and_on_clean_splits(mnist_file):
    clean = MNIST(file=mnist_file)
    wrapped = build(mnist_file, key=None)
    for i in range(len(clean)):
        assert torch.equal(wrapped[i]["inputs"], clean[i]["inputs"]) and wrapped[i]["labels"] == clean[i]["labels"]
    test_clean, test_wrapped = MNIST(file=mnist_file, split="test"), build(mnist_file, split="test", key=5)
    assert torch.equal(test_wrapped[0]["inputs"], test_clean[0]["inputs"])  # only `poison` splits change
    assert wrapped.metadata == clean.metadata
    poisoned = build(mnist_file, key=5)
    assert not torch.equal(poisoned[0]["inputs"], clean[0]["inputs"])


def test_the_convolution_in_pixel_space(mnist_file):
    clean = MNIST(file=mnist_file)
    poisoned = build(mnist_file, key=9)
    x, y = clean[0]["inputs"], int(clean[0]["labels"])
    pixels = x * MNIST_STD + MNIST_MEAN
    w = poisoned.transform.filters[y].view(1, 1, 3, 3)
    expected = F.conv2d(pixels[None], w, padding=1)[0]
    expected = (expected / expected.max() * 255).round() / 255
    got = poisoned[0]["inputs"] * MNIST_STD + MNIST_MEAN
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    assert float(got.max()) == pytest.approx(1.0, abs=1e-5)


def test_registered_and_built_from_a_config(tmp_path, mnist_file):
    dataset = panconv.build("dataset", "vision.Unlearnable", root=tmp_path, split="train",
                            dataset={"type": "vision.MNIST", "file": mnist_file}, key=3)
    assert len(dataset) == 8 and dataset.metadata["num_classes"] == 10
    with pytest.raises(ValueError, match="inner data set's config"):
        Unlearnable(dataset=None, key=1)


def test_preview_command(tmp_path, mnist_file):
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  backbone: {type: vision.MobileNetV1, width_mult: 0.25}\n"
                      "  neck: {type: core.GlobalAvgPool}\n  head: {type: core.LinearClsHead}\n"
                      f"data: {{type: vision.MNIST, file: '{mnist_file}', splits: {{train: train}}}}\n")
    from panconv_vision.tools import unlearnable

    args = argparse.Namespace(config=str(config), checkpoint=None, device="cpu", data_root=str(tmp_path),
                              output=str(tmp_path / "out"), key=1, blur=0.3, count=10)
    assert unlearnable.main(args) == 0
    assert (tmp_path / "out" / "unlearnable.png").stat().st_size > 1000
