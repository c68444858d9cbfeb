"""Kernels of panconv-documents (PyTorch reference + Triton)."""
