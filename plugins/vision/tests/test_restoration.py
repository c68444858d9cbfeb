"""Degradations (haze, bicubic, MRI) and the restoration data sets built on the bundled photos / MNI152 template."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panconv.errors import DataError
from panconv.testing import assert_rejected_at_validation, dry_run
from panconv_vision.datasets.restoration import MRIPatches, RestorationPhotos, photo_files
from panconv_vision.transforms import (
    BicubicDownsample,
    Haze,
    MRIDegradation,
    _box,
    add_haze,
    bicubic_downsample,
    dark_channel_prior_dehaze,
    mri_degrade,
)


def _clean(h=48, w=64):
    g = torch.Generator().manual_seed(0)
    return F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 5, 1, 2)[0]


def test_haze_follows_the_atmospheric_scattering_model():
    clean = _clean()
    hazy, info = add_haze(clean, torch.Generator().manual_seed(3))
    t, a = info["transmission"], info["airlight"]
    torch.testing.assert_close(hazy, (clean * t + a * (1 - t)).clamp(0, 1))
    assert 0.6 <= info["beta"] <= 1.8 and 0.7 <= a <= 1.0
    assert (t > 0).all() and (t <= 1).all()
    # depth is smooth: neighbouring transmissions differ little, and the top (far) is hazier than the bottom
    assert (t[1:] - t[:-1]).abs().max() < 0.1
    assert t[:8].mean() < t[-8:].mean()


def test_dark_channel_prior_inverts_haze_with_known_parameters_approximately():
    clean = _clean(64, 64) * 0.6  # dark channel of a natural-ish image is low
    hazy, _ = add_haze(clean, torch.Generator().manual_seed(1))
    restored = dark_channel_prior_dehaze(hazy)
    assert F.mse_loss(restored, clean) < F.mse_loss(hazy, clean)


def test_box_filter_is_the_clipped_window_mean():
    x = torch.rand(2, 13, 17)
    r = 3
    ones = torch.ones(1, 1, 13, 17)
    ref = F.avg_pool2d(F.pad(x[:, None], [r] * 4), 7, stride=1) / F.avg_pool2d(F.pad(ones, [r] * 4), 7, stride=1)
    torch.testing.assert_close(_box(x, r), ref[:, 0])


def test_bicubic_downsample_and_transforms():
    clean = _clean(32, 48)
    lr = bicubic_downsample(clean, 4)
    assert lr.shape == (3, 8, 12)
    torch.testing.assert_close(lr.mean(), clean.mean(), atol=0.02, rtol=0)
    out = BicubicDownsample(4)({"targets": clean})
    torch.testing.assert_close(out["inputs"], lr)
    with pytest.raises(ValueError, match="divisible"):
        bicubic_downsample(clean[:, :30], 4)
    hz = Haze(seed=0)
    a, b = hz({"targets": clean})["inputs"], Haze(seed=0)({"targets": clean})["inputs"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="targets"):
        hz({"inputs": clean})
    with pytest.raises(ValueError):
        Haze(beta_min=2.0, beta_max=1.0)


def test_mri_degradation_blurs_downsamples_and_adds_rician_noise():
    vol = torch.full((1, 8, 8, 8), 0.5)
    lr = mri_degrade(vol, torch.Generator().manual_seed(0), scale=2, blur_sigma=1.0, noise_std=0.0)
    assert lr.shape == (1, 4, 4, 4)
    torch.testing.assert_close(lr, torch.full_like(lr, 0.5))  # blur and averaging keep a constant
    zero = mri_degrade(torch.zeros(1, 16, 16, 16), torch.Generator().manual_seed(0), noise_std=0.1)
    # Rician noise on a zero signal is Rayleigh: non-negative, mean sigma * sqrt(pi/2)
    assert (zero >= 0).all()
    assert zero.mean().item() == pytest.approx(0.1 * (torch.pi / 2) ** 0.5, rel=0.1)
    assert MRIDegradation(seed=0)({"targets": torch.rand(1, 8, 8, 8)})["inputs"].shape == (1, 4, 4, 4)


@pytest.mark.skipif(not photo_files("test"), reason="no bundled photos (scikit-image / opencv-doc)")
@pytest.mark.parametrize("task", ["sr", "dehaze"])
def test_photo_patches(task):
    ds = RestorationPhotos(split="val", task=task, scale=4, eval_size=64, patches_per_image=2)
    assert len(ds) == 2 * len(photo_files("val"))
    item = ds[1]
    assert item["targets"].shape == (3, 64, 64) and item["baseline"].shape == (3, 64, 64)
    assert item["inputs"].shape == ((3, 16, 16) if task == "sr" else (3, 64, 64))
    torch.testing.assert_close(ds[1]["inputs"], item["inputs"])  # fixed crops and haze off the train split
    assert ds.metadata == {"in_channels": 3, "upscale": 4 if task == "sr" else 1}
    train = RestorationPhotos(split="train", task=task, patch_size=32, patches_per_image=1)
    a = train[0]["targets"]
    train.set_epoch(1)
    assert not torch.equal(a, train[0]["targets"])  # new crops each epoch
    assert {str(f.name) for f in photo_files("train")}.isdisjoint({f.name for f in photo_files("test")})


@pytest.mark.skipif(not photo_files("test"), reason="no bundled photos (scikit-image / opencv-doc)")
def test_eval_patches_keep_the_evaluation_set_when_training_crops_change():
    # fewer, larger training crops with the evaluation set of the default run: the same fixed val/test patches
    default = RestorationPhotos(split="test", task="dehaze", eval_size=64, patches_per_image=8)
    changed = RestorationPhotos(split="test", task="dehaze", eval_size=64, patches_per_image=2,
                                eval_patches_per_image=8)
    assert len(changed) == len(default) == 8 * len(photo_files("test"))
    for i in (0, len(default) - 1):
        torch.testing.assert_close(changed[i]["inputs"], default[i]["inputs"])
    train = RestorationPhotos(split="train", task="dehaze", patch_size=64, patches_per_image=2,
                              eval_patches_per_image=8)
    assert len(train) == 2 * len(photo_files("train"))   # training draws patches_per_image


def test_photo_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        RestorationPhotos(split="val", task="sr", scale=3, eval_size=64)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="x.png"):
        RestorationPhotos(split="train", image_dir=str(tmp_path))
    with pytest.raises(DataError, match="no images"):
        RestorationPhotos(split="val", image_dir=str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None or importlib.util.find_spec("nibabel") is None,
                    reason="nilearn/nibabel not installed")
def test_mri_patches_from_the_mni152_template():
    ds = MRIPatches(split="val", patch_size=16, scale=2, limit=5)
    assert len(ds) == 5
    item = ds[0]
    assert item["inputs"].shape == (1, 8, 8, 8) and item["targets"].shape == (1, 16, 16, 16)
    assert item["baseline"].shape == (1, 16, 16, 16) and item["targets"].mean() > 0.15
    assert ds.metadata == {"in_channels": 1, "upscale": 2}
    train, test = MRIPatches(split="train", patch_size=16), MRIPatches(split="test", patch_size=16)
    top_train = max(z for z, _, _ in train.corners) + 16
    assert top_train <= min(z for z, _, _ in test.corners)  # slabs do not overlap


EXAMPLES = Path(__file__).parents[3] / "examples"
CONFIGS = ["vision_cfsr_photos.yaml", "vision_deanet_photos.yaml", "vision_disgan_mni152.yaml",
           "vision_ffnet_mnist.yaml", "vision_poincare_mnist.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_example_configs_validate(name):
    code, out, err = dry_run(EXAMPLES / name)
    assert code == 0, err
    assert "config is valid" in out


@pytest.mark.parametrize("name, override, key", [
    ("vision_deanet_photos.yaml", "model.base_dim=4", "model.base_dim"),
    ("vision_cfsr_photos.yaml", "data.patch_size=4", "data.patch_size"),
    ("vision_disgan_mni152.yaml", "model.disc_levels=7", "model.disc_levels"),
    ("vision_disgan_mni152.yaml", "data.blur_sigma=-1", "data.blur_sigma"),
])
def test_bad_values_are_rejected_at_validation(name, override, key):
    assert_rejected_at_validation(EXAMPLES / name, override, key)


def _photo_dir(tmp_path, size=(40, 48)):
    from PIL import Image

    rng = np.random.default_rng(1)
    (tmp_path / "train").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "train" / f"{i}.png")
    return str(tmp_path)


def test_augment_draws_the_official_rotations_and_the_eight_symmetries(tmp_path):
    import torchvision.transforms.functional as TF

    root = _photo_dir(tmp_path)
    kw = dict(split="train", task="dehaze", patch_size=16, patches_per_image=40, image_dir=root, baseline=False)
    plain = RestorationPhotos(augment="none", **kw)
    seen = {}
    for augment, count in (("rot90", 4), ("dihedral", 8), ("hflip", 2)):
        ds = RestorationPhotos(augment=augment, **kw)
        kinds = set()
        for i in range(len(ds)):
            ref = plain[i]["targets"]  # the same crop: the crop is drawn before the augmentation
            # the official loader's rotate(img, 90 * k), torchvision's counter-clockwise rotation
            rotations = [TF.rotate(ref, 90 * k) for k in range(4)]
            if augment == "rot90":
                candidates = rotations
            elif augment == "dihedral":
                candidates = [torch.rot90(ref.flip(-1), k, (-2, -1)) for k in range(4)] + rotations
            else:
                candidates = [ref, ref.flip(-1)]
            got = ds[i]["targets"]
            match = [j for j, c in enumerate(candidates) if torch.equal(got, c)]
            assert match, (augment, i)
            kinds.add(match[0])
        seen[augment] = kinds
        assert len(kinds) == count, (augment, kinds)
    # "hflip" (the default) keeps the draws of every earlier run: crop corner, then one uniform for the flip
    ds = RestorationPhotos(**kw)
    for i in (0, 7, 33):
        g = ds._generator(i)
        image = ds.images[i % 2]
        top, left = int(torch.randint(40 - 16 + 1, (), generator=g)), int(torch.randint(48 - 16 + 1, (), generator=g))
        clean = image[:, top:top + 16, left:left + 16].float() / 255
        if bool(torch.rand((), generator=g) < 0.5):
            clean = clean.flip(-1)
        torch.testing.assert_close(ds[i]["targets"], clean, rtol=0, atol=0)


def test_augment_leaves_evaluation_alone_and_names_a_bad_choice(tmp_path):
    root = _photo_dir(tmp_path)
    for split in ("val", "test"):
        (tmp_path / split).symlink_to(tmp_path / "train")
    for split in ("val", "test"):
        a = RestorationPhotos(split=split, task="dehaze", eval_size=16, patches_per_image=6, image_dir=root,
                              augment="dihedral", baseline=False)
        b = RestorationPhotos(split=split, task="dehaze", eval_size=16, patches_per_image=6, image_dir=root,
                              augment="none", baseline=False)
        for i in range(len(a)):
            assert torch.equal(a[i]["targets"], b[i]["targets"]) and torch.equal(a[i]["inputs"], b[i]["inputs"])
    with pytest.raises(ValueError, match="augment must be one of hflip, rot90, dihedral, none, got 'flip'"):
        RestorationPhotos(split="train", image_dir=root, patch_size=16, augment="flip")
