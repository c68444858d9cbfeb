"""The data sets of panconv-lenet."""
