"""RepLKNet: paper sizes, structural re-parameterisation, parity with the official code."""

import contextlib
import importlib.util
import io
import os
import re

import pytest
import torch

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models.reparam import ConvBN, fuse_convbn_modules, randomize_bn_stats
from panconv_vision.models.replknet import ConvFFN, LargeKernelConv, RepLKBlock, RepLKNet, map_official_state_dict
from panconv_vision.testing import fill_, max_diff, num_parameters, paper_classifier


def tiny(**kw) -> RepLKNet:
    return RepLKNet(**{**RepLKNet.example_config(), **kw})


# README table (paper Tables 5-7, official README): ImageNet parameter counts of the deploy form
# (small kernels merged), final BatchNorm and 1000-class linear head included: RepLKNet.paper_head
# after reparameterize(). The training-time form (separate 5x5 branches) is 0.01-1.1% larger:
# 79.86M for 31B.
PAPER_PARAMS = {"vision.replknet_31b": 79e6, "vision.replknet_31l": 172e6, "vision.replknet_xl": 335e6}
OUR_PARAMS = {"vision.replknet_31b": 79_527_272, "vision.replknet_31l": 172_165_672,
              "vision.replknet_xl": 335_399_656}
VARIANTS = panconv.list_models("vision.replknet_*")


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
    assert isinstance(model.neck.norm, torch.nn.BatchNorm2d)  # the paper's final BN, before pooling
    if panconv.get_component("backbone", name).args.get("small_kernel", 5) is not None:
        assert num_parameters(training) > n


def test_paper_kernels_and_xl_settings():
    with torch.device("meta"):
        b = panconv.get_component("backbone", "vision.replknet_31b")()
        xl = panconv.get_component("backbone", "vision.replknet_xl")()
    assert [st[0].large_kernel.kernel_size for st in b.stages] == [31, 29, 27, 13]
    assert [len(st) // 2 for st in b.stages] == [2, 2, 18, 2]
    assert b.stages[0][0].large_kernel.small.conv.kernel_size == (5, 5)
    assert [st[0].large_kernel.kernel_size for st in xl.stages] == [27, 27, 27, 13]
    assert xl.stages[0][0].large_kernel.small is None  # XL: no small-kernel branch (Sec. 5.4)
    assert xl.stages[0][0].pw1.conv.out_channels == 384  # dw_ratio 1.5


def test_feature_info_shapes_and_out_indices():
    model = tiny().eval()
    x = model.example_inputs()
    feats = model(x)
    assert [f.shape for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert model.feature_info == [FeatureInfo(8, 4, "stages.0"), FeatureInfo(16, 8, "stages.1"),
                                  FeatureInfo(32, 16, "stages.2"), FeatureInfo(64, 32, "stages.3")]
    part = tiny(out_indices=(0, 2), norm_outputs=True).eval()
    assert [f.reduction for f in part.feature_info] == [4, 16] and len(part.stages) == 3
    assert [f.shape[1] for f in part(x)] == [8, 32]


def test_grayscale_28px_input():  # MNIST-sized input: 28 -> 7 -> 4 -> 2 -> 1
    model = tiny(in_channels=1).eval()
    assert [f.shape[-1] for f in model(torch.randn(2, 1, 28, 28))] == [7, 4, 2, 1]


def test_train_step_with_drop_path_reaches_every_parameter():
    model = tiny(drop_path_rate=0.2, norm_outputs=True).train()
    sum(f.mean() for f in model(model.example_inputs())).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("small_kernel", [5, 3, None])
def test_large_kernel_conv_merges_into_one_kernel(small_kernel):
    torch.manual_seed(0)
    conv = LargeKernelConv(6, 31, small_kernel)
    randomize_bn_stats(conv)
    conv.eval()
    x = torch.randn(2, 6, 20, 20)
    ref = conv(x)
    conv.reparameterize()
    assert conv.small is None and isinstance(conv.large.bn, torch.nn.Identity)
    assert conv.large.conv.kernel_size == (31, 31) and conv.large.conv.bias is not None
    assert (conv(x) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("block", ["replk", "replk_nosmall", "ffn"])
def test_block_reparameterize_equals_training_form(block):
    torch.manual_seed(0)
    module = {
        "replk": lambda: RepLKBlock(8, 12, 13, 5),
        "replk_nosmall": lambda: RepLKBlock(8, 12, 13, None),
        "ffn": lambda: ConvFFN(8, 32),
    }[block]()
    fill_(module).eval()
    x = torch.randn(2, 8, 15, 15)
    ref = module(x)
    for m in module.modules():
        if isinstance(m, LargeKernelConv):
            m.reparameterize()
    fuse_convbn_modules(module)
    # every conv is now a single biased kernel; only the pre-normalisation BN stays (as officially)
    assert all(isinstance(m.bn, torch.nn.Identity) for m in module.modules() if isinstance(m, ConvBN))
    assert (module(x) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("fuse_bn", [False, True])
def test_model_reparameterize_matches_training_form(fuse_bn):
    model = fill_(tiny()).eval()
    x = model.example_inputs()
    ref = model(x)
    assert model.reparameterize(fuse_bn=fuse_bn) is model  # in place, returns self (the kit's protocol)
    lks = [m for m in model.modules() if isinstance(m, LargeKernelConv)]
    assert lks and all(m.small is None and isinstance(m.large.bn, torch.nn.Identity) for m in lks)
    for a, b in zip(model(x), ref):
        assert (a - b).abs().max() <= 1e-4
    if not fuse_bn:  # the deploy constructor has exactly the re-parameterised keys
        deploy = tiny(deploy=True).eval()
        deploy.load_state_dict(model.state_dict())
        for a, b in zip(deploy(x), ref):
            assert (a - b).abs().max() <= 1e-4


# Output of the official implementation (DingXiaoH/RepLKNet-pytorch, replknet.py at the fetched
# snapshot) for RepLKNet(**example_config()) with weights from fill_(seed=0) mapped onto its
# state-dict keys, eval mode, input torch.randn(2, 3, 64, 64, generator=seed 1); per stage:
# (mean, std, first four values of the flattened output). Our max abs diff to it was 0 (train
# form) and 6e-8 (both re-parameterised).
OFFICIAL_REFERENCE = [
    (-0.032001, 0.437350, [-0.764833, -0.764988, -0.763896, -0.764184]),
    (0.102742, 0.303658, [-0.058761, -0.059235, -0.061348, -0.061206]),
    (0.095430, 0.317863, [0.313908, 0.313523, 0.313453, 0.313337]),
    (0.033014, 0.283151, [-0.049027, -0.048692, -0.048885, -0.048592]),
]


@pytest.mark.parametrize("deploy", [False, True])
def test_matches_recorded_official_output(deploy):
    model = fill_(tiny()).eval()
    if deploy:
        model.reparameterize(fuse_bn=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = model(x)
    # measured <= 4.8e-7 in both forms (the recorded values are rounded to 6 decimals)
    for out, (mean, std, first) in zip(feats, OFFICIAL_REFERENCE):
        assert abs(out.mean().item() - mean) < 1e-5
        assert abs(out.std().item() - std) < 1e-5
        torch.testing.assert_close(out.flatten()[:4], torch.tensor(first), atol=1e-5, rtol=0)


def _official_key(key: str, deploy: bool = False) -> str:
    """Our state-dict key -> the official one (replknet.py of DingXiaoH/RepLKNet-pytorch); ``deploy``: the names
    after the official ``structural_reparam()`` (the merged large kernel is ``lkb_reparam``)."""
    m = re.match(r"out_norms\.(\d+)\.(.*)", key)
    if m:  # norm_outputs = the official norm_intermediate_features
        return f"stages.{m.group(1)}.norm.{m.group(2)}"
    m = re.match(r"stages\.(\d+)\.(\d+)\.(.*)", key)
    if not m:
        return key  # stem.* and transitions.* are named alike
    n, rest = int(m.group(2)), m.group(3)
    rest = rest.replace("pre_bn.", "prelkb_bn." if n % 2 == 0 else "preffn_bn.")
    if deploy:
        rest = rest.replace("large_kernel.large.conv.", "large_kernel.lkb_reparam.")
    rest = rest.replace("large_kernel.large.", "large_kernel.lkb_origin.")
    rest = rest.replace("large_kernel.small.", "large_kernel.small_conv.")
    return f"stages.{m.group(1)}.blocks.{n}.{rest}"


PARITY_CONFIGS = {
    "tiny": RepLKNet.example_config(),
    "tiny_xl_style": {**RepLKNet.example_config(), "small_kernel": None, "dw_ratio": 1.5},
    "tiny_norm_outputs": {**RepLKNet.example_config(), "norm_outputs": True},
    "replknet_31b": {"depths": (2, 2, 18, 2), "dims": (128, 256, 512, 1024), "kernel_sizes": (31, 29, 27, 13)},
}


@pytest.mark.skipif(not os.environ.get("PANCONV_REPLKNET_REF"),
                    reason="set PANCONV_REPLKNET_REF to the official replknet.py (needs timm)")
@pytest.mark.parametrize("variant", sorted(PARITY_CONFIGS))
def test_parity_with_official_code(variant):
    """Side by side with the official model on shared weights (the source of OFFICIAL_REFERENCE)."""
    spec = importlib.util.spec_from_file_location("replknet_official", os.environ["PANCONV_REPLKNET_REF"])
    official = importlib.util.module_from_spec(spec)
    cfg = {"small_kernel": 5, **PARITY_CONFIGS[variant]}
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(official)
        theirs = official.RepLKNet(
            large_kernel_sizes=list(cfg["kernel_sizes"]), layers=list(cfg["depths"]), channels=list(cfg["dims"]),
            drop_path_rate=0.0, small_kernel=cfg["small_kernel"], dw_ratio=cfg.get("dw_ratio", 1),
            num_classes=None, out_indices=(0, 1, 2, 3), use_sync_bn=False,
            norm_intermediate_features=cfg.get("norm_outputs", False)).eval()
    ours = fill_(RepLKNet(**cfg)).eval()
    theirs.load_state_dict({_official_key(k): v for k, v in ours.state_dict().items()}, strict=True)
    # the library's map takes the official training-form names back to ours, values untouched
    mapped = map_official_state_dict(theirs.state_dict())
    assert sorted(mapped) == sorted("backbone." + k for k in ours.state_dict())  # (the official order differs)
    assert all(torch.equal(mapped["backbone." + k], v) for k, v in ours.state_dict().items())

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        train = max_diff(ours(x), theirs(x))
        ours.reparameterize()
        theirs.structural_reparam()
        deploy = max_diff(ours(x), theirs(x))
    print(f"RepLKNet parity {variant}: max abs diff train form {train[0]:.2e} (rel {train[1]:.1e}), "
          f"deploy form {deploy[0]:.2e} (rel {deploy[1]:.1e})")
    assert train[1] < 1e-5 and deploy[1] < 1e-5

    def reloaded(model, state):  # strict load of the mapped official weights
        model.load_state_dict({k[len("backbone."):]: v for k, v in map_official_state_dict(state).items()})
        return model.eval()

    # the official structural_reparam() weights, loaded by the library's map into a deploy-form model, give its
    # outputs; so do the deep_fuse_BN() weights in a deploy-form model with every conv-BN folded
    with torch.no_grad():
        merged = max_diff(reloaded(RepLKNet(**cfg, deploy=True), theirs.state_dict())(x), theirs(x))
        theirs.deep_fuse_BN()
        folded = RepLKNet(**cfg, deploy=True)
        fuse_convbn_modules(folded)
        fused = max_diff(reloaded(folded, theirs.state_dict())(x), theirs(x))
    print(f"RepLKNet {variant} via map_official_state_dict: structural_reparam form {merged[0]:.2e} "
          f"(rel {merged[1]:.1e}), deep_fuse_BN form {fused[0]:.2e} (rel {fused[1]:.1e})")
    assert merged[1] < 1e-6 and fused[1] < 1e-5


@pytest.mark.skipif(not os.environ.get("PANCONV_REPLKNET_REF"),
                    reason="set PANCONV_REPLKNET_REF to the official replknet.py (needs timm)")
def test_official_classifier_weights_give_the_official_logits():
    """A whole official classifier (training form, final BN and head included) loaded through
    ``map_official_state_dict`` into ``backbone + RepLKNet.paper_head`` gives the official logits."""
    spec = importlib.util.spec_from_file_location("replknet_official", os.environ["PANCONV_REPLKNET_REF"])
    official = importlib.util.module_from_spec(spec)
    cfg = RepLKNet.example_config()
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(official)
        theirs = official.RepLKNet(
            large_kernel_sizes=list(cfg["kernel_sizes"]), layers=list(cfg["depths"]), channels=list(cfg["dims"]),
            drop_path_rate=0.0, small_kernel=cfg["small_kernel"], num_classes=10, use_sync_bn=False).eval()
    fill_(theirs)
    head = {**RepLKNet.paper_head, "head": {**RepLKNet.paper_head["head"], "num_classes": 10}}
    ours = panconv.create_model({"backbone": {"type": "vision.RepLKNet", **cfg}, **head}).eval()
    ours.load_state_dict(map_official_state_dict(theirs.state_dict()))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff, rel = max_diff([ours({"inputs": x})], [theirs(x)])
    print(f"RepLKNet classifier via map_official_state_dict: logits max abs diff {diff:.2e} (rel {rel:.1e})")
    assert rel < 1e-5


@pytest.mark.parametrize("form", ["train", "deploy", "fused"])
def test_official_state_dict_map_inverts_the_official_names(form):
    """``map_official_state_dict`` on official names (``_official_key``, checked against the official model by
    the live tests above) gives back our keys and values exactly, in the training form, the
    ``structural_reparam()`` form and the ``deep_fuse_BN()`` form, with the stage norms of
    ``norm_intermediate_features``, the final BN and the head: exactly a composed classifier's keys."""
    ours = tiny(norm_outputs=True, deploy=form != "train")
    if form == "fused":
        fuse_convbn_modules(ours)
    state = fill_(ours).state_dict()
    official = {_official_key(k, deploy=form != "train"): v for k, v in state.items()}
    if form != "train":
        assert any(".lkb_reparam." in k for k in official) and not any(".lkb_origin." in k for k in official)
    final = {f"norm.{k}": v for k, v in fill_(torch.nn.BatchNorm2d(64), seed=1).state_dict().items()}
    official.update({**final, "head.weight": torch.ones(10, 64), "head.bias": torch.zeros(10)})
    mapped = map_official_state_dict(official)
    expected = {**{"backbone." + k: v for k, v in state.items()},
                **{"neck." + k: v for k, v in final.items()},
                "head.fc.weight": official["head.weight"], "head.fc.bias": official["head.bias"]}
    assert list(mapped) == list(expected)
    assert all(mapped[k] is v for k, v in expected.items())
    head = {**RepLKNet.paper_head, "head": {**RepLKNet.paper_head["head"], "num_classes": 10}}
    backbone = {"type": "vision.RepLKNet", **RepLKNet.example_config(), "norm_outputs": True, "deploy": form != "train"}
    clf = panconv.create_model({"backbone": backbone, **head})
    if form == "fused":
        fuse_convbn_modules(clf.backbone)
    clf.load_state_dict(mapped)  # strict

    with pytest.raises(KeyError, match="unexpected key in an official RepLKNet state dict: pos_embed"):
        map_official_state_dict({"pos_embed": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"unexpected key in an official RepLKNet state dict: stages\.0\.blocks\.0\.se"):
        map_official_state_dict({"stages.0.blocks.0.se.weight": torch.zeros(1)})

