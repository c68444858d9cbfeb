"""Vision kernels (none yet: the backbones use PyTorch operators only)."""
