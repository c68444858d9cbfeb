"""Evaluators of panconv-documents."""
