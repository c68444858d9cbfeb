"""Building blocks the audio model families share.

* **Masks and subsampling** (Squeezeformer, Conformer): ``padding_mask``, ``subsampled_length`` and
  the depthwise-separable 4x time subsampling of Squeezeformer Sec. 3.4.
* **CTC** (Squeezeformer, Conformer): the character tokenizer, greedy and prefix-beam-search
  decoding (Hannun et al., 2014, without a language model; blank is index 0), and
  :class:`CTCSpeechModel`, the whole-model wrapper
  ``waveform -> front-end -> SpecAugment (train) -> encoder -> Linear -> CTC``.
* **Front-end and loss resolution** (every model): :func:`resolve_loss` builds a ``loss:`` config
  section from the loss registry; :func:`waveforms_or_features` decides whether a batch's
  ``inputs`` still need the model's front-end (a data transform such as ``audio.LogMel`` in
  ``data.transforms`` may already have computed the features).

Batches of the CTC models (from ``audio.SpokenWords``): ``inputs`` (N, T) waveforms, or (N, frames,
n_mels) features when ``data.transforms`` computed them, ``input_lengths`` (N,) and ``texts`` (list of
transcripts). ``predict`` returns the decoded transcripts, which ``audio.WER`` / ``audio.CER`` score.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import nn

from panconv.api import Model

from ..losses import CTCLoss
from ..transforms import SpecAugment, build_frontend

# --------------------------------------------------------------------------- masks and subsampling


def padding_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """``(N, T)`` bool, True on valid frames."""
    return torch.arange(t, device=lengths.device)[None] < lengths[:, None]


def subsampled_length(lengths: torch.Tensor | int, times: int = 2):
    """Frames after ``times`` stride-2 convolutions with kernel 3 and one frame of right padding:
    ``L -> floor(L / 2)`` each time (the official Squeezeformer pads (0, 1) before every VALID
    convolution, so this is the size of its tensors; its *mask* length is ``ceil((L + 1) / 2)``,
    one frame more for shorter utterances of a batch, which we do not copy)."""
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


# --------------------------------------------------------------------------- front-end and loss


def waveforms_or_features(inputs: torch.Tensor, frontend: nn.Module | None, n_mels: int, owner: str) -> bool:
    """True when ``inputs`` are waveforms ``(N, T)`` for the model's front-end; False when they are
    features ``(N, frames, n_mels)`` already (a front-end in ``data.transforms``). Raises
    ``ValueError`` on what neither path can take."""
    if inputs.dim() == 2:
        if frontend is None:
            raise ValueError(f"{owner}: frontend=None expects features (N, frames, {n_mels}), got waveforms "
                             f"{tuple(inputs.shape)}: add {{type: audio.LogMel}} to data.transforms or set a frontend")
        return True
    if inputs.dim() == 3:
        if inputs.shape[-1] != n_mels:
            raise ValueError(f"{owner}: features have {inputs.shape[-1]} bins, the model has n_mels={n_mels}: "
                             f"give the front-end transform the model's n_mels")
        return False
    raise ValueError(f"{owner}: inputs must be waveforms (N, T) or features (N, frames, n_mels), "
                     f"got shape {tuple(inputs.shape)}")


def resolve_loss(loss: nn.Module | Mapping | None, default: Callable[[], nn.Module], owner: str) -> nn.Module:
    """The model's criterion: ``default()`` when unset; a ``{type: ..., ...}`` mapping built from the loss
    registry (the engine normally builds it before the constructor sees it); or a loss object as is."""
    if loss is None:
        return default()
    if isinstance(loss, Mapping):
        import panconv

        cfg = dict(loss)
        name = cfg.pop("type", None)
        if not name:
            raise ValueError(f"{owner}: loss needs a 'type' (a registered loss such as audio.SISNRPIT), got {loss!r}")
        return panconv.build("loss", name, **cfg)
    if not callable(loss):
        raise ValueError(f"{owner}: loss must be a loss module or a {{type: ...}} mapping, got {type(loss).__name__}")
    return loss


# --------------------------------------------------------------------------- CTC: tokenizer and decoding


class CharTokenizer:
    """Characters ``<blank>``, space, apostrophe, ``a``-``z`` (29 symbols); unknown characters are dropped."""

    def __init__(self, alphabet: str = " 'abcdefghijklmnopqrstuvwxyz"):
        self.symbols = ["<blank>", *alphabet]
        self.index = {c: i for i, c in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def blank(self) -> int:
        return 0

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text.lower() if c in self.index and c != "<blank>"]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != 0)

    def batch_encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated targets and their lengths, as ``torch.nn.functional.ctc_loss`` takes them."""
        ids = [self.encode(t) for t in texts]
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        flat = torch.tensor([x for seq in ids for x in seq], dtype=torch.long)
        return flat, lengths


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. ``log_probs``: ``(N, T, V)``."""
    best = log_probs.argmax(-1).cpu()
    n, t = best.shape
    lengths = lengths.cpu().tolist() if lengths is not None else [t] * n
    out = []
    for i in range(n):
        seq, prev = [], blank
        for s in best[i, : lengths[i]].tolist():
            if s != prev and s != blank:
                seq.append(s)
            prev = s
        out.append(seq)
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_prefix_beam_search(log_probs: torch.Tensor, beam: int = 8, blank: int = 0,
                           prune: float | None = None, rescore: bool = True) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance ``(T, V)`` of log-probabilities.

    Returns up to ``beam`` ``(labels, log_prob)`` pairs, best first; ``log_prob`` is the total
    probability of the label sequence summed over the alignments kept in the beam (exact when
    nothing was pruned). ``prune``: skip symbols with frame log-probability below this.
    ``rescore``: add the greedy (best-path) labelling to the final candidates and rank them all by
    their exact CTC likelihood, so the result is never less likely than greedy decoding (pruning
    alone can lose the best-path prefix).
    """
    lp = log_probs.detach().double().cpu().tolist()
    # prefix -> (log P ending in blank, log P ending in non-blank)
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in lp:
        nxt: dict[tuple, list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        symbols = range(len(frame)) if prune is None else [s for s, v in enumerate(frame) if v >= prune]
        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            for s in symbols:
                p = frame[s]
                if s == blank:
                    e = nxt[prefix]
                    e[0] = _logsumexp(e[0], total + p)
                    continue
                last = prefix[-1] if prefix else None
                ext = prefix + (s,)
                e = nxt[ext]
                if s == last:
                    e[1] = _logsumexp(e[1], pb + p)  # a repeat needs a blank in between
                    same = nxt[prefix]
                    same[1] = _logsumexp(same[1], pnb + p)  # collapse into the same prefix
                else:
                    e[1] = _logsumexp(e[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    if not rescore:
        return [(list(k), _logsumexp(*v)) for k, v in
                sorted(beams.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)]
    candidates = {k for k in beams} | {tuple(ctc_greedy_decode(log_probs[None], blank=blank)[0])}
    scored = [(list(k), ctc_sequence_log_prob(log_probs, list(k), blank)) for k in candidates]
    return sorted(scored, key=lambda kv: kv[1], reverse=True)[:beam]


def ctc_sequence_log_prob(log_probs: torch.Tensor, labels: Sequence[int], blank: int = 0) -> float:
    """Exact ``log P(labels | x)`` for one utterance ``(T, V)`` (via ``ctc_loss``)."""
    t = log_probs.shape[0]
    loss = torch.nn.functional.ctc_loss(
        log_probs.double().unsqueeze(1), torch.tensor([list(labels)] if labels else [[]], dtype=torch.long),
        torch.tensor([t]), torch.tensor([len(labels)]), blank=blank, reduction="sum", zero_infinity=False)
    return -float(loss)


# --------------------------------------------------------------------------- CTC speech model


class CTCSpeechModel(Model):
    """``waveform -> log-mel/fbank -> SpecAugment (train) -> encoder -> Linear -> CTC``.

    Subclasses set ``self.encoder`` (``forward(feats, lengths) -> (N, T', d), lengths'``) and
    ``self.d_model``, then call :meth:`_build_decoder`.

    ``inputs`` may be waveforms (the model's ``frontend`` computes features) or features computed
    by a ``data.transforms`` front-end (``audio.LogMel`` / ``audio.Fbank``, the same modules:
    identical features). ``frontend=None`` builds no front-end: the model then takes features only.
    ``spec_augment`` masks features in training mode inside the model; leave it off when
    ``audio.SpecAugment`` is in ``data.transforms``. ``loss``: the CTC criterion, by default
    ``audio.CTCLoss()`` (summed over each utterance, averaged over the batch).
    """

    #: the front-end's rate follows the data set's unless the config sets it
    metadata_inputs = ("sample_rate",)

    def __init__(self, sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 16000,
                 n_mels: Annotated[int, Ge(4)] = 80,
                 frontend: str | None = "logmel", spec_augment: bool = True,
                 vocab_size: Annotated[int, Ge(1)] | None = None, decoder: str = "greedy",
                 beam_size: Annotated[int, Ge(1)] = 8, time_masks: Annotated[int, Ge(0)] = 5,
                 freq_masks: Annotated[int, Ge(0)] = 2, freq_width: Annotated[int, Ge(0)] = 27,
                 loss: nn.Module | dict | None = None):
        super().__init__()
        name = type(self).__name__
        if decoder not in ("greedy", "beam"):
            raise ValueError(f"{name}: decoder must be 'greedy' or 'beam', got {decoder!r}")
        if n_mels < 4 or not 0 < sample_rate <= 192_000:
            raise ValueError(f"{name}: need n_mels >= 4 and 0 < sample_rate <= 192000, got n_mels={n_mels}, "
                             f"sample_rate={sample_rate}")
        if beam_size < 1 or time_masks < 0 or freq_masks < 0:
            raise ValueError(f"{name}: beam_size must be >= 1 and the mask counts >= 0, got beam_size={beam_size}, "
                             f"time_masks={time_masks}, freq_masks={freq_masks}")
        self.tokenizer = CharTokenizer()
        if vocab_size is not None and vocab_size < len(self.tokenizer):
            raise ValueError(f"{name}: vocab_size={vocab_size} is smaller than the {len(self.tokenizer)} symbols "
                             f"of the character tokenizer")
        self.vocab_size = vocab_size or len(self.tokenizer)
        self.frontend = build_frontend(frontend, sample_rate, n_mels) if frontend is not None else None
        self.specaug = SpecAugment(freq_masks, min(freq_width, n_mels // 3), time_masks) if spec_augment else None
        self.decoder_mode, self.beam_size = decoder, beam_size
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.criterion = resolve_loss(loss, CTCLoss, name)

    def _build_decoder(self):
        self.ctc = nn.Linear(self.d_model, self.vocab_size)  # the CTC decoder the paper counts

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None):
        if waveforms_or_features(inputs, self.frontend, self.n_mels, type(self).__name__):
            with torch.no_grad():
                feats, flen = self.frontend(inputs, lengths)
        else:
            feats = inputs
            flen = lengths if lengths is not None else torch.full((inputs.shape[0],), inputs.shape[1],
                                                                  dtype=torch.long, device=inputs.device)
        if self.specaug is not None:
            feats, flen = self.specaug(feats, flen)
        return self.encoder(feats, flen)

    def forward(self, batch: dict) -> dict:
        x, lengths = self.encode(batch["inputs"], batch.get("input_lengths"))
        return {"log_probs": self.ctc(x).log_softmax(-1), "lengths": lengths}

    def loss(self, outputs: dict, batch: dict) -> dict:
        targets, target_lengths = self.tokenizer.batch_encode(batch["texts"])
        lp = outputs["log_probs"]
        return {"loss_ctc": self.criterion(lp, targets.to(lp.device), outputs["lengths"], target_lengths.to(lp.device))}

    def predict(self, outputs: dict, batch: dict | None = None) -> list[str]:
        lp, lengths = outputs["log_probs"], outputs["lengths"]
        if self.decoder_mode == "greedy":
            return [self.tokenizer.decode(s) for s in ctc_greedy_decode(lp, lengths)]
        return [self.tokenizer.decode(ctc_prefix_beam_search(lp[i, : lengths[i]], self.beam_size, prune=-12.0)[0][0])
                for i in range(lp.shape[0])]

    def example_inputs(self, batch_size: int = 2) -> dict[str, Any]:
        g = torch.Generator().manual_seed(0)
        n = self.sample_rate // 2
        batch = {"inputs": torch.randn(batch_size, n, generator=g) * 0.1,
                 "input_lengths": torch.tensor([n] + [n - 800] * (batch_size - 1)),
                 "texts": ["one two"] + ["three"] * (batch_size - 1)}
        if self.frontend is None:  # features, as a data.transforms front-end would give them
            from ..transforms import LogMel

            batch = LogMel(self.sample_rate, self.n_mels)(batch)
        return batch
