"""LRCN: Long-term Recurrent Convolutional Networks (Donahue et al., CVPR 2015 / TPAMI 2017).

A CNN encodes every frame; an LSTM runs over the per-frame features.

* Activity recognition (:class:`LRCNActivity`, paper Sec. 4): the LSTM reads the frame features
  (the CNN's ``fc6`` or ``fc7`` output: the paper's two variants, fc6 was the better one on
  UCF101), a linear classifier reads the LSTM state at every step, the loss is the cross-entropy
  at every step and the clip's prediction the average of the per-step probabilities. With
  ``recurrent=False`` it is the paper's *single-frame* baseline: the same CNN with the classifier
  on ``fc7`` of each frame, per-frame probabilities averaged over the clip.
* Video description (:class:`LRCNCaption`, paper Sec. 6, in its image-captioning form):
  the clip's visual feature is the time-average of an encoder LSTM's states over the frames'
  ``fc7``, layer-normalised; a word-level decoder predicts the caption. *Unfactored* (LRCN1u): one LSTM reads
  ``[word embedding, visual feature]`` at every step. *Factored* (LRCN2f): a first LSTM reads
  only the words, a second reads ``[first LSTM's state, visual feature]`` — the visual input
  enters only the upper layer. Teacher-forced cross-entropy for training, greedy decoding in
  ``predict`` (token ids, ``<eos>`` then ``<pad>``).

Scaled down (the paper fine-tunes CaffeNet — 5 conv layers, fc6/fc7 of 4096 units, on 227x227
RGB — with an LSTM of 256 units for activity and 1000 for captioning): :class:`FrameCNN` is
CaffeNet's layout (conv-pool x3, then fc6, fc7 with ReLU and dropout) at ``widths`` channels and
``fc_dim`` units, trained from scratch on 64x64 gray Moving-MNIST frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Model

PAD, BOS, EOS = 0, 1, 2   # as panconv_vision.datasets.video's vocabulary


class FrameCNN(nn.Module):
    """CaffeNet-shaped per-frame encoder: (conv-ReLU-maxpool) x len(widths), 4x4 adaptive pool, fc6, fc7.

    ``top="fc6"`` builds no fc7 (the LSTM-on-fc6 variant drops it, as the paper's).
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 96), fc_dim: int = 256,
                 dropout: float = 0.5, top: Literal["fc6", "fc7"] = "fc7"):
        super().__init__()
        layers, prev = [], in_channels
        for i, width in enumerate(widths):
            kernel, stride = (5, 2) if i == 0 else (3, 1)     # a strided large first conv, as CaffeNet's conv1
            layers += [nn.Conv2d(prev, width, kernel, stride, kernel // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            prev = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.fc6 = nn.Linear(prev * 16, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim) if top == "fc7" else None
        self.dropout = nn.Dropout(dropout)
        self.fc_dim = fc_dim

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, C, H, W)`` -> ``{"fc6", "fc7"}``, each ``(N, fc_dim)`` after ReLU (and dropout in training)."""
        fc6 = self.dropout(F.relu(self.fc6(self.features(frames).flatten(1))))
        if self.fc7 is None:
            return {"fc6": fc6}
        return {"fc6": fc6, "fc7": self.dropout(F.relu(self.fc7(fc6)))}


def _he_init(module: nn.Module) -> None:
    """He (fan-in, ReLU) initialisation with zero biases: PyTorch's default shrinks the signal of mostly-black
    Moving-MNIST frames through the conv stack until every clip gets the same feature, and a captioner then
    learns only the language prior (found on the generated captions; the activity model trains either way)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)


def _check_clip(x: torch.Tensor, in_channels: int, name: str) -> tuple[int, int]:
    if x.dim() != 5 or x.shape[2] != in_channels:
        raise ValueError(f"{name}: expected a clip (N, T, {in_channels}, H, W), got {tuple(x.shape)}")
    return x.shape[0], x.shape[1]


class LRCNActivity(Model):
    """LRCN for activity recognition, or the single-frame baseline (``recurrent=False``).

    Args:
        num_classes: activity classes (default: Moving-MNIST's 8 directions); ``in_channels``: frame channels.
        lstm_input: ``"fc6"`` or ``"fc7"``: which CNN layer feeds the LSTM.
        widths / fc_dim / dropout: the CNN; ``hidden``: LSTM units.
    """

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 8, in_channels: Annotated[int, Ge(1)] = 1,
                 lstm_input: Literal["fc6", "fc7"] = "fc6", recurrent: bool = True,
                 widths: Sequence[Annotated[int, Ge(1)]] = (32, 64, 96), fc_dim: Annotated[int, Ge(1)] = 256,
                 hidden: Annotated[int, Ge(1)] = 256, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.5):
        super().__init__()
        if lstm_input not in ("fc6", "fc7"):
            raise ValueError(f"LRCNActivity: lstm_input must be 'fc6' or 'fc7', got {lstm_input!r}")
        if num_classes < 2 or in_channels < 1 or fc_dim < 1 or hidden < 1 or not 0 <= dropout < 1:
            raise ValueError("LRCNActivity: num_classes >= 2, in_channels, fc_dim, hidden >= 1, 0 <= dropout < 1")
        self.in_channels, self.lstm_input, self.recurrent = in_channels, lstm_input, recurrent
        self.cnn = FrameCNN(in_channels, widths, fc_dim, dropout, top=lstm_input if recurrent else "fc7")
        if recurrent:
            self.lstm = nn.LSTM(fc_dim, hidden, batch_first=True)
            self.classifier = nn.Linear(hidden, num_classes)
        else:
            self.classifier = nn.Linear(fc_dim, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        """Per-step class scores ``(N, T, num_classes)``."""
        x = batch["inputs"] if isinstance(batch, dict) else batch
        n, t = _check_clip(x, self.in_channels, "LRCNActivity")
        feats = self.cnn(x.flatten(0, 1))
        if not self.recurrent:
            return self.classifier(feats["fc7"]).view(n, t, -1)
        states, _ = self.lstm(feats[self.lstm_input].view(n, t, -1))
        return self.classifier(states)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        steps = outputs.shape[1]
        return {"loss": F.cross_entropy(outputs.flatten(0, 1), labels.repeat_interleave(steps))}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        """The clip's class probabilities: the per-step softmax averaged over time ``(N, num_classes)``."""
        return outputs.softmax(-1).mean(1)

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "widths": (4, 8), "fc_dim": 16, "hidden": 8}

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.randn(batch_size, 3, self.in_channels, 32, 32),
                "labels": torch.arange(batch_size) % self.classifier.out_features}


class LRCNCaption(Model):
    """LRCN video description: CNN + LSTM encoder, factored (LRCN2f) or unfactored (LRCN1u) LSTM decoder.

    Args:
        vocab_size / max_caption_length: the dataset's vocabulary (ids 0, 1, 2 = pad, bos, eos; default:
            Moving-MNIST's 22 words).
        factored: two decoder LSTMs, the visual feature entering only the second (LRCN2f); else one (LRCN1u).
        embed_dim: word embedding size; ``hidden``: LSTM units (encoder and decoder).
    """

    metadata_inputs = ("vocab_size", "in_channels", "max_caption_length")

    def __init__(self, vocab_size: Annotated[int, Ge(4)] = 22, max_caption_length: Annotated[int, Ge(2)] = 24,
                 in_channels: Annotated[int, Ge(1)] = 1, factored: bool = True,
                 widths: Sequence[Annotated[int, Ge(1)]] = (32, 64, 96), fc_dim: Annotated[int, Ge(1)] = 256,
                 embed_dim: Annotated[int, Ge(1)] = 64, hidden: Annotated[int, Ge(1)] = 256,
                 dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.5):
        super().__init__()
        if vocab_size < 4 or max_caption_length < 2 or embed_dim < 1 or hidden < 1:
            raise ValueError("LRCNCaption: vocab_size >= 4, max_caption_length >= 2, embed_dim and hidden >= 1")
        self.in_channels, self.factored, self.max_caption_length = in_channels, factored, max_caption_length
        self.cnn = FrameCNN(in_channels, widths, fc_dim, dropout)
        self.cnn.apply(_he_init)
        self.encoder = nn.LSTM(fc_dim, hidden, batch_first=True)
        self.visual_norm = nn.LayerNorm(hidden)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        if factored:
            self.language = nn.LSTM(embed_dim, hidden, batch_first=True)
            self.multimodal = nn.LSTM(2 * hidden, hidden, batch_first=True)
        else:
            self.multimodal = nn.LSTM(embed_dim + hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The clip's visual feature: the time-average of the encoder LSTM over the frames' fc7, layer-normalised
        ``(N, hidden)``."""
        n, t = _check_clip(x, self.in_channels, "LRCNCaption")
        states, _ = self.encoder(self.cnn(x.flatten(0, 1))["fc7"].view(n, t, -1))
        return self.visual_norm(states.mean(1))

    def _decode(self, words: torch.Tensor, visual: torch.Tensor, state=None):
        """One pass of the decoder over ``words`` ``(N, S)``; returns scores ``(N, S, V)`` and the LSTM states."""
        emb = self.embed(words)
        vis = visual[:, None].expand(-1, words.shape[1], -1)
        lang_state, mm_state = state if state is not None else (None, None)
        if self.factored:
            lang, lang_state = self.language(emb, lang_state)
            h, mm_state = self.multimodal(torch.cat([lang, vis], -1), mm_state)
        else:
            h, mm_state = self.multimodal(torch.cat([emb, vis], -1), mm_state)
        return self.out(h), (lang_state, mm_state)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["inputs"]
        visual = self.encode(x)
        out = {"visual": visual}
        captions = batch.get("captions")
        if captions is not None:
            out["logits"], _ = self._decode(captions[:, :-1], visual)     # teacher forcing: predict token s+1
        return out

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        logits, target = outputs["logits"], batch["captions"][:, 1:]
        return {"loss": F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD)}

    @torch.no_grad()
    def generate(self, visual: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
        """Greedy decoding: ``(N, max_length)`` ids starting with ``<bos>``, ``<pad>`` after ``<eos>``."""
        length = max_length or self.max_caption_length
        n = visual.shape[0]
        tokens = torch.full((n, length), PAD, dtype=torch.long, device=visual.device)
        tokens[:, 0] = BOS
        word, state = tokens[:, :1], None
        done = torch.zeros(n, dtype=torch.bool, device=visual.device)
        for s in range(1, length):
            logits, state = self._decode(word, visual, state)
            word = logits[:, -1].argmax(-1, keepdim=True)
            tokens[:, s] = torch.where(done, torch.full_like(word[:, 0], PAD), word[:, 0])
            done |= word[:, 0] == EOS
            if bool(done.all()):
                break
        return tokens

    def predict(self, outputs: dict, batch: dict | None = None) -> torch.Tensor:
        return self.generate(outputs["visual"])

    @classmethod
    def example_config(cls) -> dict:
        return {"vocab_size": 9, "max_caption_length": 6, "widths": (4, 8), "fc_dim": 16, "embed_dim": 8,
                "hidden": 8}

    def example_inputs(self, batch_size: int = 2) -> dict:
        captions = torch.randint(3, self.out.out_features, (batch_size, self.max_caption_length))
        captions[:, 0], captions[:, -1] = BOS, EOS
        return {"inputs": torch.randn(batch_size, 3, self.in_channels, 32, 32), "captions": captions}


__all__ = ["FrameCNN", "LRCNActivity", "LRCNCaption"]
