import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test runs on one torch thread (panconv.testing's fixture): the CI machines are shared."""
