"""Speech front-ends (registered transforms): log-mel, Kaldi fbank, SpecAugment.

Each is an ``nn.Module`` mapping a padded waveform batch ``(N, T)`` (+ lengths) to features
``(N, frames, n_mels)`` (+ frame lengths); ``SpecAugment`` masks features in training mode only.
They are also built from configs (``audio.LogMel``) and used inside the ASR/classification models.
"""

from __future__ import annotations

import torch
from torch import nn


def _normalize(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance, per-bin mean/variance normalisation over the valid frames."""
    mask = (torch.arange(feats.shape[1], device=feats.device)[None] < lengths[:, None]).unsqueeze(-1)
    n = mask.sum(1, keepdim=True).clamp(min=1)
    mean = (feats * mask).sum(1, keepdim=True) / n
    var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return ((feats - mean) / (var + 1e-5).sqrt()) * mask


class LogMel(nn.Module):
    """Log-mel spectrogram: 25 ms windows, 10 ms hop, ``n_mels`` bins (Squeezeformer uses 80)."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0,
                 n_fft: int | None = None, normalize: bool = True):
        super().__init__()
        import torchaudio

        self.win = int(sample_rate * win_ms / 1000)
        self.hop = int(sample_rate * hop_ms / 1000)
        n_fft = n_fft or 1 << (self.win - 1).bit_length()
        self.n_mels = n_mels
        self.normalize = normalize
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=self.win, hop_length=self.hop, n_mels=n_mels,
            center=True, power=2.0, norm="slaney", mel_scale="slaney")

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1  # center=True framing

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None):
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)
        feats = (self.mel(wav.float()) + 1e-6).log().transpose(1, 2)  # (N, frames, n_mels)
        out_len = self.output_lengths(lengths).clamp(max=feats.shape[1])
        if self.normalize:
            feats = _normalize(feats, out_len)
        return feats, out_len


class Fbank(nn.Module):
    """Kaldi-compatible log-mel filterbank (``torchaudio.compliance.kaldi.fbank``, snip_edges)."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0,
                 dither: float = 0.0, normalize: bool = True):
        super().__init__()
        self.sample_rate, self.n_mels, self.win_ms, self.hop_ms = sample_rate, n_mels, win_ms, hop_ms
        self.win = int(sample_rate * win_ms / 1000)
        self.hop = int(sample_rate * hop_ms / 1000)
        self.dither = dither
        self.normalize = normalize

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (torch.div(lengths - self.win, self.hop, rounding_mode="floor") + 1).clamp(min=0)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None):
        from torchaudio.compliance import kaldi

        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)
        out_len = self.output_lengths(lengths)
        feats = wav.new_zeros(wav.shape[0], int(out_len.max()), self.n_mels)
        for i in range(wav.shape[0]):
            f = kaldi.fbank(wav[i, : lengths[i]].unsqueeze(0) * 32768, num_mel_bins=self.n_mels,
                            frame_length=self.win_ms, frame_shift=self.hop_ms, dither=self.dither,
                            sample_frequency=self.sample_rate, energy_floor=0.0)
            feats[i, : f.shape[0]] = f
        if self.normalize:
            feats = _normalize(feats, out_len)
        return feats, out_len


class SpecAugment(nn.Module):
    """SpecAugment (Park et al., 2019) as configured by Squeezeformer: 2 frequency masks of width
    up to 27 bins and 5 time masks of up to 5% of the utterance each; identity in eval mode."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 5, time_ratio: float = 0.05):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_ratio = time_masks, time_ratio

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None):
        if not self.training:
            return feats, lengths
        n, t, f = feats.shape
        lengths = lengths if lengths is not None else torch.full((n,), t, device=feats.device)
        mask = torch.zeros(n, t, f, dtype=torch.bool, device=feats.device)
        bins = torch.arange(f, device=feats.device)
        frames = torch.arange(t, device=feats.device)
        for _ in range(self.freq_masks):
            w = torch.randint(0, min(self.freq_width, f) + 1, (n, 1), device=feats.device)
            s = (torch.rand(n, 1, device=feats.device) * (f - w + 1)).long()
            mask |= ((bins[None] >= s) & (bins[None] < s + w))[:, None, :]
        for _ in range(self.time_masks):
            w = (torch.rand(n, 1, device=feats.device) * lengths[:, None].float() * self.time_ratio).long()
            s = (torch.rand(n, 1, device=feats.device) * (lengths[:, None] - w + 1).float()).long()
            mask |= ((frames[None] >= s) & (frames[None] < s + w))[:, :, None]
        return feats.masked_fill(mask, 0.0), lengths


def build_frontend(kind: str, sample_rate: int, n_mels: int) -> nn.Module:
    """``"logmel"`` or ``"fbank"``."""
    if kind == "logmel":
        return LogMel(sample_rate, n_mels)
    if kind == "fbank":
        return Fbank(sample_rate, n_mels)
    raise ValueError(f"unknown front-end {kind!r}; use 'logmel' or 'fbank'")
