import itertools
import math

import pytest
import torch

from panconv_audio.losses import CTCLoss
from panconv_audio.models.layers import CharTokenizer, ctc_greedy_decode, ctc_prefix_beam_search, ctc_sequence_log_prob


def _onehot_logprobs(path, v=4):
    lp = torch.full((len(path), v), -20.0)
    for t, s in enumerate(path):
        lp[t, s] = 0.0
    return lp.log_softmax(-1)


@pytest.mark.parametrize("path,expected", [
    ([0, 1, 1, 0, 2], [1, 2]),          # repeats merge
    ([1, 0, 1], [1, 1]),                # blank separates a repeated symbol
    ([0, 0, 0], []),                    # all blank
    ([3, 3, 3, 2, 2, 0, 2], [3, 2, 2]),
])
def test_greedy_hand_cases(path, expected):
    assert ctc_greedy_decode(_onehot_logprobs(path)[None])[0] == expected


def test_greedy_respects_lengths():
    lp = _onehot_logprobs([1, 2, 3])[None]
    assert ctc_greedy_decode(lp, torch.tensor([2]))[0] == [1, 2]


def test_tokenizer_roundtrip():
    tok = CharTokenizer()
    ids = tok.encode("Three o'clock!")
    assert tok.decode(ids) == "three o'clock"
    flat, lengths = tok.batch_encode(["ab", "c"])
    assert flat.tolist() == [3, 4, 5] and lengths.tolist() == [2, 1]


def _all_label_seqs(v, max_len):
    for n in range(max_len + 1):
        yield from itertools.product(range(1, v), repeat=n)


@pytest.mark.parametrize("seed", range(5))
def test_beam_search_finds_the_most_probable_labelling(seed):
    g = torch.Generator().manual_seed(seed)
    t, v = 5, 3
    lp = (torch.randn(t, v, generator=g) * 2).log_softmax(-1)
    best_exact = max(_all_label_seqs(v, t), key=lambda s: ctc_sequence_log_prob(lp, list(s)))
    labels, score = ctc_prefix_beam_search(lp, beam=64)[0]
    assert labels == list(best_exact)
    assert score == pytest.approx(ctc_sequence_log_prob(lp, labels), abs=1e-9)  # nothing pruned: exact


@pytest.mark.parametrize("seed", range(5))
def test_beam_is_at_least_as_likely_as_greedy(seed):
    g = torch.Generator().manual_seed(100 + seed)
    lp = (torch.randn(12, 5, generator=g) * 1.5).log_softmax(-1)
    greedy = ctc_greedy_decode(lp[None])[0]
    beam = ctc_prefix_beam_search(lp, beam=8)[0][0]
    assert ctc_sequence_log_prob(lp, beam) >= ctc_sequence_log_prob(lp, greedy) - 1e-9


def test_sequence_log_prob_sums_to_one():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(3, 3, generator=g).log_softmax(-1)
    total = sum(math.exp(ctc_sequence_log_prob(lp, list(s))) for s in _all_label_seqs(3, 3))
    assert total == pytest.approx(1.0, abs=1e-6)


def _ctc_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(3, 12, 6, generator=g).log_softmax(-1)             # (N, T, V), batch first
    targets = torch.tensor([1, 2, 3, 4, 5, 1, 1])
    return log_probs, targets, torch.tensor([12, 10, 7]), torch.tensor([3, 2, 2])


def test_ctc_loss_is_per_utterance_sum_averaged_over_the_batch():
    log_probs, targets, lengths, target_lengths = _ctc_case()
    per_utterance = [-ctc_sequence_log_prob(log_probs[i, : lengths[i]], seq)
                     for i, seq in enumerate([[1, 2, 3], [4, 5], [1, 1]])]
    expected = sum(per_utterance) / 3
    assert float(CTCLoss()(log_probs, targets, lengths, target_lengths)) == pytest.approx(expected, rel=1e-5)
    normalized = sum(v / n for v, n in zip(per_utterance, [3, 2, 2])) / 3
    got = float(CTCLoss(normalize_length=True)(log_probs, targets, lengths, target_lengths))
    assert got == pytest.approx(normalized, rel=1e-5)


def test_ctc_models_take_their_loss_from_a_config():
    import panconv
    from panconv_audio.models.squeezeformer import Squeezeformer

    torch.manual_seed(0)
    default = Squeezeformer(**Squeezeformer.example_config())
    assert isinstance(default.criterion, CTCLoss) and not default.criterion.normalize_length
    torch.manual_seed(0)
    configured = Squeezeformer(**Squeezeformer.example_config(),
                               loss={"type": "audio.CTCLoss", "normalize_length": True})
    assert isinstance(configured.criterion, CTCLoss) and configured.criterion.normalize_length
    batch = default.example_inputs(2)
    default.eval()
    configured.eval()
    with torch.no_grad():
        out = default(batch)
        targets, target_lengths = default.tokenizer.batch_encode(batch["texts"])
        expected = CTCLoss(normalize_length=True)(out["log_probs"], targets, out["lengths"], target_lengths)
        torch.testing.assert_close(configured.loss(configured(batch), batch)["loss_ctc"], expected)
    assert isinstance(panconv.build("loss", "audio.CTCLoss"), CTCLoss)
    with pytest.raises(ValueError, match="blank"):
        CTCLoss(blank=-1)
