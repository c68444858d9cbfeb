"""Hostile and malformed files for ``education.KnowledgeTracing``: every one is a one-line ``DataError``
naming ``file:line``, quickly (each case under a timeout), never a hang, a Python error or an allocation
sized by a crafted id. The files are generated here, nothing is committed."""

import gzip
import re

import pytest

from panconv.errors import DataError
from panconv_education.datasets.knowledge_tracing import MAX_SKILLS, KnowledgeTracing

BIG = 5_000_000  # a 5 MB token
GOOD = b"3\n1,2,3\n1,0,1\n"

# name -> (train.csv bytes, pattern the message must match after "<folder>/train.csv")
CASES = {
    # counts that disagree with the ids or responses
    "fewer_ids_than_count": (b"4\n1,2,3\n1,0,1\n", r"train\.csv:2: 3 skill ids, but line 1 counts 4 answers"),
    "more_responses_than_count": (GOOD + b"2\n1,2\n1,0,1\n", r"train\.csv:6: 3 responses, but line 4 counts 2"),
    "count_not_integer": (b"three\n1,2,3\n1,0,1\n", r"train\.csv:1: 'three' is not a count of answers"),
    "count_negative": (b"-3\n1,2,3\n1,0,1\n", r"train\.csv:1: '-3' is not a count of answers"),
    "count_huge": (b"9" * 5000 + b"\n1\n1\n", r"train\.csv:1: count '9{40}'\.\.\. \(5000 characters\) is too large"),
    "record_cut_short": (GOOD + b"2\n1,2\n", r"train\.csv:5: the record that starts at line 4 has no responses line"),
    "record_only_count": (GOOD + b"2\n", r"train\.csv:4: the record that starts at line 4 has no skill ids"),
    # ids: not integers, out of range
    "float_id": (b"2\n1,2.5\n1,0\n", r"train\.csv:2: '2\.5' is not an integer skill id"),
    "word_id": (b"2\n1,abc\n1,0\n", r"train\.csv:2: 'abc' is not an integer skill id"),
    "empty_id": (b"3\n1,,3\n1,0,1\n", r"train\.csv:2: '' is not an integer skill id"),
    "superscript_id": ("2\n1,\u00b2\n1,0\n".encode(), r"train\.csv:2: '\u00b2' is not an integer skill id"),
    "fullwidth_id": ("2\n1,\uff11\n1,0\n".encode(), r"train\.csv:2: '\uff11' is not an integer skill id"),
    "negative_id": (b"2\n1,-4\n1,0\n", r"train\.csv:2: negative skill id '-4'"),
    "zero_id": (b"2\n1,0\n1,0\n", r"train\.csv:2: skill id 0 \(answer 2\) is out of range 1\.\.100000"),
    "id_above_limit": (f"2\n1,{MAX_SKILLS + 1}\n1,0\n".encode(),
                       rf"train\.csv:2: skill id {MAX_SKILLS + 1} \(answer 2\) is out of range"),
    "id_10e12": (b"2\n1,1000000000000\n1,0\n", r"train\.csv:2: skill id '1000000000000' is too large"),
    "id_5000_digits": (b"2\n1," + b"9" * 5000 + b"\n1,0\n", r"train\.csv:2: skill id '9{40}'\.\.\. \(5000 char"),
    "five_megabyte_token": (b"2\n1," + b"x" * BIG + b"\n1,0\n", r"train\.csv:2: 'x{40}'\.\.\. \(5000000 characters\)"),
    # responses other than 0/1
    "response_two": (b"3\n1,2,3\n1,0,2\n", r"train\.csv:3: response 2 \(answer 3\) is not 0 or 1"),
    "response_word": (b"2\n1,2\n1,yes\n", r"train\.csv:3: 'yes' is not an integer response"),
    "response_negative": (b"2\n1,2\n1,-1\n", r"train\.csv:3: negative response '-1'"),
    # encodings, binary and empty files
    "utf16_bom": ("3\n1,2,3\n1,0,1\n".encode("utf-16"), r"train\.csv:1: UTF-16 text \(byte-order mark fffe\)"),
    "latin1": ("3\n1,2,3\n1,0,1\n1\ncaf\xe9\n1\n".encode("latin-1"), r"train\.csv:5: not UTF-8 text \(byte 0xe9"),
    "random_bytes": (bytes(range(1, 256)) * 64, r"train\.csv:\d+: not UTF-8 text"),
    "nul_byte": (b"3\n1,2,3\n1,\x000,1\n", r"train\.csv:3: binary data \(NUL byte at offset 10\)"),
    "gzip_archive": (gzip.compress(GOOD * 50, mtime=0), r"train\.csv:1: (binary data|not UTF-8)"),
    "empty_file": (b"", r"train\.csv:1: empty file"),
    "only_blank_lines": (b"\n \n\t\n", r"train\.csv:1: empty file"),
}


def _write(tmp_path, train: bytes, test: bytes = GOOD):
    folder = tmp_path / "knowledge-tracing" / "hostile"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_bytes(train)
    (folder / "test.csv").write_bytes(test)
    return folder


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_one_line_data_error(tmp_path, case):
    data, pattern = CASES[case]
    folder = _write(tmp_path, data)
    with pytest.raises(DataError) as info:
        KnowledgeTracing(tmp_path, "train", name="hostile")
    message = str(info.value)
    assert "\n" not in message.strip(), message[:300]
    assert len(message) < 400, message[:300]
    assert re.search(re.escape(str(folder)) + "/" + pattern, message), message


@pytest.mark.timeout(30)
def test_ids_above_declared_num_skills(tmp_path):
    _write(tmp_path, b"3\n1,2,9\n1,0,1\n")
    with pytest.raises(DataError, match=r"train\.csv:2: skill id 9 \(answer 3\) is out of range 1\.\.5"):
        KnowledgeTracing(tmp_path, "train", name="hostile", num_skills=5)


@pytest.mark.timeout(30)
def test_the_test_file_is_checked_too(tmp_path):
    folder = _write(tmp_path, GOOD, test=b"2\n1,2\n1,3\n")
    with pytest.raises(DataError, match=re.escape(str(folder / "test.csv")) + r":3: response 3"):
        KnowledgeTracing(tmp_path, "train", name="hostile")


@pytest.mark.timeout(30)
def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"knowledge-tracing/nowhere/train\.csv: missing"):
        KnowledgeTracing(tmp_path, "train", name="nowhere")


@pytest.mark.timeout(30)
def test_tolerated_variants(tmp_path):
    """A BOM, CRLF line ends, trailing commas, spaces around tokens and blank lines at the end are fine."""
    _write(tmp_path, b"\xef\xbb\xbf3\r\n1, 2,3,\r\n1,0 ,1,\r\n2\r\n4,4\r\n0,1\r\n\r\n\r\n")
    data = KnowledgeTracing(tmp_path, "train", name="hostile", val_fraction=0.0)
    assert [s.tolist() for s in data.skills] == [[1, 2, 3], [4, 4]]
    assert [r.tolist() for r in data.responses] == [[1, 0, 1], [0, 1]]
    assert data.num_skills == 4


@pytest.mark.parametrize("kwargs", [{"max_len": 1}, {"min_len": 5, "max_len": 4}, {"val_fraction": 1.0},
                                    {"name": "../up"}, {"max_sequences": {"dev": 3}},
                                    {"max_sequences": {"train": 0}}, {"num_skills": 0}])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    _write(tmp_path, GOOD)
    with pytest.raises(ValueError):
        KnowledgeTracing(tmp_path, "train", **{"name": "hostile", **kwargs})
