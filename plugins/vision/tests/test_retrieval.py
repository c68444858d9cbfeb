"""vision.Retrieval: R@1/5/10, median and mean rank in both directions equal a brute-force computation
(sorting every query's candidates), with duplicate captions as shared correct answers and ties against
the model."""

import numpy as np
import pytest
import torch

from panconv_vision.evaluators.retrieval import Retrieval, retrieval_ranks


def _brute_force(sim, groups):
    """Sort each query's candidates by score (ties: wrong ones first); rank = 1 + position of the first right one."""
    ranks = []
    for q in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda k: (-float(sim[q, k]), groups[k] == groups[q]))
        ranks.append(1 + next(i for i, k in enumerate(order) if groups[k] == groups[q]))
    ranks = np.array(ranks, dtype=float)
    return {"r1": 100 * np.mean(ranks <= 1), "r5": 100 * np.mean(ranks <= 5), "r10": 100 * np.mean(ranks <= 10),
            "medr": float(np.median(ranks)), "meanr": float(ranks.mean())}


@pytest.mark.parametrize("with_groups", [False, True])
def test_metrics_equal_brute_force_in_both_directions(with_groups):
    g = torch.Generator().manual_seed(0)
    n, dim = 40, 6
    video = torch.randn(n, dim, generator=g)
    text = video + 1.2 * torch.randn(n, dim, generator=g)
    text = (text * 2).round() / 2                        # coarse values: some exact ties in the scores
    captions = torch.randint(0, 12, (n, 1), generator=g) if with_groups else None
    ev = Retrieval(group_key="captions" if with_groups else None)
    for start in range(0, n, 16):                        # three batches of unequal size
        batch = {"captions": captions[start:start + 16]} if with_groups else {}
        ev.process(batch, {"video_embeddings": video[start:start + 16], "text_embeddings": text[start:start + 16]})
    metrics = ev.compute()
    vn, tn = torch.nn.functional.normalize(video, dim=1), torch.nn.functional.normalize(text, dim=1)
    sim = (tn @ vn.T).numpy()
    groups = captions[:, 0].tolist() if with_groups else list(range(n))
    for prefix, s in (("t2v", sim), ("v2t", sim.T)):
        want = _brute_force(s, groups)
        for key, value in want.items():
            assert metrics[f"{prefix}_{key}"] == pytest.approx(value), (prefix, key)
    assert metrics["rsum"] == pytest.approx(sum(metrics[f"{d}_r{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)))
    assert 0 < metrics["t2v_r10"] < 100                  # a case that discriminates


def test_identical_captions_are_all_correct_and_ties_count_against_the_model():
    sim = torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.3, 0.3], [0.0, 0.0, 0.0]])
    positives = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    assert retrieval_ranks(sim, positives).tolist() == [1, 2, 3]
    ev = Retrieval(normalize=False, group_key=None)
    ev.process({}, {"video_embeddings": torch.ones(4, 3), "text_embeddings": torch.ones(4, 3)})
    assert ev.compute()["t2v_r1"] == 0.0 and ev.compute()["v2t_medr"] == 4.0


def test_bad_outputs_raise_value_error():
    ev = Retrieval()
    with pytest.raises(ValueError, match="must return a dict"):
        ev.process({}, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"both be \(B, E\)"):
        ev.process({}, {"video_embeddings": torch.zeros(2, 3), "text_embeddings": torch.zeros(3, 3)})
    assert ev.greater_is_better("t2v_r1") and not ev.greater_is_better("t2v_medr")
