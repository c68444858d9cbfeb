"""panconv-audio models."""
