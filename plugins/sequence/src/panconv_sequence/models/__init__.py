"""Sequence models: one readable file per family; shared blocks in :mod:`.layers`."""
