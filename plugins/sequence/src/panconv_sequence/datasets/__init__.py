"""Sequence data sets: sequential MNIST, generated long-range tasks, time series, byte-level text."""
