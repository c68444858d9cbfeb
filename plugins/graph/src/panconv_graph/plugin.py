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


@hookimpl
def panconv_register_datasets(register):
    register("RecSysData", "panconv_graph.datasets.recsys:RecSysData",
             doc="implicit-feedback data in the LightGCN/NGCF format (gowalla, ml-1m, lastfm); BPR triples")


@hookimpl
def panconv_register_evaluators(register):
    register("FullRanking", "panconv_graph.evaluators.ranking:FullRanking",
             doc="full-ranking Recall/NDCG/Precision/HitRate@K over all items not seen in training")


@hookimpl
def panconv_register_kernels(register):
    register("spmm_sym", "panconv_graph.kernels.spmm:spmm_sym",
             doc="sparse(symmetric) x dense product whose backward reuses the matrix (A^T = A)")
