"""FFNet (MetaMixer): paper sizes, re-parameterisation, kernel routing, parity with the official code.

Parity: ``fixtures/ffnet_parity.pt`` holds the official FFNet's outputs (ysj9909/FFNet ``models/ffnet.py``)
on our seeded weights for a tiny configuration exercising every block type. Regenerate with the file
fetched (not committed; needs timm)::

    PANCONV_RECORD_FFNET=/path/to/FFNet/models/ffnet.py pytest plugins/vision/tests/test_ffnet.py
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.ffnet import FFNet, RepVGGDW
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


def _record(path):
    import timm.models._builder as builder

    builder._update_default_kwargs = getattr(builder, "_update_default_kwargs", lambda *a, **k: None)
    spec = importlib.util.spec_from_file_location("official_ffnet", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["official_ffnet"] = mod
    spec.loader.exec_module(mod)
    official = mod.FFNet(num_classes=10, embed_dim=[8, 16, 32, 64], in_dim=8, depth=[1, 2, 1, 1],
                         kernel_sizes=[7, 3, 7, 3], kernel_sizes1=[3, 7, 3, 7], kernel_sizes2=[7, 3, 7, 3],
                         use_layer_scale=True, layer_scale_init_value=1e-6, drop_path_rate=0.0).eval()
    ours = _ours()
    official.load_state_dict({k: v for k, v in zip(official.state_dict(), ours.state_dict().values())})
    x = _input()
    with torch.no_grad():
        torch.save({"logits": official(x), "features": official.forward_features(x),
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
