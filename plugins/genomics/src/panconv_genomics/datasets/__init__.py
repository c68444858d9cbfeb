"""Datasets of panconv-genomics."""
