"""Pose-TGCN and Pose-GRU: layers against their definitions, the official configuration, and short
training runs on the synthetic gestures."""

from __future__ import annotations

import pytest
import torch

import panconv
from panconv_graph.datasets.skeletons import SkeletonGestures
from panconv_graph.models.pose_tgcn import GCBlock, LearnableAdjacencyGC, PoseGRU, PoseTGCN


def test_graph_convolution_is_a_x_w_plus_b():
    gc = LearnableAdjacencyGC(6, 4, num_nodes=5)
    x = torch.randn(3, 5, 6)
    expected = torch.stack([gc.adjacency @ x[i] @ gc.weight + gc.bias for i in range(3)])
    assert torch.allclose(gc(x), expected, atol=1e-6)
    # the adjacency is a dense learnable matrix: every entry gets a gradient
    gc(x).sum().backward()
    assert (gc.adjacency.grad != 0).all()


def test_block_is_residual():
    torch.manual_seed(0)
    block = GCBlock(4, num_nodes=5, dropout=0.0).eval()
    plain = GCBlock(4, num_nodes=5, dropout=0.0, residual=False).eval()
    plain.load_state_dict(block.state_dict())
    x = torch.randn(2, 5, 4)
    assert torch.allclose(block(x), x + plain(x))


def test_the_official_configuration():
    model = panconv.create_model("graph.PoseTGCN_wlasl", num_classes=100)
    assert (model.num_keypoints, model.num_frames) == (55, 50)
    assert len(model.blocks) == 20 and model.gc1.weight.shape == (100, 64)
    assert model.gc1.adjacency.shape == (55, 55) and model.fc_out.out_features == 100
    assert model.dropout.p == 0.3
    out = model.eval()({"inputs": torch.randn(2, 55, 100)})
    assert out.shape == (2, 100)


def test_mean_over_keypoints_before_the_classifier():
    torch.manual_seed(0)
    model = PoseTGCN(num_classes=3, num_keypoints=5, num_frames=4, hidden=8, num_stages=1).eval()
    x = torch.randn(2, 5, 8)
    y = torch.tanh(model.bn1(model.gc1(x)))
    y = model.blocks[0](y)
    assert torch.allclose(model({"inputs": x}), model.fc_out(y.mean(1)), atol=1e-6)


def test_gru_reads_frames_in_order():
    torch.manual_seed(0)
    model = PoseGRU(num_classes=3, num_keypoints=5, num_frames=4, hidden=8).eval()
    poses = torch.randn(2, 4, 5, 2)  # (B, T, K, 2)
    x = poses.permute(0, 2, 1, 3).reshape(2, 5, 8)  # node features: trajectories
    out, _ = model.gru(poses.reshape(2, 4, 10))
    assert torch.allclose(model({"inputs": x}), model.fc_out(out[:, -1]), atol=1e-6)


def test_wrong_input_shape_is_an_error():
    model = PoseTGCN(num_classes=3, num_keypoints=5, num_frames=4, hidden=8, num_stages=1)
    with pytest.raises(ValueError, match=r"expected inputs \(B, 5, 8\)"):
        model({"inputs": torch.randn(2, 5, 6)})


def _fit(model, train, test, epochs, lr=3e-3):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-3)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train))
        for start in range(0, len(train) - 15, 16):
            idx = order[start:start + 16]
            batch = {"inputs": train.inputs[idx], "labels": train.labels[idx]}
            loss = model.loss(model(batch), batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model({"inputs": test.inputs}).argmax(1) == test.labels).float().mean().item()


@pytest.mark.parametrize("cls", [PoseTGCN, PoseGRU])
def test_short_training_beats_chance(cls):
    kw = {"num_classes": 5, "num_frames": 16, "seed": 0}
    train = SkeletonGestures(root="/nonexistent", split="train", samples_per_class=16, **kw)
    test = SkeletonGestures(root="/nonexistent", split="test", eval_samples_per_class=8, **kw)
    torch.manual_seed(0)
    extra = {"num_stages": 2, "dropout": 0.1} if cls is PoseTGCN else {}
    model = cls(num_classes=5, num_keypoints=55, num_frames=16, hidden=16, **extra)
    assert _fit(model, train, test, epochs=8) > 0.6  # chance: 0.2
