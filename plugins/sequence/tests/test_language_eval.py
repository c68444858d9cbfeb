"""BitsPerByte / Perplexity: exact NLL over non-ignored positions, equal to the LM head's loss; merge-safe."""

import math

import pytest
import torch

from panconv.api import FeatureInfo
from panconv_sequence.evaluators.language import BitsPerByte, Perplexity
from panconv_sequence.models.layers import LMHead


def _batches():
    torch.manual_seed(0)
    batches = []
    for n, length in [(2, 7), (3, 5), (1, 9)]:
        logits = 3 * torch.randn(n, length, 256)
        targets = torch.randint(256, (n, length))
        targets[torch.rand(n, length) < 0.3] = -100
        batches.append((logits, targets))
    return batches


def test_bits_per_byte_equals_the_lm_loss_over_all_scored_positions():
    head = LMHead([FeatureInfo(4, 1, "x")], vocab_size=256)
    batches = _batches()
    evaluator, perplexity = BitsPerByte(), Perplexity()
    for logits, targets in batches:
        evaluator.process({"targets": targets}, head.predict(logits))
        perplexity.process({"targets": targets}, logits)                      # raw logits work too
    all_logits = torch.cat([b[0].reshape(-1, 256) for b in batches])
    all_targets = torch.cat([b[1].reshape(-1) for b in batches])
    nats = torch.nn.functional.cross_entropy(all_logits.double(), all_targets, ignore_index=-100).item()
    got = evaluator.compute()
    assert got["bits_per_byte"] == pytest.approx(nats / math.log(2), rel=1e-6)  # float32 log-probs
    assert perplexity.compute()["perplexity"] == pytest.approx(math.exp(nats), rel=1e-9)
    # not the mean of per-batch means: batches score different numbers of positions
    per_batch = [torch.nn.functional.cross_entropy(b[0].reshape(-1, 256).double(), b[1].reshape(-1)).item()
                 for b in batches]
    assert got["nll"] != pytest.approx(sum(per_batch) / len(per_batch), rel=1e-6)


def test_merged_partial_results_equal_the_whole():
    batches = _batches()
    whole, parts = BitsPerByte(), [BitsPerByte(), BitsPerByte()]
    for i, (logits, targets) in enumerate(batches):
        whole.process({"targets": targets}, logits.log_softmax(-1))
        parts[i % 2].process({"targets": targets}, logits.log_softmax(-1))
    merged = whole.compute_metrics(parts[1].results + parts[0].results)
    assert merged["bits_per_byte"] == pytest.approx(whole.compute()["bits_per_byte"], rel=1e-12)


def test_lower_is_better_and_shape_check():
    assert not BitsPerByte().greater_is_better("bits_per_byte")
    assert not Perplexity().greater_is_better("perplexity")
    with pytest.raises(ValueError, match="do not match"):
        BitsPerByte().process({"targets": torch.zeros(2, 4, dtype=torch.long)}, torch.zeros(2, 5, 256))
    assert math.isnan(BitsPerByte().compute()["bits_per_byte"])
