"""HyenaDNA: parity with the official standalone (recorded), parameter counts, causality, heads, loading."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from panconv_genomics.models.hyenadna import HyenaDNA, HyenaDNALMHead, official_to_panconv
from panconv_genomics.testing import fill_deterministic

sys.path.insert(0, str(Path(__file__).parent))
import make_hyenadna_fixture as fixture  # noqa: E402

#: published configurations (HF LongSafari/hyenadna-*-seqlen config.json) -> parameters of the backbone
#: (= the official tied LM), counted on the official standalone_hyenadna.py HyenaDNAModel too
PUBLISHED = {
    "hyenadna_tiny_1k": (dict(d_model=128, n_layer=2, d_inner=512, l_max=1026), 436_096),
    "hyenadna_small_32k": (dict(d_model=256, n_layer=4, d_inner=1024, l_max=32_770), 3_277_568),
    "hyenadna_medium_160k": (dict(d_model=256, n_layer=8, d_inner=1024, l_max=160_002), 6_550_528),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    args, count = PUBLISHED[name]
    model = HyenaDNA(**{**args, "l_max": min(args["l_max"], 2048)})  # the count does not depend on l_max
    assert sum(p.numel() for p in model.parameters()) == count


def test_registered_variants_have_the_published_sizes():
    import panconv
    from panconv import list_models

    names = list_models("genomics.hyenadna*")
    assert {"genomics.hyenadna_tiny_1k", "genomics.hyenadna_small_32k", "genomics.hyenadna_medium_160k",
            "genomics.hyenadna_medium_450k", "genomics.hyenadna_large_1m"} <= set(names)
    tiny = panconv.build("backbone", "genomics.hyenadna_tiny_1k")
    assert (tiny.d_model, tiny.n_layer, tiny.d_inner, tiny.l_max) == (128, 2, 512, 1026)
    assert sum(p.numel() for p in tiny.parameters()) == 436_096


@pytest.mark.parametrize("case", sorted(fixture.CASES))
def test_forward_equals_official_standalone(case):
    """Recorded with make_hyenadna_fixture.py from the official standalone_hyenadna.py on these weights."""
    record = torch.load(fixture.FIXTURE, weights_only=True)
    assert record["config"] == fixture.CONFIG
    model = fixture.ours(fixture.CASES[case])
    ids = record["ids"]
    assert torch.equal(ids, fixture.token_ids())
    with torch.no_grad():
        hidden = model(ids)[0].transpose(1, 2)
        head = HyenaDNALMHead(model.feature_info, vocab_size=16)
        head.fc.weight.copy_(model.embedding.weight)  # the official LM head is tied to the embedding
        logits = head([hidden.transpose(1, 2)])
    want = record["cases"][case]
    if "hidden" in want:
        assert (hidden - want["hidden"]).abs().max().item() <= 1e-5
    assert (logits - want["logits"]).abs().max().item() <= 1e-5
    assert want["logits"].abs().max().item() > 0.1  # a meaningful comparison, not of zeros


def test_official_names_round_trip():
    model = fill_deterministic(HyenaDNA(**fixture.CONFIG))
    official = fixture.to_official(model)
    assert "backbone.layers.1.mixer.filter_fn.implicit_filter.6.weight" in official
    ours, _ = official_to_panconv({f"model.{k}": v for k, v in official.items()})
    assert ours.keys() == model.state_dict().keys()
    other = HyenaDNA(**fixture.CONFIG)
    other.load_official_state_dict(official)
    ids = fixture.token_ids()
    torch.testing.assert_close(other.eval()(ids)[0], model.eval()(ids)[0])


def test_causal():
    torch.manual_seed(0)
    model = HyenaDNA(d_model=16, n_layer=2, l_max=64, filter_order=8, embed_dropout=0.0).eval()
    ids = torch.randint(7, 12, (1, 40))
    out = model(ids)[0]
    changed = ids.clone()
    changed[0, 25:] = 7 + (changed[0, 25:] - 6) % 5
    out2 = model(changed)[0]
    assert torch.allclose(out[..., :25], out2[..., :25], atol=1e-6)
    assert not torch.allclose(out[..., 25:], out2[..., 25:], atol=1e-4)


def test_initialisation_follows_the_official_scheme():
    torch.manual_seed(0)
    model = HyenaDNA(d_model=128, n_layer=4, l_max=128)
    assert model.embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    out_proj = model.blocks[0].mixer.out_proj.weight
    assert out_proj.std().item() == pytest.approx(0.02 / (2 * 4) ** 0.5, rel=0.1)
    assert model.blocks[0].mlp.fc1.bias.abs().max().item() == 0.0


def test_bad_inputs_are_named():
    model = HyenaDNA(d_model=16, n_layer=1, l_max=32, filter_order=8)
    with pytest.raises(ValueError, match="l_max 32"):
        model(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="emb_dim"):
        HyenaDNA(emb_dim=4)


def test_lm_head_loss_is_cross_entropy_of_the_targets():
    torch.manual_seed(0)
    model = HyenaDNA(d_model=16, n_layer=1, l_max=32, filter_order=8)
    head = HyenaDNALMHead(model.feature_info)
    ids = torch.randint(7, 12, (2, 17))
    logits = head(model(ids[:, :-1]))
    assert logits.shape == (2, 16, 12) and head.fc.bias is None
    loss = head.loss(logits, {"targets": ids[:, 1:]})["loss"]
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.reshape(-1, 12), ids[:, 1:].reshape(-1)))


def test_pretrained_backbone_is_loaded_from_a_run(tmp_path):
    from panconv.api import ComposedModel
    from panconv.io import save_checkpoint

    torch.manual_seed(0)
    args = dict(d_model=16, n_layer=1, l_max=32, filter_order=8)
    backbone = HyenaDNA(**args)
    lm = ComposedModel(backbone, HyenaDNALMHead(backbone.feature_info))
    save_checkpoint({"state_dict": {f"model.{k}": v for k, v in lm.state_dict().items()}}, tmp_path / "epoch_1.pth")
    config = {"model": {"backbone": {"type": "genomics.HyenaDNA", **args},
                        "head": {"type": "genomics.HyenaDNALMHead", "vocab_size": 12}},
              "data": {"type": "genomics.DNALanguageModel"}}
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = HyenaDNA(**args, pretrained=str(tmp_path))
    for key, value in backbone.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_soft_prompt_is_prepended_and_alone_trainable_when_frozen():
    torch.manual_seed(0)
    model = HyenaDNA(d_model=16, n_layer=1, l_max=40, filter_order=8, soft_prompt=4, freeze=True, embed_dropout=0.0)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["soft_prompt"]
    ids = torch.randint(7, 12, (2, 36))
    out = model(ids)[0]
    assert out.shape == (2, 16, 36)
    out.sum().backward()
    assert model.soft_prompt.grad.abs().sum() > 0
    # the prompt is context: the same tokens without it give other features; causality keeps prompt-free parity
    plain = HyenaDNA(d_model=16, n_layer=1, l_max=40, filter_order=8, embed_dropout=0.0)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "soft_prompt"})
    assert not torch.allclose(plain(ids)[0], out.detach(), atol=1e-4)
    with pytest.raises(ValueError, match="soft-prompt"):
        model(torch.randint(7, 12, (1, 38)))


def test_missing_pretrained_run_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        HyenaDNA(d_model=16, n_layer=1, l_max=32, filter_order=8, pretrained=str(tmp_path / "nope"))
    with torch.device("meta"):  # config validation: the path is checked, nothing is loaded
        HyenaDNA(d_model=16, n_layer=1, l_max=32, filter_order=8, pretrained=str(tmp_path))
