"""Sequence evaluators: accuracy, bits per byte / perplexity."""
