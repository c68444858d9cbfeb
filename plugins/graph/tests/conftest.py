import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test runs on one torch thread (panconv.testing's fixture): the CI machines are shared."""


@pytest.fixture(scope="session")
def data_root(shared_data):
    """The shared data folder, when it holds the recommendation data sets (else the test is skipped)."""
    if not (shared_data / "recsys").is_dir():
        pytest.skip(f"no recsys/ in {shared_data}")
    return shared_data
