"""vision.ALIGN: structure and forward parity with transformers' AlignModel, EfficientNet facts, loss, zero-shot."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from panconv_vision.datasets.captions import PROMPTS, MNISTCaptions
from panconv_vision.evaluators.zero_shot import ZeroShotAccuracy
from panconv_vision.losses import NormalizedSoftmaxLoss
from panconv_vision.models.align import ALIGN, EfficientNetTower, hf_to_panconv, round_filters, same_pad

TINY = dict(vocab_size=40, max_caption_length=16, in_channels=3, width_coefficient=0.25, depth_coefficient=0.5,
            text_hidden=32, text_layers=2, text_heads=4, text_intermediate=64)


def _hf_pair():
    """A small transformers AlignModel and ours with the same configuration, their weights loaded into ours."""
    transformers = pytest.importorskip("transformers", reason="the parity check needs the [test] extra's transformers")
    from transformers.models.align.configuration_align import AlignTextConfig, AlignVisionConfig

    torch.manual_seed(0)
    text = AlignTextConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=16)
    vision = AlignVisionConfig(num_channels=3, image_size=64, width_coefficient=0.25, depth_coefficient=0.5)
    ours = ALIGN(**TINY).eval()
    hf = transformers.AlignModel(transformers.AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                                          projection_dim=ours.embed_dim)).eval()
    state = hf.state_dict()
    for name, value in state.items():                 # non-trivial BN statistics so that eval-mode BN is exercised
        if name.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif name.endswith("running_mean"):
            value.normal_(0, 0.1)
    mapped = {hf_to_panconv(k): v for k, v in state.items() if hf_to_panconv(k) is not None}
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    assert missing == ["criterion.log_temperature"] and unexpected == []
    return hf, ours


def test_structure_matches_transformers_align_model():
    hf, ours = _hf_pair()
    shapes = {hf_to_panconv(k): tuple(v.shape) for k, v in hf.state_dict().items() if hf_to_panconv(k)}
    assert shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items() if k != "criterion.log_temperature"}
    pooler = sum(p.numel() for p in hf.text_model.pooler.parameters())
    # both hold one temperature scalar (theirs T, ours log T); ours leaves out BERT's unused pooler
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters()) - pooler
    assert len(ours.image_tower.blocks) == len(hf.vision_model.encoder.blocks)


def test_forward_parity_with_transformers_on_shared_weights():
    hf, ours = _hf_pair()
    images = torch.randn(3, 3, 64, 64)
    ids = torch.randint(3, 40, (3, 12))
    ids[:, 0] = 1
    ids[1, 7:] = 0                                     # a padded caption: the mask must match theirs
    ids[2, 4:] = 0
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=images, attention_mask=(ids != 0).long(), return_loss=True)
        image, text = ours.encode_image(images), ours.encode_text(ids)
    assert torch.allclose(image, theirs.vision_model_output.pooler_output, atol=1e-5)
    hf_text = hf.text_projection(theirs.text_model_output.last_hidden_state[:, 0])
    assert torch.allclose(text, hf_text, atol=1e-5)
    assert torch.allclose(F.normalize(text, dim=-1), theirs.text_embeds, atol=1e-5)
    # the loss: transformers' align_loss is ours with label smoothing 0.1 at the same temperature
    loss = NormalizedSoftmaxLoss(init_temperature=float(hf.temperature.detach()), label_smoothing=0.1)
    assert torch.allclose(loss(image, text), theirs.loss, atol=1e-5)


def test_efficientnet_widths_and_counts_match_torchvision():
    """The tower is EfficientNet's features without the final 1x1 conv: same parameter count as torchvision's."""
    from torchvision.models import efficientnet_b0, efficientnet_b7

    assert [round_filters(c, 2.0) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [64, 32, 48, 80, 160, 224, 384,
                                                                                     640]
    for builder, width, depth in ((efficientnet_b0, 1.0, 1.0), (efficientnet_b7, 2.0, 3.1)):
        with torch.device("meta"):
            reference = builder().features[:-1]         # drop the 1x1 conv to 1280 / 2560 channels
            tower = EfficientNetTower(3, width, depth)
        assert sum(p.numel() for p in tower.parameters()) == sum(p.numel() for p in reference.parameters())
        assert len(tower.blocks) == sum(len(stage) for stage in reference[1:])


def test_paper_variant_counts():
    from panconv import create_model

    with torch.device("meta"):
        l2 = create_model("vision.align_efficientnet_l2_bert_large")
        b7 = create_model("vision.align_efficientnet_b7_bert_base")
    count = lambda m, prefix="": sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefix))  # noqa: E731
    assert count(b7) == 171_527_249 and b7.embed_dim == 640
    assert count(l2) == 802_722_485 and l2.embed_dim == 1376
    assert count(l2, "image_tower") == 467_219_796 and count(l2, "text_tower") == 334_092_288


def test_same_pad_is_tensorflow_same():
    for size in (7, 8, 28, 31):
        x = torch.randn(1, 1, size, size)
        for kernel in (3, 5):
            y = F.conv2d(same_pad(x, kernel, 2), torch.ones(1, 1, kernel, kernel), stride=2)
            assert y.shape[-1] == -(-size // 2)


def test_padding_does_not_change_the_text_embedding():
    model = ALIGN(**TINY).eval()
    ids = torch.tensor([[1, 5, 9, 7, 2, 0, 0, 0]])
    longer = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(ids), model.encode_text(longer), atol=1e-6)
        changed = ids.clone()
        changed[0, 3] = 8
        assert not torch.allclose(model.encode_text(ids), model.encode_text(changed), atol=1e-4)


def test_loss_is_bidirectional_softmax_and_temperature_learns():
    model = ALIGN(**TINY, init_temperature=0.5)
    batch = model.example_inputs(4)
    out = model(batch)
    losses = model.loss(out, batch)
    img, txt = F.normalize(out["image_embeddings"], dim=-1), F.normalize(out["text_embeddings"], dim=-1)
    logits = img @ txt.T / 0.5
    target = torch.arange(4)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert torch.allclose(losses["loss"], expected, atol=1e-5)
    losses["loss"].backward()
    assert model.criterion.log_temperature.grad is not None and model.criterion.log_temperature.grad != 0


def test_zero_shot_logits_are_the_prompt_ensemble():
    model = ALIGN(**{**TINY, "vocab_size": 59}).eval()
    model.attach_data(MNISTCaptions)                    # class_prompts() is a static method of the data set
    assert model.class_prompts.shape == (10, len(PROMPTS), 16)
    batch = {"inputs": torch.randn(3, 3, 32, 32), "labels": torch.tensor([0, 1, 2])}
    with torch.no_grad():
        pred = model.predict(model(batch), batch)
        prompts = model.class_prompts
        emb = F.normalize(model.encode_text(prompts.flatten(0, 1)), dim=-1).view(10, len(PROMPTS), -1).mean(1)
        expected = pred["image_embeddings"] @ F.normalize(emb, dim=-1).T / model.criterion.temperature
    assert pred["logits"].shape == (3, 10) and torch.allclose(pred["logits"], expected, atol=1e-5)
    evaluator = ZeroShotAccuracy(topk=(1, 10))
    evaluator.process(batch, pred)
    metrics = evaluator.compute()
    assert metrics["zero_shot_accuracy@10"] == 1.0 and 0.0 <= metrics["zero_shot_accuracy"] <= 1.0


def test_bad_inputs_and_arguments_raise():
    model = ALIGN(**TINY)
    with pytest.raises(ValueError, match="expected images"):
        model.encode_image(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="token ids"):
        model.encode_text(torch.randn(2, 8))
    with pytest.raises(ValueError, match="positions"):
        model.encode_text(torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple"):
        ALIGN(**{**TINY, "text_heads": 5})
    with pytest.raises(ValueError, match="bn_momentum"):
        ALIGN(**TINY, bn_momentum=0.0)
    with pytest.raises(ValueError, match="predict must return a dict with 'logits'"):
        ZeroShotAccuracy().process({"labels": torch.zeros(2)}, {"image_embeddings": torch.zeros(2, 4)})


def test_learns_to_match_a_fixed_batch(tmp_path):
    """Steps on the data set's example pairs: the contrastive loss falls well below its chance value log(B)."""
    torch.manual_seed(0)
    data = MNISTCaptions(tmp_path, split="train", **MNISTCaptions.example(tmp_path))
    batch = data.collate([data[i] for i in range(len(data))])
    model = ALIGN(vocab_size=59, max_caption_length=16, in_channels=1, width_coefficient=0.25,
                  depth_coefficient=0.25, text_hidden=32, text_layers=1, text_heads=2, text_intermediate=64,
                  dropout=0.0, drop_connect_rate=0.0, init_temperature=0.1)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(model(batch), batch)["loss"]
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 0.8 * math.log(len(data)) and losses[-1] < 0.3 * losses[0]
