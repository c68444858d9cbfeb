"""Models of panconv-genomics: one file per model family; shared blocks in layers.py."""
