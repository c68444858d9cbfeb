"""sequence.UCRArchive: the .ts reader on the aeon wheel's real files and on malformed ones (one-line file:line)."""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_sequence.datasets.ucr import UCRArchive, aeon_data_dir, read_ts

needs_aeon = pytest.mark.skipif(aeon_data_dir() is None,
                                reason="the aeon wheel is not installed (pip install --no-deps aeon==1.6.0)")

# (train cases, test cases, classes, channels, train length range): the archive's published sizes
REAL = {
    "GunPoint": (50, 150, 2, 1, (150, 150)),
    "ItalyPowerDemand": (67, 1029, 2, 1, (24, 24)),
    "ArrowHead": (36, 175, 3, 1, (251, 251)),
    "BasicMotions": (40, 40, 4, 6, (100, 100)),
    "JapaneseVowels": (270, 370, 9, 12, (7, 26)),
}


@needs_aeon
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_sets_load_with_the_archives_sizes(name):
    n_train, n_test, classes, channels, (shortest, longest) = REAL[name]
    train, test = UCRArchive(split="train", name=name), UCRArchive(split="test", name=name)
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.metadata == test.metadata == {"num_classes": classes, "in_channels": channels}
    lengths = [len(s) for s in train.series]
    assert (min(lengths), max(lengths)) == (shortest, longest)
    assert set(train.labels.tolist()) == set(range(classes)) == set(test.labels.tolist())
    assert all(torch.isfinite(s).all() for s in train.series)


@needs_aeon
def test_found_without_importing_aeon():
    assert "aeon" not in sys.modules
    UCRArchive(split="train", name="GunPoint")
    assert "aeon" not in sys.modules
    assert aeon_data_dir() == importlib.metadata.distribution("aeon").locate_file("aeon/datasets/data")


@needs_aeon
def test_values_match_the_text_of_the_file():
    ds = UCRArchive(split="train", name="BasicMotions")
    lines = [ln for ln in ds.file.read_text().splitlines() if ln and not ln.startswith(("#", "@"))]
    *channels, label = lines[3].split(":")
    first = np.array([[float(v) for v in c.split(",")] for c in channels], np.float32).T
    assert torch.equal(ds.series[3], torch.from_numpy(first))
    assert ds.class_labels[int(ds.labels[3])] == label


@needs_aeon
def test_unequal_lengths_are_padded_per_batch_and_lengths_kept():
    ds = UCRArchive(split="train", name="JapaneseVowels")
    batch = ds.collate([ds[i] for i in range(6)])
    lengths = [len(ds.series[i]) for i in range(6)]
    assert batch["lengths"].tolist() == lengths
    assert batch["inputs"].shape == (6, max(lengths), 12)
    for i, n in enumerate(lengths):
        assert torch.equal(batch["inputs"][i, :n], ds.series[i])
        assert not batch["inputs"][i, n:].any()


def write(tmp_path, text, name="Toy"):
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"{name}_{split}.ts").write_text(text, encoding="utf-8")
    return tmp_path / f"{name}_TRAIN.ts"


HEADER = ("# a comment\n@problemName Toy\n@univariate true\n@equalLength true\n@seriesLength 3\n"
          "@classLabel true a b\n@data\n")


def test_a_valid_file_and_the_validation_split(tmp_path):
    write(tmp_path, HEADER + "".join(f"{i},{i + 1},{i + 2}:{'ab'[i % 2]}\n" for i in range(10)))
    train = UCRArchive(split="train", name="Toy", path=str(tmp_path), val_fraction=0.3, seed=1)
    val = UCRArchive(split="val", name="Toy", path=str(tmp_path), val_fraction=0.3, seed=1)
    assert (len(train), len(val)) == (7, 3)
    firsts = sorted(float(s[0, 0]) for s in train.series + val.series)
    assert firsts == [float(i) for i in range(10)]  # a partition of the cases
    assert len(UCRArchive(split="val", name="Toy", path=str(tmp_path))) == 0


BROKEN = {
    "non-number": (HEADER + "1,2,3:a\n1,x,3:b\n", "Toy_TRAIN.ts:9: channel 1, value 2: not a number: 'x'"),
    "missing value": (HEADER + "1,?,3:a\n", "Toy_TRAIN.ts:8: channel 1, value 2: missing values"),
    "infinite": (HEADER + "1,inf,3:a\n", "Toy_TRAIN.ts:8: channel 1, value 2: not finite"),
    "undeclared label": (HEADER + "1,2,3:c\n", "Toy_TRAIN.ts:8: class label 'c' is not declared"),
    "no label": (HEADER + "1,2,3\n", "Toy_TRAIN.ts:8: expected '<series>:<label>'"),
    "wrong length": (HEADER + "1,2,3:a\n1,2:b\n", "Toy_TRAIN.ts:9: series of length 2, @seriesLength declares 3"),
    "channels vs header": (HEADER.replace("@univariate true", "@univariate false\n@dimensions 2")
                           + "1,2,3:a\n", "Toy_TRAIN.ts:9: 1 channel(s), the header declares 2"),
    "ragged channels": (HEADER.replace("@univariate true", "@univariate false\n@dimensions 2")
                        .replace("@equalLength true", "@equalLength false")
                        + "1,2,3:1,2:a\n", "Toy_TRAIN.ts:9: the channels of one case have different lengths"),
    "unknown tag": ("@problemName Toy\n@colour blue\n", "Toy_TRAIN.ts:2: unknown header tag @colour"),
    "timestamps": ("@timeStamps true\n", "Toy_TRAIN.ts:1: timestamped series"),
    "no classLabel": ("@problemName Toy\n@data\n1,2:a\n", "Toy_TRAIN.ts:2: @data before @classLabel"),
    "regression": ("@targetLabel true\n", "Toy_TRAIN.ts:1: @targetLabel"),
    "bad bool": ("@missing maybe\n", "Toy_TRAIN.ts:1: @missing must be true or false"),
    "bad length tag": ("@seriesLength -4\n", "Toy_TRAIN.ts:1: @seriesLength must be a positive integer"),
    "data before header": ("1,2,3:a\n", "Toy_TRAIN.ts:1: expected a @tag header line"),
    "tag after data": (HEADER + "1,2,3:a\n@data\n", "Toy_TRAIN.ts:9: header tag '@data' after @data"),
    "no data line": ("@problemName Toy\n@classLabel true a\n", "Toy_TRAIN.ts: no @data line"),
    "no cases": (HEADER, "Toy_TRAIN.ts: no cases after @data"),
    "duplicate labels": ("@classLabel true a a\n", "Toy_TRAIN.ts:1: @classLabel true needs distinct labels"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_malformed_files_give_one_line_file_line_errors(tmp_path, case):
    text, message = BROKEN[case]
    write(tmp_path, text)
    with pytest.raises(DataError) as info:
        UCRArchive(split="train", name="Toy", path=str(tmp_path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    (tmp_path / "Toy_TRAIN.ts").write_bytes(("\ufeff" + HEADER + "1,2,3:a\n4,5,6:b\n").replace("\n", "\r\n")
                                            .encode("utf-8"))
    (tmp_path / "Toy_TEST.ts").write_text(HEADER + "1,2,3:b\n", encoding="utf-8")
    train = UCRArchive(split="train", name="Toy", path=str(tmp_path))
    assert train.labels.tolist() == [0, 1] and train.series[1][:, 0].tolist() == [4.0, 5.0, 6.0]


def test_binary_file_and_missing_folder(tmp_path):
    (tmp_path / "Toy_TRAIN.ts").write_bytes(b"\xff\xfe@\x00d\x00")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_ts(tmp_path / "Toy_TRAIN.ts")
    with pytest.raises(DataError, match="no such file"):
        UCRArchive(split="train", name="Toy", path=str(tmp_path / "nowhere"))


def test_test_labels_map_to_the_train_files_classes(tmp_path):
    (tmp_path / "Toy_TRAIN.ts").write_text(HEADER + "1,2,3:a\n1,2,3:b\n", encoding="utf-8")
    (tmp_path / "Toy_TEST.ts").write_text(HEADER.replace("true a b", "true b a") + "1,2,3:b\n", encoding="utf-8")
    test = UCRArchive(split="test", name="Toy", path=str(tmp_path))
    assert test.class_labels == ["a", "b"] and test.labels.tolist() == [1]


def test_a_name_that_is_a_path_is_refused():
    with pytest.raises(ValueError, match="data-set name"):
        UCRArchive(split="train", name="../etc")


@needs_aeon
@pytest.mark.slow
def test_s4d_learns_italy_power_demand():
    """A small S4D trained briefly on ItalyPowerDemand (24-step series, 2 classes) beats the majority class."""
    from panconv_sequence.models.layers import SequenceClsHead
    from panconv_sequence.models.s4 import S4D

    torch.manual_seed(0)
    train, test = UCRArchive(split="train", name="ItalyPowerDemand"), UCRArchive(split="test", name="ItalyPowerDemand")
    backbone = S4D(d_model=16, n_layers=2, d_state=16, in_channels=1)
    head = SequenceClsHead(backbone.feature_info, num_classes=2)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=0.01)
    batch = train.collate([train[i] for i in range(len(train))])
    for _ in range(60):
        loss = head.loss(head(backbone(batch["inputs"])), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    everything = test.collate([test[i] for i in range(len(test))])
    with torch.no_grad():
        accuracy = (head(backbone(everything["inputs"])).argmax(-1) == everything["labels"]).float().mean().item()
    majority = everything["labels"].bincount().max().item() / len(test)
    assert accuracy > majority + 0.2, (accuracy, majority)
