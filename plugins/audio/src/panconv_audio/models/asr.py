"""Shared pieces of the CTC speech recognisers: the depthwise-separable 4x subsampling, and the
whole-model wrapper ``front-end -> SpecAugment -> encoder -> linear CTC decoder``.

Batches (from ``audio.SpokenWords``): ``inputs`` (N, T) waveforms, ``input_lengths`` (N,),
``texts`` (list of transcripts). ``predict`` returns the decoded transcripts (list of str), which
``audio.WER`` / ``audio.CER`` compare against ``batch["texts"]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import Model

from ..transforms import SpecAugment, build_frontend
from .ctc import CharTokenizer, ctc_greedy_decode, ctc_prefix_beam_search


def subsampled_length(lengths: torch.Tensor | int, times: int = 2):
    """Frames after ``times`` stride-2 convolutions with kernel 3 and one frame of right padding:
    ``L -> floor(L / 2)`` each time (the reference pads (0, 1) before every VALID convolution)."""
    for _ in range(times):
        lengths = lengths // 2
    return lengths


class DepthwiseSeparableSubsampling(nn.Module):
    """4x time reduction (Squeezeformer Sec. 3.4): conv 3x3/2 + ReLU, then a depthwise 3x3/2 +
    pointwise 1x1 conv + ReLU (instead of Conformer's second full conv), then a linear projection of
    ``channels * F/4`` to ``d_model``."""

    def __init__(self, n_mels: int, channels: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2)
        self.dw = nn.Conv2d(channels, channels, 3, stride=2, groups=channels)
        self.pw = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Linear(channels * subsampled_length(n_mels), d_model)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        x = feats.unsqueeze(1)  # (N, 1, T, F)
        x = F.relu(self.conv1(F.pad(x, (0, 1, 0, 1))))
        # zero the frames past each utterance's end so that padding never leaks into valid frames
        l1 = subsampled_length(lengths, 1)
        x = x * (torch.arange(x.shape[2], device=x.device)[None] < l1[:, None])[:, None, :, None]
        x = F.relu(self.pw(self.dw(F.pad(x, (0, 1, 0, 1)))))
        n, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(n, t, c * f))
        return x, subsampled_length(lengths).clamp(min=1, max=t)


class CTCSpeechModel(Model):
    """``waveform -> log-mel/fbank -> SpecAugment (train) -> encoder -> Linear -> CTC``.

    Subclasses set ``self.encoder`` (``forward(feats, lengths) -> (N, T', d), lengths'``) and
    ``self.d_model``, then call :meth:`_build_decoder`.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, frontend: str = "logmel",
                 spec_augment: bool = True, vocab_size: int | None = None, decoder: str = "greedy",
                 beam_size: int = 8, time_masks: int = 5, freq_masks: int = 2, freq_width: int = 27):
        super().__init__()
        self.tokenizer = CharTokenizer()
        self.vocab_size = vocab_size or len(self.tokenizer)
        self.frontend = build_frontend(frontend, sample_rate, n_mels)
        self.specaug = SpecAugment(freq_masks, min(freq_width, n_mels // 3), time_masks) if spec_augment else None
        if decoder not in ("greedy", "beam"):
            raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")
        self.decoder_mode, self.beam_size = decoder, beam_size
        self.sample_rate, self.n_mels = sample_rate, n_mels

    def _build_decoder(self):
        self.ctc = nn.Linear(self.d_model, self.vocab_size)  # the CTC decoder the paper counts

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None):
        with torch.no_grad():
            feats, flen = self.frontend(wav, lengths)
        if self.specaug is not None:
            feats, flen = self.specaug(feats, flen)
        return self.encoder(feats, flen)

    def forward(self, batch: dict) -> dict:
        x, lengths = self.encode(batch["inputs"], batch.get("input_lengths"))
        return {"log_probs": self.ctc(x).log_softmax(-1), "lengths": lengths}

    def loss(self, outputs: dict, batch: dict) -> dict:
        targets, target_lengths = self.tokenizer.batch_encode(batch["texts"])
        lp = outputs["log_probs"]
        loss = F.ctc_loss(lp.transpose(0, 1).float(), targets.to(lp.device), outputs["lengths"],
                          target_lengths.to(lp.device), blank=0, reduction="sum", zero_infinity=True)
        return {"loss_ctc": loss / lp.shape[0]}

    def predict(self, outputs: dict, batch: dict | None = None) -> list[str]:
        lp, lengths = outputs["log_probs"], outputs["lengths"]
        if self.decoder_mode == "greedy":
            return [self.tokenizer.decode(s) for s in ctc_greedy_decode(lp, lengths)]
        return [self.tokenizer.decode(ctc_prefix_beam_search(lp[i, : lengths[i]], self.beam_size, prune=-12.0)[0][0])
                for i in range(lp.shape[0])]

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        n = self.sample_rate // 2
        return {"inputs": torch.randn(batch_size, n, generator=g) * 0.1,
                "input_lengths": torch.tensor([n] + [n - 800] * (batch_size - 1)),
                "texts": ["one two"] + ["three"] * (batch_size - 1)}
