"""Kernel dispatch; a real Triton kernel checked against its reference under TRITON_INTERPRET=1."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from panconv.api import Kernel


def test_dispatch_falls_back_to_reference_when_no_backend_fits():
    calls = []
    k = Kernel("t.add", reference=lambda a, b: calls.append("ref") or a + b)

    @k.implementation("fake_cuda", backend="cuda")
    def _cuda(a, b):
        calls.append("cuda")
        return a + b

    @k.implementation("torch_f64", backend="torch", dtypes=(torch.float64,))
    def _f64(a, b):
        calls.append("f64")
        return a + b

    k(torch.ones(2), torch.ones(2))
    k(torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    assert calls == ["ref", "f64"]
    assert k.select(torch.ones(2)) is None


def test_forced_reference(monkeypatch):
    k = Kernel("t.id", reference=lambda x: "ref")
    k.implementation("any", backend="torch")(lambda x: "impl")
    assert k(torch.ones(1)) == "impl"
    monkeypatch.setenv("PANCONV_KERNELS", "reference")
    assert k(torch.ones(1)) == "ref"


def test_supports_predicate():
    k = Kernel("t.even", reference=lambda x: "ref")
    k.implementation("even_only", backend="torch", supports=lambda x: x.numel() % 2 == 0)(lambda x: "impl")
    assert k(torch.ones(2)) == "impl" and k(torch.ones(3)) == "ref"


TRITON_SCRIPT = textwrap.dedent("""
    import torch, triton, triton.language as tl
    from panconv.api import Kernel

    @triton.jit
    def _scale_add(x_ptr, y_ptr, out_ptr, alpha, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        y = tl.load(y_ptr + offs, mask=mask)
        tl.store(out_ptr + offs, alpha * x + y, mask=mask)

    def reference(x, y, alpha):
        return alpha * x + y

    kernel = Kernel("test.axpy", reference=reference)

    @kernel.implementation("triton", backend="triton", dtypes=(torch.float32,))
    def axpy_triton(x, y, alpha):
        out = torch.empty_like(x)
        _scale_add[(triton.cdiv(x.numel(), 128),)](x, y, out, alpha, x.numel(), BLOCK=128)
        return out

    x, y = torch.randn(1000), torch.randn(1000)
    assert kernel.select(x, y, 2.0) is not None, "Triton should be selected under TRITON_INTERPRET=1"
    torch.testing.assert_close(kernel(x, y, 2.0), reference(x, y, 2.0))
    print("TRITON_OK")
""")


def test_triton_kernel_matches_reference_under_interpreter():
    pytest.importorskip("triton")
    proc = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert "TRITON_OK" in proc.stdout, proc.stderr[-2000:]


def test_triton_not_selected_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    k = Kernel("t.x", reference=lambda x: "ref")
    k.implementation("triton", backend="triton")(lambda x: "impl")
    expected = "impl" if torch.cuda.is_available() else "ref"
    assert k(torch.ones(1, device="cuda" if torch.cuda.is_available() else "cpu")) == expected
