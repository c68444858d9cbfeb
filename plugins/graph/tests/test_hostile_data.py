"""Hostile data files for ``graph.RecSysData`` (issue 11): every one is a one-line ``DataError``
naming ``file:line``, quickly (each case under a timeout), never a hang, a Python error or an
allocation sized by a crafted id. The files are generated here, nothing is committed."""

import gzip
import re

import pytest

from panconv.errors import DataError
from panconv_graph.datasets import recsys
from panconv_graph.datasets.recsys import ID_FLOOR, RecSysData

BIG = 5_000_000  # a 5 MB token

# name -> (train.txt bytes, pattern the message must match after "<folder>/train.txt")
CASES = {
    # negative sampling: a user who has seen every item has no negative (looped forever before)
    "user_saw_every_item": (b"0 0 1 2\n1 0\n2 1\n",
                            r"train\.txt:1: user 0 has interacted with every one of the 3 items, so BPR cannot"),
    "second_user_saw_every_item": (b"0 0\n1 2 1 0\n2 1\n", r"train\.txt:2: user 1 has interacted with every one"),
    # encodings and binary files (UnicodeDecodeError before)
    "utf16_le_bom": ("0 1 2\n1 2 3\n".encode("utf-16"), r"train\.txt:1: UTF-16 text \(byte-order mark fffe\)"),
    "utf16_be_bom": (b"\xfe\xff" + "0 1 2\n1 2 3\n".encode("utf-16-be"),
                     r"train\.txt:1: UTF-16 text \(byte-order mark feff\)"),
    "utf16_without_bom": ("0 1 2\n".encode("utf-16-le"), r"train\.txt:1: binary data \(NUL byte at offset 1\)"),
    "latin1": ("0 1 2\n1 2 3\n2 caf\xe9\n".encode("latin-1"),
               r"train\.txt:3: not UTF-8 text \(byte 0xe9 at offset 17\)"),
    "random_bytes": (bytes(range(1, 256)) * 64, r"train\.txt:2: not UTF-8 text \(byte 0x80 at offset 127\)"),
    "nul_in_third_line": (b"0 1\n1 2\n2 \x003\n", r"train\.txt:3: binary data \(NUL byte at offset 10\)"),
    "gzip_archive": (gzip.compress(b"0 1 2\n" * 50, mtime=0), r"train\.txt:1: binary data"),
    # an empty training split (ZeroDivisionError downstream before)
    "no_interactions": (b"0\n1\n2\n", r"train\.txt:1: no training interactions"),
    "empty_file": (b"", r"train\.txt:1: file has no records"),
    "only_blank_lines": (b"\n \n\t\n", r"train\.txt:1: file has no records"),
    # ids that str.isdigit() accepts but int() refuses, or int() accepts but are not ASCII ids
    "double_minus": (b"0 1 2\n1 --5\n", r"train\.txt:2: '--5' is not an integer id"),
    "superscript_two": ("0 1 2\n1 \u00b2\n".encode(), r"train\.txt:2: '\u00b2' is not an integer id"),
    "arabic_indic_digit": ("0 1 2\n1 \u0663\n".encode(), r"train\.txt:2: '\u0663' is not an integer id"),
    "fullwidth_digit": ("0 1 2\n\uff11 2\n".encode(), r"train\.txt:2: '\uff11' is not an integer id"),
    "plus_sign": (b"0 +1\n", r"train\.txt:1: '\+1' is not an integer id"),
    "underscore_digits": (b"0 1_000\n", r"train\.txt:1: '1_000' is not an integer id"),
    "vertical_tab": (b"0 1\x0b2\n", r"train\.txt:1: '1\\x0b2' is not an integer id"),
    "unicode_space": ("0 1\u20032\n".encode(), r"train\.txt:1: '1\\u20032' is not an integer id"),
    "float_id": (b"0 1e3\n", r"train\.txt:1: '1e3' is not an integer id"),
    # ids out of range (OverflowError; a 7 TiB allocation for 10^12 before)
    "int64_overflow": (b"0 1 2\n1 9223372036854775808\n", r"train\.txt:2: id 9223372036854775808 is too large"),
    "five_thousand_digits": (b"0 1\n1 " + b"9" * 5000 + b"\n",
                             r"train\.txt:2: id 9{40}\.\.\. \(5000 digits\) is too large"),
    "item_id_10e12": (b"0 1 2\n1 1000000000000\n", r"train\.txt:2: item id 1000000000000 is out of range: the data "
                                                   r"set's 7 ids justify ids up to 1048576"),
    "user_id_above_floor": (b"0 1\n5000000 2\n", r"train\.txt:2: user id 5000000 is out of range"),
    "negative_id": (b"0 1\n1 -7\n", r"train\.txt:2: negative id -7; ids must be 0-based"),
    # megabyte tokens are cut in the message
    "five_megabyte_token": (b"0 1 2\n1 " + b"x" * BIG + b"\n",
                            r"train\.txt:2: 'x{40}'\.\.\. \(5000000 characters\) is not an integer id"),
    "five_megabyte_negative": (b"0 -" + b"1" * BIG + b"\n",
                               r"train\.txt:1: negative id -1{39}\.\.\. \(5000001 digits\)"),
    "five_megabyte_line_of_spaces_then_junk": (b"0 1" + b" " * BIG + b"?\n", r"train\.txt:1: '\?' is not an integer"),
}


def write(tmp_path, train: bytes, test: bytes = b"0 2\n", name="hostile"):
    folder = tmp_path / "recsys" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_bytes(train)
    (folder / "test.txt").write_bytes(test)
    return {"root": tmp_path, "name": name}


def check_one_line(exc: DataError, limit: int = 400) -> str:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message[:limit]
    assert len(message) < limit, f"{len(message)} characters: {message[:limit]}"
    return message


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("split", ["train", "test"])
def test_hostile_training_file(tmp_path, case, split):
    data, pattern = CASES[case]
    kwargs = write(tmp_path, data)
    if case.endswith("every_item") and split == "test":
        RecSysData(split="test", **kwargs)  # ranking such a user is fine; only BPR sampling needs a negative
        return
    with pytest.raises(DataError) as info:
        RecSysData(split=split, **kwargs)
    message = check_one_line(info.value)
    assert str(tmp_path / "recsys" / "hostile") in message
    assert re.search(pattern, message), message


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case, pattern", [
    ("utf16_le_bom", r"test\.txt:1: UTF-16 text"),
    ("latin1", r"test\.txt:3: not UTF-8 text"),
    ("double_minus", r"test\.txt:2: '--5' is not an integer id"),
    ("int64_overflow", r"test\.txt:2: id 9223372036854775808 is too large"),
    ("item_id_10e12", r"test\.txt:2: item id 1000000000000 is out of range: the data set's 10 ids"),
    ("five_megabyte_token", r"test\.txt:2: 'x{40}'\.\.\. \(5000000 characters\)"),
])
def test_hostile_evaluation_file(tmp_path, case, pattern):
    """The same defects in test.txt are reported against test.txt, from every split (all files are read)."""
    kwargs = write(tmp_path, b"0 0 1\n1 1\n", test=CASES[case][0])
    for split in ("train", "test"):
        with pytest.raises(DataError, match=pattern) as info:
            RecSysData(split=split, **kwargs)
        check_one_line(info.value)


@pytest.mark.timeout(20)
def test_evaluation_split_without_users_to_rank(tmp_path):
    # user 2 is cold (no training items), user 0 has no held-out item
    kwargs = write(tmp_path, b"0 0\n1 1\n", test=b"0\n2 1\n")
    with pytest.raises(DataError, match=r"test\.txt:1: no user to evaluate \(1 listed without held-out items, "
                                        r"1 without training interactions\)"):
        RecSysData(split="test", **kwargs)
    RecSysData(split="train", **kwargs)  # training does not read held-out users


@pytest.mark.timeout(20)
def test_a_user_with_every_item_but_one_still_samples(tmp_path):
    ds = RecSysData(split="train", **write(tmp_path, b"0 0 1 2\n1 0\n", test=b"0 3\n"))
    ds.set_epoch(0)
    negatives = ds.samples[ds.samples[:, 0] == 0, 2]
    assert len(negatives) and set(negatives.tolist()) == {3}


@pytest.mark.timeout(20)
def test_tolerated_variants_parse_like_the_plain_file(tmp_path):
    plain = b"0 1 2\n1 0\n2 2 3\n"
    expected = RecSysData(split="train", **write(tmp_path, plain, name="plain"))
    variants = {
        "crlf": plain.replace(b"\n", b"\r\n"),
        "cr": plain.replace(b"\n", b"\r"),
        "utf8_bom": b"\xef\xbb\xbf" + plain,
        "tabs_and_padding": b"0\t1  2 \n 1 0\n2\t2\t3\n\n\n",
        "leading_zeros": b"0 " + b"0" * 5000 + b"1 002\n1 0\n2 2 3\n",
    }
    for name, text in variants.items():
        ds = RecSysData(split="train", **write(tmp_path, text, name=name))
        assert ds.metadata == expected.metadata, name
        assert ds.train_items.tolist() == expected.train_items.tolist(), name
        assert ds.train_offsets.tolist() == expected.train_offsets.tolist(), name


@pytest.mark.timeout(20)
def test_id_range_is_relative_to_the_data(tmp_path):
    # the floor: any id up to ID_FLOOR is accepted, whatever the file's size
    ds = RecSysData(split="train", **write(tmp_path, f"0 1\n1 {ID_FLOOR}\n".encode(), name="floor"))
    assert ds.n_items == ID_FLOOR + 1
    with pytest.raises(DataError, match=rf"item id {ID_FLOOR + 1} is out of range"):
        RecSysData(split="train", **write(tmp_path, f"0 1\n1 {ID_FLOOR + 1}\n".encode(), name="above"))
    # above the floor, the data set's size justifies the range: ID_SLACK ids of room per id in the files
    n = ID_FLOOR // recsys.ID_SLACK // 2 + 1  # lines of "u u" -> 2n ids in train.txt, + 2 in test.txt
    lines = "".join(f"{u} {u}\n" for u in range(n))
    limit = recsys.id_limit(2 * n + 2 + 2)  # + the last line + test.txt's "0 2"
    assert limit > ID_FLOOR
    ok = RecSysData(split="train", **write(tmp_path, (lines + f"{n} {limit}\n").encode(), name="justified"))
    assert ok.n_items == limit + 1
    with pytest.raises(DataError, match=rf"item id {limit + 1} is out of range"):
        RecSysData(split="train", **write(tmp_path, (lines + f"{n} {limit + 1}\n").encode(), name="unjustified"))
