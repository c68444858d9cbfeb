"""SparK: the sparse encoder, the loss, parity with the official code, sizes, and learning on MNIST.

Parity: ``fixtures/spark_parity.pt`` holds the official SparK's outputs (keyu-tian/SparK ``pretrain/``:
``encoder.SparseEncoder``, ``decoder.LightDecoder``, ``spark.SparK``, on the official ConvNeXt and on
timm's ResNet with the official hierarchical forward) on our seeded weights and a fixed mask: the loss,
the decoder's reconstruction (every 8th pixel) and the running statistics the sparse BatchNorms leave
after one training-mode forward. Regenerate with the official ``pretrain`` directory fetched (not
committed; needs timm)::

    PANCONV_RECORD_SPARK=/path/to/SparK/pretrain pytest plugins/vision/tests/test_spark.py

The fixture also holds the official state dicts' key names and shapes (not values) of both cases, for the CI
test of ``map_official_state_dict``; with the variable set, the official models' own weights are also loaded
through the map and compared with the official outputs.
"""

import os
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import panconv
from panconv_vision.models.convnext import ConvNeXt
from panconv_vision.models.e2gc import ResNeXt
from panconv_vision.models.spark import ActiveMask, SparK, map_official_state_dict, sparsify
from panconv_vision.models.ssl import random_patch_mask
from panconv_vision.testing import fill_, num_parameters

FIXTURE = Path(__file__).parent / "fixtures" / "spark_parity.pt"
# encoder parameters (the paper's Table 3 counts the encoder with the ImageNet-1k head: +2049k for ResNets,
# + the final LayerNorm and head for ConvNeXt)
ENCODER = {"vision.spark_resnet50": 23_508_032, "vision.spark_resnet101": 42_500_160,
           "vision.spark_resnet152": 58_143_808, "vision.spark_resnet200": 62_624_832,
           "vision.spark_convnext_small": 49_453_152, "vision.spark_convnext_base": 87_564_416,
           "vision.spark_convnext_large": 196_227_264}
PAPER = {"vision.spark_resnet50": 25.6e6, "vision.spark_resnet101": 44.5e6, "vision.spark_resnet152": 60.2e6,
         "vision.spark_resnet200": 64.7e6, "vision.spark_convnext_small": 50e6, "vision.spark_convnext_base": 89e6,
         "vision.spark_convnext_large": 198e6}


def random_visible(batch, h, w, keep, generator):
    """(B, 1, h, w) bool, exactly ``keep`` visible patches per image."""
    return random_patch_mask(batch, (h, w), (h * w - keep) / (h * w), generator).logical_not()[:, None]


def _convnext_encoder(in_channels=1):
    return ConvNeXt(depths=(1, 2), dims=(8, 16), patch_size=2, in_channels=in_channels)


def _resnet_encoder():
    return ResNeXt(depths=(1, 1), dims=(32, 64), groups=1, width_per_group=16, in_channels=1)


def _zero_outside(t, visible, channels_last=False):
    """max |t| over masked positions, t a map whose size is a multiple of the mask grid."""
    h, w = (t.shape[1], t.shape[2]) if channels_last else (t.shape[2], t.shape[3])
    keep = visible.repeat_interleave(h // visible.shape[2], 2).repeat_interleave(w // visible.shape[3], 3)
    if channels_last:
        keep = keep.permute(0, 2, 3, 1)
    return (t * keep.logical_not()).abs().max().item()


@pytest.mark.parametrize("make", [_convnext_encoder, _resnet_encoder])
def test_masked_positions_stay_zero_after_every_layer(make):
    torch.manual_seed(0)
    encoder = fill_(make())
    mask = ActiveMask()
    sparsify(encoder, mask)
    visible = random_visible(3, 4, 4, 6, torch.Generator().manual_seed(1))
    seen = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            seen.append((module, output))

    handles = [m.register_forward_hook(record) for m in encoder.modules() if m is not encoder]
    mask.active = visible
    x = torch.randn(3, 1, 32, 32)
    outputs = encoder(x * mask.at(32, 32))
    mask.active = None
    for h in handles:
        h.remove()
    assert len(seen) > 10
    for module, out in seen:
        last = out.shape[2] != out.shape[3]  # (B, H, W, C) inside ConvNeXt blocks (square maps here)
        assert _zero_outside(out, visible, channels_last=last) == 0, type(module).__name__
    # and the visible positions carry real (non-zero) features
    assert all(o.abs().sum() > 0 for o in outputs)


def test_the_hooks_do_nothing_outside_the_masked_pass():
    torch.manual_seed(0)
    plain = fill_(_resnet_encoder()).train()
    hooked = fill_(_resnet_encoder()).train()
    sparsify(hooked, ActiveMask())
    x = torch.randn(2, 1, 32, 32)
    for a, b in zip(plain(x), hooked(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sparse_batchnorm_normalises_with_the_visible_positions_only():
    torch.manual_seed(0)
    bn, reference = nn.BatchNorm2d(5, momentum=0.3), nn.BatchNorm1d(5, momentum=0.3)
    mask = ActiveMask()
    sparsify(bn, mask)
    visible = random_visible(4, 2, 2, 1, torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, 8, 8) * 3 + 1
    mask.active = visible
    out = bn(x)
    mask.active = None
    keep = mask_at(visible, 8)[:, 0]
    torch.testing.assert_close(out.permute(0, 2, 3, 1)[keep], reference(x.permute(0, 2, 3, 1)[keep]))
    assert out.permute(0, 2, 3, 1)[~keep].abs().max() == 0
    torch.testing.assert_close(bn.running_mean, reference.running_mean)
    torch.testing.assert_close(bn.running_var, reference.running_var)
    # the dense statistics would differ (the masked positions are not zero in x)
    assert not torch.allclose(bn.running_mean, 0.3 * x.mean((0, 2, 3)), atol=1e-3)


def mask_at(visible, size):
    return visible.repeat_interleave(size // visible.shape[2], 2).repeat_interleave(size // visible.shape[3], 3)


def _tiny_spark(**kw):
    torch.manual_seed(0)
    return SparK(_convnext_encoder(), in_channels=1, decoder_width=16, densify_norm="ln", **kw)


def test_loss_is_the_normalised_pixel_error_on_masked_patches_only():
    model = _tiny_spark()
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 3, 3] = True
    out = model({"inputs": x, "mask": mask})
    assert torch.equal(out["visible"][:, 0], ~mask)
    loss = model.loss(out, {"inputs": x})["loss"]
    # by hand: each 4x4 patch normalised by its mean and unbiased std
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 1, 4, 4, 4, 4)
    target = (patches - patches.mean((-1, -2), keepdim=True)) / (patches.var((-1, -2), keepdim=True) + 1e-6) ** 0.5
    rec = out["reconstruction"].unfold(2, 4, 4).unfold(3, 4, 4)
    err = ((rec - target) ** 2).mean((-1, -2))[:, 0]  # (B, 4, 4)
    torch.testing.assert_close(loss, err[mask].mean())
    # changing the reconstruction at visible patches changes nothing
    changed = dict(out, reconstruction=out["reconstruction"] + 5 * mask_at((~mask)[:, None], 16))
    torch.testing.assert_close(model.loss(changed, {"inputs": x})["loss"], loss)


def test_eval_masks_are_reproducible_and_train_masks_random():
    model = _tiny_spark()
    x = {"inputs": torch.randn(4, 1, 16, 16)}
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a["visible"], b["visible"])
    assert (a["visible"].flatten(1).sum(1) == round(16 * 0.4)).all()
    model.train()
    masks = {tuple(model(x)["visible"].flatten().tolist()) for _ in range(3)}
    assert len(masks) == 3


def test_predict_gives_features_and_pastes_visible_patches():
    model = _tiny_spark().eval()
    batch = {"inputs": torch.randn(3, 1, 16, 16)}
    with torch.no_grad():
        pred = model.predict(model(batch), batch)
        dense = model.encoder(batch["inputs"])[-1].mean((-2, -1))
    torch.testing.assert_close(pred["features"], dense)
    keep = mask_at(model(batch)["visible"], 16)
    assert torch.equal(pred["reconstruction"][keep], batch["inputs"][keep])


def test_encoder_keys_are_the_backbone_keys():
    """run.init_from {map: {"backbone.": "encoder."}} loads the pre-trained encoder into a classifier."""
    spark = panconv.create_model({"type": "vision.SparK", "backbone": {"type": "vision.ConvNeXt", "depths": [1, 1],
                                  "dims": [8, 16], "patch_size": 2}, "decoder_width": 16}, metadata={"in_channels": 1})
    clf = panconv.create_model({"backbone": {"type": "vision.ConvNeXt", "depths": [1, 1], "dims": [8, 16],
                                             "patch_size": 2}, "neck": {"type": "vision.PoolNorm"},
                                "head": {"type": "core.LinearClsHead"}}, metadata={"in_channels": 1, "num_classes": 10})
    enc = {k[len("encoder."):]: v.shape for k, v in spark.state_dict().items() if k.startswith("encoder.")}
    bb = {k[len("backbone."):]: v.shape for k, v in clf.state_dict().items() if k.startswith("backbone.")}
    assert enc == bb


def test_bad_inputs_and_encoders_are_rejected():
    model = _tiny_spark()
    with pytest.raises(ValueError, match="multiples of the encoder's stride 4"):
        model({"inputs": torch.randn(2, 1, 18, 18)})
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model({"inputs": torch.randn(2, 3, 16, 16)})
    with pytest.raises(ValueError, match="batch\\['mask'\\]"):
        model({"inputs": torch.randn(2, 1, 16, 16), "mask": torch.zeros(2, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="doubling level by level"):
        SparK(ConvNeXt(depths=(1, 1, 1), dims=(4, 8, 16), patch_size=2, out_indices=(0, 2)), in_channels=3)
    enc = _convnext_encoder()
    enc.stages[0].blocks[0].norm = nn.GroupNorm(2, 8)
    with pytest.raises(ValueError, match="GroupNorm"):
        SparK(enc, in_channels=1, decoder_width=16)
    with pytest.raises(ValueError, match="cannot halve"):
        SparK(_convnext_encoder(), in_channels=1, decoder_width=2)


def test_every_paper_size_is_registered():
    assert sorted(panconv.list_models("vision.spark_*")) == sorted(ENCODER)


@pytest.mark.parametrize("name", sorted(ENCODER))
def test_encoder_parameter_counts(name):
    with torch.device("meta"):
        model = panconv.create_model(name)
    assert num_parameters(model.encoder) == ENCODER[name]
    channels = model.encoder.feature_info[-1].channels
    head = channels * 1000 + 1000 + (2 * channels if "convnext" in name else 0)  # + LayerNorm for ConvNeXt
    assert abs(num_parameters(model.encoder) + head - PAPER[name]) / PAPER[name] < 0.01


# --------------------------------------------------------------------------- parity with the official code

_CASES = {
    "convnext": dict(size=64, densify="ln", width=32),
    "resnet": dict(size=64, densify="bn", width=64),
}


def _ours(case):
    torch.manual_seed(0)
    if case == "convnext":
        encoder = ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), patch_size=4, in_channels=3)
    else:
        encoder = ResNeXt(depths=(1, 1, 1, 1), dims=(64, 128, 256, 512), groups=1, width_per_group=64, in_channels=3)
    cfg = _CASES[case]
    model = SparK(encoder, in_channels=3, decoder_width=cfg["width"], densify_norm=cfg["densify"])
    fill_(model)
    with torch.no_grad():
        for name, t in model.named_parameters():  # norms near 1 keep the deep ResNet's activations in range
            if re.search(r"(bn\d|stem\.1|downsample\.1|densify_norms\.\d+|conv\.[14]|norm)\.weight$", name):
                t.add_(1.0)
    return model.train()


def _inputs(case):
    g = torch.Generator().manual_seed(2)
    size = _CASES[case]["size"]
    x = torch.randn(2, 3, size, size, generator=g)
    visible = random_visible(2, size // 32, size // 32, 2, g)
    return x, visible


def _to_official_key(key, case):
    key = key.replace("decoder.", "dense_decoder.", 1) if key.startswith("decoder.") else key
    if not key.startswith("encoder."):
        return key
    key = key[len("encoder."):]
    if case == "convnext":
        key = key.replace("stem.conv.", "downsample_layers.0.0.").replace("stem.norm.", "downsample_layers.0.1.")
        key = re.sub(r"^stages\.(\d)\.downsample\.norm\.", r"downsample_layers.\1.0.", key)
        key = re.sub(r"^stages\.(\d)\.downsample\.conv\.", r"downsample_layers.\1.1.", key)
        key = re.sub(r"^stages\.(\d)\.blocks\.(\d)\.", r"stages.\1.\2.", key)
    else:
        key = key.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        key = re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
    return "sparse_encoder.sp_cnn." + key


def _outputs(model, x, visible, reconstruction):
    bn = {k: v[:8].clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    return {"reconstruction": reconstruction[:, :, ::8, ::8].detach().clone(), "running": bn}


def _running(stats, keys):
    """The first 8 channels of every BatchNorm running statistic, in ``keys`` order, as one vector."""
    return torch.cat([stats[k] for k in keys])


def _official_code(path):
    """The official ``encoder``, ``decoder``, ``spark`` modules and ``models/{convnext,resnet}.py``."""
    import importlib.util

    sys.path.insert(0, path)
    utils = types.ModuleType("utils")
    misc = types.ModuleType("utils.misc")
    misc.is_pow2n = lambda x: x > 0 and (x & (x - 1) == 0)
    utils.misc = misc
    sys.modules.update({"utils": utils, "utils.misc": misc})
    import decoder
    import encoder
    import spark

    spec = importlib.util.spec_from_file_location("official_convnext", Path(path) / "models" / "convnext.py")
    convnext = sys.modules["official_convnext"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convnext)
    spec = importlib.util.spec_from_file_location("official_resnet", Path(path) / "models" / "resnet.py")
    resnet = sys.modules["official_resnet"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(resnet)
    return encoder, decoder, spark, convnext, resnet


def _official(path, case):
    """The official SparK of a parity case (its own initial weights), in training mode."""
    encoder, decoder, spark, convnext, resnet = _official_code(path)
    from timm.models.resnet import Bottleneck

    cfg = _CASES[case]
    if case == "convnext":
        cnn = convnext.ConvNeXt(in_chans=3, num_classes=0, depths=[1, 1, 2, 1], dims=[8, 16, 24, 32])
    else:
        cnn = resnet.ResNet(block=Bottleneck, layers=[1, 1, 1, 1], channels=(16, 32, 64, 128), num_classes=0,
                            global_pool="")
    sparse_encoder = encoder.SparseEncoder(cnn, input_size=cfg["size"])
    return spark.SparK(sparse_encoder, decoder.LightDecoder(32, width=cfg["width"]),
                       densify_norm=cfg["densify"]).train()


def _record(path):
    record = {"source": "keyu-tian/SparK pretrain/ (encoder.py, decoder.py, spark.py, models/)",
              "official_shapes": {}}
    for case in _CASES:
        official = _official(path, case)
        record["official_shapes"][case] = {k: tuple(v.shape) for k, v in official.state_dict().items()}
        ours = _ours(case)
        theirs = official.state_dict()
        mapped = {_to_official_key(k, case): v for k, v in ours.state_dict().items()}
        missing = sorted(set(theirs) - set(mapped) - {"imn_m", "imn_s", "norm_black"})
        assert not missing and not set(mapped) - set(theirs), (missing, sorted(set(mapped) - set(theirs)))
        official.load_state_dict({**theirs, **mapped})
        x, visible = _inputs(case)
        captured = {}
        official.dense_decoder.register_forward_hook(lambda m, a, out, into=captured: into.update(rec=out))
        loss = official(x, active_b1ff=visible)
        record[case] = {"loss": loss.detach().clone(),
                        **_outputs(official, x, visible, captured["rec"])}
        keys = [k for k in ours.state_dict() if k.endswith(("running_mean", "running_var"))]
        record[case]["running"] = _running({k: record[case]["running"][_to_official_key(k, case)] for k in keys},
                                           keys)
        record[case]["running_keys"] = keys
    torch.save(record, FIXTURE)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_parity_with_the_official_code(case):
    if os.environ.get("PANCONV_RECORD_SPARK") and case == "convnext":
        _record(os.environ["PANCONV_RECORD_SPARK"])
    rec = torch.load(FIXTURE)[case]
    model = _ours(case)
    x, visible = _inputs(case)
    out = model({"inputs": x, "mask": ~visible[:, 0]})
    loss = model.loss(out, {"inputs": x})["loss"]
    torch.testing.assert_close(loss, rec["loss"], atol=1e-5, rtol=1e-5)
    ours = _outputs(model, x, visible, out["reconstruction"])
    scale = rec["reconstruction"].abs().max()
    torch.testing.assert_close(ours["reconstruction"] / scale, rec["reconstruction"] / scale, atol=1e-5, rtol=0)
    assert sorted(ours["running"]) == sorted(rec["running_keys"])
    torch.testing.assert_close(_running(ours["running"], rec["running_keys"]), rec["running"], atol=1e-5, rtol=1e-5)


def _run(model, x, visible):
    """Loss and reconstruction of our model on a parity case's inputs."""
    out = model({"inputs": x, "mask": ~visible[:, 0]})
    return model.loss(out, {"inputs": x})["loss"], out["reconstruction"]


def _blank(case):
    """Our model of a parity case with its constructor's weights (to be loaded)."""
    if case == "convnext":
        encoder = ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), patch_size=4, in_channels=3)
    else:
        encoder = ResNeXt(depths=(1, 1, 1, 1), dims=(64, 128, 256, 512), groups=1, width_per_group=64, in_channels=3)
    cfg = _CASES[case]
    return SparK(encoder, in_channels=3, decoder_width=cfg["width"], densify_norm=cfg["densify"]).train()


@pytest.mark.parametrize("case", sorted(_CASES))
def test_official_state_dict_map_inverts_the_official_names(case):
    """``map_official_state_dict`` on the official names and shapes (recorded from the official models of the
    parity cases) with seeded values gives exactly our keys, loads strictly, and the model gives the same loss,
    reconstruction and running statistics as one loaded through the parity test's key correspondence
    (``_to_official_key``, the path the fixture checks against the official code)."""
    shapes = torch.load(FIXTURE)["official_shapes"][case]
    g = torch.Generator().manual_seed(5)
    official = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            official[k] = torch.tensor(3)
        elif k.endswith("running_var") or re.search(r"(bn\d|norm)\.weight$|densify_norms\.\d+\.weight$", k):
            official[k] = 1 + 0.1 * torch.rand(shape, generator=g)
        else:
            official[k] = torch.randn(shape, generator=g) * 0.05
    official = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(official.items())}  # DataParallel
    mapped = map_official_state_dict({**official, "config": {"sbn": False}})
    ours, by_parity_keys = _blank(case), _blank(case)
    assert set(mapped) == set(ours.state_dict())
    ours.load_state_dict(mapped)
    plain = {k[len("module."):] if k.startswith("module.") else k: v for k, v in official.items()}
    by_parity_keys.load_state_dict({k: plain[_to_official_key(k, case)] for k in by_parity_keys.state_dict()})
    x, visible = _inputs(case)
    for a, b in zip(_run(ours, x, visible), _run(by_parity_keys, x, visible), strict=True):
        assert torch.equal(a, b)
    for k, v in by_parity_keys.state_dict().items():       # the running statistics the forward left
        assert torch.equal(ours.state_dict()[k], v), k
    with pytest.raises(KeyError, match="unexpected key in an official SparK state dict: dense_decoder.dec.0.conv.2"):
        map_official_state_dict({"dense_decoder.dec.0.conv.2.weight": torch.zeros(1)})


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_SPARK"), reason="needs the official SparK code")
@pytest.mark.parametrize("case", sorted(_CASES))
def test_official_weights_through_the_map_give_the_official_output(case):
    """The official model's own (initial) weights, with its ``config`` entry as the released files have it,
    loaded through ``map_official_state_dict`` give the official loss, reconstruction and BN statistics."""
    torch.manual_seed(3)
    official = _official(os.environ["PANCONV_RECORD_SPARK"], case)
    ours = _blank(case)
    ours.load_state_dict(map_official_state_dict(official.state_dict(with_config=True)))
    x, visible = _inputs(case)
    captured = {}
    official.dense_decoder.register_forward_hook(lambda m, a, out: captured.update(rec=out))
    expect_loss = official(x, active_b1ff=visible)
    loss, rec = _run(ours, x, visible)
    scale = captured["rec"].abs().max()
    diff = ((rec - captured["rec"]).abs().max() / scale).item()
    print(f"SparK ({case}) via map_official_state_dict: loss {loss.item():.6f} vs {expect_loss.item():.6f}, "
          f"reconstruction max abs diff {diff * scale:.2e} (values up to {scale:.2f}, relative {diff:.1e})")
    assert diff <= 1e-5
    torch.testing.assert_close(loss, expect_loss, rtol=1e-5, atol=0)
    mapped = map_official_state_dict(official.state_dict())
    for k, v in ours.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(v, mapped[k], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not os.environ.get("PANCONV_RECORD_SPARK"), reason="needs the official SparK code")
@pytest.mark.parametrize("name", ["resnet50", "convnext_small"])
def test_official_released_sizes_map_onto_the_registered_models(name):
    """The official SparK of a released checkpoint (``main.py``: decoder width 768, ``densify_norm`` bn / ln) maps
    onto exactly the keys and shapes of the registered ``vision.spark_*`` model."""
    from timm import create_model

    encoder, decoder, spark, convnext, _ = _official_code(os.environ["PANCONV_RECORD_SPARK"])
    if name == "resnet50":
        cnn = create_model("resnet50", num_classes=0, global_pool="")
    else:
        cnn = convnext.convnext_small(num_classes=0, global_pool="", sparse=True)
    sparse_encoder = encoder.SparseEncoder(cnn, input_size=224)
    official = spark.SparK(sparse_encoder, decoder.LightDecoder(sparse_encoder.downsample_raito, sbn=False),
                           densify_norm="bn" if name == "resnet50" else "ln")
    mapped = map_official_state_dict(official.state_dict(with_config=True))
    with torch.device("meta"):
        ours = panconv.create_model(f"vision.spark_{name}").state_dict()
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.items()}


# --------------------------------------------------------------------------- learning


def test_pretraining_lowers_the_masked_reconstruction_loss(shared_data):
    """A few hundred steps on real MNIST digits: the validation loss (fixed masks) goes down."""
    from panconv_vision.datasets.digits import MNIST

    train = MNIST(root=shared_data, split="train", size=16, limit=512)
    val = MNIST(root=shared_data, split="val", size=16, limit=128)
    model = _tiny_spark()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.04)

    def val_loss():
        model.eval()
        with torch.no_grad():
            batch = {"inputs": val.inputs}
            return model.loss(model(batch), batch)["loss"].item()

    before = val_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        model.train()
        batch = {"inputs": train.inputs[torch.randint(0, len(train), (32,), generator=g)]}
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = val_loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("name", ["vision.HorNet", "vision.UniRepLKNet", "vision.MobileNetV1"])
def test_other_backbones_encode_sparsely(name):
    """Any hierarchical backbone of the plugin: every output level is zero at the masked positions (their
    attention, SE, GRN or global filters see zeros there), and SparK trains on it."""
    torch.manual_seed(0)
    factory = panconv.get_component("backbone", name)
    encoder = panconv.build("backbone", name, **factory.example_config())
    x = encoder.example_inputs(2)
    model = SparK(encoder, in_channels=x.shape[1], decoder_width=64)
    out = model({"inputs": x})
    model.loss(out, {"inputs": x})["loss"].backward()
    model.active.active = out["visible"]
    features = encoder(x * model.active.at(x.shape[2], x.shape[3]))
    model.active.active = None
    for f in features:
        assert _zero_outside(f, out["visible"]) == 0
        assert f.abs().sum() > 0
