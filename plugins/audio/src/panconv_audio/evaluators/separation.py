"""Separation metrics: SI-SDR and SI-SDR improvement, PIT-aligned.

SI-SDR (Le Roux et al., "SDR – half-baked or well done?", ICASSP 2019) of an estimate against
its reference, both zero-mean; see :func:`panconv_audio.losses.si_snr`. Estimates are aligned to
the references by the permutation with the best mean SI-SDR (utterance-level PIT).
SI-SDRi = SI-SDR(estimate) − SI-SDR(mixture): the mixture itself scores 0 dB of improvement.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Interval

from panconv.api import Evaluator

from ..losses import pit_si_snr, si_snr


class SISDR(Evaluator):
    """``si_sdr`` and ``si_sdri`` (dB), averaged over every source of every mixture.

    ``process(batch, outputs)``: ``outputs`` the estimated sources ``(N, S, T)`` (the model's
    ``predict``), ``batch["sources"]`` the references ``(N, S, T)`` and ``batch["mixture"]``
    ``(N, T)``. An optional ``batch["lengths"]`` ``(N,)`` restricts each mixture to its valid
    samples (padded batches).
    """

    def __init__(self, eps: Annotated[float, Interval(gt=0, lt=1)] = 1e-8):
        super().__init__()
        if not 0 < eps < 1:
            raise ValueError(f"SISDR: eps must be in (0, 1), got {eps}")
        self.eps = eps

    def process(self, batch: dict, outputs: torch.Tensor) -> None:
        estimates = outputs.detach().double()
        sources = batch["sources"].detach().to(estimates.device).double()
        mixture = batch["mixture"].detach().to(estimates.device).double()
        lengths = batch.get("lengths")
        for i in range(len(sources)):
            end = int(lengths[i]) if lengths is not None else sources.shape[-1]
            est, ref, mix = estimates[i:i + 1, :, :end], sources[i:i + 1, :, :end], mixture[i:i + 1, :end]
            aligned, _ = pit_si_snr(est, ref, self.eps)                                # (1, S)
            baseline = si_snr(mix.unsqueeze(1).expand_as(ref), ref, self.eps)         # (1, S)
            # one partial result per mixture: (sum of SI-SDR, sum of mixture SI-SDR, number of sources)
            self.results.append((float(aligned.sum()), float(baseline.sum()), int(ref.shape[1])))

    def compute_metrics(self, results: list) -> dict[str, float]:
        count = sum(r[2] for r in results)
        if count == 0:
            return {"si_sdr": float("nan"), "si_sdri": float("nan")}
        sdr = sum(r[0] for r in results) / count
        mix = sum(r[1] for r in results) / count
        return {"si_sdr": sdr, "si_sdri": sdr - mix}

    @classmethod
    def example(cls):
        """Known answer: estimates are the references swapped (PIT must undo it) plus a tone orthogonal
        to both at -20 dB, so SI-SDR = 20 dB; the mixture scores +6.02 and -6.02 dB (0 on average)."""
        t = torch.arange(800, dtype=torch.float64) / 8000                # 0.1 s: whole periods of each tone
        tone = lambda hz: torch.sin(2 * torch.pi * hz * t)
        s1, s2, noise = tone(220), 0.5 * tone(330), tone(440)
        sources = torch.stack([torch.stack([s1, s2]), torch.stack([s2, s1])])                # (2, 2, T)
        energy = sources.pow(2).sum(-1, keepdim=True)
        estimates = sources + noise * (0.01 * energy / noise.pow(2).sum()).sqrt()              # 20 dB SNR
        estimates = estimates.flip(1).float()
        batches = [({"mixture": sources[i:i + 1].sum(1).float(), "sources": sources[i:i + 1].float()},
                    estimates[i:i + 1]) for i in range(2)]  # two batches: the merge check needs them
        return {}, batches, {"si_sdr": 20.0, "si_sdri": 20.0}
