"""Models of panconv-documents: one file per model family; shared blocks in layers.py."""
