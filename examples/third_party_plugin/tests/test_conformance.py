"""The panconv conformance kit on panconv-lenet."""

from panconv.testing.pytest_plugin import test_conformance  # noqa: F401

PANCONV_PLUGIN = "lenet"
