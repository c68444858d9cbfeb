"""Models of panconv-pointcloud: one file per model family; shared blocks in layers.py."""
