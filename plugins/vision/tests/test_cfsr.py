"""CFSR: paper sizes (x2/x3/x4), EFN re-parameterisation, kernel routing, parity with the official code.

Parity: ``fixtures/cfsr_parity.pt`` holds the official CFSR's output (Aitical/CFSR,
``basicsr/archs/cfsr_arch.py``, built as its x4 test options) on our seeded weights. Regenerate with the
official file fetched (not committed)::

    PANCONV_RECORD_CFSR=/path/to/basicsr/archs/cfsr_arch.py pytest plugins/vision/tests/test_cfsr.py
"""

import contextlib
import importlib.util
import io
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.cfsr import CFSR, EdgePreservingFFN

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


def _record(path):
    reg = types.ModuleType("basicsr.utils.registry")
    reg.ARCH_REGISTRY = types.SimpleNamespace(register=lambda: (lambda c: c))
    for name in ("basicsr", "basicsr.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["basicsr.utils.registry"] = reg
    spec = importlib.util.spec_from_file_location("cfsr_arch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with contextlib.redirect_stdout(io.StringIO()):
        official = mod.CFSR(upscale=4, in_chans=3, dw_size=9, img_range=1.0, depths=[6, 6], embed_dim=48,
                            mlp_ratio=2, upsampler="pixelshuffledirect").eval()
    ours = _ours().reparameterize()
    official.load_state_dict({k: v for k, v in zip(official.state_dict(), ours.state_dict().values())})
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = official(x)
    torch.save({"input": x, "output": out, "source": "Aitical/CFSR basicsr/archs/cfsr_arch.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_CFSR"):
        _record(os.environ["PANCONV_RECORD_CFSR"])
    rec = torch.load(FIXTURE)
    ours = _ours()
    with torch.no_grad():
        torch.testing.assert_close(ours({"inputs": rec["input"]}), rec["output"], atol=1e-5, rtol=1e-5)
        ours.reparameterize()
        torch.testing.assert_close(ours({"inputs": rec["input"]}), rec["output"], atol=1e-5, rtol=1e-5)
