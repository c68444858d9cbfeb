"""CFSR: paper sizes (x2/x3/x4), EFN re-parameterisation, kernel routing, parity with the official code.

Parity: ``fixtures/cfsr_parity.pt`` holds the official CFSR's output (Aitical/CFSR,
``basicsr/archs/cfsr_arch.py``, built as its x4 test options) on our seeded weights. Regenerate with the
official file fetched (not committed)::

    PANCONV_RECORD_CFSR=/path/to/basicsr/archs/cfsr_arch.py pytest plugins/vision/tests/test_cfsr.py

The fixture also holds that official model's state-dict key names and shapes (not values), for the CI test of
``map_official_state_dict``; with the variable set, an official model's own weights are also loaded through the
map and compared with the official output.
"""

import contextlib
import copy
import importlib.util
import io
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.cfsr import CFSR, EdgePreservingFFN, map_official_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "cfsr_parity.pt"
# official parameter counts (the deploy form its checkpoints use; = paper's 307K at x4)
PAPER = {"vision.cfsr_x2": 291_324, "vision.cfsr_x3": 297_819, "vision.cfsr_x4": 306_912}


def test_every_paper_scale_is_registered():
    assert sorted(panconv.list_models("vision.cfsr_*")) == sorted(PAPER)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_parameter_counts(name):
    with torch.device("meta"):
        m = panconv.create_model({"type": name}).reparameterize()
    assert sum(p.numel() for p in m.parameters()) == PAPER[name]


def test_efn_reparameterisation_keeps_outputs():
    torch.manual_seed(0)
    m = CFSR(upscale=3, embed_dim=8, depths=(2,)).eval()
    with torch.no_grad():
        for p in m.parameters():  # non-trivial edge branches and layer scales
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(1, 3, 10, 9)
    with torch.no_grad():
        before = m({"inputs": x})
        assert before.shape == (1, 3, 30, 27)
        assert m.reparameterize() is m
        torch.testing.assert_close(m({"inputs": x}), before, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(e, EdgePreservingFFN) and not e.deployed for e in m.modules())


def test_edge_branches_are_the_scaled_sobel_and_laplacian_filters():
    torch.manual_seed(0)
    efn = EdgePreservingFFN(2, 1.0)
    w, b = efn.merged_kernel_bias()
    sobel_x = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    expect = efn.pos.weight[0, 0] + efn.edge_scale[0, 0] * sobel_x + efn.edge_scale[1, 0] * efn.edge_masks[1] \
        + efn.edge_scale[2, 0] * efn.edge_masks[2]
    torch.testing.assert_close(w[0, 0], expect)
    assert efn.edge_masks[2].sum() == 0 and efn.edge_masks[1].sum() == 0  # zero-mean edge detectors


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        CFSR(dw_size=8)
    with pytest.raises(ValueError, match="expected inputs"):
        CFSR(embed_dim=8, depths=(1,))({"inputs": torch.rand(1, 1, 8, 8)})


def _ours():
    torch.manual_seed(0)
    m = CFSR(upscale=4).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def _official_module(path):
    reg = types.ModuleType("basicsr.utils.registry")
    reg.ARCH_REGISTRY = types.SimpleNamespace(register=lambda: (lambda c: c))
    for name in ("basicsr", "basicsr.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["basicsr.utils.registry"] = reg
    spec = importlib.util.spec_from_file_location("cfsr_arch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(path):
    mod = _official_module(path)
    with contextlib.redirect_stdout(io.StringIO()):
        official = mod.CFSR(upscale=4, in_chans=3, dw_size=9, img_range=1.0, depths=[6, 6], embed_dim=48,
                            mlp_ratio=2, upsampler="pixelshuffledirect").eval()
    ours = _ours().reparameterize()
    official.load_state_dict({k: v for k, v in zip(official.state_dict(), ours.state_dict().values())})
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = official(x)
    shapes = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    torch.save({"input": x, "output": out, "official_shapes": shapes,
                "source": "Aitical/CFSR basicsr/archs/cfsr_arch.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_CFSR"):
        _record(os.environ["PANCONV_RECORD_CFSR"])
    rec = torch.load(FIXTURE)
    ours = _ours()
    with torch.no_grad():
        torch.testing.assert_close(ours({"inputs": rec["input"]}), rec["output"], atol=1e-5, rtol=1e-5)
        ours.reparameterize()
        torch.testing.assert_close(ours({"inputs": rec["input"]}), rec["output"], atol=1e-5, rtol=1e-5)



def test_fresh_network_starts_from_the_official_initialisation():
    """What the official code does at training time, checked on a fresh network: ConvFormer layer scales at
    1e-6 (the body's residual branches start silent, so a fresh CFSR is the stem, the groups' 1x1 convs and
    the up-sampler alone), EFN edge scales and biases ~N(0, 1e-3), the DIV2K mean shift with img_range 1,
    and no skip from an interpolated input (``pixelshuffledirect``: with the up-sampler's conv zeroed the
    output is the mean image, whatever the input)."""
    torch.manual_seed(0)
    m = CFSR(upscale=4, embed_dim=16, depths=(2, 2)).train()
    scales = [p for n, p in m.named_parameters() if "layer_scale" in n]
    assert len(scales) == 8 and all(torch.equal(p, torch.full_like(p, 1e-6)) for p in scales)
    edges = torch.cat([p.flatten() for n, p in m.named_parameters() if "edge_" in n])
    assert 0.5e-3 < edges.std() < 2e-3 and edges.abs().max() < 1e-2
    torch.testing.assert_close(m.mean.flatten(), torch.tensor([0.4488, 0.4371, 0.4040]))
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    loud = copy.deepcopy(m)
    with torch.no_grad():
        for n, p in loud.named_parameters():
            if "layer_scale" in n:
                p.fill_(1.0)
        full, with_loud_layers = m({"inputs": x}), loud({"inputs": x})
        for group in m.layers:  # drop every ConvFormer layer
            group.blocks = torch.nn.Sequential()
        bypass = m({"inputs": x})
    assert (full - bypass).abs().max() < 1e-4  # silent at init, as the official layer_scale_init_value
    assert (with_loud_layers - bypass).abs().max() > 1e-2  # the same layers at scale 1 do move it
    with torch.no_grad():
        m.upsample[0].weight.zero_()
        m.upsample[0].bias.zero_()
        torch.testing.assert_close(m({"inputs": x}), m.mean.expand(2, 3, 48, 48), atol=0, rtol=0)


def test_official_state_dict_map_inverts_the_official_names():
    """``map_official_state_dict`` on the official names and shapes (recorded from the official x4 model, the
    merged form all its checkpoints are in) with seeded values gives exactly the keys of our ``deploy=True``
    model, loads strictly, and gives the same output as loading positionally in the official module order (the
    path the parity fixture checks against the official code)."""
    rec = torch.load(FIXTURE)
    g = torch.Generator().manual_seed(5)
    official = {k: torch.randn(s, generator=g) * 0.05 for k, s in rec["official_shapes"].items()}
    official = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(official.items())}
    mapped = map_official_state_dict(official)
    ours, positional = CFSR(upscale=4, deploy=True).eval(), CFSR(upscale=4, deploy=True).eval()
    assert set(mapped) == set(ours.state_dict())
    ours.load_state_dict(mapped)
    positional.load_state_dict(dict(zip(positional.state_dict(), official.values())))
    with torch.no_grad():
        assert torch.equal(ours({"inputs": rec["input"]}), positional({"inputs": rec["input"]}))
    with pytest.raises(KeyError, match="unexpected key in an official CFSR state dict: conv_last.weight"):
        map_official_state_dict({"conv_last.weight": torch.zeros(1)})


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_CFSR"), reason="needs the official CFSR code")
def test_official_weights_through_the_map_give_the_official_output():
    """An official CFSR's own weights (its initialisation, perturbed so the layer scales and edge-merged
    depthwise kernels matter) loaded through ``map_official_state_dict`` give the official output."""
    mod = _official_module(os.environ["PANCONV_RECORD_CFSR"])
    torch.manual_seed(3)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = mod.CFSR(upscale=3, in_chans=3, dw_size=9, img_range=1.0, depths=[2, 1], embed_dim=16,
                          mlp_ratio=2, upsampler="pixelshuffledirect").eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = CFSR(upscale=3, embed_dim=16, depths=(2, 1), dw_size=9, mlp_ratio=2, deploy=True).eval()
    ours.load_state_dict(map_official_state_dict(theirs.state_dict()))
    x = torch.rand(2, 3, 10, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expect, got = theirs(x), ours({"inputs": x})
    diff = (got - expect).abs().max().item()
    print(f"CFSR via map_official_state_dict: max abs diff {diff:.2e} (outputs up to {expect.abs().max():.2f})")
    assert diff <= 1e-5
