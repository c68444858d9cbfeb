"""What panconv-genomics registers: lazy "module:attr" strings, so listing imports no torch."""

from panconv import hookimpl

_M = "panconv_genomics.models"
_D = "panconv_genomics.datasets"

#: the published HyenaDNA checkpoints (HF LongSafari/hyenadna-*-seqlen config.json; the filter settings of
#: hyena-dna's configs/experiment/hg38/hg38_hyena.yaml are HyenaDNA's defaults): name -> (args, doc)
_HYENADNA = {
    "hyenadna_tiny_1k": (dict(d_model=128, n_layer=2, d_inner=512, l_max=1026),
                         "HyenaDNA tiny-1k: 2 layers, d_model 128, d_inner 512, 1k context; 436,096 params "
                         "(backbone = the official tied LM)"),
    "hyenadna_small_32k": (dict(d_model=256, n_layer=4, d_inner=1024, l_max=32_770),
                           "HyenaDNA small-32k: 4 layers, d_model 256, d_inner 1024, 32k context; 3,277,568 params"),
    "hyenadna_medium_160k": (dict(d_model=256, n_layer=8, d_inner=1024, l_max=160_002),
                             "HyenaDNA medium-160k: 8 layers, d_model 256, d_inner 1024, 160k context; "
                             "6,550,528 params"),
    "hyenadna_medium_450k": (dict(d_model=256, n_layer=8, d_inner=1024, l_max=450_002),
                             "HyenaDNA medium-450k: 8 layers, d_model 256, d_inner 1024, 450k context; "
                             "6,550,528 params"),
    "hyenadna_large_1m": (dict(d_model=256, n_layer=8, d_inner=1024, l_max=1_000_002),
                          "HyenaDNA large-1m: 8 layers, d_model 256, d_inner 1024, 1M context; 6,550,528 params"),
}


@hookimpl
def panconv_register_models(register):
    register("HyenaDNA", f"{_M}.hyenadna:HyenaDNA", kind="backbone",
             doc="HyenaDNA (Nguyen et al. NeurIPS 2023): decoder-only Hyena LM over single nucleotides "
                 "(sequence.HyenaOperator, order 2); returns [(N, d_model, L)]")
    for name, (args, doc) in _HYENADNA.items():
        register(name, f"{_M}.hyenadna:HyenaDNA", kind="backbone", args=args, doc=doc)
    register("HyenaDNALMHead", f"{_M}.hyenadna:HyenaDNALMHead", kind="head",
             doc="next-nucleotide logits (bias-free linear, the official LM head untied); cross-entropy on targets")
    # --- HyenaDNA LM with a tied/untied head (issue 14) ---
    register("HyenaDNALM", f"{_M}.hyenadna:HyenaDNALM", kind="model",
             doc="HyenaDNA language model as one component: backbone + LM head tied to the embedding "
                 "(tie_embeddings: true, the official default) or untied; logits over the padded vocabulary")
    for name, (args, doc) in _HYENADNA.items():
        register(f"{name}_lm", f"{_M}.hyenadna:HyenaDNALM", kind="model", args=args,
                 doc=doc.split(";")[0] + "; the official tied LM (tie_embeddings: false adds 16 x d_model)")
    # --- DiffPALM's MSA language model (issue 14) ---
    register("MSATransformer", f"{_M}.diffpalm:MSATransformer", kind="model",
             doc="small axial-attention MSA language model (row then column attention) for DiffPALM; masked-LM "
                 "loss on targets; takes soft one-hot rows for the pairing")


@hookimpl
def panconv_register_datasets(register):
    register("DNALanguageModel", f"{_D}.dna:DNALanguageModel",
             doc="next-nucleotide windows over packaged DNA (human chr17 segment, phage lambda, human transcripts, "
                 "genes); contiguous 80/10/10 ranges per source")
    register("SpeciesWindows", f"{_D}.dna:SpeciesWindows",
             doc="DNA windows labelled by species (human chr17 vs phage lambda by default), the LM's ranges")
    register("SpliceSites", f"{_D}.splice:SpliceSites",
             doc="human 5' splice-site 9-mers (logomaker wheel) vs genomic GT/GC decoys; seeded 80/10/10 split")
    # --- DiffPALM's Potts generator as a dataset (issue 14) ---
    register("PottsMSA", f"{_D}.potts:PottsMSA",
             doc="masked paired MSAs sampled from DiffPALM's seeded Potts model of two coupled families "
                 "(masked-LM training of genomics.MSATransformer)")


# --- the order-k Markov baseline as an evaluator (issue 14) ---
@hookimpl
def panconv_register_evaluators(register):
    register("MarkovPerplexity", "panconv_genomics.evaluators.markov:MarkovPerplexity",
             doc="perplexity of an order-k Markov chain (fitted on the DNA LM's training ranges, both strands) on "
                 "the positions the model is scored on: the classical baseline in the same run")


@hookimpl
def panconv_register_transforms(register):
    register("ReverseComplement", "panconv_genomics.transforms:ReverseComplement",
             doc="reverse-complement augmentation of a DNA sample (inputs, and LM targets consistently)")
    register("SeqLenWarmup", "panconv_genomics.transforms:SeqLenWarmup",
             doc="HyenaDNA's sequence-length warm-up: stage-wise shorter windows, same tokens per batch")
