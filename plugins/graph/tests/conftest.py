import pytest
import torch

from panconv.testing import shared_data_root


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root():
    root = shared_data_root()
    if root is None or not (root / "recsys").is_dir():
        pytest.skip("shared recsys data not found (set $PANCONV_DATA)")
    return root


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run only when selected explicitly (``-m slow``) or with PANCONV_RUN_SLOW=1."""
    import os

    if "slow" in (config.getoption("-m") or "") or os.environ.get("PANCONV_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
