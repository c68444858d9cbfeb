import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import ComposedModel, LinearClsHead
from panconv.errors import CheckpointError
from panconv_vision.datasets.digits import MNIST
from panconv_vision.models.classifier import PoolNorm
from panconv_vision.models.convnext import ConvNeXt
from panconv_vision.models.hornet import HorNet
from panconv_vision.testing import randomize_
from panconv_vision.tools import cam


def photo(name: str, size: int = 64) -> torch.Tensor:
    """A real photo from scikit-image's bundled data, ImageNet-normalised, ``(1, 3, size, size)``."""
    data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255.0
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(cam.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(cam.IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def small_classifier(backbone_cls=ConvNeXt, seed=0):
    torch.manual_seed(seed)
    backbone = backbone_cls(**backbone_cls.example_config())
    info = backbone.feature_info
    return randomize_(ComposedModel(backbone, LinearClsHead(info, num_classes=4), PoolNorm(info)), seed, 0.3).eval()


class Logits(nn.Module):
    """pytorch-grad-cam calls ``model(tensor)`` and expects logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model({"inputs": x})


def test_projection_is_first_principal_component():
    acts = torch.randn(2, 6, 5, 4, dtype=torch.float64).float()
    proj = cam.principal_projection(acts)
    a = acts.flatten(2).transpose(1, 2)
    a = a - a.mean(1, keepdim=True)
    for i in range(2):  # projection on v1 has the largest variance among unit directions: the top eigenvalue
        top = torch.linalg.eigvalsh(a[i].T.double() @ a[i].double())[-1]
        assert torch.allclose((proj[i].double() ** 2).sum(), top, rtol=1e-4)
        assert (proj[i].flatten() * a[i].sum(-1)).sum() >= 0  # our sign convention


# seeds chosen so that both orientations occur (with numpy's LAPACK here: +, -, -, +)
@pytest.mark.parametrize("name,backbone_cls,seed", [("astronaut", ConvNeXt, 2), ("chelsea", HorNet, 0),
                                                    ("coffee", ConvNeXt, 0), ("astronaut", HorNet, 0)])
def test_matches_pytorch_grad_cam_eigencam(name, backbone_cls, seed):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model = small_classifier(backbone_cls, seed)
    x = photo(name)
    ours = cam.eigen_cam(model.backbone, x)

    with torch.no_grad():
        acts = model.backbone(x)[-1]
    theirs_raw = torch.from_numpy(get_2d_projection(acts.numpy()))
    ours_raw = cam.principal_projection(acts)
    sign = 1.0 if (ours_raw * theirs_raw).sum() >= 0 else -1.0
    assert (ours_raw - sign * theirs_raw).abs().max() <= 1e-5 * theirs_raw.abs().max()  # measured <= 1.4e-7

    with EigenCAM(model=Logits(model), target_layers=[model.backbone.stages[-1]]) as eigen:
        theirs = torch.from_numpy(eigen(input_tensor=x, targets=None))
    if sign < 0:  # the same pipeline (rectify, scale, resize, scale) on the oppositely oriented projection
        size = (x.shape[-1], x.shape[-2])
        theirs = torch.from_numpy(scale_cam_image(scale_cam_image(np.maximum(-theirs_raw.numpy(), 0), size)))
    assert theirs.shape == ours.shape == (1, 64, 64)
    assert (ours - theirs).abs().max() <= 1e-5  # measured <= 2.4e-7 (heatmaps in [0, 1])


def write_run(tmp_path, data: str):
    """A config (model section as below, then ``data``), an engine-style checkpoint of a small random
    ConvNeXt classifier for it and a photo: the inputs of ``panconv cam``."""
    from skimage import data as photos
    from torchvision.io import encode_png

    config = tmp_path / "cfg.yaml"
    config.write_text(
        "model:\n"
        "  backbone: {type: vision.ConvNeXt, depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}\n"
        "  neck: {type: vision.PoolNorm}\n"
        "  head: {type: core.LinearClsHead, num_classes: 3}\n" + data)
    model = small_classifier()
    model.head = LinearClsHead(model.backbone.feature_info, num_classes=3)
    checkpoint = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "meta": {"epoch": 1}},
               checkpoint)
    image = tmp_path / "chelsea.png"
    image.write_bytes(encode_png(torch.from_numpy(photos.chelsea()).permute(2, 0, 1).contiguous()).numpy().tobytes())
    return config, checkpoint, image


def test_cam_command_writes_overlay(tmp_path):
    pytest.importorskip("skimage")
    from torchvision.io import decode_image, read_file

    config, checkpoint, image = write_run(tmp_path, "data: {type: vision.MNIST, channels: 3, limit: 8}\n")
    out = tmp_path / "out" / "cam.png"
    args = argparse.Namespace(config=str(config), checkpoint=str(checkpoint), image=str(image), output=str(out),
                              size=64, alpha=0.5, device="cpu")
    assert cam.main(args) == 0
    written = decode_image(read_file(str(out)))
    assert written.shape == (3, 300, 451)
    assert not torch.equal(written, decode_image(read_file(str(image))))  # the heatmap is on it

    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"model.nothing": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError):
        cam.main(argparse.Namespace(**{**vars(args), "checkpoint": str(bad)}))


def test_cam_command_honours_a_config_that_sets_data_root(tmp_path, monkeypatch, capsys):
    """``data.root`` is resolved by the core once (it used to be passed twice and crash): the data set
    reads its file under that root, and its preprocessing (size 32 here) makes the model input."""
    pytest.importorskip("skimage")
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    MNIST.example(root / "mnist")  # writes root/mnist/mnist.pkl.gz
    config, checkpoint, image = write_run(
        tmp_path, f"data: {{type: vision.MNIST, root: '{root}', size: 32, channels: 3, limit: 8}}\n")
    seen = []
    build = cam._preprocessing_dataset
    monkeypatch.setattr(cam, "_preprocessing_dataset", lambda *a: seen.append(build(*a)) or seen[-1])
    args = argparse.Namespace(config=str(config), checkpoint=str(checkpoint), image=str(image),
                              output=str(tmp_path / "cam.png"), size=None, alpha=0.5, device="cpu")
    assert cam.main(args) == 0
    assert (tmp_path / "cam.png").is_file()
    assert seen and seen[0].file == root / "mnist" / "mnist.pkl.gz"
    assert "(32, 32) input" in capsys.readouterr().out


def test_an_image_whose_header_claims_a_huge_size_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    from panconv.errors import DataError
    from panconv_vision.tools.cam import _read_image

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"claims 100000x100000 pixels, more than panconv cam decodes"):
        _read_image(str(path))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        _read_image(str(tmp_path / "junk.png"))
