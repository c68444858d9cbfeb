"""panconv-audio evaluators."""
