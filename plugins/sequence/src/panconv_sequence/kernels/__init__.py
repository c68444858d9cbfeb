"""Kernels of the sequence plugin: ``sequence.fftconv`` (long convolution by FFT, Triton)."""
