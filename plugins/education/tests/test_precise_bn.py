"""Precise BN on CAKT (core's ``panconv.recompute_batchnorm``, which ``tools/precise_bn.py`` applies to the README's
windows): batch-norm statistics re-estimated on batches, weights untouched."""

import pytest
import torch

from panconv import recompute_batchnorm
from panconv_education.models.cakt import CAKT
from panconv_education.models.layers import example_batch


def batchnorm_layers(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _model():
    torch.manual_seed(0)
    return CAKT(num_skills=6, frame_size=4, k_frames=3, channels=[3, 1])


def test_recomputed_statistics_make_eval_match_batch_statistics():
    model = _model()
    batch = example_batch(6, batch_size=16, length=40, seed=3)
    model.train()
    with torch.no_grad():
        with_batch_stats = model(batch)
    for layer in batchnorm_layers(model):          # stale statistics, as after a short training
        layer.running_mean.fill_(3.0)
        layer.running_var.fill_(20.0)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        stale = model(batch)
    assert (stale - with_batch_stats).abs().max() > 0.1

    assert recompute_batchnorm(model, [batch]) == 1
    assert not model.training
    with torch.no_grad():
        precise = model(batch)
    # equal up to the unbiased (running) vs biased (batch) variance of ~600 values per channel
    torch.testing.assert_close(precise, with_batch_stats, rtol=0, atol=2e-2)
    assert (precise - with_batch_stats).abs().max() < (stale - with_batch_stats).abs().max() / 10
    for name, value in model.named_parameters():
        assert torch.equal(value, weights[name]), name
    assert all(layer.momentum == 0.1 for layer in batchnorm_layers(model))


def test_statistics_are_the_average_over_the_batches():
    model = _model()
    batches = [example_batch(6, batch_size=8, length=30, seed=s) for s in (1, 2)]
    means = []
    for batch in batches:
        recompute_batchnorm(model, [batch])
        means.append(batchnorm_layers(model)[0].running_mean.clone())
    recompute_batchnorm(model, batches)
    torch.testing.assert_close(batchnorm_layers(model)[0].running_mean, (means[0] + means[1]) / 2)


def test_no_batches_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        recompute_batchnorm(_model(), [])
