"""DEA-Net: the difference convolutions' defining identities, re-parameterisation, 3.653 M parameters, parity.

Parity: ``fixtures/deanet_parity.pt`` holds the official DEA-Net's output (cecret3350/DEA-Net,
``code/model/backbone_train.py``) on our seeded weights. Regenerate it with the official code fetched
(not committed) and ``einops`` importable::

    git -C <DEA-Net checkout> archive HEAD code | tar -x -C /tmp/deanet
    PANCONV_RECORD_DEANET=/tmp/deanet/code PYTHONPATH=<dir with einops> pytest plugins/vision/tests/test_deanet.py

The fixture also holds the official state dicts' key names and shapes (not values), of the training form
(``backbone_train.py`` ``DEANet``) and of the re-parameterised form of the released checkpoints
(``backbone.py`` ``Backbone``), for the CI test of ``map_official_state_dict``; with the variable set, the
official models' own weights are also loaded through the map and compared with the official outputs.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv_vision.models.deanet import (
    ANGULAR_PERMUTATION,
    CGAFusion,
    DEABlock,
    DEANet,
    DEConv,
    central_difference_kernel,
    map_official_state_dict,
)

FIXTURE = Path(__file__).parent / "fixtures" / "deanet_parity.pt"


def _neighbours(x):
    """(N, C, 9, H, W): the 3x3 neighbourhood of each pixel (zero padded), taps in row-major order."""
    n, c, h, w = x.shape
    return F.unfold(x, 3, padding=1).view(n, c, 9, h, w)


def test_deconv_equals_the_sum_of_the_five_pixel_difference_convolutions():
    torch.manual_seed(0)
    m = DEConv(3)
    x = torch.randn(2, 3, 6, 7)
    nb = _neighbours(x)  # (N, I, 9, H, W)

    def apply(weight9, taps):  # weight (O, I, 9) applied to taps (N, I, 9, H, W)
        return torch.einsum("oik,nikhw->nohw", weight9, taps)

    wc = m.cd.weight.flatten(2)
    centre = nb[:, :, 4:5]
    y_cd = apply(wc, nb - centre) + m.cd.bias.view(1, -1, 1, 1)  # sum_i w_i (x_i - x_c), x_i = 0 outside
    wa = m.ad.weight.flatten(2)
    perm = list(ANGULAR_PERMUTATION)
    inv = [perm.index(i) for i in range(9)]
    # sum_i w_i (x_i - x_{s(i)}), s(i) the tap whose clockwise neighbour is i (the inverse permutation)
    y_ad = apply(wa, nb - nb[:, :, inv]) + m.ad.bias.view(1, -1, 1, 1)
    wh = m.hd.weight  # (O, I, 3): rows of the left column minus the right column
    y_hd = (torch.einsum("oir,nirhw->nohw", wh, nb[:, :, [0, 3, 6]] - nb[:, :, [2, 5, 8]])
            + m.hd.bias.view(1, -1, 1, 1))
    wv = m.vd.weight
    y_vd = (torch.einsum("oir,nirhw->nohw", wv, nb[:, :, [0, 1, 2]] - nb[:, :, [6, 7, 8]])
            + m.vd.bias.view(1, -1, 1, 1))
    y_v = m.vanilla(x)
    torch.testing.assert_close(m(x), y_cd + y_ad + y_hd + y_vd + y_v, atol=1e-5, rtol=1e-5)


def test_central_difference_kernel_kills_constant_images():
    w = torch.randn(4, 4, 3, 3)
    x = torch.full((1, 4, 5, 5), 2.0)
    y = F.conv2d(x, central_difference_kernel(w))
    torch.testing.assert_close(y, torch.zeros_like(y), atol=1e-5, rtol=0)


def test_reparameterize_keeps_outputs_and_gives_the_paper_count():
    torch.manual_seed(0)
    m = DEANet(base_dim=8, blocks=(1, 1, 2)).eval()
    x = torch.rand(1, 3, 16, 20)
    before = m({"inputs": x})
    n_train = sum(p.numel() for p in m.parameters())
    assert m.reparameterize() is m
    torch.testing.assert_close(m({"inputs": x}), before, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in m.parameters()) < n_train
    deployed = DEANet(base_dim=8, blocks=(1, 1, 2), deploy=True)
    deployed.load_state_dict(m.state_dict())  # the deploy form's keys


@pytest.mark.parametrize("deploy, count", [(True, 3_653_377), (False, 7_789_313)])
def test_parameter_count(deploy, count):
    # paper (Sec. IV, Table I): 3.653M -- the deployed network; training form with 5 kernels per DEConv: 7.79M
    with torch.device("meta"):
        m = DEANet(deploy=deploy)
    assert sum(p.numel() for p in m.parameters()) == count
    with torch.device("meta"):
        registered = panconv.create_model({"type": "vision.deanet"})
        registered.reparameterize()
    assert sum(p.numel() for p in registered.parameters()) == 3_653_377


def test_blocks_and_fusion_shapes_and_errors():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    assert DEABlock(8)(x).shape == x.shape
    assert CGAFusion(8)(x, x.flip(0)).shape == x.shape
    with pytest.raises(ValueError, match="multiple of 8"):
        DEANet(base_dim=12)
    with pytest.raises(ValueError, match="multiples of 4"):
        DEANet(base_dim=8, blocks=(1, 1, 1))({"inputs": torch.rand(1, 3, 10, 12)})
    with pytest.raises(ValueError, match="expected inputs"):
        DEANet(base_dim=8, blocks=(1, 1, 1))({"inputs": torch.rand(1, 1, 8, 8)})


def _ours():
    torch.manual_seed(0)
    return DEANet().eval()


def _record(official_dir):
    sys.path.insert(0, official_dir)
    torch.cuda.FloatTensor = lambda *s: torch.zeros(*s)  # the official kernels allocate CUDA tensors
    from model.backbone import Backbone as OfficialDeploy
    from model.backbone_train import DEANet as Official

    ours, official = _ours(), Official().eval()
    mapped = {ko: v for (ko, _), v in zip(official.state_dict().items(), ours.state_dict().values())}
    official.load_state_dict(mapped)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = official(x)
    shapes = {"train": {k: tuple(v.shape) for k, v in official.state_dict().items()},
              "deploy": {k: tuple(v.shape) for k, v in OfficialDeploy().state_dict().items()}}
    torch.save({"input": x, "output": out, "official_shapes": shapes,
                "source": "cecret3350/DEA-Net code/model/backbone_train.py, backbone.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_DEANET"):
        _record(os.environ["PANCONV_RECORD_DEANET"])
    rec = torch.load(FIXTURE)
    ours = _ours()
    with torch.no_grad():
        got = ours({"inputs": rec["input"]})
        torch.testing.assert_close(got, rec["output"], atol=1e-5, rtol=1e-5)
        ours.reparameterize()
        torch.testing.assert_close(ours({"inputs": rec["input"]}), rec["output"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_official_state_dict_map_inverts_the_official_names(form):
    """``map_official_state_dict`` on the official names and shapes (recorded from the official models, base_dim 32:
    the training form of ``backbone_train.py`` and the released, re-parameterised form of ``backbone.py``) with
    seeded values gives exactly our keys (a model built as usual / with ``deploy=True``), loads strictly, and the
    model gives the same output as one loaded positionally in the official module order (the path the parity
    fixture checks against the official code)."""
    rec = torch.load(FIXTURE)
    g = torch.Generator().manual_seed(5)
    official = {k: torch.randn(s, generator=g) * 0.05 for k, s in rec["official_shapes"][form].items()}
    official = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(official.items())}  # DataParallel
    mapped = map_official_state_dict(official)
    ours, positional = DEANet(deploy=form == "deploy").eval(), DEANet(deploy=form == "deploy").eval()
    assert set(mapped) == set(ours.state_dict())
    ours.load_state_dict(mapped)
    positional.load_state_dict(dict(zip(positional.state_dict(), official.values())))
    with torch.no_grad():
        assert torch.equal(ours({"inputs": rec["input"]}), positional({"inputs": rec["input"]}))
    with pytest.raises(KeyError, match="unexpected key in an official DEA-Net state dict: level3_block1.conv3.weight"):
        map_official_state_dict({"level3_block1.conv3.weight": torch.zeros(1)})


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_DEANET"), reason="needs the official DEA-Net code")
@pytest.mark.parametrize("form", ["train", "deploy"])
def test_official_weights_through_the_map_give_the_official_output(form, monkeypatch):
    """The official model's own (initial) weights, training form or the released re-parameterised form, loaded
    through ``map_official_state_dict`` give the official output."""
    monkeypatch.syspath_prepend(os.environ["PANCONV_RECORD_DEANET"])
    monkeypatch.setattr(torch.cuda, "FloatTensor", lambda *s: torch.zeros(*s), raising=False)
    from model.backbone import Backbone
    from model.backbone_train import DEANet as Official

    torch.manual_seed(3)
    theirs = (Official if form == "train" else Backbone)(base_dim=16).eval()
    ours = DEANet(base_dim=16, deploy=form == "deploy").eval()
    ours.load_state_dict(map_official_state_dict(theirs.state_dict()))
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expect, got = theirs(x), ours({"inputs": x})
    diff = (got - expect).abs().max().item()
    print(f"DEA-Net ({form} form) via map_official_state_dict: max abs diff {diff:.2e} "
          f"(outputs up to {expect.abs().max():.2f})")
    assert diff <= 1e-5
