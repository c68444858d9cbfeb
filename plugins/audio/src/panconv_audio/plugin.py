"""What panconv-audio registers (lazy import strings: importing this module imports no torch).

Size variants are data: ``args`` fixes the constructor arguments of the size; everything else keeps
the class's defaults and stays settable from a config.
"""

from panconv import hookimpl

_M = "panconv_audio.models"
_SQ = f"{_M}.squeezeformer:Squeezeformer"
_CONFORMER = f"{_M}.conformer:Conformer"
_MOSS = f"{_M}.mossformer:MossFormer"

# Squeezeformer (Kim et al., NeurIPS 2022), paper Table 7 and the official configurations
# (github.com/kssteven418/Squeezeformer, examples/squeezeformer/configs/squeezeformer-*.yml):
# layers / width / heads, Temporal U-Net reduce and recover indices (encoder_time_reduce_idx /
# encoder_time_recover_idx) and SpecAugment time masks. Dropout 0.1, no attention-weight dropout
# and the LayerNorm/BatchNorm epsilons and momentum are the class defaults, the same for every size.
# Parameters: Table 7's figures, which include the CTC decoder over the 128-token SentencePiece
# vocabulary (vocab_size=128); ours with it in brackets.
_SQUEEZEFORMER_SIZES = {
    "xs": (dict(d_model=144, num_layers=16, heads=4, reduce_idx=7, recover_idx=15, time_masks=5), "9.0M (9.03M)"),
    "s": (dict(d_model=196, num_layers=18, heads=4, reduce_idx=8, recover_idx=17, time_masks=5), "18.6M (18.57M)"),
    "sm": (dict(d_model=256, num_layers=16, heads=4, reduce_idx=7, recover_idx=15, time_masks=5), "28.2M (28.18M)"),
    "m": (dict(d_model=324, num_layers=20, heads=4, reduce_idx=9, recover_idx=19, time_masks=7), "55.6M (55.62M)"),
    "ml": (dict(d_model=512, num_layers=18, heads=8, reduce_idx=8, recover_idx=17, time_masks=10), "125.1M (125.03M)"),
    "l": (dict(d_model=640, num_layers=22, heads=8, reduce_idx=10, recover_idx=21, time_masks=10), "236.3M (236.25M)"),
}


@hookimpl
def panconv_register_models(register):
    register("Squeezeformer", _SQ,
             doc="Squeezeformer CTC speech recogniser (Temporal U-Net, MF/CF blocks, scaled post-LN)")
    for size, (args, params) in _SQUEEZEFORMER_SIZES.items():
        layers, dim, heads = args["num_layers"], args["d_model"], args["heads"]
        register(f"squeezeformer_{size}", _SQ, args=args,
                 doc=f"Squeezeformer-{size.upper()} (paper Table 7: {layers} layers, d={dim}, {heads} heads; "
                     f"{params} params with the paper's 128-token CTC decoder, vocab_size=128); U-Net "
                     f"reduce/recover before blocks {args['reduce_idx']}/{args['recover_idx']} as the official config")
    register("squeezeformer_nano", _SQ,
             args=dict(d_model=64, num_layers=6, heads=4, reduce_idx=3, recover_idx=5,
                       attn_dropout=0.1, norm_eps=1e-5, bn_eps=1e-5, bn_momentum=0.1),
             doc="Not in the paper: CPU-sized Squeezeformer for the examples (6 layers, d=64, 4 heads, U-Net "
                 "reduce/recover before blocks 3/5; PyTorch-default norm eps/momentum and attention dropout 0.1, "
                 "the values of the README's measured runs)")
    register("SqueezeformerEncoder", f"{_M}.squeezeformer:SqueezeformerEncoder", kind="backbone",
             doc="Squeezeformer encoder on log-mel features (N, F, T) -> [N, C, T/4]")
    register("Conformer", _CONFORMER,
             doc="torchaudio Conformer + the same subsampling/CTC head: the Squeezeformer baseline")
    register("conformer_xs", _CONFORMER, args=dict(d_model=144, num_layers=16, heads=4),
             doc="Conformer at Squeezeformer-XS's width/depth (16 layers, d=144, 4 heads); not a Conformer paper size")
    register("conformer_nano", _CONFORMER, args=dict(d_model=64, num_layers=6, heads=4),
             doc="Conformer at squeezeformer_nano's width/depth (6 layers, d=64, 4 heads)")
    # Convolution-based mixture of experts
    register("CMoE", f"{_M}.cmoe:CMoE",
             doc="Convolution-based mixture of experts classifier on spectrograms")
    # --- UniRepLKNet's audio pathway (issue 15) ---
    _ura = f"{_M}.unireplknet_audio:UniRepLKNetAudio"
    register("UniRepLKNetAudio", _ura, kind="backbone",
             doc="UniRepLKNet's audio pathway (Ding et al. CVPR 2024): filterbank padded/cropped to a fixed frame "
                 "count, read as a 1 x bins x frames image -> vision.UniRepLKNet")
    register("unireplknet_audio_speechcommands", _ura, kind="backbone",
             args=dict(n_mels=128, target_frames=128, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
             doc="UniRepLKNet-S on Speech Commands V2 as the official Audio/src/models/ast_models.py: 128-bin "
                 "Kaldi fbank, 128 frames, in_chans=1, default kernels")
    # MossFormer (Zhao & Ma, ICASSP 2023) speech separation
    register("MossFormer", _MOSS,
             doc="MossFormer monaural speech separation (gated single-head attention, conv modules)")
    paper = dict(encoder_dim=512, kernel_size=16, dim=512, depth=24, query_key_dim=128, group_size=256,
                 expansion_factor=4.0)
    register("mossformer_2spk", _MOSS, args=dict(num_speakers=2, **paper),
             doc="MossFormer, the paper's configuration for WSJ0-2mix (paper Sec. 3: 24 blocks, width 512, "
                 "encoder kernel 16 / stride 8, chunks of 256, query/key 128): 42.1M params")
    register("mossformer_3spk", _MOSS, args=dict(num_speakers=3, **paper),
             doc="MossFormer, the paper's configuration with 3 speakers (WSJ0-3mix): 42.4M params "
                 "(one more mask branch; the paper quotes 42.1M for the model)")
    register("mossformer_small", _MOSS,
             args=dict(encoder_dim=64, kernel_size=32, dim=64, depth=4, query_key_dim=32, group_size=64,
                       expansion_factor=4.0, dropout=0.0),
             doc="Not in the paper: CPU-sized MossFormer for the examples (4 blocks, width 64, encoder kernel 32 / "
                 "stride 16, chunks of 64; 0.16M params with 2 speakers; num_speakers from the data)")


@hookimpl
def panconv_register_datasets(register):
    register("SpokenDigits", "panconv_audio.datasets.speech:SpokenDigits",
             doc="Isolated spoken digits: asterisk recordings + flite/espeak-ng voices, seeded split")
    register("SpokenWords", "panconv_audio.datasets.speech:SpokenWords",
             doc="Spoken words/digit strings with transcripts for CTC recognition")
    register("SpeakerMixtures", "panconv_audio.datasets.mixtures:SpeakerMixtures",
             doc="Mixtures of utterances from two or more different real speakers")


@hookimpl
def panconv_register_evaluators(register):
    register("WER", "panconv_audio.evaluators.asr:WER", doc="Word error rate (batched edit distance)")
    register("CER", "panconv_audio.evaluators.asr:CER", doc="Character error rate (batched edit distance)")
    register("SISDR", "panconv_audio.evaluators.separation:SISDR",
             doc="Scale-invariant SDR and SI-SDR improvement")


@hookimpl
def panconv_register_transforms(register):
    register("LogMel", "panconv_audio.transforms:LogMel",
             doc="Log-mel spectrogram front-end (batch-level: waveforms -> features in data.transforms)")
    register("Fbank", "panconv_audio.transforms:Fbank", doc="Kaldi-compatible log-mel filterbank (batch-level)")
    register("SpecAugment", "panconv_audio.transforms:SpecAugment",
             doc="SpecAugment time/frequency masking of features (batch-level; list splits: [train])")


@hookimpl
def panconv_register_losses(register):
    register("SISNRPIT", "panconv_audio.losses:SISNRPIT",
             doc="Negative SI-SNR with utterance-level permutation invariant training (MossFormer's default)")
    register("CTCLoss", "panconv_audio.losses:CTCLoss",
             doc="CTC loss per utterance, averaged over the batch (the CTC models' default)")
