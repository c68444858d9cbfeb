"""Exceptions with one-line messages a person can act on.

Every error panconv raises on bad input derives from :class:`PanconvError`; the CLI prints
its message on one line (the traceback only with ``--debug``).
"""

from __future__ import annotations


class PanconvError(Exception):
    """Base class: the message is one line saying what, where and what to do."""


class ConfigError(PanconvError):
    """A config file or override is malformed, or names something that does not fit."""


class UnknownComponentError(PanconvError, KeyError):
    """A name was looked up in a registry and not found (or is ambiguous)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AmbiguousNameError(UnknownComponentError):
    """A short name matches components of several plugins; the message lists them."""


class DuplicateComponentError(PanconvError):
    """Two sources registered the same qualified name."""


class PluginError(PanconvError):
    """A plugin failed to load or broke the contract (raised under ``--strict``)."""


class CheckpointError(PanconvError):
    """A checkpoint is missing, corrupt, or carries objects outside the allow-list."""


class DataError(PanconvError):
    """A data file is missing or malformed (the message names the file and line)."""
