"""HyenaDNALM: the tied/untied LM head as one component (issue 14): parity of the tied logits with the official
standalone (recorded fixture), parameter counts, that tying is one shared Parameter through training, and a run
through the engine (``panconv run``) from a config."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

import panconv
from panconv_genomics.datasets import sources
from panconv_genomics.datasets.dna import DNALanguageModel
from panconv_genomics.evaluators.markov import MarkovChain
from panconv_genomics.models.hyenadna import HyenaDNALM

sys.path.insert(0, str(Path(__file__).parent))
import make_hyenadna_fixture as fixture  # noqa: E402


def lm_like_fixture(shift: float, tie: bool = True) -> HyenaDNALM:
    model = HyenaDNALM(**fixture.CONFIG, modulation_shift=shift, embed_dropout=0.0, tie_embeddings=tie)
    model.backbone.load_state_dict(fixture.ours(shift).state_dict())
    return model.eval()


@pytest.mark.parametrize("case", sorted(fixture.CASES))
def test_tied_logits_equal_the_official_tied_lm(case):
    """The official HyenaDNA LM ties lm_head to the embedding; its logits are over the padded vocabulary (16)."""
    record = torch.load(fixture.FIXTURE, weights_only=True)
    model = lm_like_fixture(fixture.CASES[case])
    with torch.no_grad():
        logits = model({"inputs": record["ids"]})
    want = record["cases"][case]["logits"]
    assert logits.shape == want.shape == (2, fixture.LENGTH, 16)
    assert (logits - want).abs().max().item() <= 1e-5
    # untied with a fresh head: not the official tied logits (the comparison can fail)
    untied = lm_like_fixture(fixture.CASES[case], tie=False)
    with torch.no_grad():
        assert (untied({"inputs": record["ids"]}) - want).abs().max().item() > 1e-2


@pytest.mark.parametrize("name, backbone", [("hyenadna_tiny_1k_lm", 436_096), ("hyenadna_small_32k_lm", 3_277_568),
                                            ("hyenadna_medium_160k_lm", 6_550_528)])
def test_parameter_counts_tied_and_untied(name, backbone):
    with torch.device("meta"):
        tied = panconv.create_model(f"genomics.{name}", l_max=2048)
        untied = panconv.create_model(f"genomics.{name}", l_max=2048, tie_embeddings=False)
    d_model = tied.backbone.d_model
    assert sum(p.numel() for p in tied.parameters()) == backbone             # = the official tied LM
    assert sum(p.numel() for p in untied.parameters()) == backbone + 16 * d_model


def test_tied_head_is_the_embedding_through_training_and_checkpoints():
    torch.manual_seed(0)
    model = HyenaDNALM(**HyenaDNALM.example_config(), tie_embeddings=True)
    assert model.lm_head.weight is model.backbone.embedding.weight
    batch = model.example_inputs(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.backbone.embedding.weight.detach().clone()
    model.loss(model(batch), batch)["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, model.backbone.embedding.weight)
    assert model.lm_head.weight is model.backbone.embedding.weight
    state = model.state_dict()
    assert torch.equal(state["lm_head.weight"], state["backbone.embedding.weight"])
    reloaded = HyenaDNALM(**HyenaDNALM.example_config(), tie_embeddings=True)
    reloaded.load_state_dict(state)
    assert reloaded.lm_head.weight is reloaded.backbone.embedding.weight
    untied = HyenaDNALM(**HyenaDNALM.example_config(), tie_embeddings=False)
    assert untied.lm_head.weight is not untied.backbone.embedding.weight


def test_official_head_weight_is_taken_only_when_untied():
    model = lm_like_fixture(0.0, tie=False)
    official = fixture.to_official(model.backbone)
    head = torch.randn(16, fixture.CONFIG["d_model"])
    model.load_official_state_dict({**official, "lm_head.weight": head})
    assert torch.equal(model.lm_head.weight, head)
    tied = lm_like_fixture(0.0, tie=True)
    tied.load_official_state_dict({**official, "lm_head.weight": head})
    assert tied.lm_head.weight is tied.backbone.embedding.weight


def test_loss_is_cross_entropy_and_predict_log_probabilities():
    torch.manual_seed(0)
    model = HyenaDNALM(**HyenaDNALM.example_config())
    batch = model.example_inputs(2)
    batch["targets"][0, :3] = -100
    logits = model(batch)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), batch["targets"].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(model.loss(logits, batch)["loss"], want)
    torch.testing.assert_close(model.predict(logits).exp().sum(-1), torch.ones(logits.shape[:2]))


@pytest.mark.skipif(bool(sources.missing_sources(("phage",))), reason="bowtie2-examples (phage lambda) not installed")
@pytest.mark.parametrize("tie", [True, False])
def test_trains_through_the_engine(tmp_path, tie):
    from panconv.cli import main

    config = {
        "model": {"type": "genomics.HyenaDNALM", "d_model": 16, "n_layer": 1, "l_max": 64, "filter_order": 8,
                  "tie_embeddings": tie},
        "data": {"type": "genomics.DNALanguageModel", "sources": ["phage"], "length": 63, "batch_size": 64,
                 "eval_batch_size": 64, "num_workers": 0, "splits": {"train": "train", "val": "val"}},
        "train": {"epochs": 1, "optimizer": {"type": "AdamW", "lr": 0.01}, "val_interval": 1},
        "eval": {"evaluators": [{"type": "sequence.Perplexity"},
                                {"type": "genomics.MarkovPerplexity", "order": 2, "sources": ["phage"]}]},
        "run": {"work_dir": str(tmp_path / "run"), "seed": 0, "device": "cpu", "threads": 1},
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 0
    model = panconv.load_model(tmp_path / "run")
    assert (model.lm_head.weight is model.backbone.embedding.weight) is tie
    assert sum(p.numel() for p in model.parameters()) == (
        sum(p.numel() for p in model.backbone.parameters()) + (0 if tie else 16 * 16))
    # the Markov baseline of the same run scored the val windows as the chain does directly
    val = json.loads((tmp_path / "run" / "metrics.json").read_text())["val"][-1]
    train = DNALanguageModel(split="train", sources=("phage",), length=63)
    data = DNALanguageModel(split="val", sources=("phage",), length=63)
    batch = data.collate([data[i] for i in range(len(data))])
    log_p = MarkovChain(2).fit(train.tokens).log_probs(batch["inputs"])
    nll = -log_p.gather(-1, batch["targets"].unsqueeze(-1)).mean().item()
    assert val["markov_nll"] == pytest.approx(nll, rel=1e-9)
    assert val["perplexity"] > 1.0 and val["markov_perplexity"] == pytest.approx(math.exp(nll), rel=1e-9)
