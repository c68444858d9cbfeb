"""ByteText: contiguous disjoint splits, windows with targets shifted by one, the data-root override."""

import pytest
import torch

from panconv.errors import DataError
from panconv_sequence.datasets.text import ByteText, python_docs_bytes


def test_python_docs_splits_are_contiguous_and_cover_the_corpus(tmp_path):
    data = python_docs_bytes()
    assert len(data) > 100_000 and b"statement" in data
    splits = [ByteText(tmp_path, split, length=128) for split in ("train", "val", "test")]
    assert splits[0].span[0] == 0 and splits[0].span[1] == splits[1].span[0] and splits[1].span[1] == splits[2].span[0]
    assert splits[2].span[1] == len(data)
    for ds in splits:
        start, end = ds.span
        assert bytes(ds.data.tolist()) == data[start:end]
        assert ds.metadata == {"vocab_size": 256}


def test_windows_are_shifted_by_one_and_stride(tmp_path):
    ds = ByteText(tmp_path, "val", length=64, stride=40)
    raw = ds.data.long()
    assert len(ds) == (len(raw) - 65) // 40 + 1
    for index in (0, 1, len(ds) - 1):
        item = ds[index]
        assert item["inputs"].shape == item["targets"].shape == (64,)
        assert item["inputs"].dtype == torch.long
        torch.testing.assert_close(item["inputs"], raw[index * 40: index * 40 + 64])
        torch.testing.assert_close(item["targets"], raw[index * 40 + 1: index * 40 + 65])
    with pytest.raises(IndexError):
        ds[len(ds)]
    batch = ds.collate([ds[0], ds[1]])
    assert batch["inputs"].shape == (2, 64)


def test_files_under_the_data_root(tmp_path):
    (tmp_path / "bytetext" / "b").mkdir(parents=True)
    (tmp_path / "bytetext" / "a.txt").write_bytes(b"A" * 100)
    (tmp_path / "bytetext" / "b" / "c.txt").write_bytes("é".encode() * 50)
    (tmp_path / "bytetext" / "ignored.bin").write_bytes(b"\x00" * 10)
    train = ByteText(tmp_path, "train", source="files", length=8, fractions=(0.5, 0.25, 0.25))
    test = ByteText(tmp_path, "test", source="files", length=8, fractions=(0.5, 0.25, 0.25))
    assert bytes(train.data[:100].tolist()) == b"A" * 100                        # sorted by path: a.txt first
    assert bytes(test.data[-4:].tolist()) == "éé".encode()
    assert int(test.data.max()) > 127                                           # raw UTF-8 bytes, not characters


def test_malformed_and_too_short_data_raise_data_error(tmp_path):
    (tmp_path / "bytetext").mkdir()
    with pytest.raises(DataError, match="no \\*.txt"):
        ByteText(tmp_path, source="files")
    (tmp_path / "bytetext" / "x.txt").write_bytes(b"line one\nline\x00two")
    with pytest.raises(DataError, match="x.txt:2"):
        ByteText(tmp_path, source="files")
    (tmp_path / "bytetext" / "x.txt").write_bytes(b"short text")
    with pytest.raises(DataError, match="fewer than one window"):
        ByteText(tmp_path, source="files", length=64)


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="source"):
        ByteText(tmp_path, source="web")
    with pytest.raises(ValueError, match="fractions"):
        ByteText(tmp_path, fractions=(0.9, 0.2, 0.1))
