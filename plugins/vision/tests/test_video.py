"""Video data: OpenCV decoding with one-line errors for truncated/garbage files, seeded clip sampling,
frame triplets from the opencv-doc videos, and Moving-MNIST's seeded trajectories, labels and captions."""

import math

import pytest
import torch

from panconv.errors import DataError
from panconv_vision.datasets.digits import MNIST
from panconv_vision.datasets.video import (
    DIRECTIONS,
    OPENCV_DATA,
    MovingMNIST,
    VideoTriplets,
    caption_of,
    detokenize,
    read_video,
    sample_clips,
    tokenize,
    write_test_video,
)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("video") / "square.avi", frames=30, side=32)


def test_read_video_decodes_every_frame_resized_rgb_or_gray(small_video):
    video = read_video(small_video)
    assert video.shape == (30, 3, 32, 32) and video.dtype == torch.uint8
    # the square (BGR (40, 200, 255) written, so RGB (255, 200, 40)) sits at (2t, 2t): MJPG is lossy, so roughly
    assert abs(int(video[5, 0, 12, 12]) - 255) < 30 and int(video[5, 0, 0, 31]) < 30
    small = read_video(small_video, size=16, gray=True, step=3, max_frames=4)
    assert small.shape == (4, 1, 16, 16)


def test_truncated_garbage_and_missing_videos_raise_one_line_data_errors(small_video, tmp_path):
    data = small_video.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.avi: truncated or corrupt video: decoded \d+ of the 30") as err:
        read_video(truncated)
    assert "\n" not in str(err.value)
    assert read_video(truncated, strict=False).shape[0] < 30          # what decodes is still usable on request
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"this is not a video\n" * 10)
    with pytest.raises(DataError, match="garbage.avi: OpenCV cannot open"):
        read_video(garbage)
    with pytest.raises(DataError, match="nope.avi: no such video file"):
        read_video(tmp_path / "nope.avi")
    with pytest.raises(DataError, match="truncated.avi"):
        VideoTriplets(videos=[str(truncated)], size=16)


@pytest.mark.skipif(not (OPENCV_DATA / "vtest.avi").is_file(), reason="opencv-doc is not installed")
def test_opencv_doc_videos_decode():
    assert read_video(OPENCV_DATA / "vtest.avi", size=32, max_frames=3).shape == (3, 3, 32, 32)
    with pytest.raises(DataError, match="tree.avi: truncated or corrupt video: decoded 68 of the 444"):
        read_video(OPENCV_DATA / "tree.avi", size=16, gray=True)   # as Debian ships it: hence strict=False


def test_sample_clips_is_seeded_and_stays_inside_the_range():
    a = sample_clips(100, length=8, count=10, stride=2, seed=3, start=10, stop=60)
    assert torch.equal(a, sample_clips(100, length=8, count=10, stride=2, seed=3, start=10, stop=60))
    assert not torch.equal(a, sample_clips(100, length=8, count=10, stride=2, seed=4, start=10, stop=60))
    assert a.min() >= 10 and (a + 7 * 2).max() <= 59 and len(set(a.tolist())) == 10
    assert len(sample_clips(10, length=10, count=3)) == 3                       # one start, drawn with replacement
    with pytest.raises(ValueError, match="no clip of 11 frames"):
        sample_clips(10, length=11, count=1)


def test_triplets_are_outer_frames_middle_target_and_their_average(small_video):
    train = VideoTriplets(videos=[str(small_video)], size=16, gap=2)
    test = VideoTriplets(videos=[str(small_video)], split="test", size=16, gap=1)
    video = read_video(small_video, size=16).float() / 255
    item = train[3]
    assert item["inputs"].shape == (2, 3, 16, 16)
    torch.testing.assert_close(item["inputs"][0], video[3])
    torch.testing.assert_close(item["inputs"][1], video[7])
    torch.testing.assert_close(item["targets"], video[5])
    torch.testing.assert_close(item["baseline"], (video[3] + video[7]) / 2)
    # split by time: train triplets lie in frames 0..23 (the first 80 %), test ones in 27..29 (the last 10 %)
    assert len(train) == 20 and train.index[-1] == (0, 19)
    assert test.index == [(0, 27)]
    with pytest.raises(DataError, match="val split .* holds no triplet"):
        VideoTriplets(videos=[str(small_video)], split="val", size=16, gap=2)
    limited = VideoTriplets(videos=[str(small_video)], size=16, limit=5, seed=1)
    assert len(limited) == 5 and limited.index == VideoTriplets(videos=[str(small_video)], size=16, limit=5,
                                                                seed=1).index


@pytest.fixture(scope="module")
def mnist_file(tmp_path_factory):
    return MNIST.example(tmp_path_factory.mktemp("mnist"))["file"]


def _centroid(frame):
    ys, xs = torch.meshgrid(torch.arange(frame.shape[-2]), torch.arange(frame.shape[-1]), indexing="ij")
    mass = frame.sum()
    return (frame * ys).sum() / mass, (frame * xs).sum() / mass


def test_moving_mnist_labels_are_the_direction_of_motion(mnist_file):
    ds = MovingMNIST(file=mnist_file, length=24, frames=6, size=48, speed_min=2.0, speed_max=3.0)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        clip = item["inputs"][:, 0]
        assert clip.shape == (6, 48, 48) and 0 <= clip.min() and clip.max() <= 1
        (y0, x0), (y1, x1) = _centroid(clip[0]), _centroid(clip[-1])
        angle = math.atan2(-(y1 - y0), x1 - x0) % (2 * math.pi)
        assert round(angle / (math.pi / 4)) % 8 == int(item["labels"]), (i, angle)
        # the digit never leaves the canvas
        assert float(clip[0].sum()) == pytest.approx(float(clip[-1].sum()), rel=1e-5)
        seen.add(int(item["labels"]))
    assert len(seen) >= 5


def test_moving_mnist_is_a_function_of_seed_split_and_index(mnist_file):
    a = MovingMNIST(file=mnist_file, length=5, frames=4, size=40, num_digits=2, seed=7)
    b = MovingMNIST(file=mnist_file, length=5, frames=4, size=40, num_digits=2, seed=7)
    c = MovingMNIST(file=mnist_file, length=5, frames=4, size=40, num_digits=2, seed=8)
    assert torch.equal(a[2]["inputs"], b[2]["inputs"]) and not torch.equal(a[2]["inputs"], c[2]["inputs"])
    text = detokenize(a[2]["captions"])
    assert text == a.caption(2) and text.count("the digit") == 2 and " and the digit " in text
    with pytest.raises(ValueError, match="leaves a 40-pixel canvas"):
        MovingMNIST(file=mnist_file, frames=10, size=40, speed_max=3.0)


def test_captions_template_and_tokens_round_trip():
    text = caption_of([7, 1], [3, 6])
    assert text == "the digit seven moves up and to the left and the digit one moves down"
    ids = tokenize(text, 24)
    assert ids.shape == (24,) and ids[0] == 1 and detokenize(ids) == text
    assert len(DIRECTIONS) == 8
    with pytest.raises(ValueError, match="more than 3"):
        tokenize(text, 3)
