import hashlib
import io

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_graph.datasets.recsys import RecSysData, download_file


def write(tmp_path, name="d", **files):
    folder = tmp_path / "recsys" / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (folder / f"{fname}.txt").write_text(text)
    return {"root": tmp_path, "name": name}


def test_example_splits_and_metadata(tmp_path):
    kwargs = RecSysData.example(tmp_path)
    train = RecSysData(split="train", **kwargs)
    assert train.metadata == {"n_users": 4, "n_items": 6}
    assert len(train) == 10
    val, test = RecSysData(split="val", **kwargs), RecSysData(split="test", **kwargs)
    assert val.metadata == test.metadata == train.metadata
    batch = test.collate(test.__getitems__(list(range(len(test)))))
    assert batch["users"].tolist() == [0, 1, 2]
    assert batch["held_items"].tolist() == [4, 5, 0, 1] and batch["held_offsets"].tolist() == [0, 2, 3, 4]
    # test masks training items and, because valid.txt exists, the validation items
    assert batch["seen_items"].tolist() == [0, 1, 2, 3, 2, 3, 4, 0, 4, 5]
    assert batch["seen_offsets"].tolist() == [0, 4, 7, 10]
    vb = val.collate([val[i] for i in range(len(val))])
    assert vb["held_items"].tolist() == [3, 4] and vb["seen_items"].tolist() == [0, 1, 2, 2, 3]


def _pairs(data):
    users = np.repeat(np.arange(data.n_users), np.diff(data.train_offsets))
    return set(zip(users.tolist(), data.train_items.tolist()))


def test_train_fraction_keeps_a_seeded_subset_of_the_training_interactions(tmp_path):
    kwargs = RecSysData.example(tmp_path)
    full = RecSysData(split="train", **kwargs)
    half = RecSysData(split="train", train_fraction=0.5, **kwargs)
    assert len(half) == 5 and half.metadata == full.metadata
    assert _pairs(half) < _pairs(full)
    assert _pairs(RecSysData(split="train", train_fraction=0.5, **kwargs)) == _pairs(half)  # seeded
    assert _pairs(RecSysData(split="train", train_fraction=0.5, **{**kwargs, "seed": 7})) != _pairs(half)
    negatives = half.sample_epoch(0)
    assert {(u, p) for u, p, _ in negatives.tolist()} <= _pairs(half)  # positives from the subset only
    assert not {(u, n) for u, _, n in negatives.tolist()} & _pairs(half)
    # evaluation still excludes every training item, kept or not
    test, test_sub = RecSysData(split="test", **kwargs), RecSysData(split="test", train_fraction=0.5, **kwargs)
    assert test.collate(test.__getitems__([0, 1, 2]))["seen_items"].tolist() == \
        test_sub.collate(test_sub.__getitems__([0, 1, 2]))["seen_items"].tolist()


def test_val_requires_valid_file(tmp_path):
    kwargs = write(tmp_path, train="0 1 2\n", test="0 3\n")
    RecSysData(split="test", **kwargs)
    with pytest.raises(DataError, match=r"valid\.txt: missing"):
        RecSysData(split="val", **kwargs)


def test_missing_data_error_names_path(tmp_path):
    with pytest.raises(DataError, match=r"recsys/nothing/train\.txt: missing"):
        RecSysData(root=tmp_path, name="nothing")


@pytest.mark.parametrize("text, pattern", [
    ("0 1 2\n1 2 x\n", r"train\.txt:2: 'x' is not an integer id"),
    ("0 1 2\n1 2 3.5\n", r"train\.txt:2: '3\.5' is not an integer"),
    ("0 1 2\n1 -2 3\n", r"train\.txt:2: negative id -2"),
    ("0 1 2\n\n1 2 3\n", r"train\.txt:2: empty line between records"),
    ("0 1 2\n1 2\n0 4\n", r"train\.txt:3: user 0 already listed at line 1"),
    ("\n\n", r"train\.txt:1: file has no records"),
])
def test_malformed_files(tmp_path, text, pattern):
    kwargs = write(tmp_path, train=text, test="0 3\n")
    with pytest.raises(DataError, match=pattern):
        RecSysData(split="train", **kwargs)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"sampling": "popularity"}, r"RecSysData: sampling must be 'user' or 'interaction', got 'popularity'"),
    ({"name": "../escape"}, r"RecSysData: name must be a folder name under <root>/recsys/, got '\.\./escape'"),
    ({"name": ""}, r"RecSysData: name must be a folder name"),
    ({"train_fraction": 0.0}, r"RecSysData: train_fraction must be in \(0, 1\], got 0.0"),
    ({"train_fraction": 1.5}, r"RecSysData: train_fraction must be in \(0, 1\], got 1.5"),
])
def test_bad_constructor_arguments_raise_value_error(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        RecSysData(**{**RecSysData.example(tmp_path), **kwargs})


def test_root_is_the_given_folder_only(tmp_path, monkeypatch):
    """The core resolves the data root; the dataset never falls back to $PANCONV_DATA itself."""
    kwargs = RecSysData.example(tmp_path / "elsewhere")
    monkeypatch.setenv("PANCONV_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"empty/recsys/tiny/train\.txt: missing; .*--data-root / data\.root"):
        RecSysData(root=tmp_path / "empty", name=kwargs["name"])
    assert RecSysData(**kwargs).root == tmp_path / "elsewhere"


def test_broken_example_raises(tmp_path):
    with pytest.raises(DataError):
        RecSysData(**RecSysData.broken_example(tmp_path))


def test_trailing_blank_lines_and_cold_users_are_counted(tmp_path):
    kwargs = write(tmp_path, train="0 1 2\n1 2 3\n\n\n", test="0 3\n1 0\n2 4\n3\n")
    with pytest.warns(UserWarning, match="skipped 1 users without training interactions"):
        test = RecSysData(split="test", **kwargs)
    assert test.skipped == {"cold_users": 1, "empty_users": 1}
    assert test.eval_users.tolist() == [0, 1]
    assert test.metadata == {"n_users": 4, "n_items": 5}


def test_negatives_never_hit_training_items_and_are_reproducible(data_root):
    ds = RecSysData(data_root, "train", name="lastfm", seed=7)
    seen = set(zip(*[a.tolist() for a in ds.interactions()]))
    ds.set_epoch(3)
    s3 = ds.samples
    assert s3.shape == (ds.n_interactions, 3)
    assert all((u, p) in seen for u, p in s3[:, :2].tolist())
    assert not any((u, n) in seen for u, n in s3[:, [0, 2]].tolist())
    assert s3[:, 2].min() >= 0 and s3[:, 2].max() < ds.n_items
    ds.set_epoch(4)
    assert not np.array_equal(ds.samples, s3)
    again = RecSysData(data_root, "train", name="lastfm", seed=7)
    again.set_epoch(3)
    np.testing.assert_array_equal(again.samples, s3)
    other = RecSysData(data_root, "train", name="lastfm", seed=8)
    other.set_epoch(3)
    assert not np.array_equal(other.samples, s3)
    # negatives are uniform over unseen items: a user's negative histogram has no seen item
    batch = ds.collate(ds.__getitems__(list(range(4096))))
    assert batch["users"].dtype == torch.int64 and batch["neg"].shape == (4096,)


def test_interaction_sampling_covers_every_interaction_once(tmp_path):
    kwargs = RecSysData.example(tmp_path)
    ds = RecSysData(split="train", sampling="interaction", **kwargs)
    pairs = sorted(map(tuple, ds.samples[:, :2].tolist()))
    assert pairs == sorted(zip(*[a.tolist() for a in ds.interactions()]))


def test_gowalla_statistics(data_root):
    ds = RecSysData(data_root, "test", name="gowalla")
    assert ds.metadata == {"n_users": 29858, "n_items": 40981}
    assert len(ds) == 29858 and len(ds.held_items) == 217242 and len(ds.train_items) == 810128


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_checksum_and_atomic_write(tmp_path):
    payload = b"0 1 2\n1 2 3\n"
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "train.txt"
    download_file("stub://x", dest, digest, opener=lambda url: _FakeResponse(payload))
    assert dest.read_bytes() == payload
    bad = tmp_path / "out" / "test.txt"
    with pytest.raises(DataError, match="sha256 .* does not match"):
        download_file("stub://y", bad, "0" * 64, opener=lambda url: _FakeResponse(payload))
    assert not bad.exists() and sorted(p.name for p in dest.parent.iterdir()) == ["train.txt"]  # no partial file


def test_dataset_downloads_missing_files_from_file_url(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "train.txt").write_text("0 1 2\n1 0\n")
    (src / "test.txt").write_text("0 0\n1 2\n")
    sums = {f: hashlib.sha256((src / f).read_bytes()).hexdigest() for f in ("train.txt", "test.txt")}
    ds = RecSysData(root=tmp_path / "data", split="test", name="dl", source=src.as_uri(), checksums=sums)
    assert ds.metadata == {"n_users": 2, "n_items": 3}
    assert (tmp_path / "data" / "recsys" / "dl" / "train.txt").read_text() == "0 1 2\n1 0\n"
    with pytest.raises(DataError, match="does not match"):
        RecSysData(root=tmp_path / "data2", name="dl", source=src.as_uri(), checksums={"train.txt": "1" * 64})
