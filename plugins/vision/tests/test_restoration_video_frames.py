"""RestorationPhotos(video_frames=n): n evenly spaced frames of each opencv-doc video as extra clean TRAINING images."""

from pathlib import Path

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv.testing import assert_rejected_at_validation
from panconv_vision.datasets import restoration
from panconv_vision.datasets.restoration import RestorationPhotos, opencv_video_frames, photo_files
from panconv_vision.datasets.video import OPENCV_DATA, OPENCV_VIDEOS, read_video

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

needs_videos = pytest.mark.skipif(
    not all((OPENCV_DATA / name).is_file() for name in OPENCV_VIDEOS) or not photo_files("test"),
    reason="opencv-doc is not installed")


def _dehaze(split, **kw):
    kw = {"task": "dehaze", "patch_size": 64, "eval_size": 64, "patches_per_image": 2, **kw}
    return RestorationPhotos(split=split, **kw)


@needs_videos
@pytest.mark.parametrize("n", [1, 3])
def test_train_split_grows_by_three_times_n_images(n):
    photos = len(photo_files("train"))
    plain = _dehaze("train")
    assert len(plain.images) == photos and plain.frames == [] and len(plain) == 2 * photos
    ds = _dehaze("train", video_frames=n)
    assert len(ds.images) == photos + 3 * n
    assert len(ds) == 2 * (photos + 3 * n)
    assert [name for name, _ in ds.frames] == [v for v in OPENCV_VIDEOS for _ in range(n)]
    # the photos come first and are the same; the frames are full-size RGB images
    for a, b in zip(plain.images, ds.images):
        assert torch.equal(a, b)
    for frame in ds.images[photos:]:
        assert frame.dtype == torch.uint8 and frame.shape[0] == 3 and min(frame.shape[1:]) >= 240
    # the frame images are drawn: every index past the photos gives a training patch of a frame
    frame_items = [ds[i] for i in range(photos, photos + 3 * n)]
    assert all(item["targets"].shape == (3, 64, 64) for item in frame_items)


@needs_videos
@pytest.mark.parametrize("split", ["val", "test"])
def test_val_and_test_are_unchanged(split):
    plain, with_frames = _dehaze(split), _dehaze(split, video_frames=4)
    assert with_frames.frames == [] and len(with_frames.images) == len(plain.images) == len(photo_files(split))
    assert len(with_frames) == len(plain)
    for i in (0, len(plain) // 2, len(plain) - 1):
        a, b = plain[i], with_frames[i]
        for key in ("inputs", "targets", "baseline"):
            torch.testing.assert_close(a[key], b[key])


@needs_videos
def test_frames_are_distinct_evenly_spaced_positions():
    n = 4
    ds = _dehaze("train", video_frames=n)
    photos = len(photo_files("train"))
    assert len(set(ds.frames)) == 3 * n
    for v, (name, strict) in enumerate(OPENCV_VIDEOS.items()):
        indices = [index for video, index in ds.frames if video == name]
        assert len(indices) == n and indices == sorted(set(indices)) and indices[0] == 0
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= max(2, gaps.min() // 2)   # evenly spaced (up to the decoding step)
        images = ds.images[photos + v * n: photos + (v + 1) * n]
        for a, b in zip(images, images[1:]):
            assert not torch.equal(a, b)
        # the recorded index is the frame's true position in the video
        second = read_video(OPENCV_DATA / name, max_frames=indices[1] + 1, strict=strict)[-1]
        assert torch.equal(images[1], second)
        assert torch.equal(images[0], read_video(OPENCV_DATA / name, max_frames=1, strict=strict)[0])
    # spread over the whole video: tree.avi decodes 68 frames, so its last pick is the last frame
    assert [index for video, index in ds.frames if video == "tree.avi"][-1] == 67


def test_video_frames_argument_is_validated(tmp_path):
    for bad in (-1, -8, 1.5, True):
        with pytest.raises(ValueError, match="video_frames"):
            RestorationPhotos(split="train", task="dehaze", video_frames=bad)
    with pytest.raises(ValueError, match="count"):
        opencv_video_frames(-1)
    assert opencv_video_frames(0, folder=tmp_path) == []      # 0: nothing is read
    with pytest.raises(DataError, match="vtest.avi: no such video file"):
        opencv_video_frames(2, folder=tmp_path)
    (tmp_path / "vtest.avi").write_bytes(b"RIFF garbage, not an AVI")
    with pytest.raises(DataError, match="vtest.avi"):
        opencv_video_frames(2, folder=tmp_path)


@needs_videos
def test_more_frames_than_a_video_has_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(restoration, "OPENCV_VIDEOS", {"tree.avi": False})   # the small one only
    with pytest.raises(DataError, match=r"tree\.avi: 69 frames asked, the video has 68"):
        opencv_video_frames(69)
    assert len(opencv_video_frames(68)) == 68


def test_negative_video_frames_is_rejected_at_validation():
    assert_rejected_at_validation(EXAMPLES / "vision_deanet_photos_long4_frames.yaml", "data.video_frames=-1",
                                  "data.video_frames")
