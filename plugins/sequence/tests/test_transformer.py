"""The dense Transformer baseline: exact softmax attention, rotary relative positions, causality."""

import math

import pytest
import torch

from panconv_sequence.models.layers import MultiHeadAttention, rotary
from panconv_sequence.models.transformer import Transformer


def test_attention_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    for causal in (False, True):
        attn = MultiHeadAttention(8, n_heads=2, causal=causal).double()
        x = torch.randn(2, 7, 8, dtype=torch.float64)
        q = attn.q(x).view(2, 7, 2, 4).transpose(1, 2)
        k, v = (t.view(2, 7, 2, 4).transpose(1, 2) for t in attn.kv(x).chunk(2, -1))
        pos = torch.arange(7)
        scores = rotary(q, pos) @ rotary(k, pos).transpose(-1, -2) / math.sqrt(4)
        if causal:
            scores = scores.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf"))
        expected = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 8))
        torch.testing.assert_close(attn(x), expected)


def test_rotary_scores_depend_on_the_position_difference_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    score = lambda i, j: (rotary(q, torch.tensor([i])) * rotary(k, torch.tensor([j]))).sum()
    torch.testing.assert_close(score(3, 1), score(12, 10))
    assert not torch.isclose(score(3, 1), score(3, 2))


def test_causal_transformer_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randint(11, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % 11
    causal = Transformer(d_model=16, n_layers=2, n_heads=2, causal=True, vocab_size=11).eval()
    bidirectional = Transformer(d_model=16, n_layers=2, n_heads=2, causal=False, vocab_size=11).eval()
    with torch.no_grad():
        torch.testing.assert_close(causal(x)[0][..., :12], causal(y)[0][..., :12])
        assert not torch.allclose(bidirectional(x)[0][..., :12], bidirectional(y)[0][..., :12])


def test_feature_inputs_and_bad_heads():
    model = Transformer(d_model=16, n_layers=1, n_heads=4, in_channels=3)
    assert model(torch.randn(2, 9, 3))[0].shape == (2, 16, 9)
    with pytest.raises(ValueError, match="divisible"):
        Transformer(d_model=10, n_heads=4)
