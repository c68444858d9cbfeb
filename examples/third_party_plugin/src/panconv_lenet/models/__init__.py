"""The models of panconv-lenet: one file per model family, shared blocks in ``layers.py``."""
