"""vision.ImageTextMatching: the ranking loss over chosen negatives, the three text encoders, learning."""

from __future__ import annotations

import pytest
import torch

from panconv_vision.datasets.captions import MNISTCaptions, tokenize
from panconv_vision.losses import margin_ranking_loss
from panconv_vision.models.itm import ImageTextMatching, sampled_margin_ranking_loss


def test_all_and_hardest_negatives_are_the_shared_margin_ranking_loss():
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    none = torch.zeros(6, 6, dtype=torch.bool)          # an explicit empty mask takes the general code path
    for negatives, k, hardest in (("all", None, False), ("random", 5, False), ("hardest", 1, True)):
        expected = margin_ranking_loss(a, b, margin=0.3, hardest=hardest)
        assert torch.allclose(sampled_margin_ranking_loss(a, b, 0.3, negatives, k, exclude=none), expected, atol=1e-6)
        assert torch.allclose(sampled_margin_ranking_loss(a, b, 0.3, negatives, k), expected, atol=1e-6)


def test_number_of_negatives_and_duplicate_mask():
    # identical embeddings: every hinge is active and equals the margin, so the loss counts the negatives used
    a = b = torch.ones(8, 4)
    for k in (1, 3, 7):
        for negatives in ("random", "hardest"):
            assert torch.isclose(sampled_margin_ranking_loss(a, b, 0.2, negatives, k), torch.tensor(2 * k * 0.2))
    exclude = torch.zeros(8, 8, dtype=torch.bool)
    exclude[:4, :4] = True                               # items 0-3 share a caption: no negatives among them
    loss = sampled_margin_ranking_loss(a, b, 0.2, "all", exclude=exclude)
    assert torch.isclose(loss, torch.tensor(2 * 0.2 * (4 * 4 + 4 * 7) / 8))
    # hardest picks the most violating negative
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    y = x.clone()
    hard = sampled_margin_ranking_loss(x, y, 0.5, "hardest", 1, exclude=torch.zeros(3, 3, dtype=torch.bool))
    s = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).T
    manual = sum(max(0.5 - 1 + s[i, j] for j in range(3) if j != i).clamp(min=0) for i in range(3)) * 2 / 3
    assert torch.isclose(hard, manual)
    with pytest.raises(ValueError, match="negatives"):
        sampled_margin_ranking_loss(x, y, 0.2, "semi-hard")


def _ids(*texts):
    return torch.stack([tokenize(t) for t in texts])


def test_text_encoders_bag_ngram_and_sequence():
    torch.manual_seed(0)
    ids = _ids("a thin handwritten seven", "seven handwritten thin a")
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], 1)
    encoders = {t: ImageTextMatching(vocab_size=59, text=t, hidden=16, embed_dim=8, widths=(4,)).eval()
                for t in ("bow", "ngram", "gru", "lstm")}
    with torch.no_grad():
        out = {t: m.encode_text(ids) for t, m in encoders.items()}
        for t, m in encoders.items():                                 # padding never changes an embedding
            assert torch.allclose(m.encode_text(padded), out[t], atol=1e-6)
    assert torch.allclose(out["bow"][0], out["bow"][1], atol=1e-6)    # a bag of words ignores the order
    for t in ("ngram", "gru", "lstm"):                                # bigrams and recurrences do not
        assert not torch.allclose(out[t][0], out[t][1], atol=1e-4)
    slots, weights = encoders["ngram"].bag_indices(ids[:1])
    assert int(weights.sum()) == 4 + 3 and slots.max() < 59 + encoders["ngram"].ngram_buckets


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="text"):
        ImageTextMatching(text="cnn")
    with pytest.raises(ValueError, match="negatives"):
        ImageTextMatching(negatives="semi-hard")
    model = ImageTextMatching()
    with pytest.raises(ValueError, match="expected images"):
        model.encode_image(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="token ids"):
        model.encode_text(torch.randn(2, 5))


@pytest.mark.parametrize("negatives, k", [("all", None), ("hardest", 1), ("random", 2)])
def test_learns_to_rank_matching_pairs(tmp_path, negatives, k):
    torch.manual_seed(0)
    data = MNISTCaptions(tmp_path, split="train", **MNISTCaptions.example(tmp_path))
    batch = data.collate([data[i] for i in range(len(data))])
    model = ImageTextMatching(vocab_size=59, widths=(8, 16), hidden=32, embed_dim=16, negatives=negatives,
                              num_negatives=k, mask_duplicates=False)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        loss = model.loss(model(batch), batch)["loss"]
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]                 # hardest negatives learn slowest at first (as VSE++ notes)
    with torch.no_grad():                              # batch statistics: 8 pairs are too few for running ones
        pred = model.predict(model(batch), batch)
    sim = pred["text_embeddings"] @ pred["image_embeddings"].T
    same_caption = (batch["captions"][:, None] == batch["captions"][None]).all(-1)
    hits = same_caption[torch.arange(len(data)), sim.argmax(1)]       # text -> image R@1 (a twin caption counts)
    assert hits.float().mean() >= 0.75, [data.caption(i) for i in range(len(data))]


def test_zero_shot_scores_use_the_prompt_ensemble():
    model = ImageTextMatching(vocab_size=59, widths=(4,), hidden=16, embed_dim=8).eval()
    model.attach_data(MNISTCaptions)
    batch = {"inputs": torch.randn(3, 1, 28, 28)}
    with torch.no_grad():
        pred = model.predict(model(batch), batch)
        classes = torch.nn.functional.normalize(torch.stack([
            torch.nn.functional.normalize(model.encode_text(p), dim=-1).mean(0) for p in model.class_prompts]), dim=-1)
    assert pred["logits"].shape == (3, 10)
    assert torch.allclose(pred["logits"], pred["image_embeddings"] @ classes.T, atol=1e-5)


def test_registered_text_variants_and_their_counts():
    from panconv import create_model

    for name, count in (("itm_bow", 207_072), ("itm_ngram", 469_216), ("itm_gru", 601_568), ("itm_lstm", 733_152)):
        model = create_model(f"vision.{name}")
        assert model.text == name[4:] and sum(p.numel() for p in model.parameters()) == count
