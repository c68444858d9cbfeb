"""The kernels of panconv-lenet: none."""
