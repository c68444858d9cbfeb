"""Registered losses: SI-SNR with utterance-level PIT (separation) and CTC (recognition).

A model takes its criterion as the constructor argument ``loss`` (``loss: {type: audio.SISNRPIT}``
in a config is built from the loss registry); unset, it uses the default named in its docstring.

Separation: scale-invariant SNR with utterance-level permutation invariant training.

SI-SNR (Luo & Mesgarani, Conv-TasNet 2019; = SI-SDR of Le Roux et al., 2019) of an estimate
``ŝ`` of a reference ``s``, both made zero-mean::

    s_target = <ŝ, s> s / ‖s‖²,   e = ŝ - s_target,   SI-SNR = 10 log10(‖s_target‖² / ‖e‖²)

Utterance-level PIT (Kolbæk et al., 2017): the loss of a mixture is the one of the permutation
of the estimated sources that maximises the mean SI-SNR over its speakers.
"""

from __future__ import annotations

import itertools
from typing import Annotated

import torch
from annotated_types import Ge, Interval
from torch import nn

__all__ = ["CTCLoss", "SISNRPIT", "pairwise_si_snr", "pit_si_snr", "si_snr"]

#: the most sources utterance-level PIT takes (it scores all S! permutations: 40320 for 8)
MAX_PIT_SOURCES = 8


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SI-SNR in dB along the last axis; ``estimate`` and ``reference`` broadcast together."""
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def pairwise_si_snr(estimates: torch.Tensor, references: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(N, S, T)`` x ``(N, S, T)`` -> ``(N, S_est, S_ref)``: SI-SNR of every estimate vs every reference."""
    return si_snr(estimates.unsqueeze(2), references.unsqueeze(1), eps)


def pit_si_snr(estimates: torch.Tensor, references: torch.Tensor, eps: float = 1e-8
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best permutation per utterance.

    Returns ``(si_snr, perm)``: ``si_snr`` ``(N, S)`` is the SI-SNR of each reference against the
    estimate assigned to it, and ``perm`` ``(N, S)`` the estimate index assigned to each reference
    (``estimates[n, perm[n]]`` is aligned with ``references[n]``).
    """
    num = estimates.shape[1]
    if num > MAX_PIT_SOURCES:
        raise ValueError(f"PIT scores all {num}! orders of {num} sources; at most {MAX_PIT_SOURCES} sources are "
                         f"supported")
    if references.shape[1] != num:
        raise ValueError(f"PIT needs as many estimates as references, got {num} and {references.shape[1]}")
    pair = pairwise_si_snr(estimates, references, eps)                                  # (N, S_est, S_ref)
    perms = torch.tensor(list(itertools.permutations(range(num))), device=estimates.device)  # (P, S)
    ref_index = torch.arange(num, device=estimates.device)
    scores = pair[:, perms, ref_index]                                                  # (N, P, S)
    best = scores.mean(-1).argmax(-1)                                                   # (N,)
    rows = torch.arange(len(best), device=estimates.device)
    return scores[rows, best], perms[best]


class SISNRPIT(nn.Module):
    """Negative SI-SNR with utterance-level PIT, averaged over speakers and utterances.

    ``forward(estimates (N, S, T), references (N, S, T)) -> scalar loss``; ``eps`` guards
    silent signals. MossFormer is trained with it (the paper's SI-SNR objective).
    """

    def __init__(self, eps: Annotated[float, Interval(gt=0, lt=1)] = 1e-8):
        super().__init__()
        if not 0 < eps < 1:
            raise ValueError(f"SISNRPIT: eps must be in (0, 1), got {eps}")
        self.eps = eps

    def forward(self, estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        scores, _ = pit_si_snr(estimates, references, self.eps)
        return -scores.mean()


class CTCLoss(nn.Module):
    """CTC loss of each utterance (summed over its alignment), averaged over the batch.

    ``forward(log_probs (N, T, V), targets (sum of target lengths,), input_lengths (N,), target_lengths (N,))``
    with batch-first log-probabilities, as the CTC models output them. ``normalize_length`` divides
    each utterance's loss by its target length first (``torch.nn.CTCLoss(reduction="mean")``);
    ``zero_infinity`` zeroes infeasible alignments (an utterance too short for its transcript).
    The default is the criterion of ``audio.Squeezeformer`` / ``audio.Conformer``.
    """

    def __init__(self, blank: Annotated[int, Ge(0)] = 0, zero_infinity: bool = True, normalize_length: bool = False):
        super().__init__()
        if blank < 0:
            raise ValueError(f"CTCLoss: blank must be a symbol index >= 0, got {blank}")
        self.blank, self.zero_infinity, self.normalize_length = blank, zero_infinity, normalize_length

    def forward(self, log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                target_lengths: torch.Tensor) -> torch.Tensor:
        losses = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1).float(), targets, input_lengths,
                                              target_lengths, blank=self.blank, reduction="none",
                                              zero_infinity=self.zero_infinity)
        if self.normalize_length:
            losses = losses / target_lengths.clamp(min=1).to(losses.dtype)
        return losses.sum() / log_probs.shape[0]
