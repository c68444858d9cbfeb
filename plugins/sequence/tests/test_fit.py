"""FIT: shapes, causality, and information crossing group boundaries only through the latents."""

import pytest
import torch

from panconv_sequence.models.fit import FIT, LocalAttention


def build(causal=False, **kwargs):
    torch.manual_seed(0)
    args = dict(d_model=16, n_layers=2, group_size=8, n_latents=2, n_heads=2, vocab_size=11, causal=causal)
    return FIT(**{**args, **kwargs}).eval()


@pytest.mark.parametrize("length", [1, 5, 8, 21, 64])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes(length, causal):
    model = build(causal)
    x = torch.randint(11, (3, length))
    out = model(x)
    assert len(out) == 1 and out[0].shape == (3, 16, length) and torch.isfinite(out[0]).all()
    assert len(model.reads) == len(model.globals) == len(model.writes) == 2


def test_layers_per_block():
    model = build(n_layers=4, local_per_block=2, n_global=3)
    assert len(model.reads) == 2 and len(model.globals[0]) == 3
    with pytest.raises(ValueError, match="multiple"):
        build(n_layers=3, local_per_block=2)


def test_local_attention_stays_in_its_group():
    torch.manual_seed(0)
    for causal in (False, True):
        local = LocalAttention(16, 2, group_size=8, causal=causal).eval()
        x = torch.randn(2, 21, 16)
        y = x.clone()
        y[:, 8:16] += 1.0                                                         # group 1
        with torch.no_grad():
            a, b = local(x), local(y)
        torch.testing.assert_close(a[:, :8], b[:, :8])
        torch.testing.assert_close(a[:, 16:], b[:, 16:])


def _perturb_group0(model, x):
    y = x.clone()
    y[:, :8] = (y[:, :8] + 1) % 11
    with torch.no_grad():
        return model(x)[0], model(y)[0]


@pytest.mark.parametrize("causal", [False, True])
def test_groups_communicate_through_the_latents_only(causal):
    model = build(causal)
    x = torch.randint(11, (2, 24))
    a, b = _perturb_group0(model, x)
    assert not torch.allclose(a[..., 8:], b[..., 8:]), "later groups must hear of group 0 (via the latents)"
    # cut the latents off the tokens: reads return data-free latents -> the groups are independent
    hooks = [read.register_forward_hook(lambda module, args, out: torch.zeros_like(out)) for read in model.reads]
    try:
        a, b = _perturb_group0(model, x)
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(a[..., 8:], b[..., 8:])
    assert not torch.allclose(a[..., :8], b[..., :8])


def test_causal_fit_output_at_t_ignores_inputs_after_t():
    model = build(True)
    x = torch.randint(11, (2, 30))
    for t in (0, 5, 7, 8, 19, 28):
        y = x.clone()
        y[:, t + 1:] = (y[:, t + 1:] + 2) % 11
        with torch.no_grad():
            a, b = model(x)[0], model(y)[0]
        torch.testing.assert_close(a[..., :t + 1], b[..., :t + 1])


def test_bidirectional_fit_sees_other_groups_both_ways():
    model = build(False)
    x = torch.randint(11, (1, 24))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 11
    with torch.no_grad():
        assert not torch.allclose(model(x)[0][..., 0], model(y)[0][..., 0])
