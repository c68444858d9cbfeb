"""Diffusion features (Mukhopadhyay et al. 2023): the heads' parity with the official code, the frozen U-Net,
the features are the pre-trained DDPM's, the (block, t) grid, learning.

Parity: ``fixtures/diffusion_heads_parity.pt`` holds soumik-kanad/diffssl's heads on our seeded weights: the
linear and MLP ``Head`` (``ssl_diff/head.py``) and the attention head (``ssl_diff/attention_fusion.py``
``AttentionFusion`` over ``ssl_diff/attention_head.py``, one block, one step, layer or batch norm). The CNN
head has no official module (see ``models/diffusion_features.py``). Regenerate with the repository fetched and
unpacked (needs einops; its ``torchinfo`` import is stubbed)::

    PANCONV_RECORD_DIFFSSL=/path/to/diffssl pytest plugins/vision/tests/test_diffusion_features.py
"""

import os
import sys
import types
from pathlib import Path

import pytest
import torch

import panconv
from panconv_vision.models.ddpm import DDPM
from panconv_vision.models.diffusion_features import (
    AttentionHead,
    CNNHead,
    DiffusionFeatures,
    PooledMLPHead,
    probe_grid,
)
from panconv_vision.testing import fill_

FIXTURE = Path(__file__).parent / "fixtures" / "diffusion_heads_parity.pt"
C, SIDE, CLASSES, BLOCK = 12, 8, 5, 24
ATTENTION = dict(pool_size=4, dim=16, num_heads=2, depth=2, mlp_ratio=4.0)


def _features():
    return torch.randn(3, C, SIDE, SIDE, generator=torch.Generator().manual_seed(4))


def _heads() -> dict[str, torch.nn.Module]:
    heads = {"linear": PooledMLPHead(C, CLASSES, pool_size=2), "mlp": PooledMLPHead(C, CLASSES, 2, (20, 10)),
             "attention_layer": AttentionHead(C, SIDE, CLASSES, norm="layer", **ATTENTION),
             "attention_batch": AttentionHead(C, SIDE, CLASSES, norm="batch", **ATTENTION)}
    return {name: fill_(head, seed=i).eval() for i, (name, head) in enumerate(heads.items())}


def _official_attention_state(ours: dict) -> dict:
    """Our attention head's entries under the official AttentionFusion's names."""
    out = {}
    for k, v in ours.items():
        if k.startswith("norm."):
            k = f"pre_layer.{BLOCK}.1.{k[5:]}"
        elif k.startswith("proj."):
            k = f"pre_layer.{BLOCK}.2.{k[5:]}"
        elif k == "cls_token":
            k = "intra_inter_block_attention.cls_token"
        elif k.startswith("blocks."):
            i, rest = k[7:].split(".", 1)
            k = f"intra_inter_block_attention.layers.{int(i) + 1}.{rest}"
        elif k.startswith("fc."):
            k = f"head.{k[3:]}"
        out[k] = v
    return out


def _record(root: str) -> None:
    sys.path.insert(0, root)
    sys.modules.setdefault("torchinfo", types.SimpleNamespace(summary=None))  # imported, unused by the heads
    from ssl_diff.attention_fusion import AttentionFusion
    from ssl_diff.head import Head

    x = _features()
    ours = _heads()
    rec = {"source": "soumik-kanad/diffssl ssl_diff/head.py, attention_fusion.py, attention_head.py"}
    for name, arc in (("linear", ""), ("mlp", "20_10")):
        args = types.SimpleNamespace(pre_pool_size=2, first_fw_b_list=[BLOCK], head_arc=arc, num_classes=CLASSES)
        head = Head(args, {BLOCK: C}, {BLOCK: SIDE}).eval()
        head.load_state_dict(ours[name].state_dict())
        with torch.no_grad():
            rec[name] = head([BLOCK], [[x]], [], [], [90])
    for norm in ("layer", "batch"):
        arc = (f"Use_CLS_Token:True:{ATTENTION['dim']},Insert_CLS_Token,"
               f"Attention:{ATTENTION['dim']}:{ATTENTION['num_heads']}:4:{ATTENTION['depth']},Extract_CLS_Token")
        args = types.SimpleNamespace(fusion_arc=arc, first_fw_b_list=[BLOCK], second_fw_b_list=[], t_list=[90],
                                     pre_pool_size=ATTENTION["pool_size"], norm_type=norm, num_classes=CLASSES)
        head = AttentionFusion(args, {BLOCK: C}, {BLOCK: SIDE}).eval()
        head.load_state_dict(_official_attention_state(ours[f"attention_{norm}"].state_dict()))
        with torch.no_grad():
            rec[f"attention_{norm}"] = head([BLOCK], [[x]], [], [], [90])
    torch.save(rec, FIXTURE)


@pytest.fixture(scope="module")
def recorded():
    if os.environ.get("PANCONV_RECORD_DIFFSSL"):
        _record(os.environ["PANCONV_RECORD_DIFFSSL"])
    return torch.load(FIXTURE)


@pytest.mark.parametrize("name", ["linear", "mlp", "attention_layer", "attention_batch"])
def test_heads_match_the_official_code(recorded, name):
    with torch.no_grad():
        ours = _heads()[name](_features())
    ref = recorded[name]
    scale = ref.abs().max()
    torch.testing.assert_close(ours / scale, ref / scale, atol=1e-5, rtol=0)


def test_cnn_head_shapes_and_pooling():
    head = CNNHead(C, CLASSES, pool_size=4, hidden=(16, 8)).eval()
    assert head(_features()).shape == (3, CLASSES)
    # pooling first: the head sees the 4x4 average-pooled map (a map at or below pool_size is kept)
    x = _features()
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4)
    torch.testing.assert_close(head(x), head(pooled))
    assert head(x[..., :2, :2]).shape == (3, CLASSES)


def _tiny(**kw):
    cfg = dict(num_classes=3, image_size=8, model_channels=8, channel_mult=(1, 2), attention_resolutions=(2,),
               norm_groups=4, timesteps=50, block=6, t=10)
    return DiffusionFeatures(**{**cfg, **kw})


def _ddpm():
    return DDPM(model_channels=8, channel_mult=(1, 2), attention_resolutions=(2,), norm_groups=4, timesteps=50)


@pytest.mark.parametrize("head", ["linear", "mlp", "cnn", "attention"])
def test_only_the_head_trains(head):
    torch.manual_seed(0)
    m = _tiny(head=head, pool_size=2, hidden=(8,), attention_dim=8, attention_heads=2)
    unet_before = {k: v.clone() for k, v in m.unet.state_dict().items()}
    head_before = {k: v.clone() for k, v in m.head.state_dict().items()}
    m.train()
    assert not m.unet.training and m.head.training
    batch = m.example_inputs(4)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    loss = m.loss(m(batch), batch)["loss"]
    loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in m.unet.parameters())
    assert all(torch.equal(v, unet_before[k]) for k, v in m.unet.state_dict().items())
    assert any(not torch.equal(v, head_before[k]) for k, v in m.head.state_dict().items())


def test_features_are_the_pretrained_unets():
    """A DDPM's ``unet.`` entries loaded into the feature model (what ``run.init_from`` does with the map
    ``{"unet.": "unet."}``) give the DDPM's block-b output at step t for the same noised input."""
    torch.manual_seed(0)
    ddpm = fill_(_ddpm(), seed=1).eval()
    m = _tiny().eval()
    state = {k: v for k, v in ddpm.state_dict().items() if k.startswith("unet.")}
    assert sorted(state) == sorted(k for k in m.state_dict() if k.startswith("unet."))
    m.load_state_dict({**m.state_dict(), **state})
    x = torch.randn(2, 1, 8, 8)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(m.eval_seed))
    steps = torch.full((2,), 10)
    expected = ddpm.unet.block_features(ddpm.diffusion.q_sample(x, steps, noise), steps, [6])[0]
    torch.testing.assert_close(m.feature_map(x), expected)
    torch.testing.assert_close(m.feature_map(x), m.feature_map(x))  # eval: seeded noise


def test_probe_grid_collects_every_block_and_step():
    torch.manual_seed(0)
    ddpm = _ddpm().eval()
    batches = [torch.randn(3, 1, 8, 8), torch.randn(2, 1, 8, 8)]
    grid = probe_grid(ddpm.unet, ddpm.diffusion, batches, blocks=(2, 5, 7), steps=(0, 25))
    assert sorted(grid) == [(b, t) for b in (2, 5, 7) for t in (0, 25)]
    for (b, _), feats in grid.items():
        assert feats.shape == (5, ddpm.unet.block_info[b - 1][0])
    assert not torch.allclose(grid[(5, 0)], grid[(5, 25)])  # the step changes the features


def test_constructor_errors():
    with pytest.raises(ValueError, match="block must be"):
        _tiny(block=99)
    with pytest.raises(ValueError, match="t must be"):
        _tiny(t=50)
    with pytest.raises(ValueError, match="image_size"):
        _tiny(image_size=7)
    with pytest.raises(ValueError, match="attention_heads"):
        _tiny(head="attention", attention_dim=10, attention_heads=4)
    with pytest.raises(ValueError, match="images"):
        _tiny()({"inputs": torch.randn(2, 3, 8, 8)})


def test_registered_and_built_from_a_config():
    m = panconv.create_model({"type": "vision.DiffusionFeatures", "num_classes": 10, "head": "attention",
                              "pool_size": 4})
    assert isinstance(m, DiffusionFeatures) and isinstance(m.head, AttentionHead)
    assert m({"inputs": torch.randn(2, 1, 16, 16)}).shape == (2, 10)


def test_a_head_learns_separable_classes(single_thread):
    """Two classes of 8x8 images (bright left vs right half) are learnt by the linear head on the features of a
    random U-Net within 40 steps."""
    torch.manual_seed(0)
    m = _tiny(num_classes=2, head="linear", pool_size=2, t=2)
    x = torch.randn(32, 1, 8, 8) * 0.3
    y = torch.arange(32) % 2
    x[y == 0, :, :, :4] += 1.5
    x[y == 1, :, :, 4:] += 1.5
    batch = {"inputs": x, "labels": y}
    opt = torch.optim.Adam(m.head.parameters(), lr=0.05)
    for _ in range(40):
        loss = m.loss(m(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        assert (m.predict(m(batch)).argmax(1) == y).float().mean() >= 0.95
