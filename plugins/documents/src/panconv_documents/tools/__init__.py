"""Implementations of the CLI subcommands panconv-documents adds (``panconv tables``)."""
