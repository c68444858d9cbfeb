"""TCNCA: causality, the TCN's receptive field and its relation to the chunk, chunk-local attention."""

import pytest
import torch

from panconv_sequence.models.tcnca import TCN, TCNCA, ChunkedGatedAttention, tcn_depth_for, tcn_receptive_field


def test_receptive_field_formula_is_the_measured_dependence_span():
    torch.manual_seed(0)
    for kernel, base, depth in [(3, 2, 3), (2, 2, 4), (4, 3, 2), (3, 1, 3)]:
        tcn = TCN(4, kernel, base, depth, causal=True).double()
        x = torch.randn(1, 80, 4, dtype=torch.float64, requires_grad=True)
        tcn(x)[0, -1].sum().backward()
        reached = x.grad[0].abs().sum(-1) > 0                                  # which inputs the last output sees
        field = tcn_receptive_field(kernel, base, depth)
        assert field == tcn.receptive_field
        assert reached[80 - field:].all() and not reached[:80 - field].any(), (kernel, base, depth)


def test_default_depth_is_the_smallest_covering_the_chunk():
    for chunk in (1, 2, 7, 16, 64, 100, 256):
        for kernel, base in [(3, 2), (2, 2), (5, 3)]:
            depth = tcn_depth_for(chunk, kernel, base)
            assert tcn_receptive_field(kernel, base, depth) >= chunk
            assert depth == 1 or tcn_receptive_field(kernel, base, depth - 1) < chunk
    mixer = ChunkedGatedAttention(8, chunk_size=64, z_dim=8, kernel_size=3, dilation_base=2)
    assert mixer.tcn.depth == 6 and mixer.tcn.receptive_field == 127          # depth 5 reaches 63 < 64


def test_a_tcn_shorter_than_the_chunk_is_refused():
    with pytest.raises(ValueError, match="receptive field"):
        TCNCA(chunk_size=64, kernel_size=3, dilation_base=2, tcn_depth=4)        # field 31 < 64
    TCNCA(chunk_size=31, kernel_size=3, dilation_base=2, tcn_depth=4)           # exactly covers


def test_attention_is_chunk_local():
    torch.manual_seed(0)
    for causal in (True, False):
        mixer = ChunkedGatedAttention(8, chunk_size=5, z_dim=8, causal=causal)
        q, k, v = (torch.randn(2, 13, 8) for _ in range(3))                      # chunks [0,5) [5,10) [10,13)
        out = mixer.attention(q, k, v)
        k2, v2 = k.clone(), v.clone()
        k2[:, 5:10] += 1.0
        v2[:, 5:10] += 1.0
        out2 = mixer.attention(q, k2, v2)
        torch.testing.assert_close(out[:, :5], out2[:, :5])
        torch.testing.assert_close(out[:, 10:], out2[:, 10:])
        assert not torch.allclose(out[:, 5:10], out2[:, 5:10])


@pytest.mark.parametrize("length", [37, 64])
def test_causal_backbone_output_at_t_ignores_inputs_after_t(length):
    torch.manual_seed(0)
    model = TCNCA(d_model=16, n_layers=2, chunk_size=8, z_dim=8, vocab_size=11, causal=True).eval()
    x = torch.randint(11, (2, length))
    for t in (0, 9, length - 3):
        y = x.clone()
        y[:, t + 1:] = (y[:, t + 1:] + 3) % 11
        y[:, t] = x[:, t]
        with torch.no_grad():
            a, b = model(x)[0], model(y)[0]
        torch.testing.assert_close(a[..., :t + 1], b[..., :t + 1])
        if t + 1 < length:
            assert not torch.allclose(a[..., t + 1:], b[..., t + 1:])


def test_information_crosses_chunks_through_the_tcn():
    # the attention is chunk-local; the TCN carries the previous chunk into this one
    torch.manual_seed(0)
    model = TCNCA(d_model=16, n_layers=1, chunk_size=8, z_dim=8, vocab_size=11, causal=True).eval()
    x = torch.randint(11, (1, 16))
    y = x.clone()
    y[0, 5] = (y[0, 5] + 1) % 11                                                 # chunk 0
    with torch.no_grad():
        assert not torch.allclose(model(x)[0][..., 8:], model(y)[0][..., 8:])    # chunk 1 changes


def test_bidirectional_sees_the_future():
    torch.manual_seed(0)
    model = TCNCA(d_model=16, n_layers=1, chunk_size=8, z_dim=8, vocab_size=11, causal=False).eval()
    x = torch.randint(11, (1, 16))
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % 11
    with torch.no_grad():
        assert not torch.allclose(model(x)[0][..., 0], model(y)[0][..., 0])
