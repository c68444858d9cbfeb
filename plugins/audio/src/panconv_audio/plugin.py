"""What panconv-audio registers (lazy import strings: importing this module imports no torch)."""

from panconv import hookimpl

_M = "panconv_audio.models"


@hookimpl
def panconv_register_models(register):
    # Squeezeformer (Kim et al., NeurIPS 2022) + CTC; sizes from the paper's Table 7
    register("Squeezeformer", f"{_M}.squeezeformer:Squeezeformer",
             doc="Squeezeformer CTC speech recogniser (Temporal U-Net, MF/CF blocks, scaled post-LN)")
    for size in ("xs", "s", "sm", "m", "ml", "l", "nano"):
        register(f"squeezeformer_{size}", f"{_M}.squeezeformer:squeezeformer_{size}")
    register("SqueezeformerEncoder", f"{_M}.squeezeformer:SqueezeformerEncoder", kind="backbone",
             doc="Squeezeformer encoder on log-mel features (N, T, F) -> [N, C, T/4]")
    register("Conformer", f"{_M}.conformer:Conformer",
             doc="torchaudio Conformer + the same subsampling/CTC head: the Squeezeformer baseline")
    register("conformer_xs", f"{_M}.conformer:conformer_xs")
    register("conformer_nano", f"{_M}.conformer:conformer_nano")
    # Convolution-based mixture of experts
    register("CMoE", f"{_M}.cmoe:CMoE",
             doc="Convolution-based mixture of experts classifier on spectrograms")
    # MossFormer (Zhao & Ma, 2023) speech separation
    register("MossFormer", f"{_M}.mossformer:MossFormer",
             doc="MossFormer monaural speech separation (gated single-head attention, conv modules)")
    register("mossformer_2spk", f"{_M}.mossformer:mossformer_2spk")
    register("mossformer_3spk", f"{_M}.mossformer:mossformer_3spk")
    register("mossformer_small", f"{_M}.mossformer:mossformer_small")


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
    register("LogMel", "panconv_audio.transforms:LogMel", doc="Log-mel spectrogram front-end")
    register("Fbank", "panconv_audio.transforms:Fbank", doc="Kaldi-compatible log-mel filterbank")
    register("SpecAugment", "panconv_audio.transforms:SpecAugment",
             doc="SpecAugment time/frequency masking")


@hookimpl
def panconv_register_losses(register):
    register("SISNRPIT", "panconv_audio.losses:SISNRPIT",
             doc="Negative SI-SNR with utterance-level permutation invariant training")
    register("CTCLoss", "torch.nn:CTCLoss", doc="torch.nn.CTCLoss")
