"""Kernels of panconv-pointcloud (PyTorch reference + Triton)."""
