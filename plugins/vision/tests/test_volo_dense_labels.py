"""The token-labelling annotator's dense label maps: the classifier applied at every location of the last
feature map (averaging to the image logits for a linear pooled head), the file the tool writes, and
``vision.MNISTTokenLabels`` feeding them to VOLO's head."""

from pathlib import Path

import numpy as np
import pytest
import torch

import panconv
from panconv.errors import DataError
from panconv_vision.datasets.digits import MNIST
from panconv_vision.datasets.token_labels import MNISTTokenLabels
from panconv_vision.models import volo
from panconv_vision.tools import token_labels as tool

CONVNEXT = {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16], "patch_size": 2, "in_channels": 1}


def _classifier(neck: dict | None) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {"backbone": CONVNEXT, "head": {"type": "core.LinearClsHead", "num_classes": 10}}
    if neck is not None:
        config["neck"] = neck
    model = panconv.create_model(config)
    for module in model.modules():  # non-trivial running statistics, so BatchNorm is not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            torch.nn.init.normal_(module.weight)
    return model.eval()


@pytest.mark.parametrize("neck", [{"type": "vision.PoolNorm", "norm": "batch"}, {"type": "core.GlobalAvgPool"}])
def test_dense_map_averages_to_the_image_logits(neck):
    """ReLabel's identity: pooling and the linear classifier commute (BatchNorm in eval is affine)."""
    model = _classifier(neck)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        dense = tool.dense_logits(model, x)
        image = model({"inputs": x})
    assert dense.shape == (3, 10, 7, 7)
    assert torch.allclose(dense.mean((2, 3)), image, atol=1e-5)
    assert (dense - dense.mean((2, 3), keepdim=True)).abs().max() > 1e-3  # locations differ


def test_layer_norm_pooling_is_applied_at_every_location():
    model = _classifier({"type": "vision.PoolNorm"})
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        dense = tool.dense_logits(model, x)
        fmap = model.backbone(x)[-1]
        f = fmap[1, :, 4, 2]
        expected = model.head.fc(torch.nn.functional.layer_norm(f, (16,), model.neck.norm.weight,
                                                                model.neck.norm.bias, model.neck.norm.eps))
    assert torch.allclose(dense[1, :, 4, 2], expected, atol=1e-5)


def test_a_classifier_without_a_linear_head_is_refused():
    with pytest.raises(ValueError, match="composed classifier"):
        tool.dense_logits(torch.nn.Linear(4, 3), torch.randn(1, 1, 28, 28))
    model = panconv.create_model({"backbone": {"type": "vision.VOLO", **volo.VOLO.example_config(), "in_channels": 1},
                                  "head": {"type": "vision.VOLOClsHead", "num_classes": 10}}).eval()
    with pytest.raises(ValueError, match="feature map"):  # VOLO's last output is its class token
        tool.dense_logits(model, torch.randn(1, 1, 32, 32))


def _mnist_config(tmp_path: Path) -> tuple[Path, Path]:
    file = MNIST.example(tmp_path)["file"]
    config = tmp_path / "annotator.yaml"
    config.write_text(f"""
model:
  backbone: {{type: vision.ConvNeXt, depths: [1, 1], dims: [8, 16], patch_size: 2}}
  neck: {{type: vision.PoolNorm, norm: batch}}
  head: {{type: core.LinearClsHead}}
data: {{type: vision.MNIST, file: {file}, shift: 1, batch_size: 4, splits: {{train: train, val: val, test: test}}}}
train: {{epochs: 1}}
run: {{work_dir: {tmp_path / 'work'}}}
""")
    return config, Path(file)


def test_tool_writes_maps_the_dataset_serves(tmp_path, capsys):
    config, file = _mnist_config(tmp_path)
    model = _classifier({"type": "vision.PoolNorm", "norm": "batch"})
    checkpoint = tmp_path / "annotator.pth"
    panconv.io.save_checkpoint({"state_dict": model.state_dict()}, checkpoint)
    out = tmp_path / "labels.npz"
    assert tool.main(["--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out),
                      "--batch-size", "3"]) == 0
    assert "image_accuracy" in capsys.readouterr().out
    train = MNISTTokenLabels(split="train", token_labels=str(out), file=str(file), shift=1)
    plain = MNIST(split="train", file=str(file))
    with torch.no_grad():
        logits = tool.dense_logits(model, plain.inputs)
    batch = train.collate([train[i] for i in range(len(train))])
    assert batch["token_labels"].shape == (8, 10, 7, 7)
    assert torch.allclose(batch["token_labels"], logits.softmax(1), atol=2e-3)  # stored as float16
    assert torch.equal(batch["labels"], plain.labels)
    # on a token grid: the logits averaged over each token's area (bins of the whole image), then the softmax
    gridded = MNISTTokenLabels(split="train", token_labels=str(out), file=str(file), token_grid=[3, 3])
    bins = [(0, 3), (2, 5), (4, 7)]  # adaptive average pooling 7 -> 3
    expected = torch.stack([torch.stack([logits[:, :, a:b, c:d].mean((2, 3)) for c, d in bins], -1)
                            for a, b in bins], -2).softmax(1)
    assert torch.allclose(gridded.collate([gridded[i] for i in range(8)])["token_labels"], expected, atol=2e-3)
    with pytest.raises(ValueError, match="token_grid"):
        MNISTTokenLabels(split="train", token_labels=str(out), file=str(file), token_grid=[3])
    val = MNISTTokenLabels(split="val", token_labels=str(out), file=str(file))
    assert "token_labels" not in val.collate([val[0], val[1]])  # the maps label the training split only
    # VOLO's head takes the batch: the maps are resampled to its token grid
    head = volo.VOLOClsHead([panconv.api.FeatureInfo(4, 16), panconv.api.FeatureInfo(4, 16)], 10,
                            token_labeling=True)
    out_head = head([torch.randn(8, 4, 3, 3), torch.randn(8, 4)])
    losses = head.loss(out_head, batch)
    assert torch.isfinite(losses["loss_dense"]) and losses["loss_dense"] > 0


def _write(path: Path, logits, labels, split="train") -> str:
    np.savez(path, logits=logits, labels=labels, split=np.array(split))
    return str(path)


def test_files_for_other_images_or_malformed_are_refused(tmp_path):
    file = MNIST.example(tmp_path)["file"]
    labels = MNIST(split="train", file=file).labels.numpy()
    good = np.full((8, 10, 3, 3), 0.1, np.float16)
    wrong = labels.copy()
    wrong[5] = (wrong[5] + 1) % 10
    with pytest.raises(DataError, match="image 5"):
        MNISTTokenLabels(token_labels=_write(tmp_path / "a.npz", good, wrong), file=file)
    with pytest.raises(DataError, match="holds maps for 4"):
        MNISTTokenLabels(token_labels=_write(tmp_path / "b.npz", good[:4], labels[:4]), file=file)
    assert len(MNISTTokenLabels(token_labels=_write(tmp_path / "b.npz", good[:4], labels[:4]), file=file,
                                limit=4)) == 4
    with pytest.raises(DataError, match="classes"):
        MNISTTokenLabels(token_labels=_write(tmp_path / "c.npz", good[:, :9], labels), file=file)
    with pytest.raises(DataError, match="NaN"):
        bad = good.copy()
        bad[0, 0, 0, 0] = np.nan
        MNISTTokenLabels(token_labels=_write(tmp_path / "d.npz", bad, labels), file=file)
    np.savez(tmp_path / "e.npz", logits=good)
    with pytest.raises(DataError, match="missing labels, split"):
        MNISTTokenLabels(token_labels=str(tmp_path / "e.npz"), file=file)
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="f.npz"):
        MNISTTokenLabels(token_labels=str(tmp_path / "f.npz"), file=file)
    with pytest.raises(DataError, match="no such file"):
        MNISTTokenLabels(token_labels=str(tmp_path / "missing.npz"), file=file)
