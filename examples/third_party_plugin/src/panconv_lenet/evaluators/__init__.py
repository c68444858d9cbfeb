"""The evaluators of panconv-lenet: none of its own (configs use core.Accuracy)."""
