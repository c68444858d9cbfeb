"""Datasets of panconv-pointcloud."""
