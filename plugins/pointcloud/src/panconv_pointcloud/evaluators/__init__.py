"""Evaluators of panconv-pointcloud."""
