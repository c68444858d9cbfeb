"""panconv-vision: image backbones, classifier/FPN composition, Eigen-CAM and digit data sets."""

__version__ = "0.1.0"
