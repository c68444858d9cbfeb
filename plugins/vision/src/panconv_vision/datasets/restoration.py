"""Restoration data: degraded/clean pairs made from photos and MRI templates that ship with installed packages.

``RestorationPhotos`` (dehazing, super-resolution): clean RGB photos bundled with scikit-image
(``skimage/data``), scikit-learn (``sklearn/datasets/images``) and the Debian ``opencv-doc`` samples
(``/usr/share/doc/opencv-doc/examples/data``), split by image (``PHOTO_SPLITS``: no image, or a
near-duplicate of one, in two splits). Each item is a patch: random crops on ``train`` (seeded by
``seed``, the epoch and the index), fixed seeded crops on ``val``/``test``; degraded on the fly by
the functions of ``panconv_vision.transforms``. With ``video_frames=n`` the ``train`` split also takes
``n`` frames of each opencv-doc video (``vtest.avi``, ``Megamind.avi``, ``tree.avi``: :func:`opencv_video_frames`)
as extra clean images; ``val``/``test`` stay the held-out photos.

* ``task="dehaze"``: haze by the atmospheric scattering model with a smooth random depth and airlight
  (:func:`~panconv_vision.transforms.add_haze`); baseline = the dark channel prior;
* ``task="sr"``: anti-aliased bicubic down-sampling by ``scale``; baseline = bicubic up-sampling.

``MRIPatches`` (3-D MRI super-resolution): the MNI152 2009a symmetric T1 template (1 mm, 197x233x189)
bundled in the ``nilearn`` wheel (``pip install --no-deps nilearn==0.14.1 nibabel``), intensities scaled
to [0, 1] by the 99.9th percentile, cut into cubic patches inside the head (mean intensity above
``min_mean``); split by axial slab (z < 50 % train, 50-67 % val, the top 33 % test: no voxel is in two
splits). LR = blur + down-sampling + Rician noise (:func:`~panconv_vision.transforms.mri_degrade`);
baseline = trilinear up-sampling. One template stands in for a cohort: a documented generator, not a
clinical benchmark.

Items: ``{"inputs": degraded, "targets": clean, "baseline": baseline}`` in [0, 1]; the evaluator
``vision.ImageQuality`` reports PSNR/SSIM of the model and of the baseline on the same patches.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError

from ..transforms import add_haze, bicubic_downsample, bicubic_upsample, dark_channel_prior_dehaze, mri_degrade
from .video import OPENCV_VIDEOS, _cv2, read_video

__all__ = ["MRIPatches", "PHOTO_SPLITS", "RestorationPhotos", "opencv_video_frames", "photo_files"]

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

#: the ``augment`` choices of :class:`RestorationPhotos`
AUGMENTATIONS = ("hflip", "rot90", "dihedral", "none")

#: the photos of each split, as (source, file name); sources: skimage, sklearn, opencv
PHOTO_SPLITS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (
        ("skimage", "astronaut.png"), ("skimage", "rocket.jpg"), ("skimage", "motorcycle_left.png"),
        ("skimage", "motorcycle_right.png"), ("opencv", "building.jpg"), ("opencv", "messi5.jpg"),
        ("opencv", "orange.jpg"), ("opencv", "apple.jpg"), ("opencv", "aero1.jpg"), ("opencv", "aero3.jpg"),
        ("opencv", "aloeL.jpg"), ("opencv", "aloeR.jpg"), ("opencv", "graf1.png"), ("opencv", "leuvenA.jpg"),
        ("opencv", "leuvenB.jpg"), ("opencv", "basketball1.png"), ("opencv", "HappyFish.jpg"),
        ("opencv", "rubberwhale1.png"), ("opencv", "squirrel_cls.jpg"), ("opencv", "stuff.jpg"),
        ("opencv", "smarties.png"), ("opencv", "starry_night.jpg"), ("opencv", "board.jpg"),
    ),
    "val": (("skimage", "chelsea.png"), ("opencv", "butterfly.jpg"), ("sklearn", "flower.jpg")),
    "test": (("skimage", "coffee.png"), ("sklearn", "china.jpg"), ("opencv", "fruits.jpg"),
             ("opencv", "baboon.jpg"), ("opencv", "home.jpg")),
}


def _package_dir(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0], *parts)


def _source_dir(source: str) -> Path | None:
    if source == "skimage":
        return _package_dir("skimage", "data")
    if source == "sklearn":
        return _package_dir("sklearn", "datasets", "images")
    return OPENCV_DATA


def photo_files(split: str) -> list[Path]:
    """The files of a split's photos that are installed here."""
    out = []
    for source, name in PHOTO_SPLITS[split]:
        folder = _source_dir(source)
        if folder is not None and (folder / name).is_file():
            out.append(folder / name)
    return out


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as a ``(3, H, W)`` uint8 tensor (gray replicated, alpha dropped); DataError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def opencv_video_frames(count: int, folder: Path = OPENCV_DATA) -> list[tuple[str, int, torch.Tensor]]:
    """``count`` evenly spaced full-size frames of each opencv-doc video: ``(video, frame index, (3, H, W) uint8)``.

    Decoded with :func:`~panconv_vision.datasets.video.read_video`: a video whose header frame count is
    honest (``OPENCV_VIDEOS``, strict decoding) keeps every ``(declared - 1) // (count - 1)``-th frame, so
    only about ``count`` frames are held in memory; ``tree.avi`` (whose header over-counts) is decoded
    whole (68 small frames). Then ``count`` frames evenly spaced over the decoded ones, first and last
    included. A missing or unreadable video raises a one-line DataError naming it; so does a ``count``
    above the frames a video has.
    """
    if count < 0:
        raise ValueError(f"opencv_video_frames: count must be >= 0, got {count}")
    out: list[tuple[str, int, torch.Tensor]] = []
    if count == 0:
        return out
    for name, strict in OPENCV_VIDEOS.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: no such video file (install the Debian package opencv-doc, or set "
                            f"video_frames=0)")
        step = 1
        if strict and count > 1:
            cv2 = _cv2()
            cap = cv2.VideoCapture(str(path))
            try:
                declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            finally:
                cap.release()
            step = max(1, (declared - 1) // (count - 1))
        video = read_video(path, step=step, strict=strict)
        if count > len(video):
            raise DataError(f"{path}: {count} frames asked, the video has {len(video)} (at step {step})")
        for k in np.linspace(0, len(video) - 1, count).round().astype(int).tolist():
            out.append((name, k * step, video[k].clone()))
    return out


class RestorationPhotos(Dataset):
    """Degraded/clean photo patches for dehazing (``task="dehaze"``) or x``scale`` SR (``task="sr"``).

    Args:
        task: "dehaze" or "sr".
        scale: SR factor (``patch_size`` and ``eval_size`` must be multiples of it).
        patch_size: side of the clean training patches.
        eval_size: side of the clean val/test patches.
        patches_per_image: patches drawn from each image per epoch (train) / fixed per image (val, test).
        eval_patches_per_image: fixed patches per image on val/test (default: ``patches_per_image``), so a
            run can change its training crops (fewer, larger) and keep the evaluation set.
        image_dir: read the split's photos from ``<image_dir>/<split>/*.png|jpg`` instead of the bundled set.
        video_frames: add to the ``train`` split only this many frames of each opencv-doc video (vtest,
            Megamind, tree; evenly spaced over the video, full size: :func:`opencv_video_frames`) as extra clean
            images, i.e. ``3 * video_frames`` more images (``patches_per_image`` patches each); ``val`` and
            ``test`` are unchanged. Frames of one video are near-duplicates of each other (same scene and
            camera; vtest's camera is fixed), so they add far less variety than as many new photos. 0 (the
            default): photos only. Needs the Debian package ``opencv-doc`` (DataError naming a missing video).
        augment: geometric augmentation of the ``train`` crops (``val``/``test`` are never augmented):
            ``"hflip"`` (the default, so that recorded runs reproduce): a random horizontal flip; ``"rot90"``: a random
            rotation by 0, 90, 180 or 270 degrees, the official DEA-Net loader's (``rotate(img, 90 * randint(0,
            3))``, no flip); ``"dihedral"``: a random flip then a random rotation, the 8 symmetries of the square
            (BasicSR's ``hflip`` + ``rotation``, which CFSR's release trains with); ``"none"``.
        baseline: attach the baseline restoration (dark channel prior / bicubic) as ``"baseline"``.
        seed: crops and degradations.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("in_channels", "upscale")

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        missing = [s for s in cls.splits if not photo_files(s)]
        if missing:
            return [f"no bundled photos for split(s) {', '.join(missing)}: install scikit-image, scikit-learn and the "
                    f"Debian package opencv-doc (or pass image_dir=...)"]
        return []

    def __init__(self, root=None, split: str = "train", task: Literal["dehaze", "sr"] = "sr",
                 scale: Annotated[int, Ge(2)] = 4, patch_size: Annotated[int, Ge(8)] = 64,
                 eval_size: Annotated[int, Ge(8)] = 128, patches_per_image: Annotated[int, Ge(1)] = 8,
                 eval_patches_per_image: Annotated[int, Ge(1)] | None = None, image_dir: str | None = None,
                 video_frames: Annotated[int, Ge(0)] = 0,
                 augment: Literal["hflip", "rot90", "dihedral", "none"] = "hflip", baseline: bool = True,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if augment not in AUGMENTATIONS:
            raise ValueError(f"RestorationPhotos: augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        self.augment = augment
        if isinstance(video_frames, bool) or not isinstance(video_frames, int) or video_frames < 0:
            raise ValueError(f"RestorationPhotos: video_frames must be an integer >= 0, got {video_frames!r}")
        if task not in ("dehaze", "sr"):
            raise ValueError(f"RestorationPhotos: task must be 'dehaze' or 'sr', got {task!r}")
        size = patch_size if split == "train" else eval_size
        if task == "sr" and size % scale:
            raise ValueError(f"RestorationPhotos: patch size {size} is not a multiple of the scale {scale}")
        self.task, self.scale, self.size = task, scale, size
        if split != "train" and eval_patches_per_image is not None:
            patches_per_image = eval_patches_per_image
        self.patches_per_image, self.with_baseline, self.seed, self.epoch = patches_per_image, baseline, seed, 0
        if image_dir is not None:
            folder = Path(image_dir).expanduser() / split
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        else:
            files = photo_files(split)
        if not files:
            where = Path(image_dir) / split if image_dir is not None else "the bundled photo set"
            raise DataError(f"{where}: no images for split '{split}'")
        self.images = [read_rgb(f) for f in files]
        #: the training video frames, as (video, frame index); their images follow the photos in ``images``
        self.frames: list[tuple[str, int]] = []
        if split == "train" and video_frames:
            for name, index, frame in opencv_video_frames(video_frames):
                self.frames.append((name, index))
                files.append(OPENCV_DATA / f"{name}#frame{index}")
                self.images.append(frame)
        self.files = files
        for f, im in zip(files, self.images):
            if min(im.shape[1:]) < size:
                raise DataError(f"{f}: image {tuple(im.shape[1:])} is smaller than the patch size {size}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def _generator(self, index: int) -> torch.Generator:
        epoch = self.epoch if self.split == "train" else 0
        return torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + index) % 2**63)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = self._generator(index)
        image = self.images[index % len(self.images)]
        h, w = image.shape[1:]
        top = int(torch.randint(h - self.size + 1, (), generator=g))
        left = int(torch.randint(w - self.size + 1, (), generator=g))
        clean = image[:, top:top + self.size, left:left + self.size].float() / 255.0
        if self.split == "train":
            clean = self._augment(clean, g)
        if self.task == "sr":
            degraded = bicubic_downsample(clean, self.scale)
            item = {"inputs": degraded, "targets": clean}
            if self.with_baseline:
                item["baseline"] = bicubic_upsample(degraded, self.scale)
        else:
            degraded = add_haze(clean, g)[0]
            item = {"inputs": degraded, "targets": clean}
            if self.with_baseline:
                item["baseline"] = dark_channel_prior_dehaze(degraded)
        return item

    def _augment(self, clean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # "hflip" draws exactly what every earlier run drew (one uniform), so their figures stay reproducible
        if self.augment in ("hflip", "dihedral") and bool(torch.rand((), generator=g) < 0.5):
            clean = clean.flip(-1)
        if self.augment in ("rot90", "dihedral"):
            k = int(torch.randint(4, (), generator=g))
            clean = torch.rot90(clean, k, dims=(-2, -1))  # counter-clockwise, as torchvision's rotate(90 * k)
        return clean

    @property
    def metadata(self) -> dict[str, Any]:
        return {"in_channels": 3, "upscale": self.scale if self.task == "sr" else 1}

    def collate(self, samples: list[dict]) -> dict:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        from PIL import Image

        rng = np.random.default_rng(0)
        for split in cls.splits:
            (tmp_dir / split).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_dir / split / f"{i}.png")
        return {"image_dir": str(tmp_dir), "task": "sr", "scale": 2, "patch_size": 16, "eval_size": 16,
                "patches_per_image": 2}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        (tmp_dir / "train").mkdir(parents=True)
        (tmp_dir / "train" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        return {"image_dir": str(tmp_dir), "task": "sr", "scale": 2, "patch_size": 16}


MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def mni152_file() -> Path | None:
    """The MNI152 2009a T1 template inside the installed nilearn wheel."""
    path = _package_dir("nilearn", "datasets", "data", MNI_T1)
    return path if path is not None and path.is_file() else None


def load_volume(path: Path) -> torch.Tensor:
    """A NIfTI volume as a float32 ``(D, H, W)`` tensor scaled to [0, 1] by its 99.9th percentile."""
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - reported by check_prerequisites
        raise DataError(f"{path}: reading NIfTI needs nibabel (pip install --no-deps nibabel)") from exc
    try:
        data = np.asarray(nibabel.load(str(path)).get_fdata(), dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise DataError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    top = float(np.percentile(data, 99.9))
    return torch.from_numpy(np.clip(data / max(top, 1e-6), 0, 1)).permute(2, 1, 0).contiguous()  # (z, y, x)


class MRIPatches(Dataset):
    """HR/LR patches of the MNI152 T1 template for 3-D MRI super-resolution (DISGAN).

    Args:
        file: a NIfTI volume to use instead of the template bundled in nilearn.
        patch_size: side of the cubic HR patches (a multiple of ``scale``).
        scale: down-sampling factor.
        stride: distance between patch corners (defaults to ``patch_size // 2``).
        min_mean: keep patches whose mean intensity is above this (inside the head).
        blur_sigma, noise_std: the degradation (:func:`~panconv_vision.transforms.mri_degrade`).
        limit: keep at most this many patches (evenly spaced).
        seed: noise.
    """

    splits = ("train", "val", "test")
    metadata_keys = ("in_channels", "upscale")
    SLABS = {"train": (0.0, 0.5), "val": (0.5, 0.67), "test": (0.67, 1.0)}

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        problems = []
        if mni152_file() is None:
            problems.append("the MNI152 template ships in nilearn: pip install --no-deps nilearn==0.14.1")
        if importlib.util.find_spec("nibabel") is None:
            problems.append("reading NIfTI needs nibabel: pip install --no-deps nibabel")
        return problems

    def __init__(self, root=None, split: str = "train", file: str | None = None,
                 patch_size: Annotated[int, Ge(4)] = 32, scale: Annotated[int, Ge(2)] = 2,
                 stride: Annotated[int, Ge(1)] | None = None, min_mean: Annotated[float, Ge(0)] = 0.15,
                 blur_sigma: Annotated[float, Ge(0)] = 1.0, noise_std: Annotated[float, Ge(0)] = 0.02,
                 limit: Annotated[int, Ge(1)] | None = None, baseline: bool = True,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0):
        super().__init__(root, split)
        if patch_size % scale:
            raise ValueError(f"MRIPatches: patch_size {patch_size} is not a multiple of the scale {scale}")
        path = Path(file).expanduser() if file is not None else mni152_file()
        if path is None or not path.is_file():
            raise DataError(f"{path or MNI_T1}: no such file (pip install --no-deps nilearn==0.14.1, or pass file=...)")
        self.file = path
        volume = load_volume(path)
        self.scale, self.patch_size, self.blur_sigma, self.noise_std = scale, patch_size, blur_sigma, noise_std
        self.with_baseline, self.seed = baseline, seed
        stride = stride or max(1, patch_size // 2)
        depth = volume.shape[0]
        lo, hi = (int(round(f * depth)) for f in self.SLABS[split])
        corners = []
        for z in range(lo, hi - patch_size + 1, stride):
            for y in range(0, volume.shape[1] - patch_size + 1, stride):
                for x in range(0, volume.shape[2] - patch_size + 1, stride):
                    if float(volume[z:z + patch_size, y:y + patch_size, x:x + patch_size].mean()) > min_mean:
                        corners.append((z, y, x))
        if limit is not None and len(corners) > limit:
            keep = np.linspace(0, len(corners) - 1, limit).round().astype(int)
            corners = [corners[i] for i in keep]
        if not corners:
            raise DataError(f"{path}: no {patch_size}^3 patch with mean > {min_mean} in the {split} slab")
        self.volume, self.corners = volume, corners

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> dict:
        z, y, x = self.corners[index]
        p = self.patch_size
        clean = self.volume[None, z:z + p, y:y + p, x:x + p].clone()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        lr = mri_degrade(clean, g, self.scale, self.blur_sigma, self.noise_std)
        item = {"inputs": lr, "targets": clean}
        if self.with_baseline:
            item["baseline"] = F.interpolate(lr[None], scale_factor=self.scale, mode="trilinear",
                                             align_corners=False)[0].clamp(0, 1)
        return item

    @property
    def metadata(self) -> dict[str, Any]:
        return {"in_channels": 1, "upscale": self.scale}

    def collate(self, samples: list[dict]) -> dict:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        import nibabel

        rng = np.random.default_rng(0)
        data = rng.uniform(0.2, 1.0, (8, 8, 40)).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(tmp_dir / "t1.nii.gz"))
        return {"file": str(tmp_dir / "t1.nii.gz"), "patch_size": 8, "scale": 2, "stride": 4}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        (tmp_dir / "t1.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
        return {"file": str(tmp_dir / "t1.nii.gz"), "patch_size": 8, "scale": 2}
