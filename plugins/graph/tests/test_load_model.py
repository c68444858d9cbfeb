"""A trained run's work dir -> ``panconv.load_model`` -> ``recommend``, as a notebook user does it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import panconv
from panconv_graph.datasets.recsys import RecSysData

CONFIG = """\
model: {{type: graph.LightGCN, embed_dim: 8}}
data: {{type: graph.RecSysData, name: tiny, batch_size: 4, eval_batch_size: 4, num_workers: 0,
        splits: {{train: train, test: test}}}}
train: {{epochs: 2, optimizer: {{type: Adam, lr: 0.01}}}}
eval: {{evaluators: [{{type: graph.FullRanking, ks: [2]}}]}}
run: {{work_dir: {work_dir}, seed: 0, device: cpu, threads: 1}}
"""


@pytest.mark.timeout(300)
def test_recommend_after_load_model(tmp_path):
    exe = shutil.which("core-run") or str(Path(sys.executable).with_name("core-run"))
    if not Path(exe).exists():
        pytest.skip("core-run is not installed")
    kwargs = RecSysData.example(tmp_path / "data")
    work_dir = tmp_path / "work"
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.format(work_dir=work_dir))
    proc = subprocess.run([exe, str(config), "--data-root", str(tmp_path / "data")], capture_output=True,
                          text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]

    model = panconv.load_model(work_dir)
    assert type(model).__name__ == "LightGCN" and not model.training
    train = RecSysData(split="train", **kwargs)
    assert (model.n_users, model.n_items) == (train.n_users, train.n_items)
    seen = {u: set() for u in range(train.n_users)}
    for u, i in zip(*(a.tolist() for a in train.interactions())):
        seen[u].add(i)
    users = list(range(train.n_users))
    k = train.n_items - max(len(s) for s in seen.values())
    rec = model.recommend(users, k=k)
    with torch.no_grad():
        final = model._final_embeddings(None)
        scores = final[: model.n_users] @ final[model.n_users:].t()
    for row, u in enumerate(users):  # brute force: every unseen item, sorted by score
        ranked = sorted((i for i in range(model.n_items) if i not in seen[u]), key=lambda i: -float(scores[u, i]))
        assert rec.items[row].tolist() == ranked[:k]
        torch.testing.assert_close(rec.scores[row], scores[u, ranked[:k]])
