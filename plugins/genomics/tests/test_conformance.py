"""The panconv conformance kit on every component panconv-genomics registers."""

from panconv.testing.pytest_plugin import test_conformance  # noqa: F401

PANCONV_PLUGIN = "genomics"
