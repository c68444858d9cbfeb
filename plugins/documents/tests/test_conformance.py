"""The panconv conformance kit on every component panconv-documents registers."""

from panconv.testing.pytest_plugin import test_conformance  # noqa: F401

PANCONV_PLUGIN = "documents"
