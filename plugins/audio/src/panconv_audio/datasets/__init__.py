"""panconv-audio datasets."""
