"""Kernels: ``graph.spmm_sym`` and the LightGCN propagation (``spmm.py``)."""
