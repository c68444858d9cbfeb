"""The Python API (issue 10 §3): create_model, list_models, load_model, predict_one, info counts."""

import textwrap

import pytest
import torch

import panconv
from panconv.cli import main
from panconv.errors import CheckpointError, UnknownComponentError

CONFIG = textwrap.dedent("""\
    model:
      backbone: {type: core.MLP, hidden: [8]}
      head: {type: core.LinearClsHead}
    data: {type: core.GaussianBlobs, num_classes: 3, dim: 2, size: 64, batch_size: 16}
    train: {epochs: 2, optimizer: {type: SGD, lr: 0.1}}
    eval: {evaluators: [{type: core.Accuracy}]}
    run: {seed: 3}
    """)


def test_create_model_from_a_backbone_name_builds_a_classifier():
    model = panconv.create_model("core.MLP", num_classes=4, in_dim=3)
    assert type(model.neck).__name__ == "GlobalAvgPool" and model.head.fc.out_features == 4
    assert model.backbone.in_dim == 3
    assert model({"inputs": torch.randn(2, 3)}).shape == (2, 4)
    assert model.panconv_config["head"] == {"type": "core.LinearClsHead", "num_classes": 4}


def test_create_model_from_a_whole_model_name_and_a_config():
    model = panconv.create_model({"backbone": {"type": "core.MLP"}, "head": {"type": "core.LinearClsHead"}},
                                 metadata={"num_classes": 5, "in_dim": 7})
    assert model.head.fc.out_features == 5 and model.backbone.in_dim == 7
    with pytest.raises(UnknownComponentError, match="neither a registered model nor a backbone"):
        panconv.create_model("core.Nothing")
    with pytest.raises(TypeError, match="keyword arguments apply to a whole model"):
        panconv.create_model({"backbone": {"type": "core.MLP"}, "head": {"type": "core.LinearClsHead"}}, x=1)


def test_create_model_uses_a_backbones_paper_head():
    if "vision.convnext_tiny" not in panconv.list_models("convnext*"):
        pytest.skip("panconv-vision is not installed in this environment")
    model = panconv.create_model("vision.convnext_tiny", num_classes=10)
    assert type(model.neck).__name__ == "PoolNorm" and model.head.fc.out_features == 10


def test_list_models_globs_match_short_names_too(monkeypatch):
    from panconv import plugins

    monkeypatch.setenv("PANCONV_PLUGINS", "none")  # the core's components only (plugins have MLPs too)
    plugins.reset()
    assert panconv.list_models("ml*") == ["core.MLP"]
    assert panconv.list_models("core.*") == ["core.MLP"]
    assert panconv.list_models("MLP") == ["core.MLP"]  # substring, case-insensitive
    assert "core.LinearClsHead" not in panconv.list_models()  # heads are not models
    assert panconv.list_components("head", "linear*") == ["core.LinearClsHead"]


@pytest.fixture
def trained(tmp_path, monkeypatch):
    from panconv.config import load_config
    from panconv.engine import run_experiment

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "blobs.yaml"
    path.write_text(CONFIG)
    work_dir = tmp_path / "work"
    run_experiment(load_config(path), work_dir=work_dir, quiet=True)
    return work_dir


def test_load_model_from_a_work_dir_is_ready_and_needs_no_data(trained, monkeypatch):
    import panconv.builder

    def no_data(*args, **kwargs):
        raise AssertionError("load_model must not load data: config.yaml holds the resolved arguments")

    monkeypatch.setattr(panconv.builder, "build_datasets", no_data)
    model = panconv.load_model(trained)
    assert not model.training
    assert model.head.fc.out_features == 3 and model.backbone.in_dim == 2  # metadata-filled, stored
    from panconv.io import load_checkpoint, model_state_dict

    state = model_state_dict(load_checkpoint(model.panconv_checkpoint))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    probs = model.predict_one(torch.randn(2))
    assert probs.shape == (3,) and torch.allclose(probs.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="expects one input of 1 dimensions"):
        model.predict_one(torch.randn(4, 2))


def test_load_model_from_a_checkpoint_file_and_errors(trained, tmp_path):
    checkpoint = sorted(trained.glob("epoch_*.pth"))[-1]
    model = panconv.load_model(checkpoint)
    assert model.panconv_checkpoint == str(checkpoint)
    with pytest.raises(CheckpointError, match="no such work dir or checkpoint"):
        panconv.load_model(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in this work dir"):
        panconv.load_model(empty)


def test_info_counts_a_backbone_with_the_papers_head(capsys):
    if "vision.convnext_tiny" not in panconv.list_models("convnext*"):
        pytest.skip("panconv-vision is not installed in this environment")
    assert main(["info", "vision.convnext_tiny"]) == 0
    out = capsys.readouterr().out
    assert "parameters:  27,818,592 (27.82M) backbone alone, with its defaults" in out
    # ConvNeXt-T, ImageNet-1k head at 224^2: 28,589,128 (paper Table 1: 28.6M; timm's count)
    assert "parameters:  28,589,128 (28.59M) with the paper's classification head (1000 classes)" in out


def test_the_cli_lists_with_the_same_matching_as_list_models(capsys):
    from panconv.cli import main

    assert main(["list", "ml*"]) == 0
    out = capsys.readouterr().out
    assert "core.MLP" in out and "core.LinearClsHead" not in out
