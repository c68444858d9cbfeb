"""Activation checkpointing and sharded data parallel (FSDP2) as config options for any model."""

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from panconv.engine import scale

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import BIN, core_run, metrics  # noqa: E402

BLOCKS_PLUGIN = '''
import torch
from torch import nn
from panconv import hookimpl
from panconv.api import Backbone, FeatureInfo


class Blocks(Backbone):
    """A stack of residual MLP blocks in an nn.ModuleList: the units checkpointing and FSDP use."""

    def __init__(self, in_dim: int = 2, width: int = 32, depth: int = 3):
        super().__init__()
        self.stem = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(depth))
        self.feature_info = [FeatureInfo(width, 1, "blocks")]

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return [x]


@hookimpl
def panconv_register_models(register):
    register("Blocks", Blocks, kind="backbone", doc="test blocks")
'''


def blocks_config(tmp_path: Path, *, epochs: int = 3, extra: str = "") -> Path:
    (tmp_path / "blocks_plugin.py").write_text(BLOCKS_PLUGIN)
    path = tmp_path / "blocks.yaml"
    path.write_text(textwrap.dedent(f"""\
        plugins: [blocks_plugin]
        model:
          backbone: {{type: blocks_plugin.Blocks, width: 32, depth: 3}}
          head: {{type: core.LinearClsHead}}
        data: {{type: core.GaussianBlobs, num_classes: 3, size: 256, spread: 3.0, batch_size: 32}}
        train:
          epochs: {epochs}
          optimizer: {{type: AdamW, lr: 0.01, weight_decay: 0.01}}
          grad_clip: 1.0
          checkpoint: {{interval: 1, max_keep: 5}}
        eval: {{evaluators: [{{type: core.Accuracy}}]}}
        run: {{seed: 3, threads: 1}}
        """) + extra)
    return path


TORCHRUN = [str(BIN / "torchrun"), "--nproc_per_node=2", "--master_port=29571", str(BIN / "core-run")]


def run_in(tmp_path: Path, *args, two: bool = True, check: bool = True):
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    return core_run(*args, "--quiet", runner=TORCHRUN if two else None, env=env, check=check)


# ----------------------------------------------------------------------------- units


def nested() -> nn.Module:
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.stem = nn.Conv2d(3, 4, 3)
    model.backbone.stages = nn.ModuleList(nn.Module() for _ in range(2))
    for stage in model.backbone.stages:
        stage.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    model.head = nn.Linear(4, 2)
    return model


def test_units_are_the_outermost_module_list_elements_or_the_named_modules():
    model = nested()
    assert [n for n, _ in scale.units(model)] == ["backbone.stages.0", "backbone.stages.1"]
    assert [n for n, _ in scale.units(model, ["backbone.stages.*.blocks.?"])] == [
        f"backbone.stages.{s}.blocks.{b}" for s in range(2) for b in range(3)]
    assert [n for n, _ in scale.units(model, ["head", "backbone.stem"])] == ["backbone.stem", "head"]


def staged() -> nn.Module:
    """``nested()`` whose stages run their blocks (tanh between) when called."""
    model = nested()
    for stage in model.backbone.stages:
        stage.forward = (lambda s: lambda y: [y := torch.tanh(b(y)) for b in s.blocks][-1])(stage)
    return model


def backward_step(model: nn.Module):
    torch.manual_seed(1)
    y = torch.randn(5, 4)
    for stage in model.backbone.stages:
        y = stage(y)
    loss = model.head(y).pow(2).sum()
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


def test_activation_checkpointing_recomputes_units_and_changes_no_number():
    torch.manual_seed(0)
    model, reference = staged(), staged()
    reference.load_state_dict(model.state_dict())
    calls = []
    for stage in model.backbone.stages:
        for block in stage.blocks:
            block.register_forward_pre_hook(lambda *a: calls.append(1))
    assert scale.apply_activation_checkpointing(model, True) == ["backbone.stages.0", "backbone.stages.1"]
    loss, grads = backward_step(model)
    assert len(calls) == 12  # each unit's 3 blocks ran twice: in the forward, and again in the backward pass
    ref_loss, ref_grads = backward_step(reference)
    assert torch.equal(loss, ref_loss)
    assert len(grads) == len(ref_grads) == 14 and all(torch.allclose(a, b) for a, b in zip(grads, ref_grads))
    assert list(model.state_dict()) == list(reference.state_dict())  # the names do not change
    calls.clear()
    with torch.no_grad():  # no recomputation where there is no backward
        y = torch.randn(5, 4)
        for stage in model.backbone.stages:
            y = stage(y)
    assert len(calls) == 6


def test_activation_checkpointing_that_selects_nothing_is_refused():
    with pytest.raises(ValueError, match="no module matches"):
        scale.apply_activation_checkpointing(nested(), ["backbone.nothing.*"])
    with pytest.raises(ValueError, match="no nn.ModuleList"):
        scale.apply_activation_checkpointing(nn.Sequential(nn.Linear(2, 2)), True)


def test_optimizer_state_by_position_is_rekeyed_by_name():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW([{"params": [model[0].weight, model[1].weight]},
                                   {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0}])
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    by_name = scale.optimizer_state_by_name(state, optimizer, model)
    assert by_name["param_groups"][0]["params"] == ["0.weight", "1.weight"]
    assert by_name["param_groups"][1]["params"] == ["0.bias", "1.bias"]
    assert torch.equal(by_name["state"]["1.bias"]["exp_avg"], state["state"][3]["exp_avg"])
    assert scale.is_by_name(by_name) and not scale.is_by_name(state)


# ----------------------------------------------------------------------------- through core-run


def test_config_options_are_validated(tmp_path):
    cfg = blocks_config(tmp_path, epochs=1)
    proc = run_in(tmp_path, cfg, "--set", "run.strategy=zero3", two=False, check=False)
    assert proc.returncode == 2 and "run.strategy: expected ddp or fsdp, got 'zero3'" in proc.stderr
    proc = run_in(tmp_path, cfg, "--set", "train.activation_checkpointing=[]", two=False, check=False)
    assert proc.returncode == 2 and "train.activation_checkpointing: expected true/false" in proc.stderr
    proc = run_in(tmp_path, cfg, "--set", "train.activation_checkpointing=[backbone.nope]", two=False, check=False)
    assert proc.returncode == 2
    assert "train.activation_checkpointing: no module matches ['backbone.nope']" in proc.stderr.strip().splitlines()[-1]


def test_checkpointed_run_equals_the_plain_run(tmp_path):
    cfg = blocks_config(tmp_path, epochs=2)
    run_in(tmp_path, cfg, "--work-dir", tmp_path / "plain", two=False)
    run_in(tmp_path, cfg, "--work-dir", tmp_path / "ckpt", "--set", "train.activation_checkpointing=true", two=False)
    a, b = metrics(tmp_path / "plain"), metrics(tmp_path / "ckpt")
    assert [h["loss"] for h in b["train"]] == pytest.approx([h["loss"] for h in a["train"]], rel=1e-6)
    assert b["test"] == a["test"]
    assert "activation checkpointing: 3 units" in (tmp_path / "ckpt" / "run.log").read_text()
    assert json.loads((tmp_path / "ckpt" / "summary.json").read_text())["peak_memory_mib"] > 10


def test_two_process_fsdp_equals_ddp_and_its_checkpoints_are_ordinary(tmp_path):
    cfg = blocks_config(tmp_path, epochs=3)
    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    run_in(tmp_path, cfg, "--work-dir", ddp)
    run_in(tmp_path, cfg, "--work-dir", fsdp, "--set", "run.strategy=fsdp", "--set",
           "train.activation_checkpointing=true")
    a, b = metrics(ddp), metrics(fsdp)
    assert "fsdp: parameters sharded over 2 processes, 3 units" in (fsdp / "run.log").read_text()
    assert [h["loss"] for h in b["train"]] == pytest.approx([h["loss"] for h in a["train"]], rel=1e-5)
    assert b["test"]["accuracy"] == pytest.approx(a["test"]["accuracy"])
    # the sharded run's checkpoint is the full state dict: one process evaluates it
    state = torch.load(fsdp / "epoch_3.pth", weights_only=True)["state_dict"]
    assert state["model.backbone.blocks.0.1.weight"].shape == (32, 32)
    run_in(tmp_path, cfg, "--work-dir", fsdp, "--eval-only", "--resume", fsdp / "epoch_3.pth", two=False)
    assert json.loads((fsdp / "eval" / "metrics.json").read_text())["test"] == b["test"]
    # resuming the sharded run (weights and the optimizer saved by name) continues it exactly,
    # sharded, and an unsharded process resumes it too
    run_in(tmp_path, cfg, "--work-dir", resumed, "--set", "run.strategy=fsdp", "--resume", fsdp / "epoch_2.pth")
    assert [h["loss"] for h in metrics(resumed)["train"]][-1] == pytest.approx(b["train"][-1]["loss"], rel=1e-5)
    run_in(tmp_path, cfg, "--work-dir", tmp_path / "plain", "--resume", fsdp / "epoch_2.pth", two=False)
    assert metrics(tmp_path / "plain")["train"][-1]["epoch"] == 3
