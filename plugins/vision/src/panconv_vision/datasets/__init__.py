"""Vision data sets (imported lazily through the registry)."""
