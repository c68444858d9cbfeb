"""Separation losses: scale-invariant SNR with utterance-level permutation invariant training.

SI-SNR (Luo & Mesgarani, Conv-TasNet 2019; = SI-SDR of Le Roux et al., 2019) of an estimate
``ŝ`` of a reference ``s``, both made zero-mean::

    s_target = <ŝ, s> s / ‖s‖²,   e = ŝ - s_target,   SI-SNR = 10 log10(‖s_target‖² / ‖e‖²)

Utterance-level PIT (Kolbæk et al., 2017): the loss of a mixture is the one of the permutation
of the estimated sources that maximises the mean SI-SNR over its speakers.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["SISNRPIT", "SISNRWithPIT", "pairwise_si_snr", "pit_si_snr", "si_snr"]


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

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        scores, _ = pit_si_snr(estimates, references, self.eps)
        return -scores.mean()


#: the name used in the hookspec example
SISNRWithPIT = SISNRPIT
