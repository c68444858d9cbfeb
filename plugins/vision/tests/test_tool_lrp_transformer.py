"""``panconv lrp`` on ViT-style models: the LN-rule and the AH-rule (Ali et al. 2022, "XAI for Transformers:
Better Explanations through Conservative Propagation"), relevance passed through GELU/SiLU, conservation
(the test that can fail: switching either rule off breaks it), and equality with the paper's own recipe.

zennit 0.5.1 has no rule for LayerNorm or attention, so there is no third-party implementation to compare
with; the reference here is the paper's definition: make every non-linearity locally linear by holding
its statistics / weights / gate constant (``detach`` in the forward), then take Gradient x Input. With zero
biases that equals LRP-0 layer by layer, so our epsilon rule (epsilon -> 0) must reproduce it exactly.
Everything runs in float64 with epsilon 1e-12 so that the stabiliser does not blur the check.
"""

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import ComposedModel, LinearClsHead
from panconv_vision.models.convit import ConViT
from panconv_vision.models.crossvit import CrossViT, CrossViTClsHead
from panconv_vision.tools import lrp

EPS = 1e-12


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def plain(m, x):
    return m(x)


def zero_biases(model):
    """Biases, class tokens and position embeddings to 0: the setting where LRP must conserve exactly."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "cls_token" in name or "pos_embed" in name:
                p.zero_()
    return model


def convit(seed=0):
    torch.manual_seed(seed)
    backbone = ConViT(**ConViT.example_config())
    return ComposedModel(backbone, LinearClsHead(backbone.feature_info, num_classes=5)).eval()


def classifier(module, name, seed=0):
    import importlib

    torch.manual_seed(seed)
    cls = getattr(importlib.import_module(f"panconv_vision.models.{module}"), name)
    backbone = cls(**cls.example_config())
    return ComposedModel(backbone, LinearClsHead(backbone.feature_info, num_classes=5)).eval()


def swinv2(seed=0):
    return classifier("swinv2", "SwinV2", seed)


def volo(seed=0):
    return classifier("volo", "VOLO", seed)


def crossvit(seed=0):
    torch.manual_seed(seed)
    backbone = CrossViT(**CrossViT.example_config())
    return ComposedModel(backbone, CrossViTClsHead(backbone.feature_info, num_classes=5)).eval()


def explained_logit(e):
    return e.logits.gather(1, e.target.view(-1, 1))[:, 0]


# ---- the LN-rule ------------------------------------------------------------------------------------

def test_ln_rule_equals_its_closed_form_and_conserves():
    """LN-rule: y = g (x - mean x) / s with s constant; epsilon-LRP of that linear map is
    ``R_i = x_i (g_i c_i - mean_j g_j c_j) / s`` with ``c = R / y``; sum_i R_i = sum_j R_j."""
    torch.manual_seed(0)
    norm = nn.LayerNorm(6, elementwise_affine=True, bias=False)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    x = torch.randn(3, 4, 6)
    head = torch.randn(6, 2)
    e = lrp.lrp(norm, x, target=0, forward=lambda m, t: m(t).mean(1) @ head, epsilon=EPS)
    y = norm(x)
    s = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    r_out = (y / y.shape[1] * head[:, 0]).detach()  # the relevance the mean and the matmul hand to y
    c = r_out / y.detach()
    gc = norm.weight.detach() * c
    expected = x * (gc - gc.mean(-1, keepdim=True)) / s
    assert torch.allclose(e.relevance, expected, atol=1e-10)
    assert torch.allclose(e.relevance.flatten(1).sum(1), explained_logit(e), rtol=1e-9)


def test_layer_norm_without_the_ln_rule_loses_relevance():
    """The gradient through the statistics is not conservative: LayerNorm is scale invariant, so
    x . dLN/dx = 0 and gradient-based relevance through it sums to (about) zero."""
    torch.manual_seed(0)
    norm = nn.LayerNorm(8, elementwise_affine=False)
    x = torch.randn(2, 8)
    w = torch.randn(8, 3)
    good = lrp.lrp(norm, x, target=1, forward=lambda m, t: m(t) @ w, epsilon=EPS)
    bad = lrp.lrp(norm, x, target=1, forward=lambda m, t: m(t) @ w, epsilon=EPS, ln_rule=False)
    assert torch.allclose(good.relevance.sum(1), explained_logit(good), rtol=1e-9)
    assert torch.allclose(bad.relevance.sum(1), torch.zeros(2), atol=1e-4)
    assert not torch.allclose(bad.relevance.sum(1), explained_logit(bad), rtol=1e-2)


def test_group_norm_gets_the_ln_rule_on_its_groups():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.GroupNorm(2, 4, affine=False),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, bias=False)).eval()
    x = torch.randn(2, 2, 5, 5)
    e = lrp.lrp(net, x, forward=plain, epsilon=EPS)
    assert torch.allclose(e.relevance.flatten(1).sum(1), explained_logit(e), rtol=1e-9)
    assert "group_norm" in [t[0] for t in e.trace] and not e.unsupported


# ---- the AH-rule ------------------------------------------------------------------------------------

def test_ah_rule_sends_relevance_to_the_values_only():
    """AH-rule: out = A v with A = softmax(q k^T / sqrt(d)) constant; R_v = v * A^T (R / out); q, k get none."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))  # (batch, heads, tokens, channels)

    class Attend(nn.Module):
        def forward(self, t):  # t: (batch, 3, heads, tokens, channels) = q, k, v
            return F.scaled_dot_product_attention(t[:, 0], t[:, 1], t[:, 2]).sum((1, 3))

    e = lrp.lrp(Attend(), torch.stack([q, k, v], 1), target=2, forward=plain, epsilon=EPS)
    a = (q @ k.transpose(-2, -1) / 2.0).softmax(-1)
    out = a @ v
    r_out = torch.zeros_like(out)
    r_out[..., 2, :] = out[..., 2, :]  # the explained output: row 2, summed over heads and channels
    expected_v = v * (a.transpose(-2, -1) @ (r_out / out))
    assert torch.allclose(e.relevance[:, 2], expected_v, atol=1e-10)
    assert float(e.relevance[:, :2].abs().max()) == 0.0  # queries and keys: no relevance
    assert e.relevance.sum() == pytest.approx(float(out[..., 2, :].sum()), rel=1e-9)


def test_explicit_softmax_attention_equals_the_fused_one():
    """The same rule whether attention is fused (SDPA) or written out (softmax, then ``@ v``)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 4)

    def fused(m, t):
        return F.scaled_dot_product_attention(t, t * 0.5, t * 2.0).sum((1, 2))

    def explicit(m, t):
        return ((t @ (t * 0.5).transpose(-2, -1) / 2.0).softmax(-1) @ (t * 2.0)).sum((1, 2))

    a = lrp.lrp(nn.Identity(), x, target=1, forward=fused, epsilon=EPS)
    b = lrp.lrp(nn.Identity(), x, target=1, forward=explicit, epsilon=EPS)
    assert torch.allclose(a.relevance, b.relevance, atol=1e-10)
    assert torch.allclose(a.relevance.sum(), a.logits[0, 1], rtol=1e-9)


def test_gelu_and_silu_pass_relevance_unchanged():
    torch.manual_seed(0)
    x = torch.randn(2, 6)
    for act in (nn.GELU(), nn.SiLU()):
        e = lrp.lrp(act, x, target=3, forward=plain, epsilon=EPS)
        expected = torch.zeros_like(x)
        expected[:, 3] = act(x)[:, 3]
        assert torch.allclose(e.relevance, expected, atol=1e-12) and not e.unsupported


def test_a_gate_of_two_input_dependent_factors_is_reported():
    """A product of two input-dependent tensors has no rule: it is reported once relevance reaches it."""
    x = torch.randn(2, 4)
    e = lrp.lrp(nn.Identity(), x, target=0, forward=lambda m, t: t * torch.sigmoid(t), epsilon=EPS)
    assert e.unsupported == ["product of input-dependent tensors", "sigmoid"]
    # a product whose result is only used by a softmax (q k^T) gets no relevance: nothing to report
    e = lrp.lrp(nn.Identity(), x, target=0, forward=lambda m, t: (t @ t.T).softmax(-1) @ t, epsilon=EPS)
    assert e.unsupported == []
    # Fourier-domain maps (HorNet's global filter) have no rule either
    e = lrp.lrp(nn.Identity(), x, target=0, forward=lambda m, t: torch.fft.irfft(torch.fft.rfft(t) * 2.0, n=4),
                epsilon=EPS)
    assert e.unsupported == ["complex-valued (Fourier) map"]


# ---- whole ViT-style models of the plugin -----------------------------------------------------------

@pytest.mark.parametrize("build", [convit, crossvit, swinv2, volo], ids=["convit", "crossvit", "swinv2", "volo"])
def test_relevance_is_conserved_through_vit_models(build):
    """ConViT (GPSA: gated explicit softmax attention, then SA with a class token), CrossViT (two
    branches, SDPA, class-token cross-attention, a resized input, two heads averaged), Swin V2 (windows,
    cosine attention, res-post-norm), VOLO (outlook attention: unfold / fold): input relevance = logit,
    every rule hands on what it receives, and no layer is left without a rule."""
    model = zero_biases(build())
    x = torch.rand(2, 3, 32, 32)
    e = lrp.lrp(model, x, rule="epsilon", epsilon=EPS)
    assert torch.allclose(e.relevance.flatten(1).sum(1), explained_logit(e), rtol=1e-7)
    assert not e.unsupported
    names = {t[0] for t in e.trace}
    assert {"layer_norm", "add"} <= names and names & {"attention", "product"}
    for name, r_out, r_in in e.trace:
        assert r_in == pytest.approx(r_out, rel=1e-6, abs=1e-12), name


@pytest.mark.parametrize("switch", ["ln_rule", "ah_rule"])
def test_either_rule_off_breaks_conservation(switch):
    model = zero_biases(crossvit())
    x = torch.rand(2, 3, 32, 32)
    e = lrp.lrp(model, x, rule="epsilon", epsilon=EPS, **{switch: False})
    assert not torch.allclose(e.relevance.flatten(1).sum(1), explained_logit(e), rtol=1e-3)
    if switch == "ah_rule":
        assert "attention" in e.unsupported


def test_equals_gradient_times_input_of_the_detached_model(monkeypatch):
    """The paper's recipe, written independently: LayerNorm with its std detached, attention with its
    weights detached, GELU as x times its detached gate; Gradient x Input on that model."""
    model = zero_biases(crossvit(seed=1))
    x = torch.rand(2, 3, 32, 32)
    ours = lrp.lrp(model, x, rule="epsilon", epsilon=EPS)
    gelu = F.gelu

    def ln(t, shape, weight=None, bias=None, eps=1e-5):
        dims = tuple(range(-len(shape), 0))
        y = (t - t.mean(dims, keepdim=True)) / torch.sqrt(t.var(dims, unbiased=False, keepdim=True) + eps).detach()
        return y * weight + bias

    def attention(q, k, v, **kwargs):
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1).detach() @ v

    def gated(t, approximate="none"):
        gate = torch.where(t == 0, torch.full_like(t, 0.5), gelu(t, approximate=approximate) / t)
        return t * gate.detach()

    for name, fn in (("layer_norm", ln), ("scaled_dot_product_attention", attention), ("gelu", gated)):
        monkeypatch.setattr(F, name, fn)
    inp = x.clone().requires_grad_(True)
    logits = model({"inputs": inp})
    assert torch.allclose(logits, ours.logits, atol=1e-12)  # the detached model computes the same function
    (grad,) = torch.autograd.grad(logits.gather(1, ours.target.view(-1, 1)).sum(), inp)
    reference = inp.detach() * grad
    assert torch.allclose(ours.relevance, reference, atol=1e-9 * float(reference.abs().max()))


def test_biases_keep_their_share():
    """With biases (and position embeddings, class tokens) the input relevance is not the logit (the
    constants are credited their share, zennit's convention); ``bias=False`` leaves them out of the rules."""
    model = crossvit()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" in name or name.endswith("bias"):
                p.uniform_(-0.3, 0.3)
    x = torch.rand(2, 3, 32, 32)
    e = lrp.lrp(model, x, rule="epsilon", epsilon=EPS)
    assert not torch.allclose(e.relevance.flatten(1).sum(1), explained_logit(e), rtol=1e-2)
    for name, r_out, r_in in e.trace:
        if name in ("attention", "product", "mean", "sum"):  # no constants in these maps
            assert r_in == pytest.approx(r_out, rel=1e-6, abs=1e-12), name


def test_lrp_command_on_a_vit(tmp_path):
    """``panconv lrp`` on a ConViT classifier of 28x28 digits: runs, lists no unsupported layer."""
    import gzip
    import pickle

    import numpy as np

    torch.set_default_dtype(torch.float32)
    rng = np.random.default_rng(0)
    file = tmp_path / "mnist.pkl.gz"
    with gzip.open(file, "wb") as fh:
        pickle.dump(tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (8, 4, 4)), fh)
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  backbone: {type: vision.ConViT, embed_dim: 16, num_heads: 4, depth: 2,"
                      " local_layers: 1, patch_size: 7, img_size: 28}\n  head: {type: core.LinearClsHead}\n"
                      f"data: {{type: vision.MNIST, file: '{file}', splits: {{train: train, test: test}}}}\n")
    args = argparse.Namespace(config=str(config), checkpoint=None, device="cpu", data_root=str(tmp_path),
                              output=str(tmp_path / "out"), rule="epsilon", epsilon=1e-6, alpha=1.0, index=0, count=2,
                              target=None)
    assert lrp.main(args) == 0
    report = json.loads((tmp_path / "out" / "lrp.json").read_text())
    assert len(report["input_relevance"]) == 2 and report["unsupported_layers"] == []
    assert (tmp_path / "out" / "lrp.png").is_file()
