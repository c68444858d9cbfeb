"""VOLO's MixToken (Jiang et al. 2021, "All Tokens Matter", as VOLO trains): CutMix on the token grid after the patch
embedding, the box aligned to the output tokens, the token targets mixed the same way, the class target
mixed by the exact token area; nothing mixed in evaluation."""

import math

import pytest
import torch

import panconv
from panconv_vision.models import volo

KW = dict(layers=[1, 1], embed_dims=[8, 16], num_heads=[2, 4], stem_hidden_dim=8, img_size=64)  # 1/8: 8x8, out 4x4


def _backbone(**kw) -> volo.VOLO:
    torch.manual_seed(0)
    return volo.VOLO(**{**KW, **kw})


def _embedded(model: volo.VOLO, x: torch.Tensor) -> torch.Tensor:
    """The tokens the first Outlooker receives (after the patch embedding and any MixToken)."""
    seen = []
    handle = model.network[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        out = model(x)
    finally:
        handle.remove()
    return seen[0], out


def test_box_is_cutmix_rule_on_the_token_grid():
    """Side lengths int(side * sqrt(1 - lam)), centre uniform, centre -+ length // 2 clipped (rand_bbox)."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        lam = 0.3
        box = volo.mix_token_box((6, 5), lam, g)
        g = torch.Generator().manual_seed(seed)
        cy, cx = int(torch.randint(6, (1,), generator=g)), int(torch.randint(5, (1,), generator=g))
        ch, cw = int(6 * math.sqrt(0.7)), int(5 * math.sqrt(0.7))
        expected = (max(cy - ch // 2, 0), max(cx - cw // 2, 0), min(cy + ch // 2, 6), min(cx + cw // 2, 5))
        assert box == expected
    y1, x1, y2, x2 = volo.mix_token_box((4, 4), 1.0, torch.Generator().manual_seed(0))
    assert (y2 - y1) * (x2 - x1) == 0  # lam = 1: nothing mixed


def test_tokens_are_mixed_after_the_patch_embedding_in_whole_output_tokens():
    model = _backbone(mix_token=True).train()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain = model.patch_embed(x).permute(0, 2, 3, 1).detach()  # train-mode BatchNorm: batch statistics
    for seed in range(8):
        torch.manual_seed(seed)
        mixed, out = _embedded(model, x)
        assert len(out) == 3 and out[2].dtype == torch.long
        y1, x1, y2, x2 = out[2].tolist()
        assert 0 <= y1 <= y2 <= 4 and 0 <= x1 <= x2 <= 4  # the box lives on the 4x4 output grid
        expected = plain.clone()
        expected[:, 2 * y1:2 * y2, 2 * x1:2 * x2] = plain.flip(0)[:, 2 * y1:2 * y2, 2 * x1:2 * x2]
        assert torch.allclose(mixed, expected, atol=1e-6)
        changed = (mixed - plain).abs().amax((0, 3)) > 0  # (8, 8) positions of the 1/8 grid that changed
        rows, cols = changed.nonzero(as_tuple=True)
        if len(rows):  # the changed region is exactly the box's 2x2 blocks: aligned with the output tokens
            assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (2 * y1, 2 * y2, 2 * x1, 2 * x2)
    # over these draws some boxes were non-empty
    torch.manual_seed(3)
    assert any((b := model(x)[2])[2] > b[0] and b[3] > b[1] for _ in range(10))


def test_an_explicit_box_mixes_exactly_it():
    model = _backbone().train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    plain = model.patch_embed(x).permute(0, 2, 3, 1).detach()
    seen = []
    handle = model.network[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    out = model(x, mix_box=(1, 0, 3, 2))
    handle.remove()
    assert out[2].tolist() == [1, 0, 3, 2]
    assert torch.allclose(seen[0][:, 2:6, 0:4], plain.flip(0)[:, 2:6, 0:4], atol=1e-6)
    assert torch.allclose(seen[0][:, :2], plain[:, :2], atol=1e-6)
    assert torch.allclose(seen[0][:, 2:6, 4:], plain[:, 2:6, 4:], atol=1e-6)


def test_off_in_evaluation_and_when_not_asked():
    mixing = _backbone(mix_token=True)
    plain = _backbone()
    plain.load_state_dict(mixing.state_dict())
    x = torch.randn(2, 3, 64, 64)
    mixing.eval(), plain.eval()
    with torch.no_grad():
        a, b = mixing(x), plain(x)
    assert len(a) == 2 and all(torch.equal(u, v) for u, v in zip(a, b))
    plain.train()
    assert len(plain(x)) == 2  # mix_token=False: never a box


def test_mix_alpha_must_be_positive():
    with pytest.raises(ValueError, match="mix_alpha"):
        volo.VOLO(**{**KW, "mix_alpha": 0.0})


def test_training_step_through_the_engine_model():
    model = panconv.create_model({"backbone": {"type": "vision.VOLO", **KW, "mix_token": True},
                                  "head": {"type": "vision.VOLOClsHead", "num_classes": 3, "token_labeling": True}})
    batch = {"inputs": torch.randn(4, 3, 64, 64), "labels": torch.tensor([0, 2, 1, 1]),
             "token_labels": torch.rand(4, 3, 4, 4).softmax(1)}
    torch.manual_seed(0)
    model.train()
    boxes = []
    for _ in range(6):
        out = model(batch)
        boxes.append(out["mix_box"].tolist())
        losses = model.loss(out, batch)
        sum(losses.values()).backward()
    assert any(b[2] > b[0] and b[3] > b[1] for b in boxes)
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert "mix_box" not in out and model.predict(out, batch).shape == (4, 3)
