"""Registrations of panconv-graph (lazy targets: importing this module imports no torch)."""

from panconv import hookimpl


@hookimpl
def panconv_register_models(register):
    register("LightGCN", "panconv_graph.models.lightgcn:LightGCN", kind="model",
             doc="LightGCN (He et al., SIGIR 2020): linear propagation on the normalised user-item graph")
    register("NGCF", "panconv_graph.models.ngcf:NGCF", kind="model",
             doc="NGCF (Wang et al., SIGIR 2019): graph propagation with feature transforms and LeakyReLU")
    register("MF", "panconv_graph.models.mf:MF", kind="model",
             doc="MF-BPR (Rendle et al., UAI 2009): matrix factorisation trained with the BPR loss")
    register("HyperFormer", "panconv_graph.models.hyperformer:HyperFormer", kind="model",
             doc="HyperFormer (Hu et al., CIKM 2023): hyper-relational KG completion, neighbour/qualifier "
                 "aggregators, convolutional bidirectional interaction, MoE Transformer, 1-N scoring")
    register("PoseTGCN", "panconv_graph.models.pose_tgcn:PoseTGCN", kind="model",
             doc="Pose-TGCN (Li et al., WACV 2020, WLASL): keypoint trajectories as node features, residual "
                 "graph-convolution blocks with a learnable adjacency")
    register("PoseTGCN_wlasl", "panconv_graph.models.pose_tgcn:PoseTGCN", kind="model",
             args=dict(num_keypoints=55, num_frames=50, hidden=64, num_stages=20, dropout=0.3),
             doc="Pose-TGCN, the official WLASL configuration: 55 upper-body and hand keypoints, 50 frames, "
                 "64 hidden features, 20 residual blocks, dropout 0.3 (code/TGCN/configs/asl300.ini)")
    register("PoseGRU", "panconv_graph.models.pose_tgcn:PoseGRU", kind="model",
             doc="Pose-GRU (WLASL baseline): a 2-layer GRU over the per-frame keypoint coordinates")


@hookimpl
def panconv_register_datasets(register):
    register("RecSysData", "panconv_graph.datasets.recsys:RecSysData",
             doc="implicit-feedback data in the LightGCN/NGCF format (gowalla, ml-1m, lastfm); BPR triples")
    register("KGFacts", "panconv_graph.datasets.kg:KGFacts",
             doc="link-prediction queries over KG triples / hyper-relational facts (Nations, Kinships, UMLS "
                 "from the pykeen wheel; a seeded synthetic hyper-relational generator)")
    register("SkeletonGestures", "panconv_graph.datasets.skeletons:SkeletonGestures",
             doc="seeded synthetic sign-like skeleton gestures (55 keypoints x T frames), or keypoints from .npz")


@hookimpl
def panconv_register_evaluators(register):
    register("FullRanking", "panconv_graph.evaluators.ranking:FullRanking",
             doc="full-ranking Recall/NDCG/Precision/HitRate@K over all items not seen in training")
    register("LinkPrediction", "panconv_graph.evaluators.kg:LinkPrediction",
             doc="filtered MRR, MR and Hits@K of the answer entity over all entities")


@hookimpl
def panconv_register_kernels(register):
    register("spmm_sym", "panconv_graph.kernels.spmm:spmm_sym",
             doc="sparse(symmetric) x dense product whose backward reuses the matrix (A^T = A)")
