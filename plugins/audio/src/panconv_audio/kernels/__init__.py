"""panconv-audio kernels: none yet (the models run on PyTorch operators; a kernel registers here with
its reference implementation, see ``panconv.api.Kernel``)."""
