"""SI-SDR / SI-SNR, PIT and the SISDR evaluator against independent computations on known signals."""

import itertools
import math

import numpy as np
import pytest
import torch

from panconv_audio.evaluators.separation import SISDR
from panconv_audio.losses import SISNRPIT, pairwise_si_snr, pit_si_snr, si_snr


def reference_si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Le Roux et al. (2019), written independently in numpy float64."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    alpha = np.dot(estimate, reference) / np.dot(reference, reference)
    target = alpha * reference
    return 10 * math.log10(np.sum(target ** 2) / np.sum((estimate - target) ** 2))


def speech_like(seconds=10.0, rate=8000, seed=0) -> np.ndarray:
    """A harmonic signal with a wandering pitch and a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
    return wave * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)


def test_scaled_copy_gives_very_high_sdr():
    s = speech_like()
    value = si_snr(torch.from_numpy(0.3 * s), torch.from_numpy(s)).item()
    assert value > 100.0                                # float64: only the eps guard bounds it
    assert si_snr(torch.from_numpy(-2 * s), torch.from_numpy(s)).item() > 100.0   # negative scale too
    f32 = si_snr(torch.from_numpy(0.3 * s).float(), torch.from_numpy(s).float()).item()
    assert f32 > 60.0


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_white_noise_at_known_snr(snr_db):
    s = speech_like(seed=1)
    noise = np.random.default_rng(2).standard_normal(len(s))
    noise *= np.sqrt(np.mean((s - s.mean()) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    estimate = s + noise
    ours = si_snr(torch.from_numpy(estimate), torch.from_numpy(s)).item()
    assert ours == pytest.approx(snr_db, abs=0.1)
    assert ours == pytest.approx(reference_si_sdr(estimate, s), abs=1e-9)
    # float32 inputs agree with the float64 value
    f32 = si_snr(torch.from_numpy(estimate).float(), torch.from_numpy(s).float()).item()
    assert f32 == pytest.approx(ours, abs=1e-3)


def test_si_snr_is_scale_and_offset_invariant():
    s, e = speech_like(seed=3), speech_like(seed=4)
    base = si_snr(torch.from_numpy(e), torch.from_numpy(s)).item()
    assert si_snr(torch.from_numpy(5 * e + 0.2), torch.from_numpy(s)).item() == pytest.approx(base, abs=1e-9)
    assert base == pytest.approx(reference_si_sdr(e, s), abs=1e-9)


@pytest.mark.parametrize("num", [2, 3])
def test_pit_finds_the_permutation(num):
    rng = np.random.default_rng(num)
    refs = torch.from_numpy(np.stack([np.stack([speech_like(1.0, seed=10 * b + k) for k in range(num)])
                                      for b in range(4)]))
    noisy = refs + 0.05 * torch.from_numpy(rng.standard_normal(refs.shape))
    for b, perm in enumerate(list(itertools.permutations(range(num)))[:4]):
        estimates = noisy.clone()
        estimates[b] = noisy[b, list(perm)]                      # estimate k is reference perm[k]
        scores, found = pit_si_snr(estimates, refs)
        # found[j] is the estimate assigned to reference j: the inverse permutation
        inverse = [perm.index(j) for j in range(num)]
        assert found[b].tolist() == inverse
        aligned = estimates[b, found[b]]
        torch.testing.assert_close(scores[b], si_snr(aligned, refs[b]))
    # the loss is the negated mean PIT SI-SNR and does not depend on the order of the estimates
    loss = SISNRPIT()(estimates, refs)
    torch.testing.assert_close(loss, -pit_si_snr(noisy, refs)[0].mean())


def test_pairwise_matrix_entries():
    refs = torch.from_numpy(np.stack([[speech_like(0.5, seed=k) for k in range(3)]]))
    est = refs + 0.1 * torch.randn(refs.shape, dtype=torch.float64)
    pair = pairwise_si_snr(est, refs)
    for i, j in itertools.product(range(3), range(3)):
        assert pair[0, i, j].item() == pytest.approx(reference_si_sdr(est[0, i].numpy(), refs[0, j].numpy()), abs=1e-6)


def test_evaluator_sdri_is_sdr_minus_mixture_sdr():
    rng = np.random.default_rng(5)
    refs = np.stack([np.stack([speech_like(1.0, seed=20 + 2 * b), 0.5 * speech_like(1.0, seed=21 + 2 * b)])
                     for b in range(3)])
    mixture = refs.sum(1)
    estimates = refs[:, ::-1] + 0.1 * rng.standard_normal(refs.shape)         # swapped order, noisy
    ev = SISDR()
    batch = {"mixture": torch.from_numpy(mixture).float(), "sources": torch.from_numpy(refs.copy()).float()}
    ev.process(batch, torch.from_numpy(estimates.copy()).float())
    metrics = ev.compute()
    sdr = np.mean([reference_si_sdr(estimates[b, 1 - j], refs[b, j]) for b in range(3) for j in range(2)])
    mix = np.mean([reference_si_sdr(mixture[b], refs[b, j]) for b in range(3) for j in range(2)])
    assert metrics["si_sdr"] == pytest.approx(sdr, abs=1e-3)
    assert metrics["si_sdri"] == pytest.approx(sdr - mix, abs=1e-3)
    # the mixture itself improves nothing
    ev_mix = SISDR()
    ev_mix.process(batch, batch["mixture"][:, None].expand(-1, 2, -1))
    assert ev_mix.compute()["si_sdri"] == pytest.approx(0.0, abs=1e-6)


def test_evaluator_merge_and_lengths():
    kwargs, pairs, expected = SISDR.example()
    batch = {k: torch.cat([b[k] for b, _ in pairs]) for k in pairs[0][0]}
    outputs = torch.cat([o for _, o in pairs])
    whole = SISDR(**kwargs)
    whole.process(batch, outputs)
    assert whole.compute() == pytest.approx(expected, abs=1e-4)
    parts = []
    for i in range(2):
        ev = SISDR(**kwargs)
        ev.process({k: v[i:i + 1] for k, v in batch.items()}, outputs[i:i + 1])
        parts += ev.results
    assert whole.compute_metrics(parts) == pytest.approx(whole.compute())
    # zero padding beyond `lengths` is ignored
    padded = {k: torch.nn.functional.pad(v, (0, 100)) for k, v in batch.items()}
    padded["lengths"] = torch.tensor([batch["mixture"].shape[-1]] * 2)
    ev = SISDR(**kwargs)
    ev.process(padded, torch.nn.functional.pad(outputs, (0, 100), value=1.0))
    assert ev.compute() == pytest.approx(expected, abs=1e-4)
