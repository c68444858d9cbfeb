"""Evaluators of panconv-genomics."""
