"""``education.KTMetrics``: the AUC is exact (pairs counted, ties halved), the mask is honoured, and merging
partial results of any split of the batches (DDP ranks) gives the metrics of the whole."""

import copy

import numpy as np
import pytest
import torch

from panconv_education.evaluators.kt_metrics import KTMetrics, average_ranks, exact_auc


def pairwise_auc(scores, targets):
    pos, neg = scores[targets == 1], scores[targets == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


@pytest.mark.parametrize("levels", [3, 11, None])
def test_exact_auc_counts_every_pair(levels):
    rng = np.random.default_rng(levels or 0)
    targets = rng.integers(0, 2, 500)
    scores = rng.random(500) + 0.3 * targets
    if levels:  # heavy ties
        scores = np.round(scores * levels) / levels
    assert exact_auc(scores, targets) == pytest.approx(pairwise_auc(scores, targets), abs=1e-12)


def test_exact_auc_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, 2000)
    scores = np.round(rng.random(2000) + 0.2 * targets, 2)
    assert exact_auc(scores, targets) == pytest.approx(metrics.roc_auc_score(targets, scores), abs=1e-12)


def test_average_ranks():
    assert average_ranks(np.array([0.5, 0.1, 0.5, 0.9])).tolist() == [2.5, 1.0, 2.5, 4.0]


def test_single_class_gives_nan():
    assert np.isnan(exact_auc(np.array([0.2, 0.3]), np.array([1, 1])))


def _batches(n_batches=7, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        b, t = rng.integers(1, 5), rng.integers(2, 9)
        mask = torch.from_numpy(rng.random((b, t)) < 0.8)
        targets = torch.from_numpy(rng.integers(0, 2, (b, t)))
        probs = torch.from_numpy(np.round(rng.random((b, t)), 1)).float()
        out.append(({}, {"probs": probs, "targets": targets, "mask": mask}))
    return out


def test_mask_and_threshold():
    evaluator = KTMetrics(threshold=0.5)
    evaluator.process({}, {"probs": torch.tensor([[0.9, 0.2, 0.7]]), "targets": torch.tensor([[1, 0, 0]]),
                           "mask": torch.tensor([[True, True, False]])})
    assert evaluator.compute() == {"auc": 1.0, "accuracy": 1.0}


@pytest.mark.parametrize("ranks", [2, 3, 5])
def test_merged_parts_equal_the_whole(ranks):
    batches = _batches()
    whole = KTMetrics()
    for batch, outputs in batches:
        whole.process(batch, outputs)
    parts = [KTMetrics() for _ in range(ranks)]
    for i, (batch, outputs) in enumerate(batches):
        parts[(i * 7) % ranks].process(batch, outputs)
    gathered = [item for part in reversed(parts) for item in copy.deepcopy(part.results)]  # any rank order
    merged = whole.compute_metrics(gathered)
    expected = whole.compute()
    assert merged["auc"] == pytest.approx(expected["auc"], abs=1e-12)
    assert merged["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    probs = np.concatenate([o["probs"][o["mask"]].numpy() for _, o in batches])
    targets = np.concatenate([o["targets"][o["mask"]].numpy() for _, o in batches])
    assert expected["auc"] == pytest.approx(pairwise_auc(probs.astype(np.float64), targets), abs=1e-12)


def test_reads_the_model_predictions():
    """What a model's ``predict`` returns is what the evaluator takes (targets/mask from the batch otherwise)."""
    from panconv_education.models.dkt import DKT
    from panconv_education.models.layers import example_batch

    model = DKT(num_skills=5, embed_dim=4, hidden_dim=4).eval()
    batch = example_batch(5, batch_size=3, length=6)
    with torch.no_grad():
        predictions = model.predict(model(batch), batch)
    a, b = KTMetrics(), KTMetrics()
    a.process(batch, predictions)
    b.process(batch, {"probs": predictions["probs"]})
    assert a.compute() == b.compute()
    assert sum(len(r["probs"]) for r in a.results) == int(batch["mask"][:, 1:].sum())


def test_bad_threshold():
    with pytest.raises(ValueError):
        KTMetrics(threshold=1.5)
