"""Kernels: none yet. The models are small recurrent / attention / 3D-conv networks that run on
PyTorch's own operators; a kernel (a fused DKVMN memory update, say) would be registered here."""
