"""The Poincaré ResNet paper's Euclidean baseline: sizes and parity with the official ``EuclideanResNet``.

Parity: ``fixtures/poincare_euclidean_parity.pt`` holds the official module's output
(maxvanspengler/poincare-resnet ``models/resnets/euclidean.py``, torch only) on our weights. Regenerate with the
repository fetched::

    PANCONV_RECORD_POINCARE_EUCLIDEAN=/path/to/poincare-resnet pytest plugins/vision/tests/test_poincare_baseline.py
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import panconv
from panconv.testing import dry_run
from panconv_vision.models.poincare import EuclideanResNet, PoincareResNet

FIXTURE = Path(__file__).parent / "fixtures" / "poincare_euclidean_parity.pt"
REPO = Path(__file__).resolve().parents[3]

# = sum of the official EuclideanResNet(10, [w, 2w, 4w], [d] * 3)'s parameters (RGB input), counted when recording
PARAMS = {"vision.euclidean_resnet20_w8": 69_082, "vision.euclidean_resnet20_w16": 273_066,
          "vision.euclidean_resnet20_w32": 1_085_770, "vision.euclidean_resnet32_w8": 118_138,
          "vision.euclidean_resnet32_w16": 467_946, "vision.euclidean_resnet32_w32": 1_862_602}


def test_registered_sizes_and_the_same_skeleton_as_the_poincare_network():
    assert sorted(panconv.list_models("vision.euclidean_resnet*")) == sorted(PARAMS)
    for name, count in PARAMS.items():
        with torch.device("meta"):
            m = panconv.create_model({"type": name, "num_classes": 10})
        assert sum(p.numel() for p in m.parameters()) == count
    # per layer the same weights as the Poincare network; differences: BatchNorm (2C) vs midpoint BN (C + 1),
    # the Poincare FC's bias is one scalar per class as the linear layer's: only the norms differ
    e, p = EuclideanResNet((4, 8, 16), (1, 1, 1), 10), PoincareResNet((4, 8, 16), (1, 1, 1), 10)
    bn_e = sum(m.weight.numel() * 2 for m in e.modules() if isinstance(m, torch.nn.BatchNorm2d))
    n_bn = sum(1 for m in e.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn_p = bn_e // 2 + n_bn
    assert sum(x.numel() for x in e.parameters()) - bn_e == sum(x.numel() for x in p.parameters()) - bn_p


def test_forward_loss_and_bad_input():
    m = EuclideanResNet((4, 8), (1, 2), num_classes=3, in_channels=1)
    batch = {"inputs": torch.randn(2, 1, 12, 12), "labels": torch.tensor([0, 2])}
    out = m(batch)
    assert out.shape == (2, 3)
    loss = m.loss(out, batch)["loss"]
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(out, batch["labels"]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match="expected inputs"):
        m(torch.randn(2, 3, 12, 12))
    with pytest.raises(ValueError, match="differ in length"):
        EuclideanResNet((4, 8), (1,))


def _ours():
    torch.manual_seed(0)
    m = EuclideanResNet(channels=(4, 8, 16), depths=(2, 2, 2), num_classes=10)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m.train()


def _input():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _record(repo):
    spec = importlib.util.spec_from_file_location("official_euclidean", Path(repo) / "models/resnets/euclidean.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    official = mod.EuclideanResNet(classes=10, channel_dims=[4, 8, 16], depths=[2, 2, 2]).train()
    ours = _ours()
    ours_sd = ours.state_dict()
    # official names: group1..3 for our stages.0..2, the rest equal
    mapped = {k.replace("stages.0.", "group1.").replace("stages.1.", "group2.").replace("stages.2.", "group3."): v
              for k, v in ours_sd.items()}
    official.load_state_dict(mapped, strict=True)
    with torch.no_grad():
        out = official(_input())
    sizes = {}
    for depth in (20, 32):
        for w in (8, 16, 32):
            o = mod.EuclideanResNet(classes=10, channel_dims=[w, 2 * w, 4 * w], depths=[(depth - 2) // 6] * 3)
            sizes[f"vision.euclidean_resnet{depth}_w{w}"] = sum(p.numel() for p in o.parameters())
    torch.save({"output": out, "sizes": sizes,
                "source": "maxvanspengler/poincare-resnet models/resnets/euclidean.py"}, FIXTURE)


def test_parity_with_the_official_code():
    if os.environ.get("PANCONV_RECORD_POINCARE_EUCLIDEAN"):
        _record(os.environ["PANCONV_RECORD_POINCARE_EUCLIDEAN"])
    rec = torch.load(FIXTURE)
    assert rec["sizes"] == PARAMS
    with torch.no_grad():
        torch.testing.assert_close(_ours()({"inputs": _input()}), rec["output"], atol=1e-5, rtol=1e-5)


def test_the_baseline_example_is_valid():
    code, out, err = dry_run("examples/vision_poincare_euclidean_mnist.yaml", cwd=REPO)
    assert code == 0, err


@pytest.mark.parametrize("pair", [("vision_poincare_mnist.yaml", "vision_poincare_euclidean_mnist.yaml"),
                                  ("vision_poincare_mnist_long.yaml", "vision_poincare_euclidean_mnist_long.yaml")])
def test_the_equal_budget_pairs_are_valid_and_differ_only_in_the_model(pair):
    import yaml

    configs = []
    for name in pair:
        code, out, err = dry_run(f"examples/{name}", cwd=REPO)
        assert code == 0, err
        configs.append(yaml.safe_load((REPO / "examples" / name).read_text()))
    poincare, euclidean = configs
    assert poincare["model"]["type"].startswith("vision.poincare_resnet")
    assert euclidean["model"]["type"] == poincare["model"]["type"].replace("poincare_", "euclidean_")
    for cfg in configs:
        cfg.pop("model")
        cfg["run"].pop("work_dir")
    assert poincare == euclidean
