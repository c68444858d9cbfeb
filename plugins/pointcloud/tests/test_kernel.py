"""pointcloud.flat_group_attention: the reference against dense masked attention, and the Triton kernel."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from panconv_pointcloud.kernels.flat_group_attention import flat_group_attention, flat_group_attention_reference


def dense_masked(q, k, v, slots, slot_of, group_size):
    """Attention over all slots with a block-diagonal mask (groups), read at each token's own slot."""
    qs, ks, vs = q[slots], k[slots], v[slots]  # (S, H, D)
    groups = torch.arange(slots.numel()) // group_size
    mask = groups[:, None] == groups[None, :]
    scores = torch.einsum("shd,thd->hst", qs, ks) / q.shape[-1] ** 0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("hst,thd->shd", weights, vs)[slot_of]


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_is_block_diagonal_attention(seed):
    args, _ = flat_group_attention.make_inputs(torch.device("cpu"), torch.float64, seed)
    torch.testing.assert_close(flat_group_attention_reference(*args), dense_masked(*args))


def test_padding_copies_are_keys_only():
    """A token duplicated as padding counts twice as a key in its last group (the official flat2win padding)."""
    q, k, v = (torch.randn(3, 1, 4, dtype=torch.float64) for _ in range(3))
    slots, slot_of = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2])
    out = flat_group_attention_reference(q, k, v, slots, slot_of, 4)
    w = torch.softmax(torch.stack([q[0, 0] @ k[i, 0] for i in (0, 1, 2, 0)]) / 2.0, 0)
    torch.testing.assert_close(out[0, 0], w[0] * v[0, 0] + w[1] * v[1, 0] + w[2] * v[2, 0] + w[3] * v[0, 0])


def test_reference_gradcheck():
    args, _ = flat_group_attention.make_inputs(torch.device("cpu"), torch.float64, 1)
    q, k, v, slots, slot_of, g = args
    leaves = [t.requires_grad_(True) for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: flat_group_attention_reference(a, b, c, slots, slot_of, g), leaves)


def test_bad_shapes_raise_value_error():
    q = torch.randn(5, 2, 4)
    with pytest.raises(ValueError, match="multiple of group_size"):
        flat_group_attention_reference(q, q, q, torch.arange(5), torch.arange(5), 4)
    with pytest.raises(ValueError, match="slot_of"):
        flat_group_attention_reference(q, q, q, torch.arange(8) % 5, torch.arange(4), 4)


_INTERPRETED = textwrap.dedent("""
    import json, torch
    from panconv_pointcloud.kernels.flat_group_attention import (
        flat_group_attention, flat_group_attention_reference, flat_group_attention_triton)
    out = {}
    for seed in (0, 1):
        args, _ = flat_group_attention.make_inputs(torch.device("cpu"), torch.float32, seed)
        impl = flat_group_attention.select(*args)
        got, want = flat_group_attention_triton(*args), flat_group_attention_reference(*args)
        out[f"forward{seed}"] = [impl.name if impl else None, (got - want).abs().max().item()]
        q, k, v, slots, slot_of, g = args
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
        grad = torch.randn_like(q)
        (flat_group_attention_triton(*leaves, slots, slot_of, g) * grad).sum().backward()
        (flat_group_attention_reference(*ref, slots, slot_of, g) * grad).sum().backward()
        out[f"backward{seed}"] = max((a.grad - b.grad).abs().max().item() for a, b in zip(leaves, ref))
    # a group of FlatFormer's size (144 > one 64-slot block: several query and key blocks)
    from panconv_pointcloud.models.flatformer import equal_size_groups
    g = torch.Generator().manual_seed(2)
    order = torch.randperm(310, generator=g)
    slots, slot_of = equal_size_groups(order, torch.tensor([200, 110]), 144)
    q, k, v = (torch.randn(310, 2, 16, generator=g) for _ in range(3))
    got = flat_group_attention_triton(q, k, v, slots, slot_of, 144)
    out["group144"] = (got - flat_group_attention_reference(q, k, v, slots, slot_of, 144)).abs().max().item()
    print(json.dumps(out))
""")


def test_triton_kernel_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for seed in (0, 1):
        name, diff = result[f"forward{seed}"]
        assert name == "triton" and diff < 1e-4, result
        assert result[f"backward{seed}"] < 1e-4, result
    assert result["group144"] < 1e-4, result


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_kernel_on_gpu():
    from panconv_pointcloud.models.flatformer import equal_size_groups

    g = torch.Generator().manual_seed(0)
    n, group = 5000, 144
    order = torch.randperm(n, generator=g)
    slots, slot_of = equal_size_groups(order, torch.tensor([3000, 2000]), group)
    q, k, v = (torch.randn(n, 8, 16, generator=g).cuda() for _ in range(3))
    args = (q, k, v, slots.cuda(), slot_of.cuda(), group)
    assert flat_group_attention.select(*args).name == "triton"
    torch.testing.assert_close(flat_group_attention(*args), flat_group_attention_reference(*args), atol=1e-4, rtol=1e-4)
