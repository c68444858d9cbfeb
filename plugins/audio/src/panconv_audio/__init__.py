"""panconv-audio: speech recognition (Squeezeformer, Conformer + CTC), speech separation
(MossFormer) and convolutional mixture-of-experts classification on real recorded speech.

Components are registered lazily by :mod:`panconv_audio.plugin`; importing this package
imports no torch.
"""

__version__ = "0.1.0"
