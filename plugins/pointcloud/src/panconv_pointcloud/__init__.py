"""panconv-pointcloud: FlatFormer (flattened window attention) for LiDAR segmentation and detection;
open3d point-cloud I/O."""
