"""What panconv-education registers (lazy "module:attr" strings: importing this module imports no torch)."""

from panconv import hookimpl

_M = "panconv_education.models"


@hookimpl
def panconv_register_models(register):
    register("CAKT", f"{_M}.cakt:CAKT", kind="model",
             doc="CAKT (Yang et al., 2020): last k same-skill interactions as H x H frames with learnable time "
                 "decay into a 3D-conv residual net, gated with an LSTM over the history, a second LSTM")
    register("DKT", f"{_M}.dkt:DKT", kind="model",
             doc="DKT (Piech et al., NeurIPS 2015): an LSTM over the interactions, a sigmoid per skill")
    register("DKVMN", f"{_M}.dkvmn:DKVMN", kind="model",
             doc="DKVMN (Zhang et al., WWW 2017): static key memory, per-student value memory, "
                 "softmax-attention read, erase/add write")
    register("SAKT", f"{_M}.sakt:SAKT", kind="model",
             doc="SAKT (Pandey & Karypis, EDM 2019): next exercise attends (causally) to past interactions")


@hookimpl
def panconv_register_datasets(register):
    register("KnowledgeTracing", "panconv_education.datasets.knowledge_tracing:KnowledgeTracing",
             doc="the 3-line knowledge-tracing benchmarks (assist2009_updated, assist2015, STATICS, synthetic-5): "
                 "validated, windowed to max_len, seeded validation split from train")


@hookimpl
def panconv_register_evaluators(register):
    register("KTMetrics", "panconv_education.evaluators.kt_metrics:KTMetrics",
             doc="exact AUC (average ranks for ties) and accuracy over every predicted next answer")
