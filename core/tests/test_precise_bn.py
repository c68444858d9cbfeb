"""Precise BN (``panconv.precise_bn``, ``panconv precise-bn``): the running statistics become the plain average of
the batch statistics under the final weights; no weight changes; nothing is half-done on an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import panconv
from panconv.io import load_checkpoint, model_state_dict
from panconv.precise_bn import batchnorm_layers, recompute_batchnorm

BLOBS = """\
model:
  backbone: {type: core.MLP, hidden: [16], batch_norm: true}
  head: {type: core.LinearClsHead}
data: {type: core.GaussianBlobs, num_classes: 3, size: 256, spread: 3.0, batch_size: 32}
train:
  epochs: 2
  optimizer: {type: SGD, lr: 0.5, momentum: 0.9}
  checkpoint: {interval: 1, max_keep: 2}
eval: {evaluators: [{type: core.Accuracy}]}
run: {seed: 3, threads: 1}
"""


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
    net[1].running_mean.fill_(7.0)  # stale statistics
    net[1].running_var.fill_(9.0)
    return net


def test_the_statistics_become_the_average_of_the_batch_statistics_and_nothing_else_changes():
    net = _net()
    batches = [torch.randn(8, 3) * (i + 1) for i in range(3)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    assert recompute_batchnorm(net, batches) == 3
    with torch.no_grad():
        acts = [net[0](b) for b in batches]
    expected_mean = torch.stack([a.mean(0) for a in acts]).mean(0)
    expected_var = torch.stack([a.var(0, unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(net[1].running_mean, expected_mean)
    torch.testing.assert_close(net[1].running_var, expected_var)
    for key, value in weights.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert net[1].momentum == 0.1 and not net.training


class MidpointLike(nn.Module):
    """Not a torch batch norm, but the same protocol (as panconv-vision's Poincaré midpoint batch norm)."""

    def __init__(self):
        super().__init__()
        self.momentum = 0.1
        self.register_buffer("running_mean", torch.full((2,), 5.0))
        self.seen = 0

    def reset_running_stats(self):
        self.running_mean.zero_()
        self.seen = 0

    def forward(self, x):
        if self.training:
            self.seen += 1
            self.running_mean.lerp_(x.mean(0), self.momentum or 1 / self.seen)
        return x


def test_a_layer_with_the_batchnorm_protocol_is_included():
    net = nn.Sequential(MidpointLike(), nn.Linear(2, 2))
    assert batchnorm_layers(net) == [net[0]]
    recompute_batchnorm(net, [torch.ones(4, 2), 3 * torch.ones(4, 2)])
    torch.testing.assert_close(net[0].running_mean, torch.full((2,), 2.0))


def test_no_batches_or_no_batchnorm_is_an_error_that_changes_nothing():
    net = _net()
    with pytest.raises(ValueError, match="no batches"):
        recompute_batchnorm(net, [])
    assert net[1].running_mean.eq(7.0).all() and net[1].momentum == 0.1
    with pytest.raises(ValueError, match="no batch-norm layer"):
        recompute_batchnorm(nn.Linear(2, 2), [torch.ones(1, 2)])


def test_an_error_midway_restores_the_statistics_it_had():
    net = _net()

    def batches():
        yield torch.randn(8, 3)
        yield torch.randn(8, 5)  # the wrong width: the second forward fails

    with pytest.raises(RuntimeError):
        recompute_batchnorm(net, batches())
    assert net[1].running_mean.eq(7.0).all() and net[1].running_var.eq(9.0).all() and net[1].momentum == 0.1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from panconv.engine import run_experiment

    directory = tmp_path_factory.mktemp("precise")
    (directory / "blobs.yaml").write_text(BLOBS)
    run_experiment(panconv.load_config(directory / "blobs.yaml"), work_dir=directory / "work", quiet=True)
    return directory / "work"


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """``panconv ARGS`` in this process: its exit code, stdout and stderr."""
    from panconv.cli import main

    def call(*args, cwd):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
        captured = capsys.readouterr()
        return _Result(code, captured.out, captured.err)

    return call


def test_the_command_writes_a_checkpoint_with_only_the_statistics_changed(trained, tmp_path, cli):
    out = tmp_path / "precise" / "epoch_2.pth"
    result = cli("precise-bn", str(trained / "epoch_2.pth"), str(out), "--batches", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "re-estimated 1 batch-norm layers on 3 batches of up to 32 training samples" in result.stdout
    before, after = load_checkpoint(trained / "epoch_2.pth"), load_checkpoint(out)
    assert set(before) == set(after) and set(before["state_dict"]) == set(after["state_dict"])
    changed = {k for k in before["state_dict"] if not torch.equal(before["state_dict"][k], after["state_dict"][k])}
    assert changed == {"model.backbone.layers.1.running_mean", "model.backbone.layers.1.running_var",
                       "model.backbone.layers.1.num_batches_tracked"}
    # the mean is the average activation of the first 96 samples of the seeded order, under the final weights
    cfg = panconv.load_config(trained / "config.yaml")
    train = panconv.build_datasets(cfg, stages=("train",))["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:96].tolist()
    x = torch.stack([train[i]["inputs"] for i in order])
    state = model_state_dict(before)
    pre = x @ state["backbone.layers.0.weight"].T + state["backbone.layers.0.bias"]
    torch.testing.assert_close(after["state_dict"]["model.backbone.layers.1.running_mean"], pre.mean(0))
    # the output directory is a work dir: load_model and --eval-only take it
    assert (out.parent / "config.yaml").is_file()
    model = panconv.load_model(out.parent)
    torch.testing.assert_close(model.backbone.layers[1].running_mean, pre.mean(0))


def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, cli):
    source = trained / "epoch_2.pth"
    same = cli("precise-bn", str(source), str(source), cwd=tmp_path)
    assert same.returncode == 1 and "would overwrite the checkpoint" in same.stderr
    assert same.stderr.count("\n") == 1
    missing = cli("precise-bn", str(tmp_path / "nope"), str(tmp_path / "out.pth"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such work dir or checkpoint" in missing.stderr
    zero = cli("precise-bn", str(source), str(tmp_path / "out.pth"), "--batches", "0", cwd=tmp_path)
    assert zero.returncode == 2 and "must be >= 1" in zero.stderr
    corrupt = tmp_path / "corrupt" / "epoch_1.pth"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    (corrupt.parent / "config.yaml").write_text((trained / "config.yaml").read_text())
    bad = cli("precise-bn", str(corrupt), str(tmp_path / "out.pth"), cwd=tmp_path)
    assert bad.returncode == 2 and str(corrupt) in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "out.pth").exists()
