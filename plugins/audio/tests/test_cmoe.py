import pytest
import torch

from panconv_audio.models.cmoe import CMoE


def _model(**kw):
    torch.manual_seed(0)
    return CMoE(**{**CMoE.example_config(), **kw})


def test_forward_shapes_and_top1_routing():
    m = _model().eval()
    b = m.example_inputs(4)
    out = m(b)
    assert out["logits"].shape == (4, 3) and out["routing_scores"].shape == (4, 3)
    assert torch.equal(out["expert_id"], out["routing_scores"].argmax(-1))
    # the prediction is exactly the routed expert's output plus the residual classifier's
    r = m.features(b)
    for i in range(4):
        e = int(out["expert_id"][i])
        torch.testing.assert_close(out["logits"][i], m.experts[e](r[i:i + 1])[0] + m.residual(r[i:i + 1])[0])


def test_without_residual():
    m = _model(residual=False).eval()
    b = m.example_inputs(2)
    out = m(b)
    r = m.features(b)
    e = int(out["expert_id"][0])
    torch.testing.assert_close(out["logits"][0], m.experts[e](r[:1])[0])


def test_balance_loss_hand_case():
    m = _model(num_experts=2, balance_weight=0.5)
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    ids = scores.argmax(-1)  # 3 to expert 0, 1 to expert 1
    f = torch.tensor([0.75, 0.25])
    p = scores.mean(0)
    expected = 0.5 * 2 * (f * p).sum()
    torch.testing.assert_close(m.balance_loss(scores, ids), expected)
    # a balanced assignment scores lower than a collapsed one
    collapsed = m.balance_loss(torch.tensor([[0.9, 0.1]] * 4), torch.zeros(4, dtype=torch.long))
    balanced = m.balance_loss(torch.tensor([[0.9, 0.1], [0.1, 0.9]] * 2), torch.tensor([0, 1, 0, 1]))
    assert balanced < collapsed


def test_routing_layer_gets_gradient_from_balance_loss():
    m = _model()
    b = m.example_inputs(4)
    losses = m.loss(m(b), b)
    sum(losses.values()).backward()
    assert m.routing.weight.grad is not None and m.routing.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("hidden", [0, 16])
def test_learns_a_separable_task(hidden):
    torch.manual_seed(0)
    m = CMoE(num_classes=2, num_experts=2, widths=(8, 16), depths=(1, 1), sample_rate=8000, n_mels=32,
             expert_hidden=hidden, spec_augment=False)
    t = torch.arange(4000) / 8000.0
    g = torch.Generator().manual_seed(0)
    low = [torch.sin(2 * torch.pi * (300 + 20 * k) * t) + 0.05 * torch.randn(4000, generator=g) for k in range(4)]
    high = [torch.sin(2 * torch.pi * (2500 + 20 * k) * t) + 0.05 * torch.randn(4000, generator=g) for k in range(4)]
    batch = {"inputs": torch.stack(low + high), "input_lengths": torch.full((8,), 4000),
             "labels": torch.tensor([0] * 4 + [1] * 4)}
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(30):
        loss = sum(m.loss(m(batch), batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        assert (m.predict(m(batch), batch).argmax(-1) == batch["labels"]).all()
