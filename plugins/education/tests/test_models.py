"""The four knowledge-tracing models: causality, padding, the papers' equations, and that they learn."""

import math

import numpy as np
import pytest
import torch

from panconv_education.evaluators.kt_metrics import exact_auc
from panconv_education.models.cakt import CAKT, ResidualBlock3d, conv3d_over_frames, same_skill_history
from panconv_education.models.dkt import DKT
from panconv_education.models.dkvmn import DKVMN
from panconv_education.models.layers import example_batch, interaction_tokens
from panconv_education.models.sakt import SAKT

TINY = {
    "DKT": (DKT, {"num_skills": 6, "embed_dim": 8, "hidden_dim": 8}),
    "DKVMN": (DKVMN, {"num_skills": 6, "memory_size": 4, "key_dim": 5, "value_dim": 7, "summary_dim": 6}),
    "SAKT": (SAKT, {"num_skills": 6, "max_len": 16, "embed_dim": 8, "num_heads": 2}),
    "CAKT": (CAKT, {"num_skills": 6, "frame_size": 3, "k_frames": 3, "channels": [2, 1]}),
}


def build(name, **extra):
    cls, kwargs = TINY[name]
    torch.manual_seed(0)
    return cls(**{**kwargs, **extra})


@pytest.mark.parametrize("name", sorted(TINY))
def test_only_the_past_is_used(name):
    """Flipping the answer at step j changes the predictions of steps > j only (logit t predicts r_{t+1})."""
    model = build(name).eval()
    batch = example_batch(6, batch_size=3, length=12, seed=1)
    j = 6
    flipped = {**batch, "responses": batch["responses"].clone()}
    flipped["responses"][:, j] = 1 - flipped["responses"][:, j]
    with torch.no_grad():
        a, b = model(batch), model(flipped)
    assert a.shape == (3, 11)
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:2, j:], b[:2, j:]), "the answer at step j must inform later predictions"


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("train", [False, True])
def test_padding_does_not_change_predictions(name, train):
    """A batch right-padded to a longer width gives the same logits on the real steps (CAKT's 3D net runs on
    real steps only, so even its train-mode batch norm ignores the padding)."""
    model = build(name, **({"dropout": 0.0} if name in ("DKT", "SAKT") else {})).train(train)
    batch = example_batch(6, batch_size=3, length=9, seed=2)
    padded = {k: torch.cat([v, torch.zeros(3, 4, dtype=v.dtype)], dim=1) for k, v in batch.items()}
    with torch.no_grad():
        a, b = model(batch), model(padded)
    mask = batch["mask"][:, 1:]
    torch.testing.assert_close(a[mask], b[:, :8][mask], rtol=1e-5, atol=1e-6)


def test_interaction_tokens_are_dkt_one_hot_indices():
    skills = torch.tensor([[3, 1, 0]])
    responses = torch.tensor([[1, 0, 0]])
    assert interaction_tokens(skills, responses, 5).tolist() == [[8, 1, 0]]


# ---------------------------------------------------------------------------------------------- DKVMN
def test_dkvmn_follows_the_paper_equations():
    """Eq. 1-8 of Zhang et al. (2017), written out step by step for one student, give the model's logits."""
    model = build("DKVMN").eval()
    batch = example_batch(6, batch_size=1, length=8, seed=3)
    q, r = batch["skills"][0], batch["responses"][0]
    mk, mv = model.key_memory.detach(), model.value_memory.detach().clone()
    logits = []
    with torch.no_grad():
        for t in range(len(q)):
            k = model.key_embedding.weight[q[t]]
            w = torch.softmax(mk @ k, dim=0)                                      # Eq. 1
            if t > 0:
                read = (w[:, None] * mv).sum(0)                                   # Eq. 2
                f = torch.tanh(model.summary.weight @ torch.cat([read, k]) + model.summary.bias)  # Eq. 3
                logits.append(model.out.weight @ f + model.out.bias)             # Eq. 4 (before the sigmoid)
            v = model.value_embedding.weight[q[t] + 6 * r[t]]
            e = torch.sigmoid(model.erase.weight @ v + model.erase.bias)          # Eq. 5
            a = torch.tanh(model.add.weight @ v + model.add.bias)                 # Eq. 7
            mv = mv * (1 - w[:, None] * e[None]) + w[:, None] * a[None]           # Eq. 6, 8
        got = model(batch)[0]
    torch.testing.assert_close(got, torch.cat(logits), rtol=1e-5, atol=1e-6)


def test_dkvmn_read_is_a_softmax_weighted_sum():
    model = build("DKVMN")
    keys = torch.randn(2, 5)
    weights = model.attention(keys)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(weights, torch.softmax(keys @ model.key_memory.t(), -1))
    memory = torch.randn(2, 4, 7)
    torch.testing.assert_close(model.read(weights, memory), (weights[..., None] * memory).sum(1))


# ----------------------------------------------------------------------------------------------- SAKT
def test_sakt_follows_the_paper():
    """Sec. 3 of Pandey & Karypis (2019) by hand: queries = next exercises, keys/values = past interactions
    + positions, causal softmax attention per head, residual + layer norm, FFN, residual + layer norm."""
    model = build("SAKT").eval()
    batch = example_batch(6, batch_size=1, length=7, seed=4)
    q, r = batch["skills"][0], batch["responses"][0]
    d, h = 8, 2
    dh = d // h
    with torch.no_grad():
        m_hat = model.interaction_embedding.weight[q[:-1] + 6 * r[:-1]] + model.position_embedding.weight[:6]
        e = model.exercise_embedding.weight[q[1:]]
        wq, wk, wv = model.attention.in_proj_weight.chunk(3)
        bq, bk, bv = model.attention.in_proj_bias.chunk(3)
        queries, keys, values = e @ wq.t() + bq, m_hat @ wk.t() + bk, m_hat @ wv.t() + bv
        heads = []
        for head in range(h):
            cols = slice(head * dh, (head + 1) * dh)
            rows = []
            for i in range(6):  # query i (exercise i+1) sees interactions 0..i
                scores = keys[: i + 1, cols] @ queries[i, cols] / math.sqrt(dh)
                rows.append(torch.softmax(scores, 0) @ values[: i + 1, cols])
            heads.append(torch.stack(rows))
        attended = torch.cat(heads, dim=1) @ model.attention.out_proj.weight.t() + model.attention.out_proj.bias
        s = model.norm1(e + attended)
        f = model.norm2(s + model.ffn(s))
        expected = (f @ model.out.weight.t() + model.out.bias).squeeze(-1)
        got = model(batch)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sakt_refuses_sequences_longer_than_its_positions():
    model = build("SAKT")
    with pytest.raises(ValueError, match="max_len is 16"):
        model(example_batch(6, batch_size=1, length=17))


# ----------------------------------------------------------------------------------------------- CAKT
def test_same_skill_history_matches_a_direct_search():
    g = torch.Generator().manual_seed(5)
    skills = torch.randint(1, 4, (3, 20), generator=g)
    got = same_skill_history(skills, 4)
    for b in range(3):
        for t in range(20):
            earlier = [s for s in range(t + 1) if skills[b, s] == skills[b, t]][-4:]
            assert got[b, t].tolist() == [-1] * (4 - len(earlier)) + earlier


def test_cakt_clips_are_time_decayed_same_skill_frames():
    """Clip of step t = the frames of the last k same-skill steps s, times exp(-(t - s) S), zeros in front."""
    model = build("CAKT")
    with torch.no_grad():
        model.decay.fill_(0.3)
    embedded = torch.randn(1, 5, 9)
    skills = torch.tensor([[2, 1, 2, 2, 2]])
    clips = model.clips(embedded, skills)[0]
    assert clips.shape == (5, 3, 9)
    zero = torch.zeros(9)
    torch.testing.assert_close(clips[0], torch.stack([zero, zero, embedded[0, 0]]))
    torch.testing.assert_close(clips[1], torch.stack([zero, zero, embedded[0, 1]]))
    torch.testing.assert_close(clips[2], torch.stack([zero, embedded[0, 0] * math.exp(-2 * 0.3), embedded[0, 2]]))
    expected = torch.stack([embedded[0, 2] * math.exp(-2 * 0.3), embedded[0, 3] * math.exp(-1 * 0.3),
                            embedded[0, 4]])
    torch.testing.assert_close(clips[4], expected)


@pytest.mark.parametrize("in_ch,out_ch,kernel,frames,bias",
                         [(1, 4, 3, 4, False), (4, 8, 3, 4, True), (3, 2, 3, 2, False), (2, 3, 3, 5, True),
                          (4, 1, 1, 4, False)])
def test_cakt_conv3d_over_frames_equals_conv3d(in_ch, out_ch, kernel, frames, bias):
    """The banded 2D form computes Conv3d's sums: outputs and every gradient equal nn.Conv3d's."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias).double()
    x = torch.randn(6, in_ch, frames, 5, 5, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(6, out_ch, frames, 5, 5, dtype=torch.float64)
    ours = conv3d_over_frames(x, conv)
    ours_grads = torch.autograd.grad(ours, [x, *conv.parameters()], grad_out)
    reference = conv(x)
    reference_grads = torch.autograd.grad(reference, [x, *conv.parameters()], grad_out)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    for a, b in zip(ours_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_cakt_residual_block_equals_its_conv3d_form():
    """The residual block (fast 2D form) equals the same block written with its nn.Conv3d modules."""
    torch.manual_seed(1)
    block = ResidualBlock3d(2, 4, 4).double().train()
    x = torch.randn(8, 2, 4, 6, 6, dtype=torch.float64)
    expected = block.relu(block.se(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))) + block.downsample(x))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)


def test_cakt_decay_is_learned():
    model = build("CAKT")
    batch = example_batch(6, batch_size=2, length=10, seed=6)
    model.loss(model(batch), batch)["loss"].backward()
    assert model.decay.grad is not None and model.decay.grad.abs().item() > 0


@pytest.mark.parametrize("kwargs", [{"channels": [2, 3]}, {"channels": []}, {"k_frames": 1}])
def test_cakt_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CAKT(num_skills=4, **kwargs)


def test_sakt_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        SAKT(num_skills=4, embed_dim=10, num_heads=3)


# --------------------------------------------------------------------------------------------- learning
def _rule_batches(num_skills=6, n=64, length=16, seed=0):
    """Strong students (90% right) and weak ones (10%): the next answer is predictable from the past ones."""
    rng = np.random.default_rng(seed)
    skills = rng.integers(1, num_skills + 1, (n, length))
    ability = np.where(rng.random((n, 1)) < 0.5, 0.9, 0.1)
    responses = (rng.random((n, length)) < ability).astype(np.int64)
    mask = np.ones_like(skills, dtype=bool)
    return {"skills": torch.from_numpy(skills), "responses": torch.from_numpy(responses),
            "mask": torch.from_numpy(mask)}


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_learns_a_rule_from_the_history(name):
    torch.manual_seed(0)
    extra = {"DKT": {"hidden_dim": 16}, "SAKT": {"embed_dim": 16, "dropout": 0.0}, "CAKT": {"frame_size": 4}}
    model = build(name, **extra.get(name, {}))
    size = {"n": 24, "length": 10} if name == "CAKT" else {}  # CAKT's 3D convolutions are slow on a CPU
    train, test = _rule_batches(seed=0, **size), _rule_batches(seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30 if name == "CAKT" else 60):
        optimizer.zero_grad()
        model.loss(model(train), train)["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        probs = model.predict(model(test), test)["probs"]
    auc = exact_auc(probs.flatten().numpy(), test["responses"][:, 1:].flatten().numpy())
    assert auc > 0.8, f"{name}: test AUC {auc:.3f}"  # an untrained model is at ~0.5
