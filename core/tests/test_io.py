"""panconv.io.load_array_pickle: numpy arrays load, anything that would run code is refused."""

import gzip
import os
import pickle

import numpy as np
import pytest

from panconv.errors import DataError
from panconv.io import load_array_pickle


class _Payload:
    def __reduce__(self):
        return os.system, ("true",)


def test_arrays_in_containers_load_plain_and_gzipped(tmp_path):
    data = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])), [np.float64(3.5)])
    for name, opener in (("a.pkl", open), ("a.pkl.gz", gzip.open)):
        with opener(tmp_path / name, "wb") as f:
            pickle.dump(data, f)
        loaded = load_array_pickle(tmp_path / name)
        assert np.array_equal(loaded[0][0], data[0][0]) and loaded[1][0] == 3.5


@pytest.mark.parametrize("case", ["code", "truncated", "missing"])
def test_what_is_not_plain_arrays_is_a_one_line_data_error(tmp_path, case):
    path = tmp_path / "bad.pkl.gz"
    if case == "code":
        path.write_bytes(gzip.compress(pickle.dumps(_Payload())))
    elif case == "truncated":
        path.write_bytes(gzip.compress(pickle.dumps(np.zeros(1000)))[:40])
    with pytest.raises(DataError) as info:
        load_array_pickle(path, "test file")
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable test file: ") and "\n" not in message
    if case == "code":
        assert "refusing to load posix.system" in message or "refusing to load os.system" in message
