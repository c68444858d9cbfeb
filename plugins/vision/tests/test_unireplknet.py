"""UniRepLKNet: paper sizes, Dilated Reparam Block equivalence, parity with the official code."""

import contextlib
import importlib.util
import io
import os
import re
import sys

import pytest
import torch

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models.reparam import randomize_bn_stats
from panconv_vision.models.unireplknet import (
    DILATED_BRANCHES,
    DilatedReparamBlock,
    UniRepLKNet,
    UniRepLKNetBlock,
    map_official_state_dict,
)
from panconv_vision.testing import fill_, max_diff, num_parameters, paper_classifier


def tiny(**kw) -> UniRepLKNet:
    return UniRepLKNet(**{**UniRepLKNet.example_config(), **kw})


# README table (Table 3/4 of the paper, also the official README): ImageNet parameter counts of the
# deploy (re-parameterised) form, final LayerNorm and 1000-class linear head included:
# UniRepLKNet.paper_head after reparameterize(). The training-time form has the extra BN/branch
# parameters and is 0.5-5% larger.
_PAPER = {"a": 4.4e6, "f": 6.2e6, "p": 10.7e6, "n": 18.3e6, "t": 31e6, "s": 56e6, "b": 98e6, "l": 218e6, "xl": 386e6}
_OURS = {"a": 4_437_300, "f": 6_235_216, "p": 10_741_704, "n": 18_318_560, "t": 31_037_980,
         "s": 55_645_984, "b": 98_008_456, "l": 218_454_616, "xl": 386_529_064}
PAPER_PARAMS = {f"vision.unireplknet_{size}": n for size, n in _PAPER.items()}
OUR_PARAMS = {f"vision.unireplknet_{size}": n for size, n in _OURS.items()}
# the image sizes (the video pathway's unireplknet_video_k400 is counted in test_unireplknet_video.py)
VARIANTS = [n for n in panconv.list_models("vision.unireplknet_*") if not n.startswith("vision.unireplknet_video")]


def test_every_paper_size_is_registered_and_nothing_else():
    assert sorted(VARIANTS) == sorted(PAPER_PARAMS)


@pytest.mark.parametrize("name", VARIANTS)
def test_param_count_matches_paper(name):
    with torch.device("meta"):
        model = paper_classifier(name)  # re-parameterised in place
        deploy = panconv.get_component("backbone", name)(deploy=True)
        training = paper_classifier(name, deploy=False)
    n = num_parameters(model)
    assert n == OUR_PARAMS[name]  # also equals the official code's deploy model
    assert abs(n - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01
    assert num_parameters(model.backbone) == num_parameters(deploy)  # reparameterize() = the deploy constructor
    assert isinstance(model.neck.norm, torch.nn.LayerNorm)  # the paper's final LN, after pooling
    assert num_parameters(training) > n


def test_paper_depths_dims_and_kernels():
    with torch.device("meta"):
        t = panconv.get_component("backbone", "vision.unireplknet_t")()
        s = panconv.get_component("backbone", "vision.unireplknet_s")()
    assert [len(st) for st in t.stages] == [3, 3, 18, 3]
    assert [f.channels for f in s.feature_info] == [96, 192, 384, 768]
    kernels = [blk.dwconv.kernel_size if isinstance(blk.dwconv, DilatedReparamBlock) else blk.dwconv.kernel_size[0]
               for blk in s.stages[2]]
    assert kernels[:6] == [13, 3, 3, 13, 3, 3]


def test_feature_info_shapes_and_out_indices():
    model = tiny().eval()
    x = model.example_inputs()
    feats = model(x)
    assert [f.shape for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert model.feature_info == [FeatureInfo(8, 4, "stages.0"), FeatureInfo(16, 8, "stages.1"),
                                  FeatureInfo(32, 16, "stages.2"), FeatureInfo(64, 32, "stages.3")]
    part = tiny(out_indices=(1, 2), norm_outputs=True).eval()
    assert [f.reduction for f in part.feature_info] == [8, 16] and len(part.stages) == 3
    assert [f.shape[1] for f in part(x)] == [16, 32]
    with pytest.raises(ValueError):
        tiny(kernel_sizes=((3,), (13,), (13,), (13,)))


def test_grayscale_28px_input():  # MNIST-sized input: 28 -> 7 -> 4 -> 2 -> 1
    model = tiny(in_channels=1).eval()
    assert [f.shape[-1] for f in model(torch.randn(2, 1, 28, 28))] == [7, 4, 2, 1]


def test_train_step_with_drop_path_reaches_every_parameter():
    model = tiny(drop_path_rate=0.2, norm_outputs=True).train()
    sum(f.mean() for f in model(model.example_inputs())).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kernel_size", sorted(DILATED_BRANCHES))
def test_dilated_reparam_block_merges_into_one_kernel(kernel_size):
    torch.manual_seed(kernel_size)
    block = DilatedReparamBlock(6, kernel_size)
    randomize_bn_stats(block)
    block.eval()
    x = torch.randn(2, 6, 23, 23)
    ref = block(x)
    block.reparameterize()
    assert len(block.branches) == 0 and block.lk_bn is None
    assert block.lk.kernel_size == (kernel_size, kernel_size) and block.lk.bias is not None
    assert (block(x) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("kernel_size", [0, 3, 5, 7, 13])
def test_block_reparameterize_equals_training_form(kernel_size):
    torch.manual_seed(0)
    block = fill_(UniRepLKNetBlock(8, kernel_size), seed=kernel_size)  # GRN, layer scale, BNs all non-trivial
    block.eval()
    x = torch.randn(2, 8, 15, 15)
    ref = block(x)
    block.reparameterize()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
    assert block.gamma is None and block.grn.beta is None
    assert (block(x) - ref).abs().max() <= 1e-4


def test_model_reparameterize_matches_deploy_constructor():
    model = fill_(tiny()).eval()
    x = model.example_inputs()
    ref = model(x)
    assert model.reparameterize() is model  # in place, returns self (the kit's protocol)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, DilatedReparamBlock)]
    assert convs and all(len(m.branches) == 0 for m in convs)
    for a, b in zip(model(x), ref):
        assert (a - b).abs().max() <= 1e-4
    deploy = tiny(deploy=True).eval()
    deploy.load_state_dict(model.state_dict())  # strict: same keys and shapes as the deploy form
    for a, b in zip(deploy(x), ref):
        assert (a - b).abs().max() <= 1e-4


# Output of the official implementation (AILab-CVC/UniRepLKNet, unireplknet.py at the fetched
# snapshot) for UniRepLKNet(**example_config()) with weights from fill_(seed=0) mapped onto its
# state-dict keys, eval mode, input torch.randn(2, 3, 64, 64, generator=seed 1); per stage:
# (mean, std, first four values of the flattened output). Our max abs diff to it was 4.8e-7.
OFFICIAL_REFERENCE = [
    (0.062163, 0.225723, [0.499639, 0.380647, 0.513224, 0.525792]),
    (0.158941, 0.292662, [0.557004, 0.519866, 0.526301, 0.548442]),
    (-0.090115, 0.358728, [-0.200197, -0.204588, -0.216204, -0.230297]),
    (-0.017618, 0.284345, [1.042191, 1.248663, 0.397582, 0.764587]),
]


@pytest.mark.parametrize("deploy", [False, True])
def test_matches_recorded_official_output(deploy):
    model = fill_(tiny()).eval()
    if deploy:
        model.reparameterize()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = model(x)
    # measured <= 6.0e-7 in both forms (the recorded values are rounded to 6 decimals)
    for out, (mean, std, first) in zip(feats, OFFICIAL_REFERENCE):
        assert abs(out.mean().item() - mean) < 1e-5
        assert abs(out.std().item() - std) < 1e-5
        torch.testing.assert_close(out.flatten()[:4], torch.tensor(first), atol=1e-5, rtol=0)


def _official_key(key: str, model: UniRepLKNet) -> str:
    """Our state-dict key -> the official one (unireplknet.py of AILab-CVC/UniRepLKNet)."""
    key = re.sub(r"^stem\.", "downsample_layers.0.", key)
    key = re.sub(r"^downsamples\.(\d+)\.", lambda m: f"downsample_layers.{int(m.group(1)) + 1}.", key)
    key = key.replace("dwconv.lk.", "dwconv.lk_origin.").replace("dwconv.lk_bn.", "dwconv.origin_bn.")
    m = re.search(r"stages\.(\d+)\.(\d+)\.dwconv\.branches\.(\d+)\.(conv|bn)\.", key)
    if m:
        conv = model.stages[int(m.group(1))][int(m.group(2))].dwconv.branches[int(m.group(3))].conv
        name = f"dil_{m.group(4)}_k{conv.kernel_size[0]}_{conv.dilation[0]}."
        key = key.replace(m.group(0), f"stages.{m.group(1)}.{m.group(2)}.dwconv.{name}")
    for ours, theirs in ((".pwconv1.", ".pwconv1.1."), (".grn.", ".act.1."), (".pwconv2.", ".pwconv2.0."),
                         (".ffn_norm.", ".pwconv2.2.")):
        key = key.replace(ours, theirs)
    return key


PARITY_CONFIGS = {
    "tiny": UniRepLKNet.example_config(),
    "unireplknet_a": {"depths": (2, 2, 6, 2), "dims": (40, 80, 160, 320)},
}


@pytest.mark.skipif(not os.environ.get("PANCONV_UNIREPLKNET_REF"),
                    reason="set PANCONV_UNIREPLKNET_REF to the official unireplknet.py (needs timm)")
@pytest.mark.parametrize("variant", sorted(PARITY_CONFIGS))
def test_parity_with_official_code(variant, monkeypatch):
    """Side by side with the official model on shared weights (the source of OFFICIAL_REFERENCE)."""
    spec = importlib.util.spec_from_file_location("unireplknet_official", os.environ["PANCONV_UNIREPLKNET_REF"])
    official = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, official)  # its timm @register_model looks itself up there
    ours = fill_(UniRepLKNet(**PARITY_CONFIGS[variant])).eval()
    kernel_sizes = [[getattr(b.dwconv, "kernel_size", 0) for b in st] for st in ours.stages]
    kernel_sizes = [[k if isinstance(k, int) else k[0] for k in st] for st in kernel_sizes]
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(official)
        theirs = official.UniRepLKNet(num_classes=10, depths=[len(st) for st in ours.stages],
                                      dims=[f.channels for f in ours.feature_info],
                                      kernel_sizes=kernel_sizes, attempt_use_lk_impl=False).eval()
    target = theirs.state_dict()
    mapped = {_official_key(k, ours): v for k, v in ours.state_dict().items()}
    assert set(target) - set(mapped) == {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    theirs.load_state_dict({k: v.reshape(target[k].shape) for k, v in mapped.items()}, strict=False)

    def official_features(x):
        outs = []
        for down, stage in zip(theirs.downsample_layers, theirs.stages):
            x = stage(down(x))
            outs.append(x)
        return outs

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        train = max_diff(ours(x), official_features(x))
        ours.reparameterize()
        with contextlib.redirect_stdout(io.StringIO()):
            theirs.reparameterize_unireplknet()
        deploy = max_diff(ours(x), official_features(x))
    print(f"UniRepLKNet parity {variant}: max abs diff train form {train[0]:.2e} (rel {train[1]:.1e}), "
          f"deploy form {deploy[0]:.2e} (rel {deploy[1]:.1e})")
    assert train[1] < 1e-5 and deploy[1] < 1e-5
    # the official deploy-form weights, loaded by the library's map into a deploy-form model, give its outputs
    mapped = map_official_state_dict(theirs.state_dict())
    reloaded = UniRepLKNet(**PARITY_CONFIGS[variant], deploy=True).eval()
    reloaded.load_state_dict({k[len("backbone."):]: v for k, v in mapped.items() if k.startswith("backbone.")})
    with torch.no_grad():
        assert max_diff(reloaded(x), official_features(x))[1] < 1e-5


@pytest.mark.skipif(not os.environ.get("PANCONV_UNIREPLKNET_REF"),
                    reason="set PANCONV_UNIREPLKNET_REF to the official unireplknet.py (needs timm)")
def test_official_classifier_weights_give_the_official_logits(monkeypatch):
    """A whole official classifier (training form, final norm and head included) loaded through
    ``map_official_state_dict`` into ``backbone + UniRepLKNet.paper_head`` gives the official logits."""
    spec = importlib.util.spec_from_file_location("unireplknet_official", os.environ["PANCONV_UNIREPLKNET_REF"])
    official = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, official)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(official)
        theirs = official.UniRepLKNet(num_classes=10, depths=[2, 2, 6, 2], dims=[40, 80, 160, 320],
                                      attempt_use_lk_impl=False).eval()
    fill_(theirs)
    head = {**UniRepLKNet.paper_head, "head": {**UniRepLKNet.paper_head["head"], "num_classes": 10}}
    ours = panconv.create_model({"backbone": {"type": "vision.unireplknet_a"}, **head}).eval()
    ours.load_state_dict(map_official_state_dict(theirs.state_dict()))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff, rel = max_diff([ours({"inputs": x})], [theirs(x)])
    print(f"UniRepLKNet-A classifier via map_official_state_dict: logits max abs diff {diff:.2e} (rel {rel:.1e})")
    assert rel < 1e-5


def test_official_state_dict_map_inverts_the_official_names():
    """``map_official_state_dict`` on official names (``_official_key``, checked against the official model by
    the live test above) and official shapes (GRN's are (1, 1, 1, C)) gives back our keys and values exactly, for
    every block type (plain 3x3 and 5x5 depthwise, Dilated Reparam Blocks 7/9/13), the final norm and the head."""
    ours = fill_(tiny())
    state = ours.state_dict()
    official = {}
    for key, value in state.items():
        name = _official_key(key, ours)
        official[name] = value.reshape(1, 1, 1, -1) if name.endswith((".act.1.gamma", ".act.1.beta")) else value
    official.update({"norm.weight": torch.ones(64), "norm.bias": torch.zeros(64), "head.weight": torch.ones(10, 64),
                     "head.bias": torch.zeros(10)})
    mapped = map_official_state_dict(official)
    assert set(mapped) == {"backbone." + k for k in state} | {"neck.norm.weight", "neck.norm.bias", "head.fc.weight",
                                                                "head.fc.bias"}
    for key, value in state.items():
        assert torch.equal(mapped["backbone." + key], value), key
    assert any(".dwconv.branches.4." in k for k in mapped)  # the 13x13 block's fifth branch
    reloaded = tiny()
    reloaded.load_state_dict({k[len("backbone."):]: v for k, v in mapped.items() if k.startswith("backbone.")})
    with pytest.raises(KeyError, match="unexpected key in an official UniRepLKNet state dict: pos_embed"):
        map_official_state_dict({"pos_embed": torch.zeros(1)})
    bad = {"stages.2.0.dwconv.lk_origin.weight": torch.zeros(32, 1, 13, 13),
           "stages.2.0.dwconv.dil_conv_k11_1.weight": torch.zeros(32, 1, 11, 11)}
    with pytest.raises(KeyError, match="dil_conv_k11_1.weight: no dilated branch k=11, r=1"):
        map_official_state_dict(bad)

