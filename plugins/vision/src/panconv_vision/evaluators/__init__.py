"""Vision evaluators (none yet: classifiers use core.Accuracy)."""
