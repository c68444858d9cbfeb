"""The panconv conformance kit on every component of this plugin."""

from panconv.testing.pytest_plugin import test_conformance  # noqa: F401

PANCONV_PLUGIN = "graph"
