"""FFNet (MetaMixer): paper sizes, re-parameterisation, kernel routing, parity with the official code.

Parity: ``fixtures/ffnet_parity.pt`` holds the official FFNet's outputs (ysj9909/FFNet ``models/ffnet.py``)
on our seeded weights for a tiny configuration exercising every block type. Regenerate with the file
fetched (not committed; needs timm)::

    PANCONV_RECORD_FFNET=/path/to/FFNet/models/ffnet.py pytest plugins/vision/tests/test_ffnet.py

The fixture also holds that official model's state-dict key names and shapes (not values), for the CI test of
``map_official_state_dict``; with the variable set, an official model's own weights are also loaded through the
map and compared with the official logits.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.ffnet import FFNet, RepVGGDW, map_official_state_dict
from panconv_vision.models.reparam import randomize_bn_stats
from panconv_vision.testing import fill_, num_parameters, paper_classifier

FIXTURE = Path(__file__).parent / "fixtures" / "ffnet_parity.pt"
# official README (ImageNet-1k head): 13.7M, 26.9M, 48.3M, 79.2M = the deploy form; the training form is the
# official module's count
DEPLOY = {"vision.ffnet_1": 13_660_152, "vision.ffnet_2": 26_908_440, "vision.ffnet_3": 48_330_632,
          "vision.ffnet_4": 79_200_360}
TRAIN = {"vision.ffnet_1": 13_775_656, "vision.ffnet_2": 27_208_408, "vision.ffnet_3": 48_817_896,
         "vision.ffnet_4": 79_868_968}
README = {"vision.ffnet_1": 13.7e6, "vision.ffnet_2": 26.9e6, "vision.ffnet_3": 48.3e6, "vision.ffnet_4": 79.2e6}


def test_every_paper_size_is_registered():
    assert sorted(panconv.list_models("vision.ffnet_*")) == sorted(DEPLOY)


@pytest.mark.parametrize("name", sorted(DEPLOY))
def test_parameter_counts(name):
    with torch.device("meta"):
        train, deploy = paper_classifier(name, deploy=False), paper_classifier(name)
    assert num_parameters(train) == TRAIN[name]
    assert num_parameters(deploy) == DEPLOY[name]
    assert abs(num_parameters(deploy) - README[name]) / README[name] < 0.01


def _tiny(**kw):
    cfg = dict(depths=(1, 2, 1, 1), dims=(8, 16, 32, 64), in_dim=8, kernel_sizes=(7, 3, 7, 3),
               kernel_sizes1=(3, 7, 3, 7), kernel_sizes2=(7, 3, 7, 3), expansion_ratios=(3, 3, 3, 3),
               layer_scale=1e-6)
    return FFNet(**{**cfg, **kw})


def test_reparameterize_keeps_outputs():
    torch.manual_seed(0)
    m = _tiny().eval()
    randomize_bn_stats(m, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for mod in m.modules():
            if hasattr(mod, "layer_scale") and mod.layer_scale is not None:
                mod.layer_scale.fill_(0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
        n = num_parameters(m)
        assert m.reparameterize() is m
        after = m(x)
    assert num_parameters(m) < n
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # measured 9.5e-7 (values up to 4.1)
    assert not any(isinstance(x, RepVGGDW) and x.fused is None for x in m.modules())


def test_feature_info_and_errors():
    m = _tiny(out_indices=(1, 3))
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 64] and [o.shape[-1] for o in outs] == [8, 2]
    with pytest.raises(ValueError, match="odd"):
        _tiny(kernel_sizes=(6, 3, 7, 3))
    with pytest.raises(ValueError, match="multiple"):
        _tiny(dims=(8, 12, 32, 64))


def _ours():
    torch.manual_seed(0)
    model = panconv.create_model({"backbone": {"type": "vision.FFNet",
                                               "depths": (1, 2, 1, 1), "dims": (8, 16, 32, 64), "in_dim": 8,
                                               "kernel_sizes": (7, 3, 7, 3), "kernel_sizes1": (3, 7, 3, 7),
                                               "kernel_sizes2": (7, 3, 7, 3), "layer_scale": 1e-6},
                                  "neck": {"type": "vision.PoolNorm", "norm": "batch"},
                                  "head": {"type": "core.LinearClsHead", "num_classes": 10}})
    return fill_(model).eval()


def _input():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _official_module(path):
    import timm.models._builder as builder

    builder._update_default_kwargs = getattr(builder, "_update_default_kwargs", lambda *a, **k: None)
    spec = importlib.util.spec_from_file_location("official_ffnet", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["official_ffnet"] = mod
    spec.loader.exec_module(mod)
    return mod.FFNet(num_classes=10, embed_dim=[8, 16, 32, 64], in_dim=8, depth=[1, 2, 1, 1],
                     kernel_sizes=[7, 3, 7, 3], kernel_sizes1=[3, 7, 3, 7], kernel_sizes2=[7, 3, 7, 3],
                     use_layer_scale=True, layer_scale_init_value=1e-6, drop_path_rate=0.0).eval()


def _record(path):
    official = _official_module(path)
    ours = _ours()
    official.load_state_dict({k: v for k, v in zip(official.state_dict(), ours.state_dict().values())})
    x = _input()
    with torch.no_grad():
        torch.save({"logits": official(x), "features": official.forward_features(x),
                    "official_shapes": {k: tuple(v.shape) for k, v in official.state_dict().items()},
                    "source": "ysj9909/FFNet models/ffnet.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_FFNET"):
        _record(os.environ["PANCONV_RECORD_FFNET"])
    rec = torch.load(FIXTURE)
    ours = _ours()
    with torch.no_grad():
        scale = rec["logits"].abs().max()
        torch.testing.assert_close(ours({"inputs": _input()}) / scale, rec["logits"] / scale, atol=1e-5, rtol=0)
        feats = ours.neck.norm(ours.backbone(_input())[-1])
        torch.testing.assert_close(feats, rec["features"], atol=1e-5, rtol=0)  # measured 6.0e-8
        ours.backbone.reparameterize()
        torch.testing.assert_close(ours({"inputs": _input()}) / scale, rec["logits"] / scale, atol=1e-5, rtol=0)


def _seeded(shapes, seed):
    """Values for state-dict entries of the given shapes: positive BN variances, an integer batch count."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.1
    return out


def test_official_state_dict_map_inverts_the_official_names():
    """``map_official_state_dict`` on the official names and shapes (recorded from the official tiny classifier:
    RepVGGDW and plain / conv-BN depthwise convs in both mixers, patch merging, final BatchNorm and head) with
    seeded values gives exactly the composed classifier's keys, loads strictly, and gives the same logits as
    loading positionally in the official module order (the path the parity fixture checks against the official
    code)."""
    rec = torch.load(FIXTURE)
    official = _seeded(rec["official_shapes"], 5)
    official = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(official.items())}
    mapped = map_official_state_dict(official)
    ours, positional = _ours(), _ours()
    assert set(mapped) == set(ours.state_dict())
    assert {k.split(".")[0] for k in mapped} == {"backbone", "neck", "head"}
    ours.load_state_dict(mapped)
    positional.load_state_dict(dict(zip(positional.state_dict(), official.values())))
    with torch.no_grad():
        assert torch.equal(ours({"inputs": _input()}), positional({"inputs": _input()}))
    with pytest.raises(KeyError, match="unexpected key in an official FFNet state dict: stages.0.0.token_mixer.1"):
        map_official_state_dict({"stages.0.0.token_mixer.1.conv_reduce.weight": torch.zeros(1)})


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_FFNET"), reason="needs the official FFNet code")
def test_official_weights_through_the_map_give_the_official_logits():
    """An official FFNet classifier's own weights (its initialisation, perturbed, with BN statistics) loaded
    through ``map_official_state_dict`` into ``backbone + FFNet.paper_head`` give the official logits, before and
    after our re-parameterisation."""
    torch.manual_seed(3)
    theirs = _official_module(os.environ["PANCONV_RECORD_FFNET"])
    with torch.no_grad():
        for k, v in theirs.state_dict().items():
            if v.is_floating_point():
                v.copy_(v.abs() + 0.5 if k.endswith("running_var") else v + 0.1 * torch.randn_like(v))
    ours = _ours()
    ours.load_state_dict(map_official_state_dict(theirs.state_dict()))
    with torch.no_grad():
        expect = theirs(_input())
        got = ours({"inputs": _input()})
        ours.backbone.reparameterize()
        deployed = ours({"inputs": _input()})
    diff, fused = (got - expect).abs().max().item(), (deployed - expect).abs().max().item()
    print(f"FFNet classifier via map_official_state_dict: logits max abs diff {diff:.2e}, after reparameterize "
          f"{fused:.2e} (logits up to {expect.abs().max():.2f})")
    assert diff <= 1e-5 and fused <= 1e-5
