"""benchmarks/sequence_fftconv_backward.py: what it prints is measured (gradients equal, the kept bytes smaller)."""

from pathlib import Path

from panconv.testing import load_script

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "sequence_fftconv_backward.py"


def test_benchmark_measures_both_backwards_on_the_same_inputs(capsys):
    bench = load_script(BENCHMARK, "sequence_fftconv_backward")
    rows = bench.main(["--start", "64", "--stop", "256", "--channels", "4", "--repeats", "1"])
    assert [r["length"] for r in rows] == [64, 128, 256]
    for r in rows:
        assert r["diff"] < 1e-5                  # the same gradients
        # the reference keeps two complex spectra and two padded signals of 2L; ours u, k and D (about 2L per row)
        assert r["memory_ratio"] < 0.3, r
        assert r["time_ratio"] > 0
    assert "memory x" in capsys.readouterr().out
