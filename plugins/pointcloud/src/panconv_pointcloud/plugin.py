"""What panconv-pointcloud registers: lazy "module:attr" strings, so listing imports no torch."""

from panconv import hookimpl

_M = "panconv_pointcloud.models"
_D = "panconv_pointcloud.datasets"
_E = "panconv_pointcloud.evaluators"


@hookimpl
def panconv_register_models(register):
    register("FlatFormer", f"{_M}.flatformer:FlatFormer", kind="backbone",
             doc="FlatFormer (Liu et al. CVPR 2023): dynamic pillars + VFE, window-based sorting, equal-size "
                 "groups, group attention alternating x/y sort with shifted windows; per-point and BEV outputs")
    register("flatformer_waymo", f"{_M}.flatformer:FlatFormer", kind="backbone",
             args=dict(in_channels=5, point_cloud_range=(-74.88, -74.88, -2.0, 74.88, 74.88, 4.0),
                       voxel_size=(0.32, 0.32, 6.0), vfe_channels=(64, 128), num_heads=8, num_blocks=2,
                       window_shape=(13, 13), group_size=144),
             doc="FlatFormer as the official Waymo config flatformer_waymo_D1_2x_3class.py (voxel 0.32 m, "
                 "window 13x13, group 144, 8 heads, 128 channels, 2 blocks of 4 layers): 1.08M params (VFE + "
                 "transformer, without SECOND/FPN/head)")
    register("PointMLP", f"{_M}.pointnet:PointMLP", kind="backbone",
             doc="PointNet-style per-point shared MLP + global max-pool feature (Qi et al. 2017, no T-Nets): "
                 "the per-point segmentation baseline")
    register("UniRepLKNetPoints", f"{_M}.unireplknet_points:UniRepLKNetPoints", kind="backbone",
             doc="UniRepLKNet's point-cloud pathway (Ding et al. CVPR 2024): point encodings max-pooled into a "
                 "top-view 2-D map -> panconv-vision's UniRepLKNet -> every stage sampled back at each point")
    register("UniRepLKNetP2P", f"{_M}.unireplknet_points:UniRepLKNetP2P", kind="backbone",
             doc="UniRepLKNet's official point pathway (P2P projection, AILab-CVC/UniRepLKNet Point/): official "
                 "views, kNN edge-conv point encoding scattered into 3x3 pixel footprints, multi-view attention "
                 "fusion -> image -> panconv-vision's UniRepLKNet -> every stage read back at each point")
    register("unireplknet_s_p2p", f"{_M}.unireplknet_points:UniRepLKNetP2P", kind="backbone",
             args=dict(views=4, local_size=32, trans_dim=8, graph_dim=64, obj_size=224, img_size=224,
                       atten_fusion=True, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), drop_path_rate=0.4),
             doc="UniRepLKNetP2P as the official ModelNet40 config multiview_UniRepLKNet-S.yaml (UniRepLKNet-S, "
                 "4 views, k 32, 224 px, attention fusion): 56.84M params (without the PoolingClsHead)")
    register("SECONDFPN", f"{_M}.layers:SECONDFPN", kind="neck",
             doc="SECOND 2-D BEV backbone (residual) + SECONDFPN neck, as FlatFormer's Waymo detector")
    register("PointSegHead", f"{_M}.layers:PointSegHead", kind="head",
             doc="per-point classifier (shared MLP) with cross-entropy ignoring label -1; predicts (B, N, K)")
    register("CenterHead", f"{_M}.centerpoint:CenterHead", kind="head",
             doc="CenterPoint head: Gaussian class heat maps (focal loss), centre offset / height / log size / "
                 "sin-cos yaw regression (L1); decodes (B, max_det, 9) boxes")


@hookimpl
def panconv_register_datasets(register):
    register("CGALLiDAR", f"{_D}.cgal:CGALLiDAR",
             doc="Labelled airborne LiDAR tiles (CGAL b9_training.ply from Debian libcgal-demo: ground / "
                 "vegetation / roof; or any labelled PLY/PCD/LAS), seeded train/val/test split of tiles")
    register("DetectionScenes", f"{_D}.scenes:DetectionScenes",
             doc="Seeded LiDAR detection scenes: tilted ground, cars / pedestrians / cyclists, 32-beam ring "
                 "sampling with exact first-hit occlusion; exact boxes")


@hookimpl
def panconv_register_evaluators(register):
    register("MeanIoU", f"{_E}.segmentation:MeanIoU",
             doc="per-point segmentation: mIoU, accuracy and per-class IoU (label -1 ignored), DDP-mergeable")
    register("DetectionAP", f"{_E}.detection:DetectionAP",
             doc="3-D detection: BEV and 3-D AP per class at IoU thresholds (rotated IoU by polygon clipping), mAP")


@hookimpl
def panconv_register_kernels(register):
    register("flat_group_attention", "panconv_pointcloud.kernels.flat_group_attention:flat_group_attention",
             doc="FlatFormer's sort -> equal-size groups -> attention -> scatter: SDPA reference, fused Triton")
