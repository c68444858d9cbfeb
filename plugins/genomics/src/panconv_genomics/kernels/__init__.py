"""Kernels of panconv-genomics (PyTorch reference + Triton)."""
