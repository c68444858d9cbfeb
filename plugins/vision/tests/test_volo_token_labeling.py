"""VOLO's token-labelling objective (Jiang et al. 2021, as VOLO trains): the loss written out per token
against the head, the image-label fallback, resampling of dense label maps, evaluation logits unchanged,
and a training step through the engine's model."""

import pytest
import torch
import torch.nn.functional as F

import panconv
from panconv.api import FeatureInfo
from panconv_vision.models import volo

C, DIM = 4, 6
INFO = [FeatureInfo(DIM, 16, "norm"), FeatureInfo(DIM, 16, "cls_token")]


def _head(**kw) -> volo.VOLOClsHead:
    torch.manual_seed(0)
    return volo.VOLOClsHead(INFO, num_classes=C, token_labeling=True, **kw)


def _features(n=2, h=3, w=2):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, DIM, h, w, generator=g), torch.randn(n, DIM, generator=g)]


def test_loss_is_the_token_labelling_objective():
    """cls_weight * H(fc(cls), y) + dense_weight * (1 / (N h w)) sum_{n, token} H(aux_fc(token), t_token),
    H(z, t) = -sum_c t_c log softmax(z)_c, written out token by token."""
    head = _head(cls_weight=1.0, dense_weight=0.5)
    fmap, cls = _features()
    n, _, h, w = fmap.shape
    g = torch.Generator().manual_seed(2)
    token_labels = torch.rand(n, C, h, w, generator=g).softmax(1)
    labels = torch.tensor([1, 3])
    out = head([fmap, cls])
    losses = head.loss(out, {"labels": labels, "token_labels": token_labels})
    dense = 0.0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                logp = torch.log_softmax(head.aux_fc.weight @ fmap[i, :, y, x] + head.aux_fc.bias, 0)
                dense = dense - (token_labels[i, :, y, x] * logp).sum()
    dense = dense / (n * h * w)
    cls_term = F.cross_entropy(cls @ head.fc.weight.T + head.fc.bias, labels)
    assert torch.allclose(losses["loss_cls"], cls_term, atol=1e-6)
    assert torch.allclose(losses["loss_dense"], 0.5 * dense, atol=1e-6)
    assert losses["loss_dense"] > 0 and losses["loss_cls"] > 0


def test_evaluation_logits_and_predictions_do_not_change():
    head = _head()
    plain = volo.VOLOClsHead(INFO, num_classes=C)
    plain.load_state_dict(head.state_dict())
    features = _features()
    out = head(features)
    assert torch.equal(out["logits"], plain(features))
    tokens = features[0].flatten(2).transpose(1, 2)
    assert torch.allclose(out["logits"], head.fc(features[1]) + 0.5 * head.aux_fc(tokens).amax(1))
    assert torch.equal(head.predict(out), plain.predict(plain(features)))
    assert out["token_logits"].shape == (2, C, 3, 2)


def test_without_dense_labels_every_token_carries_the_image_label():
    head = _head()
    features = _features()
    out = head(features)
    labels = torch.tensor([2, 0])
    hard = F.one_hot(labels, C).float()[:, :, None, None].expand(-1, -1, 3, 2)
    assert torch.allclose(head.loss(out, {"labels": labels})["loss_dense"],
                          head.loss(out, {"labels": labels, "token_labels": hard})["loss_dense"])
    soft = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])  # mixup-style soft image labels
    assert torch.allclose(head.loss(out, {"labels": soft})["loss_dense"],
                          head.loss(out, {"labels": soft, "token_labels": soft[:, :, None, None].expand(-1, -1, 3, 2)})
                          ["loss_dense"])


def test_dense_maps_are_resampled_to_the_token_grid():
    head = _head()
    out = head(_features(h=2, w=2))
    fine = torch.rand(2, C, 4, 4).softmax(1)  # the annotator's map at twice the token resolution
    pooled = fine.reshape(2, C, 2, 2, 2, 2).mean((3, 5))  # the average over each token's 2 x 2 pixels
    labels = torch.tensor([0, 1])
    assert torch.allclose(head.loss(out, {"labels": labels, "token_labels": fine})["loss_dense"],
                          head.loss(out, {"labels": labels, "token_labels": pooled})["loss_dense"])
    index = torch.randint(C, (2, 2, 2))
    up = index.repeat_interleave(2, 1).repeat_interleave(2, 2)  # class indices at 4 x 4
    assert torch.allclose(head.loss(out, {"labels": labels, "token_labels": up})["loss_dense"],
                          head.loss(out, {"labels": labels, "token_labels": index})["loss_dense"])
    with pytest.raises(ValueError, match="token_labels"):
        head.loss(out, {"labels": labels, "token_labels": torch.rand(2, C + 1, 2, 2)})


def test_weights_are_validated():
    with pytest.raises(ValueError, match="cls_weight"):
        volo.VOLOClsHead(INFO, num_classes=C, token_labeling=True, cls_weight=0.0, dense_weight=0.0)


def test_training_step_reaches_both_classifiers():
    model = panconv.create_model({"backbone": {"type": "vision.VOLO", **volo.VOLO.example_config()},
                                  "head": {"type": "vision.VOLOClsHead", "num_classes": 3, "token_labeling": True}})
    batch = {"inputs": torch.randn(2, 3, 32, 32), "labels": torch.tensor([0, 2]),
             "token_labels": torch.rand(2, 3, 2, 2).softmax(1)}
    losses = model.loss(model(batch), batch)
    assert set(losses) == {"loss_cls", "loss_dense"}
    sum(losses.values()).backward()
    assert model.head.aux_fc.weight.grad.abs().sum() > 0 and model.head.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model.predict(model(batch), batch).shape == (2, 3)


# --- MixToken: the head's side (the backbone's side is in test_volo_mixtoken.py) ---

def test_loss_mixes_token_targets_in_the_box_and_the_class_target_by_token_area():
    head = _head()
    fmap, cls = _features(3, 4, 3)
    n, _, h, w = fmap.shape
    box = (1, 0, 3, 2)  # 2 x 2 = 4 of the 12 tokens
    out = head([fmap, cls, torch.tensor(box)])
    assert torch.equal(out["mix_box"], torch.tensor(box))
    token_labels = torch.rand(n, C, h, w, generator=torch.Generator().manual_seed(2)).softmax(1)
    labels = torch.tensor([1, 3, 0])
    losses = head.loss(out, {"labels": labels, "token_labels": token_labels})
    dense = 0.0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                inside = 1 <= y < 3 and 0 <= x < 2
                target = token_labels[n - 1 - i if inside else i, :, y, x]
                logp = torch.log_softmax(head.aux_fc.weight @ fmap[i, :, y, x] + head.aux_fc.bias, 0)
                dense = dense - (target * logp).sum()
    dense = dense / (n * h * w)
    lam = 1 - 4 / 12
    cls_target = lam * F.one_hot(labels, C).float() + (1 - lam) * F.one_hot(labels.flip(0), C).float()
    cls_term = torch.sum(-cls_target * torch.log_softmax(cls @ head.fc.weight.T + head.fc.bias, -1), -1).mean()
    assert torch.allclose(losses["loss_dense"], 0.5 * dense, atol=1e-6)
    assert torch.allclose(losses["loss_cls"], cls_term, atol=1e-6)


def test_mixing_targets_equals_the_reference_unmixing_of_token_outputs():
    """The reference code un-mixes the token logits inside the box and compares them with unmixed labels;
    mixing the labels instead gives the same loss."""
    head = _head()
    fmap, cls = _features(3, 4, 3)
    box = (0, 1, 2, 3)
    out = head([fmap, cls, torch.tensor(box)])
    token_labels = torch.rand(3, C, 4, 3, generator=torch.Generator().manual_seed(3)).softmax(1)
    ours = head.loss(out, {"labels": torch.tensor([2, 2, 1]), "token_labels": token_labels})["loss_dense"]
    logits = out["token_logits"].clone()
    logits[:, :, 0:2, 1:3] = out["token_logits"].flip(0)[:, :, 0:2, 1:3]
    reference = torch.sum(-token_labels * F.log_softmax(logits, 1), 1).mean()
    assert torch.allclose(ours, 0.5 * reference, atol=1e-6)


def test_an_empty_box_changes_nothing():
    head = _head()
    features = _features(3, 4, 3)
    batch = {"labels": torch.tensor([0, 1, 2])}
    mixed = head.loss(head([*features, torch.tensor((2, 1, 2, 3))]), batch)
    plain = head.loss(head(features), batch)
    assert all(torch.allclose(mixed[k], plain[k], atol=1e-6) for k in plain)


def test_mix_token_needs_token_labeling():
    head = volo.VOLOClsHead(INFO, num_classes=C)
    with pytest.raises(ValueError, match="token_labeling"):
        head([*_features(3, 4, 3), torch.tensor((0, 0, 2, 2))])
