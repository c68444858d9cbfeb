"""DISGAN's perceptual term: the frozen 3-D VGG16 feature extractor and ``w * L1(FE(G(x)), FE(y))``.

Parity: ``fixtures/disgan_vgg16_parity.pt`` holds the official ``VGG16`` feature extractor's output
(wqlevi/DISGAN ``mains/model/model_DISGAN.py``, class ``VGG16``, the training script's default ``FE_type``)
on our weights. The class (and its ``_init_weights``) is taken from the file by ``ast`` and run with torch
alone, so the rest of the module's imports are not needed. Regenerate with the repository fetched::

    PANCONV_RECORD_DISGAN_VGG=/path/to/DISGAN/mains/model/model_DISGAN.py \\
        pytest plugins/vision/tests/test_disgan_perceptual.py
"""

import ast
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import panconv
from panconv.testing import assert_rejected_at_validation, dry_run
from panconv_vision.models.disgan import DISGAN, VGG16_3D, VGG3dFeatures

FIXTURE = Path(__file__).parent / "fixtures" / "disgan_vgg16_parity.pt"
REPO = Path(__file__).resolve().parents[3]
EXAMPLE = "examples/vision_disgan_perceptual_mni152.yaml"


def _conv_count(width=64, in_channels=1):
    total, c = 0, in_channels
    for v in VGG16_3D:
        if v != "M":
            out = v * width // 64
            total += 27 * c * out + out
            c = out
    return total


def test_extractor_layout_init_and_freezing():
    fe = VGG3dFeatures(1, 64, "official", seed=0)
    convs = [m for m in fe.modules() if isinstance(m, nn.Conv3d)]
    pools = [m for m in fe.modules() if isinstance(m, nn.MaxPool3d)]
    assert len(convs) == 10 and len(pools) == 3
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512]
    assert sum(p.numel() for p in fe.parameters()) == _conv_count() == 22_896_960
    assert not any(p.requires_grad for p in fe.parameters())
    w = torch.cat([c.weight.flatten() for c in convs])
    assert abs(w.std().item() - 1.0) < 0.01 and abs(w.mean().item()) < 0.01  # official: N(0, 1)
    assert all(c.bias.abs().max() == 0 for c in convs)
    k = VGG3dFeatures(1, 64, "kaiming", seed=0)
    last = [m for m in k.modules() if isinstance(m, nn.Conv3d)][-1]
    assert abs(last.weight.std().item() / (2 / (27 * 512)) ** 0.5 - 1) < 0.02
    # seeded by its own generator: independent of the global RNG, different for another seed
    torch.manual_seed(123)
    again = VGG3dFeatures(1, 64, "kaiming", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(k.parameters(), again.parameters()))
    other = VGG3dFeatures(1, 64, "kaiming", seed=1)
    assert not torch.equal(next(k.parameters()), next(other.parameters()))
    half = VGG3dFeatures(1, 32, "kaiming")
    assert sum(p.numel() for p in half.parameters()) == _conv_count(32)
    x = torch.rand(2, 1, 16, 16, 16)
    assert fe(x).shape == (2, 512, 2, 2, 2) and half(x).shape == (2, 256, 2, 2, 2)
    assert fe(torch.rand(1, 1, 12, 8, 9)).shape == (1, 512, 1, 1, 1)  # the max-pools floor, as the official's
    with pytest.raises(ValueError, match=">= 8"):
        fe(torch.rand(1, 1, 4, 16, 16))
    with pytest.raises(ValueError, match="init"):
        VGG3dFeatures(init="xavier")


def _model(weight=0.01, adv=5e-3):
    torch.manual_seed(0)
    return DISGAN(**{**DISGAN.example_config(), "perceptual_weight": weight, "perceptual_width": 8,
                     "perceptual_init": "kaiming", "adv_weight": adv,
                     "disc_levels": 3}).train()


@pytest.mark.parametrize("adv", [5e-3, 0.0])
def test_perceptual_term_is_its_definition_and_moves_only_the_generator(adv):
    m = _model(0.01, adv)
    batch = m.example_inputs(2)
    out = m(batch)
    losses = m.loss(out, batch)
    assert {"loss_pixel", "loss_perceptual"} <= set(losses)
    assert ("loss_adv" in losses) == (adv > 0)
    fe = m.feature_extractor
    expected = 0.01 * F.l1_loss(fe(out), fe(batch["targets"]))
    torch.testing.assert_close(losses["loss_perceptual"], expected)
    torch.testing.assert_close(losses["loss_pixel"], F.l1_loss(out, batch["targets"]))
    g_grads = torch.autograd.grad(losses["loss_perceptual"], list(m.generator.parameters()), allow_unused=True,
                                  retain_graph=True)
    assert any(g is not None and g.abs().max() > 0 for g in g_grads)
    d_grads = torch.autograd.grad(losses["loss_perceptual"], list(m.discriminator.parameters()), allow_unused=True,
                                  retain_graph=True)
    assert all(g is None for g in d_grads)
    assert all(p.grad is None for p in fe.parameters())
    # zero on identical volumes, positive otherwise; not part of the evaluation loss
    y = batch["targets"]
    assert m.perceptual_loss(y, y) == 0 and m.perceptual_loss(y.flip(-1), y) > 0
    m.eval()
    assert set(m.loss(m(batch), batch)) == {"loss"}


def test_off_by_default_keeps_the_model_and_losses():
    m = DISGAN(**DISGAN.example_config()).train()
    assert m.feature_extractor is None
    batch = m.example_inputs(2)
    assert set(m.loss(m(batch), batch)) == {"loss_pixel", "loss_adv", "loss_disc"}
    with pytest.raises(ValueError, match="perceptual_weight is 0"):
        m.perceptual_loss(batch["targets"], batch["targets"])
    with torch.device("meta"):
        official = panconv.create_model({"type": "vision.disgan"})
        with_fe = panconv.create_model({"type": "vision.disgan", "perceptual_weight": 0.01})
    n = sum(p.numel() for p in official.parameters())
    assert n == 16_042_881 + 42_653_827
    assert sum(p.numel() for p in with_fe.parameters()) == n + 22_896_960
    assert sum(p.numel() for p in with_fe.parameters() if p.requires_grad) == n


def test_the_example_is_valid_and_bad_perceptual_settings_stop_at_validation():
    code, out, err = dry_run(EXAMPLE, cwd=REPO)
    assert code == 0, err
    for key, value in (("perceptual_weight", "-1"), ("perceptual_width", "0"), ("perceptual_init", "vgg19")):
        assert_rejected_at_validation(EXAMPLE, f"model.{key}={value}", f"model.{key}", cwd=REPO)


def _ours_full_width():
    return VGG3dFeatures(1, 64, "kaiming", seed=0)


def _input():
    return torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))


def _record(path):
    tree = ast.parse(Path(path).read_text())
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and n.name in ("_init_weights", "VGG16")]
    namespace = {"nn": nn, "torch": torch}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), namespace)  # noqa: S102
    official = namespace["VGG16"](in_channels=1)
    ours = _ours_full_width()
    with torch.no_grad():
        for p, q in zip(official.parameters(), ours.parameters(), strict=True):
            p.copy_(q)
        out = official(_input())
    torch.save({"output": out, "source": "wqlevi/DISGAN mains/model/model_DISGAN.py (VGG16)"}, FIXTURE)


def test_parity_with_the_official_extractor():
    if os.environ.get("PANCONV_RECORD_DISGAN_VGG"):
        _record(os.environ["PANCONV_RECORD_DISGAN_VGG"])
    rec = torch.load(FIXTURE)
    with torch.no_grad():
        torch.testing.assert_close(_ours_full_width()(_input()), rec["output"], atol=1e-5, rtol=1e-5)
