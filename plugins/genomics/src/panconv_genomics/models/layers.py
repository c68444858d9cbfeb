"""Building blocks the model files of panconv-genomics share."""
