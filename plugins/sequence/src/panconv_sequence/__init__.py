"""panconv-sequence: long-sequence models on one long-convolution core.

The public blocks other plugins build on (genomics' HyenaDNA on the Hyena operator) live in
:mod:`panconv_sequence.models.layers` and :mod:`panconv_sequence.kernels`.
"""

__version__ = "0.1.0"
