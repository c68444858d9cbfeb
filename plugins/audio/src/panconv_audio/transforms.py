"""Speech front-ends and augmentation (registered transforms): log-mel, Kaldi fbank, SpecAugment.

Each is an ``nn.Module`` with two call forms:

* ``module(x, lengths)``: a padded waveform batch ``(N, T)`` -> features ``(N, frames, n_mels)`` and
  frame lengths (``SpecAugment``: features -> masked features). The models use them this way inside
  ``forward`` when ``data.transforms`` leaves the front-end to them (the default).
* ``module(batch)``: a collated batch dict -> the same dict with ``inputs`` / ``input_lengths``
  replaced. This is how ``data.transforms`` applies them; they are batch-level (``level = "batch"``),
  so a config that moves the front-end into the data pipeline gives the model exactly the features
  its own front-end would have computed::

      data:
        transforms:
          - {type: audio.LogMel, sample_rate: 8000, n_mels: 64}
          - {type: audio.SpecAugment, splits: [train], time_masks: 5}

``SpecAugment`` masks only in training mode when a model runs it; as a data transform it masks in
the splits its ``splits`` lists (so list ``[train]``).
"""

from __future__ import annotations

from typing import Annotated

# torchaudio is imported with this module, not inside a constructor: a dry run builds models under
# torch.device("meta"), and the module-level tensors torchaudio creates on import (kaldi's EPSILON)
# would then be meta tensors for the rest of the process
import torch
import torchaudio
from annotated_types import Ge, Interval
from torch import nn
from torchaudio.compliance import kaldi


class _BatchTransform(nn.Module):
    """``forward(batch: dict)`` applies ``forward(inputs, input_lengths)`` to a collated speech batch."""

    #: applied by the engine to collated batches (``data.transforms``), not to single samples
    level = "batch"

    def forward(self, x, lengths: torch.Tensor | None = None):
        if isinstance(x, dict):
            if "inputs" not in x:
                raise ValueError(f"{type(self).__name__}: the batch has no 'inputs' (keys: {sorted(x)}); audio "
                                 f"transforms take speech batches (audio.SpokenDigits, audio.SpokenWords)")
            feats, out_len = self.compute(x["inputs"], x.get("input_lengths"))
            return {**x, "inputs": feats, "input_lengths": out_len}
        return self.compute(x, lengths)

    def compute(self, x: torch.Tensor, lengths: torch.Tensor | None):  # pragma: no cover - interface
        raise NotImplementedError


def _check(name: str, sample_rate, n_mels, win_ms, hop_ms) -> None:
    if not 0 < sample_rate <= 192_000 or n_mels <= 0 or not 0 < win_ms <= 1000 or not 0 < hop_ms <= 1000:
        raise ValueError(f"{name}: need a positive sample_rate <= 192000, a positive n_mels and win_ms, hop_ms in "
                         f"(0, 1000], got {sample_rate}, {n_mels}, {win_ms}, {hop_ms}")
    if int(sample_rate * win_ms / 1000) < 1 or int(sample_rate * hop_ms / 1000) < 1:
        raise ValueError(f"{name}: win_ms={win_ms} and hop_ms={hop_ms} must each span at least one sample at "
                         f"sample_rate={sample_rate}")


def _normalize(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance, per-bin mean/variance normalisation over the valid frames."""
    mask = (torch.arange(feats.shape[1], device=feats.device)[None] < lengths[:, None]).unsqueeze(-1)
    n = mask.sum(1, keepdim=True).clamp(min=1)
    mean = (feats * mask).sum(1, keepdim=True) / n
    var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return ((feats - mean) / (var + 1e-5).sqrt()) * mask


class LogMel(_BatchTransform):
    """Log-mel spectrogram: 25 ms windows, 10 ms hop, ``n_mels`` bins (Squeezeformer uses 80)."""

    def __init__(self, sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000,
                 n_mels: Annotated[int, Ge(1)] = 80,
                 win_ms: Annotated[float, Interval(gt=0, le=1000)] = 25.0,
                 hop_ms: Annotated[float, Interval(gt=0, le=1000)] = 10.0,
                 n_fft: Annotated[int, Ge(1)] | None = None, normalize: bool = True):
        super().__init__()
        _check("LogMel", sample_rate, n_mels, win_ms, hop_ms)

        self.win = int(sample_rate * win_ms / 1000)
        self.hop = int(sample_rate * hop_ms / 1000)
        n_fft = n_fft or 1 << (self.win - 1).bit_length()
        if n_fft < self.win:
            raise ValueError(f"LogMel: n_fft={n_fft} is shorter than the {self.win}-sample window "
                             f"(win_ms={win_ms} at sample_rate={sample_rate})")
        self.n_mels = n_mels
        self.normalize = normalize
        # the filterbank is computed with boolean indexing, which the meta device (a dry build) cannot run:
        # compute it on the CPU, then move it to the default device
        device = torch.empty(0).device
        with torch.device("cpu"):
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n_fft, win_length=self.win, hop_length=self.hop, n_mels=n_mels,
                center=True, power=2.0, norm="slaney", mel_scale="slaney")
        self.mel.to(device)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1  # center=True framing

    def compute(self, wav: torch.Tensor, lengths: torch.Tensor | None = None):
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)
        feats = (self.mel(wav.float()) + 1e-6).log().transpose(1, 2)  # (N, frames, n_mels)
        out_len = self.output_lengths(lengths).clamp(max=feats.shape[1])
        if self.normalize:
            feats = _normalize(feats, out_len)
        return feats, out_len


class Fbank(_BatchTransform):
    """Kaldi-compatible log-mel filterbank (``torchaudio.compliance.kaldi.fbank``, snip_edges)."""

    def __init__(self, sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000,
                 n_mels: Annotated[int, Ge(1)] = 80,
                 win_ms: Annotated[float, Interval(gt=0, le=1000)] = 25.0,
                 hop_ms: Annotated[float, Interval(gt=0, le=1000)] = 10.0,
                 dither: Annotated[float, Interval(ge=0, le=32768)] = 0.0, normalize: bool = True):
        super().__init__()
        _check("Fbank", sample_rate, n_mels, win_ms, hop_ms)
        if not 0 <= dither <= 32768:  # in 16-bit sample units: at most full scale
            raise ValueError(f"Fbank: dither must be in [0, 32768] (16-bit sample units), got {dither}")
        self.sample_rate, self.n_mels, self.win_ms, self.hop_ms = sample_rate, n_mels, win_ms, hop_ms
        self.win = int(sample_rate * win_ms / 1000)
        self.hop = int(sample_rate * hop_ms / 1000)
        self.dither = dither
        self.normalize = normalize

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (torch.div(lengths - self.win, self.hop, rounding_mode="floor") + 1).clamp(min=0)

    def compute(self, wav: torch.Tensor, lengths: torch.Tensor | None = None):
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


class SpecAugment(_BatchTransform):
    """SpecAugment (Park et al., 2019) as configured by Squeezeformer: 2 frequency masks of width
    up to 27 bins and 5 time masks of up to 5% of the utterance each; identity in eval mode."""

    def __init__(self, freq_masks: Annotated[int, Ge(0)] = 2, freq_width: Annotated[int, Ge(0)] = 27,
                 time_masks: Annotated[int, Ge(0)] = 5, time_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.05):
        super().__init__()
        if min(freq_masks, freq_width, time_masks) < 0 or not 0 <= time_ratio <= 1:
            raise ValueError(f"SpecAugment: mask counts and widths must be >= 0 and 0 <= time_ratio <= 1, got "
                             f"freq_masks={freq_masks}, freq_width={freq_width}, time_masks={time_masks}, "
                             f"time_ratio={time_ratio}")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_ratio = time_masks, time_ratio

    def compute(self, feats: torch.Tensor, lengths: torch.Tensor | None = None):
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
